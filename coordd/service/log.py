"""The daemon's logging: to stderr, in the form whoever reads stderr wants.

Under systemd, stderr is a stream to journald, which stamps every line with the time and
takes a leading ``<N>`` as the line's syslog priority (``sd-daemon(3)``): so we print
``<6>coordd.server: message`` and no timestamp, and ``journalctl -p warning`` works. systemd
tells a service its stderr is such a stream with ``JOURNAL_STREAM=<dev>:<ino>``; the
variable is inherited by children whose stderr may point elsewhere, so it counts only if it
matches stderr's own device and inode. Anywhere else (a terminal, a file, a test) lines read
``2026-01-01T00:00:00Z INFO coordd.server: message``, in UTC so that logs from different
machines and from journald sort the same way.

journald splits a record at each newline and gives unprefixed lines the default priority,
so a traceback would lose its error priority after the first line: in journal form every
line of a record carries the prefix.

``coordd``'s own loggers log at the configured level. Other libraries (aiohttp,
aiosqlite: chatty ones can log every request, and a sync makes thousands) are heard from at
warning and above, and at everything when the level is ``debug``. SIGHUP may change the
level: :func:`set_level`.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import TextIO

LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# Syslog priorities (RFC 5424 severities) for the logging levels.
_PRIORITIES = (
    (logging.CRITICAL, 2),
    (logging.ERROR, 3),
    (logging.WARNING, 4),
    (logging.INFO, 6),
)
_DEBUG_PRIORITY = 7

# Loggers are named by component ("coordd.runtime", "coordd.store", ...), not by module:
# the names appear in every log line and journal filter, so they stay when code moves.
LOGGER_NAME = "coordd"


def syslog_priority(levelno: int) -> int:
    """The syslog priority journald should record for a record of level ``levelno``."""
    for threshold, priority in _PRIORITIES:
        if levelno >= threshold:
            return priority
    return _DEBUG_PRIORITY


class JournalFormatter(logging.Formatter):
    """``<N>logger: message``, with the prefix on every line of a multi-line record."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


class ReadableFormatter(logging.Formatter):
    """``2026-01-01T00:00:00Z LEVEL logger: message``, UTC."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%SZ")
        self.converter = _utc


def _utc(seconds: float | None) -> time.struct_time:
    return time.gmtime(seconds)


def stderr_is_journal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default stderr) is the stream systemd connected to journald."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep or not dev.isdigit() or not ino.isdigit():
        return False
    stream = sys.stderr if stream is None else stream
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        # No file descriptor behind it (closed, or replaced by an in-memory stream).
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def parse_level(level: str) -> int:
    """The ``logging`` level for a name in :data:`LEVELS` (any case); ``ValueError`` else."""
    try:
        return LEVELS[level.lower()]
    except KeyError:
        names = ", ".join(LEVELS)
        raise ValueError(f"unknown log level {level!r}; choose one of {names}") from None


class _DaemonHandler(logging.StreamHandler[TextIO]):
    """Marks the handler this module installed, so a second setup replaces it."""


def setup_logging(level: str, stream: TextIO | None = None) -> None:
    """Send log records to ``stream`` (default stderr) in journal or readable form.

    Calling it again replaces the handler it installed before (and re-reads
    ``JOURNAL_STREAM``); handlers installed by others, e.g. pytest's, are left alone.
    """
    levelno = parse_level(level)
    stream = sys.stderr if stream is None else stream
    handler = _DaemonHandler(stream)
    handler.setFormatter(JournalFormatter() if stderr_is_journal(stream) else ReadableFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _DaemonHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    _apply_level(levelno)


def set_level(level: str) -> None:
    """Change the level at run time (SIGHUP with a new ``log_level``)."""
    _apply_level(parse_level(level))


def _apply_level(levelno: int) -> None:
    logging.getLogger(LOGGER_NAME).setLevel(levelno)
    third_party = levelno if levelno <= logging.DEBUG else max(levelno, logging.WARNING)
    logging.getLogger().setLevel(third_party)
