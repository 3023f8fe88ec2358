"""The daemon's configuration: embedded defaults, a TOML file, then the command line.

Each setting is resolved in three layers, later ones winning:

1. embedded defaults, which depend on whether the daemon runs as the system service or as
   a user (:mod:`coordd.service.locations`), so that coordd runs with no file at all;
2. the configuration file (``/etc/coordd/coordd.toml`` or
   ``~/.config/coordd/coordd.toml``, or ``--config FILE``). A missing default file is
   normal; a missing file named on the command line is an error;
3. overrides from the command line and the environment (``COORDD_SOCKET``,
   ``COORDD_STATE_DIR``: :func:`environment_overrides`), keyed by field name.

The file's layout::

    socket = "/run/coordd/coordd.sock"     # ignored when systemd passes the socket
    state_dir = "/var/lib/coordd"
    log_level = "info"                     # debug | info | warning | error

    [tasks]
    heavy_slots = 2                        # heavy operations (sync, publish) at once
    retention = "7d"                       # seconds, or "7d", "12h", "30m", "45s", "1h30m"
    max_attempts = 3                       # runs of a restartable task across restarts
    cancel_grace = "10s"                   # a canceled task's time to stop before it is killed
    reattach_grace = "30s"
    progress_persist_interval = "2s"

    [limits]
    max_frame_bytes = 1048576
    max_batch = 100
    max_connections = 256                  # open connections, all users together
    max_connections_per_user = 64          # for any one uid, subscribers included
    admin_reserved_connections = 16        # of max_connections, only for admins
    idle_timeout = "5m"                    # a connection with nothing to do closes
    request_timeout = "10s"                # a request line must be complete by then
    max_send_queue_bytes = 262144          # unsent to one client: stop reading it
    max_send_queue_total_bytes = 16777216  # unsent to all clients together

    [store]
    commit_timeout = "30s"                 # the database writer stalled: exit 70

    [content]
    retain_versions = 10                   # versions a repository keeps, unless it says
    publish_grace = "5m"                   # a replaced published tree stays readable
    orphan_cleanup_interval = "0s"         # remove orphaned content this often; 0: never

    [access]
    admin_group = "coordd-admin"           # may mutate (besides root and the daemon's user)
    read_group = "coordd-read"             # may only read
    socket_mode = "0660"

    [signing]                              # sign published repomd.xml
    key = "/etc/coordd/signing-key.asc"    # OpenPGP secret key; unset: none
    passphrase_file = "/etc/coordd/signing-key.pass"

The limits keep the daemon serving whatever a client does. ``max_connections`` caps the
connections open at once; it is lowered, with a warning in the log and from
``--check-config``, to what the open-file limit leaves once descriptors are kept for the
database, the writer and downloads (64, and 32 per heavy slot; the daemon raises its soft
limit to the hard one at start-up). ``max_connections_per_user`` caps one uid, root
included, so that one user or a runaway script cannot take every place; connections
subscribed to events or holding a lock count too. ``admin_reserved_connections`` of the
places (at most half of them) are kept for root, the daemon's user and the admin group.
``idle_timeout`` closes a connection with no request in flight, no subscription and no
lock; ``request_timeout`` (or ``idle_timeout``, if shorter) closes one whose request line
is not complete that long after its first byte. A client that does not read its replies
stops being read once ``max_send_queue_bytes`` wait for it (or once any wait, while all
clients together have ``max_send_queue_total_bytes`` waiting), and is disconnected when one
message to it takes longer than 10 seconds to write. The replies to one batch go out as
one line: once they pass ``max_send_queue_bytes``, its remaining requests are not run and
each gets an error saying so. A refused connection is told which limit refused it.

``commit_timeout`` bounds how long the database writer may leave a commit unanswered (a
hung disk, a writer that was stopped): past it the daemon stops with status 70 and a line
saying the writer stalled, instead of leaving every request waiting; the supervisor then
restarts it on what is on disk. Clients that send a ``request_id`` with their submissions
(``coordctl`` does) can submit again after such a restart and get the task their first
request made, if it was stored, instead of a second one.

Every string a request stores has a fixed bound, and a longer or malformed one is refused
with the error -32602 naming the field, before anything is stored: a repository id 1 to 100
characters (letters, digits and ``- _ . : + @``); ``display_name``, ``description`` and
``notes`` 4096 printable characters; the importer's ``feed`` and ``proxy`` 2048 characters,
fully parsed (scheme http, https or, for a feed, file; a valid host name or IP address; a
port from 1 to 65535; no query or fragment), its ``ca_file`` 4096; a copy's ``name`` 200; a
``request_id`` 128 letters, digits and ``. _ : -``; a lock's resource type and id 200
each, its ``host`` 255, its ``command`` 256 arguments of 4096 characters. These do not
depend on the configuration; ``max_frame_bytes`` bounds a whole request on top of them.

A repository keeps its newest ``retain_versions`` versions (its own ``retain_versions``, set
with ``repo create`` or ``repo update``, wins) and always the one it publishes; older ones
are dropped when a new version is made. Content that no kept version names any more is
orphaned: ``coordctl content orphans remove`` deletes it, and so does the daemon itself
every ``orphan_cleanup_interval`` when that is not 0 (a heavy task on the content pool,
which waits for every sync, copy and rollback in progress and holds later ones back until
it ends), through a schedule of that name that ``coordctl content orphans schedules list``
shows; ``content orphans schedules create`` makes others. ``publish_grace`` is how long a
published tree that a publish replaced stays on disk, so that a client which read the old
``repomd.xml`` still finds the files it names.

``[signing] key`` is an OpenPGP secret key file (armored or not, as ``gpg
--export-secret-keys`` writes it; one primary key, whose signing subkey is used if it has
one), readable by the daemon's user and nobody else; ``passphrase_file`` holds its
passphrase on the first line, if it has one. A repository with ``sign_metadata`` set is
then published with ``repodata/repomd.xml.asc``, a detached armored signature of its
``repomd.xml``, and ``repodata/repomd.xml.key``, the public key, so that clients can set
``repo_gpgcheck=1``; publishing such a repository without a key fails. GnuPG (Debian's
``gnupg``) signs, in a private home made for each publish and removed after it: the key is
never imported into any keyring of the daemon's user or root. Both files must be readable when the
configuration is read: a missing one stops the daemon (or fails a reload).

A mistake in the file stops the daemon with a message naming the file, the table and the
key, and what was expected: an unknown key (with the nearest valid one, since a misspelt
key silently ignored is a setting silently not applied), a wrong type, a value out of
range, a group that does not exist. All problems are reported at once. Each kind of value
(paths, bounded integers, durations, levels, groups, modes) is read and checked by
:mod:`coordd.service.values`.

SIGHUP re-reads the file. Most settings take effect at once (:data:`RELOADABLE`); the
socket, its mode and the state directory are held open and change only at a restart, which
:meth:`Config.replace_reloadable` says in the log.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordd.api.address import SOCKET_ENV
from coordd.service import locations as paths
from coordd.service.values import (
    DAY,
    GROUP,
    LEVEL,
    MODE,
    Invalid,
    KiB,
    Kind,
    MiB,
    describe,
    duration_kind,
    int_kind,
    path_kind,
)

log = logging.getLogger("coordd.config")


class ConfigError(Exception):
    """The configuration cannot be used; the message says where and why, one problem a line.

    ``problems`` holds the same lines as a list.
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def default_heavy_slots(cpus: int | None = None) -> int:
    """How many heavy operations may run at once by default: half the CPUs, from 2 to 8.

    A heavy operation is already parallel inside (a sync downloads several packages at
    once and hashes them as they stream; a publish compresses metadata), so one slot per
    two CPUs leaves room for the light tasks and the machine's other work. At least 2, so
    one long sync does not hold up every publish on a small machine; at most 8, because
    past that the network, the disk and the mirrors' per-client limits are the bottleneck,
    not the CPU. ``cpus`` defaults to the CPUs this process may run on (which respects
    affinity and container pinning, unlike ``os.cpu_count``).
    """
    if cpus is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # not on Linux
            cpus = os.cpu_count() or 2
    return max(2, min(8, cpus // 2))


@dataclass(frozen=True)
class Config:
    """The effective configuration of one daemon.

    Build it with :func:`load_config` (or :meth:`defaults`); the constructor does no
    validation. Durations are seconds (``*_s``).
    """

    #: The Unix socket the daemon listens on (when it binds one itself).
    socket_path: Path
    #: The database and the repositories' content.
    state_dir: Path
    #: How many heavy operations (sync, publish) run at once; others wait "server busy".
    heavy_slots: int = dataclasses.field(default_factory=default_heavy_slots)
    #: How long ended tasks stay in the history before they are purged.
    retention_s: float = 7 * DAY
    #: The largest JSON-RPC message (one line) the daemon reads.
    max_frame_bytes: int = 1 * MiB
    #: The most requests in one JSON-RPC batch.
    max_batch: int = 100
    #: The most client connections open at once.
    max_connections: int = 256
    #: A connection that sends nothing for this long is closed.
    idle_timeout_s: float = 300.0
    #: The most connections one uid may have open, subscribers and lock holders included.
    max_connections_per_user: int = 64
    #: Of ``max_connections``, how many (at most half) only administrators may take.
    admin_reserved_connections: int = 16
    #: A request line must be complete this long after its first byte.
    request_timeout_s: float = 10.0
    #: Bytes waiting to be written to one client past which its requests are not read.
    max_send_queue_bytes: int = 256 * KiB
    #: Bytes waiting for all clients together past which clients with unread replies wait.
    max_send_queue_total_bytes: int = 16 * MiB
    #: A canceled running task's time to stop on its own before it is stopped hard.
    cancel_grace_s: float = 10.0
    #: How long a task held by a client connection (``coordctl run``) survives that
    #: connection dropping, waiting for the client to come back.
    reattach_grace_s: float = 30.0
    #: How many times a restartable task is run in all, across crashes and restarts.
    max_attempts: int = 3
    #: How often a running task's progress report is written to the database.
    progress_persist_interval_s: float = 2.0
    #: How long the database writer may leave a commit unanswered before the daemon stops.
    commit_timeout_s: float = 30.0
    #: How many versions a repository keeps (unless its own ``retain_versions`` says).
    retain_versions: int = 10
    #: How long a published tree replaced by a newer publish stays readable.
    publish_grace_s: float = 300.0
    #: How often the daemon removes orphaned content by itself; 0: never.
    orphan_cleanup_interval_s: float = 0.0
    #: Members may mutate. None: only root and the daemon's own user may.
    admin_group: str | None = None
    #: Members may read. None: anyone who can open the socket may read (the socket file's
    #: permissions are then the gate).
    read_group: str | None = None
    #: Permissions of the socket file the daemon binds (0o660 as the system service).
    socket_mode: int = 0o600
    #: debug, info, warning or error.
    log_level: str = "info"
    #: The OpenPGP secret key that signs published repomd.xml; None: no signing.
    signing_key: Path | None = None
    #: A file whose first line is ``signing_key``'s passphrase; None: it has none.
    signing_passphrase_file: Path | None = None

    @classmethod
    def defaults(cls, system: bool) -> Config:
        """The embedded defaults for the system service or a user daemon."""
        where = paths.default_paths(system)
        return cls(
            socket_path=where.socket,
            state_dir=where.state_dir,
            socket_mode=0o660 if system else 0o600,
        )

    def to_toml(self) -> str:
        """The configuration as a TOML file that :func:`load_config` reads back equal."""
        out = ["# coordd: the configuration in effect", ""]
        table: str | None = None
        for spec in _SPECS:
            if spec.table != table:
                table = spec.table
                out += ["", f"[{table}]"]
            out.append(f"# {spec.doc}")
            value = getattr(self, spec.field)
            if value is None:
                out.append(f'# {spec.key} = ""   (not set)')
            else:
                out.append(f"{spec.key} = {spec.kind.to_toml(value)}")
        return "\n".join(out) + "\n"

    def replace_reloadable(self, new: Config) -> Config:
        """This configuration with the settings SIGHUP may change taken from ``new``.

        Each applied change is logged; a change to a setting that needs a restart is
        logged as a warning and not applied.
        """
        changes: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            old_value, new_value = getattr(self, field.name), getattr(new, field.name)
            if old_value == new_value:
                continue
            if field.name in RELOADABLE:
                log.info("configuration: %s is now %r (was %r)", field.name, new_value, old_value)
                changes[field.name] = new_value
            else:
                log.warning(
                    "configuration: %s changed to %r but stays %r until coordd is restarted",
                    field.name,
                    new_value,
                    old_value,
                )
        return dataclasses.replace(self, **changes)


#: Settings that need a restart: the socket and the state directory are held open.
RESTART_REQUIRED = frozenset({"socket_path", "state_dir", "socket_mode"})
#: Settings SIGHUP changes in a running daemon.
RELOADABLE = frozenset(f.name for f in dataclasses.fields(Config)) - RESTART_REQUIRED


@dataclass(frozen=True)
class _Spec:
    table: str | None  # None: top level
    key: str
    field: str
    kind: Kind
    doc: str

    @property
    def where(self) -> str:
        return self.key if self.table is None else f"{self.table}.{self.key}"


_SPECS = (
    _Spec(
        None, "socket", "socket_path", path_kind(), "socket path (unused when systemd passes it)"
    ),
    _Spec(None, "state_dir", "state_dir", path_kind(), "database and repository content"),
    _Spec(None, "log_level", "log_level", LEVEL, "debug, info, warning or error"),
    _Spec("tasks", "heavy_slots", "heavy_slots", int_kind(1, 256), "heavy operations at once"),
    _Spec("tasks", "retention", "retention_s", duration_kind(0), "history kept for ended tasks"),
    _Spec("tasks", "max_attempts", "max_attempts", int_kind(1, 100), "runs of a restartable task"),
    _Spec("tasks", "cancel_grace", "cancel_grace_s", duration_kind(0), "time to stop on cancel"),
    _Spec(
        "tasks",
        "reattach_grace",
        "reattach_grace_s",
        duration_kind(0),
        "a client-held task's wait for its client to reconnect",
    ),
    _Spec(
        "tasks",
        "progress_persist_interval",
        "progress_persist_interval_s",
        duration_kind(0.01),
        "how often progress is saved",
    ),
    _Spec(
        "content",
        "retain_versions",
        "retain_versions",
        int_kind(1, 10_000),
        "versions a repository keeps",
    ),
    _Spec(
        "content",
        "publish_grace",
        "publish_grace_s",
        duration_kind(0),
        "how long a replaced published tree stays",
    ),
    _Spec(
        "content",
        "orphan_cleanup_interval",
        "orphan_cleanup_interval_s",
        duration_kind(0),
        "how often orphaned content is removed (0: never)",
    ),
    _Spec(
        "limits",
        "max_frame_bytes",
        "max_frame_bytes",
        int_kind(1024, 64 * MiB),
        "largest request line in bytes",
    ),
    _Spec("limits", "max_batch", "max_batch", int_kind(1, 10_000), "requests in one batch"),
    _Spec("limits", "max_connections", "max_connections", int_kind(1, 65_536), "open connections"),
    _Spec(
        "limits",
        "max_connections_per_user",
        "max_connections_per_user",
        int_kind(1, 65_536),
        "open connections of one uid",
    ),
    _Spec(
        "limits",
        "admin_reserved_connections",
        "admin_reserved_connections",
        int_kind(0, 65_536),
        "places only administrators may take",
    ),
    _Spec("limits", "idle_timeout", "idle_timeout_s", duration_kind(1), "idle connections close"),
    _Spec(
        "limits",
        "request_timeout",
        "request_timeout_s",
        duration_kind(0.1),
        "time to send a whole request line",
    ),
    _Spec(
        "limits",
        "max_send_queue_bytes",
        "max_send_queue_bytes",
        int_kind(4096, 1024 * MiB),
        "unsent bytes for one client before its requests wait",
    ),
    _Spec(
        "limits",
        "max_send_queue_total_bytes",
        "max_send_queue_total_bytes",
        int_kind(4096, 64 * 1024 * MiB),
        "unsent bytes for all clients",
    ),
    _Spec(
        "store",
        "commit_timeout",
        "commit_timeout_s",
        duration_kind(1),
        "a commit the writer leaves unanswered this long stops the daemon",
    ),
    _Spec("access", "admin_group", "admin_group", GROUP, "members may mutate"),
    _Spec("access", "read_group", "read_group", GROUP, "members may read"),
    _Spec("access", "socket_mode", "socket_mode", MODE, "socket file permissions"),
    _Spec("signing", "key", "signing_key", path_kind(), "secret key that signs repomd.xml"),
    _Spec(
        "signing",
        "passphrase_file",
        "signing_passphrase_file",
        path_kind(),
        "the signing key's passphrase, on the first line",
    ),
)
_BY_FIELD = {spec.field: spec for spec in _SPECS}
_TABLES: dict[str | None, dict[str, _Spec]] = {}
for _spec in _SPECS:
    _TABLES.setdefault(_spec.table, {})[_spec.key] = _spec
del _spec


def _suggest(name: str, candidates: list[str]) -> str:
    """``; did you mean 'x'?`` naming the nearest candidate, or the list of them all.

    A candidate written ``[name]`` is a table and is shown that way.
    """
    bare = [candidate.strip("[]") for candidate in candidates]
    close = difflib.get_close_matches(name, bare, n=1, cutoff=0.6)
    if close:
        shown = candidates[bare.index(close[0])]
        return f"; did you mean {shown if shown.startswith('[') else repr(shown)}?"
    return f"; valid: {', '.join(candidates)}"


def _parse_file(document: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    values: dict[str, Any] = {}
    problems: list[str] = []

    def take(spec: _Spec, value: object) -> None:
        try:
            values[spec.field] = spec.kind.parse(value, True)
        except Invalid as exc:
            problems.append(f"{spec.where}: {exc}")

    top = _TABLES[None]
    tables = [name for name in _TABLES if name is not None]
    for key, value in document.items():
        if key in top:
            if isinstance(value, dict):
                problems.append(f"{key} must be a value, not a table")
            else:
                take(top[key], value)
        elif key in tables:
            if not isinstance(value, dict):
                problems.append(f"[{key}] must be a table, not {describe(value)}")
                continue
            specs = _TABLES[key]
            for sub, sub_value in value.items():
                if sub in specs:
                    take(specs[sub], sub_value)
                else:
                    problems.append(f"unknown key {sub!r} in [{key}]" + _suggest(sub, list(specs)))
        else:
            what = f"table [{key}]" if isinstance(value, dict) else f"key {key!r} at the top level"
            candidates = list(top) + [f"[{table}]" for table in tables]
            problems.append(f"unknown {what}" + _suggest(key, candidates))
    return values, problems


def _read_file(config_file: Path, explicit: bool) -> Mapping[str, Any] | None:
    try:
        with config_file.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        if explicit:
            raise ConfigError([f"configuration file {config_file} does not exist"]) from None
        return None
    except OSError as exc:
        raise ConfigError(
            [f"cannot read configuration file {config_file}: {exc.strerror}"]
        ) from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{config_file}: not valid TOML: {exc}"]) from exc


def environment_overrides(environ: Mapping[str, str] | None = None) -> dict[str, Path]:
    """The overrides ``COORDD_SOCKET`` and ``COORDD_STATE_DIR`` ask for (empty counts unset).

    The command line's own flags go on top of these.
    """
    environ = os.environ if environ is None else environ
    overrides: dict[str, Path] = {}
    for variable, field in ((SOCKET_ENV, "socket_path"), (paths.STATE_DIR_ENV, "state_dir")):
        if environ.get(variable):
            overrides[field] = Path(environ[variable])
    return overrides


def load_config(config_file: Path | None, overrides: Mapping[str, Any], system: bool) -> Config:
    """The effective configuration: defaults, then ``config_file``, then ``overrides``.

    ``config_file`` None means the default file for ``system``, which may be missing; a
    file named explicitly must exist. ``overrides`` are keyed by :class:`Config` field
    name; a None value means "not given" (as argparse leaves an unused option), so a
    namespace's ``vars()`` can be passed after renaming. Raises :class:`ConfigError`.
    """
    config = Config.defaults(system)
    explicit = config_file is not None
    if config_file is None:
        config_file = paths.default_paths(system).config_file
    values: dict[str, Any] = {}
    problems: list[str] = []
    document = _read_file(config_file, explicit)
    if document is not None:
        values, file_problems = _parse_file(document)
        problems += [f"{config_file}: {problem}" for problem in file_problems]
    for field, value in overrides.items():
        if value is None:
            continue
        spec = _BY_FIELD.get(field)
        if spec is None:
            problems.append(f"unknown setting {field!r}" + _suggest(field, list(_BY_FIELD)))
            continue
        try:
            values[field] = spec.kind.parse(value, False)
        except Invalid as exc:
            problems.append(f"{field} (command line or environment): {exc}")
    problems += [f"{config_file}: {problem}" for problem in _check_signing(values)]
    if problems:
        raise ConfigError(problems)
    return dataclasses.replace(config, **values)


def _check_signing(values: Mapping[str, Any]) -> list[str]:
    """The signing files must be readable now, not at the first publish that needs them."""
    problems: list[str] = []
    for field in ("signing_key", "signing_passphrase_file"):
        path = values.get(field)
        if path is None:
            continue
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            problems.append(f"{_BY_FIELD[field].where}: cannot read {path}: {exc.strerror}")
    if values.get("signing_passphrase_file") and not values.get("signing_key"):
        problems.append("signing.passphrase_file: there is no signing.key it could unlock")
    return problems
