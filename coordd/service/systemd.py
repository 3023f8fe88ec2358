"""The parts of systemd's service protocols coordd speaks, without libsystemd.

Three small protocols, each defined by environment variables systemd sets for the service:

- **Notification** (``sd_notify(3)``): ``NOTIFY_SOCKET`` names a Unix datagram socket; the
  service sends ``READY=1`` when it accepts requests (``Type=notify`` waits for it),
  ``STATUS=…`` for ``systemctl status``, ``STOPPING=1`` when it begins to shut down and
  ``WATCHDOG=1`` as a keep-alive. A name starting with ``@`` is in the abstract namespace.
- **Watchdog** (``sd_watchdog_enabled(3)``): ``WATCHDOG_USEC`` is the period after which
  systemd kills a service that has not sent ``WATCHDOG=1``; ``WATCHDOG_PID``, when set,
  says which process it is meant for.
- **Socket activation** (``sd_listen_fds(3)``): the listening sockets are inherited from
  descriptor 3 on; ``LISTEN_FDS`` says how many, ``LISTEN_FDNAMES`` names them (from
  ``FileDescriptorName=``), and ``LISTEN_PID`` says which process they are for, since the
  variables are inherited by children that did not get the descriptors.

Each is a few lines; libsystemd itself is not worth a C dependency, and the ``sdnotify``
package ignores every error. Here a failed notification is logged (a daemon whose READY=1
is lost gets killed at the start timeout, and the log should say why) and reported to the
caller as ``False``; outside systemd nothing is sent and the functions return quietly.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("coordd.systemd")

LISTEN_FDS_START = 3

# A datagram to systemd's notify socket is small and the socket is local; a full receive
# queue (systemd stuck) should not hang the event loop for long.
_SEND_TIMEOUT_S = 2.0


def _notify_address() -> str | None:
    value = os.environ.get("NOTIFY_SOCKET", "")
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    # Newer systemd versions also use vsock: addresses (for virtual machines), which a
    # service on a host never gets; refuse rather than guess.
    log.warning("NOTIFY_SOCKET=%r is not a Unix socket address; notifications are off", value)
    return None


def notify(message: str) -> bool:
    """Send ``message`` (``KEY=value`` lines) to systemd's notification socket.

    Returns True when sent; False when not running under systemd (no ``NOTIFY_SOCKET``) or
    when sending failed, which is also logged as a warning.
    """
    address = _notify_address()
    if address is None:
        return False
    data = message.encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(_SEND_TIMEOUT_S)
            sent = sock.sendto(data, address)
    except OSError as exc:
        log.warning("could not notify systemd (%s) of %r: %s", address.lstrip("\0"), message, exc)
        return False
    if sent != len(data):  # datagrams are all or nothing; this would be a kernel oddity
        log.warning("systemd notification %r was truncated to %d bytes", message, sent)
        return False
    return True


def ready() -> bool:
    """Tell systemd the daemon is up and answering requests."""
    return notify("READY=1")


def stopping() -> bool:
    """Tell systemd the daemon has begun to shut down."""
    return notify("STOPPING=1")


def reloading() -> bool:
    """Tell systemd the daemon is re-reading its configuration; send :func:`ready` after."""
    return notify("RELOADING=1")


def status(text: str) -> bool:
    """Set the one-line status ``systemctl status`` shows."""
    # A newline would start a new KEY=value assignment: keep the status one line.
    return notify("STATUS=" + " ".join(text.splitlines()))


def watchdog() -> bool:
    """Tell systemd's watchdog the daemon is alive."""
    return notify("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """How often to call :func:`watchdog`, in seconds: half systemd's period; None if off.

    None also when ``WATCHDOG_PID`` names another process (the variables were inherited).
    Malformed values are logged and treated as no watchdog.
    """
    usec = os.environ.get("WATCHDOG_USEC", "")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID", "")
    if pid:
        if not pid.isdigit():
            log.warning("ignoring malformed WATCHDOG_PID=%r", pid)
            return None
        if int(pid) != os.getpid():
            return None
    if not usec.isdigit() or int(usec) == 0:
        log.warning("ignoring malformed WATCHDOG_USEC=%r", usec)
        return None
    return int(usec) / 2_000_000


def listen_fds() -> list[tuple[int, str]]:
    """The sockets systemd passed to this process, as ``(fd, name)`` pairs, in order.

    Empty when not socket-activated, or when the variables are meant for another process.
    The variables are removed from the environment once read, whatever they said, so that
    processes the daemon starts do not take the descriptors for theirs; the descriptors are
    marked close-on-exec for the same reason. A descriptor without a name (``LISTEN_FDNAMES``
    unset or short) is named ``"unknown"``, as libsystemd does.

    Raises ``ValueError`` when the variables are present but malformed, or name a descriptor
    that is not open: the service was started wrongly and should not carry on without its
    socket.
    """
    pid = os.environ.pop("LISTEN_PID", "")
    count = os.environ.pop("LISTEN_FDS", "")
    names_value = os.environ.pop("LISTEN_FDNAMES", None)
    if not pid or not count:  # as libsystemd: both are needed, or the fds are not ours
        return []
    if not pid.isdigit() or not count.isdigit():
        raise ValueError(f"malformed socket activation: LISTEN_PID={pid!r} LISTEN_FDS={count!r}")
    if int(pid) != os.getpid():
        return []
    n = int(count)
    names = names_value.split(":") if names_value is not None else []
    if names_value is not None and len(names) != n:
        log.warning(
            "LISTEN_FDNAMES=%r names %d descriptors but LISTEN_FDS=%d", names_value, len(names), n
        )
    result = []
    for i in range(n):
        fd = LISTEN_FDS_START + i
        try:
            os.set_inheritable(fd, False)
        except OSError as exc:
            raise ValueError(f"LISTEN_FDS={n} but descriptor {fd} is not open: {exc}") from exc
        result.append((fd, names[i] if i < len(names) and names[i] else "unknown"))
    return result
