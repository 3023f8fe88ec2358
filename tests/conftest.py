from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

# The helpers assert too (``create``, the harness): with pytest's messages, as in a test.
pytest.register_assert_rewrite("tests.helpers")

from tests.helpers.daemon import DaemonProcess  # noqa: E402 - after the rewrite is registered


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    """A real coordd on a socket in a temporary directory, with a fresh state."""
    process = DaemonProcess(tmp_path / "state")
    try:
        yield process.start()
    finally:
        process.cleanup()


@pytest.fixture
def make_daemon(tmp_path: Path) -> Iterator[type[DaemonProcess] | object]:
    """A factory for daemons with extra command-line arguments (not started)."""
    made: list[DaemonProcess] = []

    def factory(extra_args: list[str] | None = None, name: str = "state") -> DaemonProcess:
        process = DaemonProcess(tmp_path / name, extra_args)
        made.append(process)
        return process

    try:
        yield factory
    finally:
        for process in made:
            process.cleanup()
