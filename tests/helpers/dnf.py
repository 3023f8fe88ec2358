"""dnf, pointed at one repository alone, as the tests ask it about published trees."""

from __future__ import annotations

import shutil
from pathlib import Path

DNF = shutil.which("dnf")


def dnf_command(
    baseurl: str, cache: Path, root: Path, *options: str, releasever: str = "1"
) -> list[str]:
    """dnf on the repository at ``baseurl`` alone (repository id ``t``, package signatures
    not checked), with the cache directory ``cache`` and the installroot ``root``; a
    repository dnf cannot read fails the command. ``options`` come after the common ones."""
    assert DNF is not None
    return [
        DNF,
        "-q",
        "-y",
        "--setopt=reposdir=/nonexistent",
        f"--repofrompath=t,{baseurl}",
        "--repo=t",
        "--setopt=t.gpgcheck=0",
        "--setopt=t.skip_if_unavailable=0",
        f"--installroot={root}",
        f"--setopt=cachedir={cache}",
        f"--releasever={releasever}",
        "--setopt=install_weak_deps=0",
        *options,
    ]
