"""The daemon's parts, put together over an open store: one wiring for the daemon and tests."""

from __future__ import annotations

import time
from collections.abc import Callable

from coordd.api.methods import Services
from coordd.engine.locks import Locks, lock_operation
from coordd.engine.operations import Registry
from coordd.engine.runtime import Runtime
from coordd.engine.settings import EngineSettings
from coordd.repo.repositories import Repositories, resource
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


async def build_services(
    config: Config, store: Store, *, clock: Callable[[], float] = time.time
) -> Services:
    """Repositories loaded, every operation registered, a runtime ready to ``start``."""
    repos = Repositories(store, config.state_dir)
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
    return Services(runtime, repos, locks)
