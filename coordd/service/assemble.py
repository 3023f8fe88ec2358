"""The daemon's parts, put together over an open store: one wiring for the daemon and tests."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable

import anyio.to_thread

from coordd.api.errors import Unavailable
from coordd.api.methods import Services
from coordd.content.migrate import migrate
from coordd.content.store import ContentStore
from coordd.engine.clock import Clock, WallClock
from coordd.engine.locks import Locks, lock_operation
from coordd.engine.operations import Registry
from coordd.engine.runtime import Runtime
from coordd.engine.settings import EngineSettings
from coordd.repo.autopublish import AutoPublish
from coordd.repo.queries import ContentQueries
from coordd.repo.repositories import ContentSettings, Repositories, resource
from coordd.repo.schedules import Scheduler
from coordd.service.config import Config
from coordd.store.database import Store


def engine_settings(config: Config) -> EngineSettings:
    """What the task engine reads of the configuration."""
    return EngineSettings(
        heavy_slots=config.heavy_slots,
        retention_s=config.retention_s,
        cancel_grace_s=config.cancel_grace_s,
        reattach_grace_s=config.reattach_grace_s,
        max_attempts=config.max_attempts,
        progress_persist_interval_s=config.progress_persist_interval_s,
    )


def content_settings(config: Config) -> ContentSettings:
    """What the content operations read of the configuration."""
    return ContentSettings(
        retain_versions=config.retain_versions,
        publish_grace=config.publish_grace_s,
        signing_key=None if config.signing_key is None else str(config.signing_key),
        signing_passphrase_file=(
            None if config.signing_passphrase_file is None else str(config.signing_passphrase_file)
        ),
    )


async def build_services(
    config: Config,
    store: Store,
    *,
    clock: Callable[[], float] = time.time,
    schedule_clock: Clock | None = None,
) -> Services:
    """Repositories loaded, every operation registered, a runtime ready to ``start``, and
    the scheduler ready to ``start`` after it (``schedule_clock``: the wall clock unless
    given; its ``now`` should be ``clock``)."""
    content = ContentStore(config.state_dir)
    try:
        await anyio.to_thread.run_sync(content.open)
    except (OSError, sqlite3.Error, RuntimeError) as exc:
        raise Unavailable(f"the content store failed: {exc}") from exc
    repos = Repositories(store, config.state_dir, content, content_settings(config))
    await repos.load()
    try:
        migrated = await anyio.to_thread.run_sync(
            migrate, config.state_dir, content, set(repos.repos)
        )
    except (OSError, sqlite3.Error, ValueError) as exc:
        raise Unavailable(f"migrating the repositories to the content store failed: {exc}") from exc
    if migrated:
        await repos.load()
    locks = Locks()
    registry = Registry([*repos.operations(), lock_operation(locks)])
    runtime = Runtime(
        engine_settings(config),
        store,
        registry,
        existing=[resource(r) for r in repos.repos],
        clock=clock,
    )
    queries = ContentQueries(repos)
    await queries.refresh()
    scheduler = Scheduler(store, runtime, repos, schedule_clock or WallClock(), own_uid=os.getuid())
    scheduler.configure_orphan_cleanup(config.orphan_cleanup_interval_s)
    autopublish = AutoPublish(runtime, repos)
    return Services(runtime, repos, locks, queries, scheduler, autopublish)
