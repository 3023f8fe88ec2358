"""Where coordd's socket is: the part of the locations the daemon and its clients share.

There are two ways to run the daemon (docs/design.md §7): as the system service, listening on
``/run/coordd/coordd.sock``, and as a user service, listening on
``$XDG_RUNTIME_DIR/coordd/coordd.sock`` (``/tmp/coordd-$UID/coordd.sock`` without it).
``COORDD_SOCKET`` overrides the socket. The daemon's other locations (state, configuration)
are ``coordd.service.locations``, which builds on this module; a client, having no
configuration file, uses :func:`client_socket_path`.

This module imports only ``os`` and ``pathlib``: ``coordctl`` imports it on the path of every
one-shot command, where each millisecond of start-up is paid by every script.
"""

import os
from pathlib import Path

SOCKET_ENV = "COORDD_SOCKET"
SOCKET_NAME = "coordd.sock"
SYSTEM_SOCKET = Path("/run/coordd") / SOCKET_NAME


def xdg_dir(name: str) -> Path | None:
    """The XDG base directory in the variable ``name``, or ``None`` if unset or invalid."""
    # The XDG base directory specification says a relative value is invalid and must be
    # ignored; an empty one is the same as unset.
    value = os.environ.get(name, "")
    if value and os.path.isabs(value):
        return Path(value)
    return None


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name, "")
    return Path(value) if value else None


def is_system_default() -> bool:
    """Whether the daemon runs as the system service unless told otherwise: when root."""
    return os.geteuid() == 0


def user_runtime_dir() -> Path:
    """The directory holding the user daemon's socket.

    ``$XDG_RUNTIME_DIR/coordd`` where the session manager provides one (it is private to the
    user and cleaned at logout). Without it, ``/tmp/coordd-$UID``: a shared directory, so the
    daemon must create it itself and check it is its own
    (``coordd.service.locations.ensure_owned_dir``).
    """
    runtime = xdg_dir("XDG_RUNTIME_DIR")
    if runtime is not None:
        return runtime / "coordd"
    return Path(f"/tmp/coordd-{os.geteuid()}")


def user_socket_path() -> Path:
    """The user daemon's socket."""
    return user_runtime_dir() / SOCKET_NAME


def _is_socket(path: Path) -> bool:
    try:
        return path.is_socket()
    except OSError:  # e.g. a parent directory we may not search
        return False


def client_socket_path() -> Path:
    """The socket a client connects to when not given one on its command line.

    ``$COORDD_SOCKET`` if set; else the user daemon's socket if one exists; else the system
    service's if one exists; else the path where this user's default daemon would listen
    (the user socket, or the system one for root), so the error message names it.
    """
    explicit = _env_path(SOCKET_ENV)
    if explicit is not None:
        return explicit
    user = user_socket_path()
    if _is_socket(user):
        return user
    if _is_socket(SYSTEM_SOCKET):
        return SYSTEM_SOCKET
    return SYSTEM_SOCKET if is_system_default() else user
