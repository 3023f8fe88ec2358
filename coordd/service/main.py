"""``coordd``: the daemon's command line, start-up, signals and shutdown.

Start-up order matters: raise the open-file limit (connections get what it leaves after a
reserve: :mod:`coordd.service.descriptors`), take the instance lock (so a second daemon on
the same state refuses to start, naming the first), open and migrate the database, recover
tasks, then bind the socket (a second daemon on a live socket refuses too, naming the pid
that serves it) or take the one systemd passed, and only then tell systemd ``READY=1``.

Signals: SIGTERM or SIGINT stop accepting work, give running tasks ``cancel_grace_s`` to
finish, stop the rest (restartable ones resume at the next start) and exit 0; a second SIGINT
or SIGTERM exits at once. SIGHUP re-reads the configuration file. A database failure exits
with status 70 (EX_SOFTWARE) so the supervisor restarts the daemon on what is on disk.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import fcntl
import grp
import logging
import os
import signal
import socket
import struct
import sys
from pathlib import Path
from typing import Any, TextIO

import anyio
from anyio.abc import SocketListener

from coordd import __version__
from coordd.api.access import AccessPolicy
from coordd.api.errors import Unavailable
from coordd.api.limits import Limits
from coordd.api.methods import Api
from coordd.api.server import Server
from coordd.engine.clock import Clock, FileClock, WallClock
from coordd.engine.runtime import Runtime
from coordd.repo.leftovers import clear_leftovers
from coordd.repo.repositories import REPOSITORY, Repositories
from coordd.repo.schedules import Scheduler
from coordd.service import descriptors, systemd
from coordd.service.assemble import build_services, content_settings, engine_settings
from coordd.service.config import Config, ConfigError, environment_overrides, load_config
from coordd.service.log import set_level, setup_logging
from coordd.store.database import Store

log = logging.getLogger("coordd")

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_CONFIG = 78  # EX_CONFIG
EXIT_RUNNING = 75  # EX_TEMPFAIL: another instance holds the state or the socket
EXIT_DATABASE = 70  # EX_SOFTWARE
TEST_CLOCK_ENV = "COORDD_TEST_CLOCK_FILE"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coordd",
        description=(
            "coordd manages yum/dnf repositories for concurrent users: every change is a task, "
            "and a coordinator runs it now, postpones it until it is safe, or rejects it."
        ),
        epilog=(
            "Without --system and as a user, coordd listens on "
            "$XDG_RUNTIME_DIR/coordd/coordd.sock and keeps its state in ~/.local/state/coordd. "
            "See coordd(8) and coordctl(1)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"coordd {__version__}")
    parser.add_argument(
        "--system",
        action="store_true",
        help="use the system service's locations (/run/coordd, /var/lib/coordd, /etc/coordd); "
        "the default as root",
    )
    parser.add_argument(
        "--socket", type=Path, metavar="PATH", help="the Unix socket to listen on ($COORDD_SOCKET)"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="where the database and repositories live ($COORDD_STATE_DIR)",
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="the TOML configuration file")
    parser.add_argument(
        "--heavy-slots", type=int, metavar="N", help="how many heavy operations run at once"
    )
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="the logging level"
    )
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="validate the configuration, print the effective settings and exit",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    system = args.system or os.geteuid() == 0
    overrides: dict[str, Any] = dict(environment_overrides())
    for field, value in (
        ("socket_path", args.socket),
        ("state_dir", args.state_dir),
        ("heavy_slots", args.heavy_slots),
        ("log_level", args.log_level),
    ):
        if value is not None:
            overrides[field] = value
    try:
        config = load_config(args.config, overrides, system)
    except ConfigError as exc:
        print(f"coordd: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.check_config:
        sys.stdout.write(config.to_toml())
        budget = descriptors.connection_budget(
            descriptors.reachable_open_file_limit(), config.heavy_slots
        )
        problem = budget.problem(config.max_connections)
        if problem is not None:
            print(f"coordd: warning: {problem}", file=sys.stderr)
        return EXIT_OK
    setup_logging(config.log_level)
    daemon = Daemon(config, config_file=args.config, overrides=overrides, system=system)
    try:
        return anyio.run(daemon.run, backend_options={"use_uvloop": True})
    except KeyboardInterrupt:
        return 130


class AlreadyRunning(Exception):
    pass


class Daemon:
    """One running coordd."""

    def __init__(
        self,
        config: Config,
        *,
        config_file: Path | None = None,
        overrides: dict[str, Any] | None = None,
        system: bool = False,
    ) -> None:
        self.config = config
        self.config_file = config_file
        self.overrides = overrides or {}
        self.system = system
        self._lock_file: TextIO | None = None
        self._stop = anyio.Event()
        self._signals = 0
        self._open_files = 0  # the soft RLIMIT_NOFILE, once raised
        self._store: Store | None = None
        self._repos: Repositories | None = None
        self._scheduler: Scheduler | None = None

    async def run(self) -> int:
        config = self.config
        self._open_files = descriptors.raise_open_file_limit()
        try:
            config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
            self._take_instance_lock()
        except AlreadyRunning as exc:
            log.error("%s", exc)
            return EXIT_RUNNING
        except OSError as exc:
            log.error("cannot use the state directory %s: %s", config.state_dir, exc.strerror)
            return EXIT_CONFIG
        _clear_leftovers(config.state_dir)
        store = Store(config.state_dir / "coordd.db", config.commit_timeout_s)
        self._store = store
        try:
            await store.open()
        except Unavailable as exc:
            log.critical("%s", exc.message)
            return EXIT_DATABASE
        try:
            return await self._serve(store)
        except Unavailable as exc:  # the database failed before the daemon served
            log.critical("exiting: %s", exc.message)
            return EXIT_DATABASE
        except BaseExceptionGroup as group:
            # From the task group: the database failed in one or more of its tasks.
            failures = _unavailable_leaves(group)
            if failures is None:
                raise
            if store.fatal is None:
                log.critical("exiting: %s", failures[0].message)
            return EXIT_DATABASE
        finally:
            with anyio.CancelScope(shield=True):
                await store.close()
            if store.fatal is not None:
                log.critical("exiting: the database failed (%s)", store.fatal)

    async def _serve(self, store: Store) -> int:
        config = self.config
        clock = daemon_clock()
        services = await build_services(config, store, clock=clock.now, schedule_clock=clock)
        self._repos = services.repos
        runtime, locks = services.runtime, services.locks
        api = Api(services)
        limits = self._limits()
        policy = AccessPolicy(config.admin_group, config.read_group)
        server = Server(api, limits, policy)
        try:
            listeners = await self._listeners()
        except AlreadyRunning as exc:
            log.error("%s", exc)
            return EXIT_RUNNING
        except OSError as exc:
            log.error("cannot listen on %s: %s", config.socket_path, exc.strerror)
            return EXIT_CONFIG
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.run_writer)
            tg.start_soon(store.watch_commits)
            await runtime.start(tg)
            assert REPOSITORY in runtime.coordinator.tracked_types
            serve_scope = anyio.CancelScope()

            async def serve() -> None:
                with serve_scope:
                    await server.serve(listeners, ready=lambda: self._ready(runtime))

            tg.start_soon(serve)
            tg.start_soon(self._signal_loop, runtime, server, policy)
            tg.start_soon(self._watchdog_loop, runtime)
            tg.start_soon(locks.withdraw_unattached, runtime)
            assert services.scheduler is not None
            await services.scheduler.start(tg)
            self._scheduler = services.scheduler
            if services.autopublish is not None:
                await services.autopublish.catch_up()
            with anyio.CancelScope() as wait_scope:
                tg.start_soon(_cancel_on, store.fatal_event, wait_scope)
                await self._stop.wait()
            if store.fatal is not None:
                tg.cancel_scope.cancel()
                return EXIT_DATABASE
            systemd.stopping()
            log.info("shutting down: running tasks get %.0f s to finish", config.cancel_grace_s)
            serve_scope.cancel()
            await runtime.shutdown(config.cancel_grace_s)
            server.close_all()
            with anyio.move_on_after(5):
                await store.flush()
            store.stop_writer()
            tg.cancel_scope.cancel()
        if store.fatal is not None:
            return EXIT_DATABASE
        self._remove_socket()
        log.info("stopped")
        return EXIT_OK

    def _ready(self, runtime: Runtime) -> None:
        log.info(
            "coordd %s ready on %s (state %s, %d heavy slots)",
            __version__,
            self.config.socket_path,
            self.config.state_dir,
            self.config.heavy_slots,
        )
        systemd.ready()
        systemd.status(_status_line(runtime))

    # -- instance lock and socket ---------------------------------------------------------

    def _take_instance_lock(self) -> None:
        path = self.config.state_dir / "coordd.lock"
        handle = open(path, "a+")  # noqa: SIM115 - held open for the daemon's whole life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.seek(0)
            holder = handle.read().strip() or "unknown pid"
            handle.close()
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise AlreadyRunning(
                    f"another coordd is running on state {self.config.state_dir} ({holder}); "
                    "stop it first or use another --state-dir"
                ) from exc
            raise
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}, socket {self.config.socket_path}\n")
        handle.flush()
        self._lock_file = handle

    async def _listeners(self) -> list[SocketListener]:
        passed = systemd.listen_fds()
        if passed:
            listeners = []
            for fd, name in passed:
                sock = socket.socket(fileno=fd)
                listeners.append(await anyio.abc.SocketListener.from_socket(sock))
                log.info("listening on socket passed by systemd (fd %d, %s)", fd, name)
            return listeners
        path = self.config.socket_path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755 if self.system else 0o700)
        if path.exists() or path.is_symlink():
            alive, holder = _socket_holder(path)
            if alive:
                raise AlreadyRunning(
                    f"another coordd is serving {path} ({holder}); "
                    "stop it first or use another --socket"
                )
            path.unlink()  # left behind by a daemon that died
        listener = await anyio.create_unix_listener(path)
        os.chmod(path, self.config.socket_mode)
        group = self.config.read_group or self.config.admin_group
        if group and os.geteuid() == 0:
            os.chown(path, 0, grp.getgrnam(group).gr_gid)
        self._bound_socket = path
        return [listener]

    def _remove_socket(self) -> None:
        path = getattr(self, "_bound_socket", None)
        if path is not None:
            with contextlib.suppress(OSError):
                path.unlink()

    # -- signals and housekeeping ---------------------------------------------------------

    async def _signal_loop(self, runtime: Runtime, server: Server, policy: AccessPolicy) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    self._reload(runtime, server, policy)
                    continue
                self._signals += 1
                if self._signals > 1:
                    log.warning("second stop signal: exiting at once")
                    os._exit(EXIT_OK if signum == signal.SIGTERM else 130)
                self._stop.set()

    def _reload(self, runtime: Runtime, server: Server, policy: AccessPolicy) -> None:
        systemd.reloading()
        try:
            fresh = load_config(self.config_file, self.overrides, self.system)
        except ConfigError as exc:
            log.error("reload refused, keeping the current configuration: %s", exc)
            systemd.ready()
            return
        config = self.config.replace_reloadable(fresh)
        self.config = config
        runtime.settings = engine_settings(config)
        runtime.set_slots(config.heavy_slots)
        if self._repos is not None:
            self._repos.settings = content_settings(config)
        if self._scheduler is not None:
            self._scheduler.configure_orphan_cleanup(config.orphan_cleanup_interval_s)
        if self._store is not None:
            self._store.commit_timeout_s = config.commit_timeout_s
        limits = self._limits()
        for field in dataclasses.fields(Limits):  # in place: open connections see it too
            setattr(server.limits, field.name, getattr(limits, field.name))
        policy.reset(config.admin_group, config.read_group)
        set_level(config.log_level)
        log.info("configuration reloaded")
        systemd.ready()

    def _limits(self) -> Limits:
        """The server's limits from the configuration; connections within what the
        open-file limit leaves (:mod:`coordd.service.descriptors`)."""
        config = self.config
        budget = descriptors.connection_budget(self._open_files, config.heavy_slots)
        problem = budget.problem(config.max_connections)
        if problem is not None:
            log.warning("%s", problem)
        return Limits(
            max_frame_bytes=config.max_frame_bytes,
            max_batch=config.max_batch,
            max_connections=min(config.max_connections, budget.connections),
            max_connections_per_user=config.max_connections_per_user,
            admin_reserved_connections=config.admin_reserved_connections,
            idle_timeout_s=config.idle_timeout_s,
            request_timeout_s=config.request_timeout_s,
            max_send_queue_bytes=config.max_send_queue_bytes,
            max_send_queue_total_bytes=config.max_send_queue_total_bytes,
        )

    async def _watchdog_loop(self, runtime: Runtime) -> None:
        interval = systemd.watchdog_interval()
        tick = min(interval, 5.0) if interval else 5.0
        while True:
            if interval:
                systemd.watchdog()
            systemd.status(_status_line(runtime))
            await anyio.sleep(tick)


def daemon_clock() -> Clock:
    """The wall clock; for tests, the clock ``COORDD_TEST_CLOCK_FILE`` names (an
    environment variable, so that only whoever starts the daemon can move its time: see
    ``coordd.engine.clock``)."""
    path = os.environ.get(TEST_CLOCK_ENV)
    if path:
        log.warning(
            "%s is set: the time of day comes from %s (for tests only)", TEST_CLOCK_ENV, path
        )
        return FileClock(Path(path))
    return WallClock()


def _clear_leftovers(state_dir: Path) -> None:
    """Remove what interrupted operations left (``coordd.repo.leftovers``), first of all:
    on a full disk that may be what makes room for the database."""
    cleared = clear_leftovers(state_dir)
    if cleared.paths:
        log.info(
            "removed %d temporary files or directories of interrupted operations (%d bytes)",
            cleared.paths,
            cleared.bytes,
        )
    for problem in cleared.errors or ():
        log.warning("cannot remove a temporary file of an interrupted operation: %s", problem)


def _unavailable_leaves(group: BaseExceptionGroup[BaseException]) -> list[Unavailable] | None:
    """The ``Unavailable`` errors of ``group`` if they are all it holds (cancellations of
    the other tasks aside), else None."""
    failures: list[Unavailable] = []
    for leaf in _leaves(group):
        if isinstance(leaf, Unavailable):
            failures.append(leaf)
        elif not isinstance(leaf, asyncio.CancelledError):  # the daemon runs on asyncio
            return None
    return failures or None


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


async def _cancel_on(event: anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


def _status_line(runtime: Runtime) -> str:
    counts = runtime.counts
    slots = runtime.coordinator
    return (
        f"{counts['running']} running, {counts['waiting']} waiting; "
        f"heavy slots {slots.heavy_running}/{slots.slots}"
    )


def _socket_holder(path: Path) -> tuple[bool, str]:
    """Whether a server answers on ``path``, and who: ``"pid N"`` from its credentials.

    A connected Unix socket's peer credentials are those of the process that called
    ``listen()``: the daemon itself, or systemd when it holds the socket for activation.
    """
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
        try:
            creds = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            pid = struct.unpack("3i", creds)[0]
        except OSError:
            return True, "unknown pid"
    except OSError:
        return False, ""
    finally:
        probe.close()
    if pid <= 0:
        return True, "unknown pid"
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        name = ""
    if pid == 1 or name == "systemd":
        return True, f"pid {pid}, systemd, which holds the socket for coordd.socket"
    return True, f"pid {pid}"


if __name__ == "__main__":
    sys.exit(main())
