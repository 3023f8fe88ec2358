"""Where coordd keeps its socket, state and configuration.

There are two ways to run the daemon (docs/design.md §7): as the system service (root, or
``coordd --system``; normally started by systemd) and as a user service (anyone, no
systemd needed). Each has fixed default locations::

                 system                      user
    socket       /run/coordd/coordd.sock     $XDG_RUNTIME_DIR/coordd/coordd.sock
                                             (/tmp/coordd-$UID/coordd.sock without it)
    state        /var/lib/coordd             $XDG_STATE_HOME/coordd (~/.local/state/coordd)
    config       /etc/coordd/coordd.toml     $XDG_CONFIG_HOME/coordd/coordd.toml
                                             (~/.config/coordd/coordd.toml)

``COORDD_SOCKET`` and ``COORDD_STATE_DIR`` override the socket and the state directory. The
functions returning defaults do not apply them: the daemon's configuration ranks the
environment above the configuration file, so ``coordd.service.config`` applies them at that rank.

The socket's part, which the client shares, is ``coordd.api.address`` (the client has no
configuration file and uses its ``client_socket_path``); this module adds the daemon's own.
"""

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from coordd.api.address import SYSTEM_SOCKET, is_system_default, user_socket_path, xdg_dir

STATE_DIR_ENV = "COORDD_STATE_DIR"

CONFIG_NAME = "coordd.toml"

SYSTEM_STATE_DIR = Path("/var/lib/coordd")
SYSTEM_CONFIG_FILE = Path("/etc/coordd") / CONFIG_NAME


@dataclass(frozen=True)
class Paths:
    """The three locations one daemon instance uses; immutable, compared by value."""

    socket: Path
    state_dir: Path
    config_file: Path


def system_paths() -> Paths:
    """The system service's default locations (fixed; the environment does not change them)."""
    return Paths(SYSTEM_SOCKET, SYSTEM_STATE_DIR, SYSTEM_CONFIG_FILE)


def user_paths() -> Paths:
    """The user service's default locations, from the XDG base directory variables."""
    state_home = xdg_dir("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    config_home = xdg_dir("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Paths(
        socket=user_socket_path(),
        state_dir=state_home / "coordd",
        config_file=config_home / "coordd" / CONFIG_NAME,
    )


def default_paths(system: bool | None = None) -> Paths:
    """The default locations: the system service's if ``system`` (``None``: when root)."""
    if system is None:
        system = is_system_default()
    return system_paths() if system else user_paths()


def ensure_owned_dir(path: Path, mode: int = 0o700) -> None:
    """Create ``path`` (and its parents) if missing, then check that it is safe to use.

    Safe means: a real directory (not a symlink), owned by us or by root, and not writable
    by group or others. Anything else under a shared parent such as ``/tmp`` could be a
    directory another user prepared to intercept our socket. Raises ``PermissionError``
    saying what is wrong.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.mkdir(mode=mode, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode):  # lstat: a symlink is refused too
        raise PermissionError(f"{path} is not a directory")
    if st.st_uid not in (os.geteuid(), 0):
        raise PermissionError(
            f"{path} belongs to uid {st.st_uid}, not to us (uid {os.geteuid()}); "
            "remove it or choose another location"
        )
    if st.st_mode & 0o022:
        raise PermissionError(
            f"{path} is writable by group or others (mode {st.st_mode & 0o7777:04o}); "
            "fix its permissions or choose another location"
        )
