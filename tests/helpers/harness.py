"""The runtime and the method table in the test's own event loop: no daemon, no socket.

``running(path)`` opens a real ``Store`` on a real SQLite file (its writer process and all),
wires the daemon's parts exactly as ``coordd`` does (``coordd.service.assemble``), starts
the runtime in a task group of the test, and stops it as the daemon stops at shutdown:
running tasks are cancelled without recording an end, so a second ``running`` on the same
file is a restart. Methods are called as a socket client would call them, as JSON-RPC
requests dispatched for a ``Caller`` with a uid; answers are results, errors are raised as
the ``CoorddError`` class the client library would raise.
"""

from __future__ import annotations

import contextlib
import itertools
import time
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from coordd.api.errors import from_json
from coordd.engine.operations import Operation
from coordd.engine.runtime import Runtime
from coordd.service.config import Config
from coordd.store.database import Store

with warnings.catch_warnings():
    # jsonrpcserver 5.0.9 reads its schema with a deprecated call, at import time.
    warnings.filterwarnings("ignore", "(read|open)_text is deprecated", DeprecationWarning)
    from coordd.api.methods import Api, Caller, Services
    from coordd.service.assemble import build_services

ADMIN = frozenset({"read", "admin"})
READ = frozenset({"read"})


@dataclass
class Client:
    """One connection's caller, and the notifications sent to it."""

    harness: Harness
    caller: Caller
    notes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def call(self, method: str, **params: Any) -> Any:
        return await self.harness.call(method, caller=self.caller, **params)

    def notified(self, method: str) -> list[dict[str, Any]]:
        return [params for name, params in self.notes if name == method]

    async def close(self) -> None:
        """The connection closed, as the server reports it."""
        await self.harness.api.connection_closed(self.caller)


@dataclass
class Harness:
    store: Store
    services: Services
    api: Api
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def runtime(self) -> Runtime:
        return self.services.runtime

    def client(self, uid: int = 1000, access: frozenset[str] = ADMIN) -> Client:
        notes: list[tuple[str, dict[str, Any]]] = []
        caller = Caller(
            uid=uid,
            gid=uid,
            pid=4242,
            access=access,
            notify=lambda method, params: notes.append((method, params)),
        )
        return Client(self, caller, notes)

    async def call(self, method: str, *, caller: Caller | None = None, **params: Any) -> Any:
        """Dispatch one request as the socket server would; the result, or raise its error."""
        request = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        answer = await self.api.dispatch(request, caller or self.client().caller)
        assert answer is not None
        if "error" in answer:
            raise from_json(answer["error"])
        return answer["result"]


def config_for(state_dir: Path, **settings: Any) -> Config:
    """The embedded defaults, for a state in ``state_dir``, with ``settings`` changed."""
    return Config(socket_path=state_dir / "unused.sock", state_dir=state_dir, **settings)


@contextlib.asynccontextmanager
async def running(
    state_dir: Path,
    *,
    operations: list[Operation] | None = None,
    clock: Callable[[], float] = time.time,
    schedule_clock: Any = None,
    **settings: Any,
) -> AsyncIterator[Harness]:
    """A started runtime and its method table on ``state_dir/coordd.db``.

    ``schedule_clock``: the scheduler's clock (``tests.helpers.clock.FakeClock``; its ``now``
    should also be ``clock``). ``operations``: extra operations to register beside the
    daemon's own (a test's stand-in for a long task); ``settings``: configuration fields to
    change (``retention_s=…``).
    """
    config = config_for(state_dir, **settings)
    store = Store(state_dir / "coordd.db")
    await store.open()
    try:
        services = await build_services(config, store, clock=clock, schedule_clock=schedule_clock)
        for op in operations or ():
            services.runtime.operations.add(op)
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.run_writer)
            await services.runtime.start(tg)
            assert services.scheduler is not None
            await services.scheduler.start(tg)
            if services.autopublish is not None:
                await services.autopublish.catch_up()
            yield Harness(store, services, Api(services))
            # As the daemon stops: nothing new starts, running tasks stop without an end.
            await services.runtime.shutdown(0)
            with anyio.move_on_after(5):
                await store.flush()
            store.stop_writer()
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await store.close()
