"""Hostile values for every string the API stores: each is refused with -32602 naming the
field, never stored, and never an internal error (no traceback in the daemon's log)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coordd.api.errors import INVALID_PARAMS, InvalidRequest
from tests.helpers.daemon import DaemonProcess, create

HUGE = "x" * (10 << 20)  # 10 MB
LONG_URL = "http://feed.example/" + "a" * 3000

BAD_URLS = [
    "http://" + HUGE,
    LONG_URL,
    "http://[::1/",
    "http://[zz]/",
    "http://127.0.0.1:abc/",
    "http://127.0.0.1:0/",
    "http://127.0.0.1:65536/",
    "http://127.0.0.1:99999999999/",
    "http://bad host/",
    "http://-bad.example/",
    "http://a..b/",
    "http:///no-host",
    "http://:8080/",
    "ftp://feed.example/",
    "javascript:alert(1)",
    "http://feed.example/\x00",
    "http://feed.example/?q=1",
]

# (method, params, the field the error must name)
CASES: list[tuple[str, dict[str, Any], str]] = [
    ("repo.create", {"repo_id": HUGE}, "repo_id"),
    ("repo.create", {"repo_id": "x" * 101}, "repo_id"),
    ("repo.create", {"repo_id": "../etc"}, "repo_id"),
    ("repo.create", {"repo_id": "new", "display_name": HUGE}, "display_name"),
    ("repo.create", {"repo_id": "new", "description": HUGE}, "description"),
    ("repo.create", {"repo_id": "new", "notes": HUGE}, "notes"),
    ("repo.create", {"repo_id": "new", "notes": "bell\x07"}, "notes"),
    ("repo.create", {"repo_id": "new", "importer": {"ca_file": HUGE}}, "ca_file"),
    ("repo.update", {"repo_id": "demo", "importer": {"ca_file": HUGE}}, "ca_file"),
    ("repo.update", {"repo_id": "demo", "display_name": HUGE}, "display_name"),
    ("repo.create", {"repo_id": "new", "importer": {"gpgkey": HUGE}}, "gpgkey"),
    ("repo.update", {"repo_id": "demo", "importer": {"gpgkey": "bell\x07"}}, "gpgkey"),
    ("repo.update", {"repo_id": "demo", "sign_metadata": "yes"}, "sign_metadata"),
    ("repo.copy", {"source": "demo", "target": "other", "name": HUGE}, "name"),
    ("repo.sync", {"repo_id": "demo", "request_id": HUGE}, "request_id"),
    (
        "lock.acquire",
        {"resources": [{"type": HUGE, "id": "r", "kind": "read"}]},
        "resource type",
    ),
    ("lock.acquire", {"resources": [{"type": "t", "id": HUGE, "kind": "read"}]}, "resource id"),
    (
        "lock.acquire",
        {"resources": [{"type": "t", "id": "r", "kind": "read"}], "host": HUGE},
        "host",
    ),
    (
        "lock.acquire",
        {"resources": [{"type": "t", "id": "r", "kind": "read"}], "command": [HUGE]},
        "command[0]",
    ),
]
for url in BAD_URLS:
    CASES.append(("repo.create", {"repo_id": "new", "importer": {"feed": url}}, "feed"))
    CASES.append(("repo.update", {"repo_id": "demo", "importer": {"feed": url}}, "feed"))
    CASES.append(("repo.update", {"repo_id": "demo", "importer": {"proxy": url}}, "proxy"))


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    state = Path(tmp_path_factory.mktemp("hostile")) / "state"
    process = DaemonProcess(state)
    process.config_file().write_text("[limits]\nmax_frame_bytes = 33554432\n")
    try:
        process.start()
        create(process, "demo")
        create(process, "other")
        yield process
    finally:
        process.cleanup()


@pytest.mark.parametrize(
    ("method", "params", "field"),
    CASES,
    ids=[f"{m}-{f}-{i}" for i, (m, _, f) in enumerate(CASES)],
)
def test_a_hostile_value_is_refused_naming_its_field(
    daemon: DaemonProcess, method: str, params: dict[str, Any], field: str
) -> None:
    with daemon.client(timeout=60) as client, pytest.raises(InvalidRequest) as refused:
        client.call(method, params)
    assert refused.value.code == INVALID_PARAMS
    assert field in refused.value.message, refused.value.message
    assert len(refused.value.message) < 500  # the value is not echoed back whole


def test_nothing_hostile_was_stored_and_nothing_was_an_internal_error(
    daemon: DaemonProcess,
) -> None:
    repos = daemon.call("repo.list")["repositories"]
    assert [repo["id"] for repo in repos] == ["demo", "other"]
    assert all(not (repo.get("importer") or {}).get("feed") for repo in repos)
    log = daemon.log_text()
    assert "Traceback" not in log
    assert "internal error" not in log


def test_valid_urls_are_still_accepted(daemon: DaemonProcess) -> None:
    for url in (
        "http://127.0.0.1:8080/repo/",
        "https://mirror.example.org/centos/",
        "http://[::1]:8080/x/",
        "https://user@mirror_1.internal:443/p/",
        "file:///srv/mirror/",
    ):
        answer = daemon.call("repo.update", repo_id="other", importer={"feed": url})
        assert answer["task"]["state"] == "finished", answer
    answer = daemon.call(
        "repo.update", repo_id="other", importer={"proxy": "http://proxy.example:3128"}
    )
    assert answer["task"]["state"] == "finished", answer
