"""createrepo_c, loaded so that the rpm library inside it finds a configuration.

The PyPI build of createrepo_c carries its own librpm, which reads ``/usr/lib/rpm/rpmrc``
when it loads and prints ``error: Unable to open /usr/lib/rpm/rpmrc`` on every start of the
daemon where the system's rpm is not installed (Debian's base has none). coordd needs none
of rpm's configuration: it reads headers and writes repodata, it builds nothing. So where
the system has no configuration, the library is pointed (``RPM_CONFIGDIR``) at the empty one
shipped beside this module. A system configuration, or an ``RPM_CONFIGDIR`` the
administrator set, is left alone.

Import ``cr`` from here, never ``createrepo_c`` directly: the variable must be set before
the library loads.
"""

import os
from pathlib import Path

SYSTEM_RPMRC = Path("/usr/lib/rpm/rpmrc")
EMBEDDED_CONFIG_DIR = Path(__file__).with_name("rpmconfig")

if "RPM_CONFIGDIR" not in os.environ and not SYSTEM_RPMRC.exists():
    os.environ["RPM_CONFIGDIR"] = str(EMBEDDED_CONFIG_DIR)

import createrepo_c as cr  # noqa: E402 - the configuration above must come first

__all__ = ["cr"]
