"""coordctl one-shot commands against a real daemon: what they print and how they exit.

Long-running work that needs no network comes from external locks held through the client
library (``held``): while a lock holds ``repository demo`` for update, updates and deletes of
demo postpone behind it, as in Pulp v2's "sync running" scenario.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from coordctl import exitcodes, output, repo_output
from coordctl.bar import Rate, line
from coordctl.commands import COMMANDS, Context, execute
from coordctl.parser import build_parser
from coordd.api import names
from coordd.api.errors import NotFound
from tests.helpers.daemon import DaemonProcess, coordctl, create, held, wait_for
from tests.helpers.feeds import Pkg, build_feed, default_packages
from tests.helpers.feedserver import STALL, FeedServer

ROOT = Path(__file__).resolve().parents[1]
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
POSTPONED = (
    "Repository {verb} postponed due to another operation. Progress on this task can be "
    'viewed using the commands under "repo tasks".'
)
REJECTED = (
    "The requested operation conflicts with one or more operations already queued for the "
    "resource. The following operations on the specified resources caused the request to be "
    "rejected:"
)


def flat(text: str) -> str:
    return " ".join(text.split())


def field(text: str, name: str) -> list[str]:
    """Every value of ``Name:`` at the start of a line."""
    return [m.group(1) for m in re.finditer(rf"^{re.escape(name)}:\s*(.*)$", text, re.M)]


def records(text: str) -> list[dict[str, str]]:
    """The blank-line separated ``Label: value`` records of a list, header skipped."""
    found = []
    for chunk in text.split("\n\n"):
        pairs = re.findall(r"^([A-Z][A-Za-z ]+):\s*(.*)$", chunk, re.M)
        if pairs and not chunk.startswith("+"):
            found.append(dict(pairs))
    return found


def task_id_of(text: str) -> str:
    ids = field(text, "Task Id")
    assert ids, text
    return ids[-1]


def states(daemon: DaemonProcess) -> dict[str, str]:
    return {t["id"]: t["state"] for t in daemon.call("task.list", state="all")["tasks"]}


# -- the Pulp v2 scenario -------------------------------------------------------------------------


def test_postponed_then_rejected_like_pulp_v2(daemon):
    create(daemon)
    with held(daemon) as lock_id:
        update = coordctl(daemon, "repo", "update", "--repo-id", "demo", "--only-newest", "false")
        assert update.returncode == exitcodes.OK, update.stderr
        assert flat(POSTPONED.format(verb="update")) in flat(update.stdout)
        assert "\nResource:  repository - demo\nOperation: update\n" in update.stdout
        assert f"Held By:   task {lock_id}" in update.stdout
        update_id = task_id_of(update.stdout)

        delete = coordctl(daemon, "repo", "delete", "--repo-id", "demo")
        assert delete.returncode == exitcodes.OK, delete.stderr
        assert flat(POSTPONED.format(verb="delete")) in flat(delete.stdout)
        assert "Resource:  repository - demo\nOperation: update\n" in delete.stdout
        assert f"Held By:   task {update_id}" in delete.stdout
        delete_id = task_id_of(delete.stdout)

        rejected = coordctl(
            daemon, "repo", "update", "--repo-id", "demo", "--display-name", "Rejected Update"
        )
        assert rejected.returncode == exitcodes.REJECTED == 3
        assert flat(REJECTED) in flat(rejected.stderr)
        assert "Resource:  repository - demo\nOperation: delete\n" in rejected.stderr
        assert f"task {delete_id}" in rejected.stderr

        as_json = coordctl(
            daemon, "--json", "repo", "update", "--repo-id", "demo", "--description", "x"
        )
        assert as_json.returncode == exitcodes.REJECTED
        error = json.loads(as_json.stdout)["error"]
        assert error["code"] == -32001
        [conflict] = error["data"]["conflicts"]
        assert conflict["operation"] == "delete"
        assert conflict["task_id"] == delete_id

        listing = coordctl(daemon, "repo", "tasks", "list", "--repo-id", "demo")
        assert listing.returncode == 0, listing.stderr
        assert listing.stdout.startswith(output.RULE + "\n")
        assert "                                 Tasks\n" in listing.stdout
        running, first, second = records(listing.stdout)
        assert running["Operations"] == "lock: long-update"
        assert running["Resources"] == "demo (repository)"
        assert running["State"] == "Running"
        assert ISO.match(running["Start Time"])
        assert running["Task Id"] == lock_id
        for rec, task_id, op in ((first, update_id, "update"), (second, delete_id, "delete")):
            assert rec["Operations"] == op
            assert rec["State"] == "Waiting"
            assert rec["Start Time"] == "Unstarted"
            assert rec["Finish Time"] == "Incomplete"
            assert rec["Result"] == "Incomplete"
            assert rec["Task Id"] == task_id
        assert first["Waiting For"] == f"update on demo (repository), task {lock_id}"
        assert second["Waiting For"] == f"update on demo (repository), task {update_id}"
        assert running["Finish Time"] == "Incomplete"
        assert "Waiting For" not in running

        canceled = coordctl(daemon, "repo", "tasks", "cancel", "--task-id", delete_id)
        assert canceled.returncode == 0, canceled.stderr
        assert canceled.stdout == f"Task {delete_id} canceled.\n"
        # With the delete gone, the same update is postponed instead of rejected.
        again = coordctl(daemon, "repo", "update", "--repo-id", "demo", "--description", "x")
        assert again.returncode == 0, again.stderr
        assert "postponed" in again.stdout
    # The lock released: both updates run, in order, and finish.
    wait_for(lambda: not daemon.call("task.list")["tasks"], what="the queued updates to finish")
    history = coordctl(daemon, "repo", "tasks", "list", "--repo-id", "demo", "--all")
    recs = records(history.stdout)
    assert {r["Task Id"]: r["Result"] for r in recs}[update_id] == "Success"
    assert {r["Task Id"]: r["State"] for r in recs}[delete_id] == "Canceled"


def test_tasks_list_all_resources_running_first(daemon):
    create(daemon, "one")
    create(daemon, "two")
    with held(daemon, "one") as lock_one:
        waiting = coordctl(daemon, "--json", "repo", "update", "--repo-id", "one", "--notes", "n")
        waiting_id = json.loads(waiting.stdout)["task"]["id"]
        with held(daemon, "two") as lock_two:
            listing = coordctl(daemon, "tasks", "list")
            recs = records(listing.stdout)
            assert [r["Task Id"] for r in recs] == [lock_one, lock_two, waiting_id]
            assert [r["State"] for r in recs] == ["Running", "Running", "Waiting"]
            only = coordctl(daemon, "tasks", "list", "--resource", "repository:two")
            assert [r["Task Id"] for r in records(only.stdout)] == [lock_two]
            waiting_only = coordctl(daemon, "tasks", "list", "--state", "waiting")
            assert [r["Task Id"] for r in records(waiting_only.stdout)] == [waiting_id]
    wait_for(lambda: states(daemon)[waiting_id] == "finished", what="the update to run")
    finished = coordctl(daemon, "tasks", "list", "--state", "finished")
    ids = [r["Task Id"] for r in records(finished.stdout)]
    assert waiting_id in ids
    assert lock_one not in [r["Task Id"] for r in records(coordctl(daemon, "tasks", "list").stdout)]
    empty = coordctl(daemon, "tasks", "list")
    assert "There are no tasks to show." in empty.stdout


# -- details and progress ----------------------------------------------------------------------


def test_details_show_the_sync_progress_tree(make_daemon, tmp_path):
    daemon = make_daemon(["--heavy-slots", "1"]).start()
    packages = default_packages(6)
    feed = build_feed(tmp_path / "feed", packages)
    with FeedServer(feed.root) as server:
        server.misbehave(packages[-1].href, STALL)
        create(daemon, "demo", "--feed", server.url)
        sync = coordctl(daemon, "repo", "sync", "--repo-id", "demo")
        assert sync.returncode == 0, sync.stderr
        assert "Repository sync accepted and started." in flat(sync.stdout)
        task_id = task_id_of(sync.stdout)

        def downloading() -> bool:
            task = daemon.call("task.get", task_id=task_id)
            content = task["progress"].get("importer", {}).get("content", {})
            return content.get("num_success", 0) >= 1

        wait_for(downloading, what="the sync to download something")
        details = coordctl(daemon, "repo", "tasks", "details", "--task-id", task_id)
        assert details.returncode == 0, details.stderr
        text = details.stdout
        assert "                              Task Details\n" in text
        assert re.search(r"^Operations:\s+sync$", text, re.M)
        assert re.search(r"^State:\s+Running$", text, re.M)
        assert re.search(r"^Task Id:\s+" + task_id + "$", text, re.M)
        tree = text[text.index("Progress:") :]
        for label in (
            "  Importer:",
            "    Content:",
            "      Details:",
            "        Delta Rpm:",
            "        Rpm:",
            "        Tree File:",
            "      Error Details:",
            "    Errata:",
            "    Metadata:",
        ):
            assert f"\n{label}\n" in tree, label
        assert re.search(r"^ {10}Items Left:\s+\d+$", tree, re.M)
        assert re.search(r"^ {10}Num Success:\s+\d+$", tree, re.M)
        assert re.search(r"^ {6}Size Total:\s+[\d.]+ (B|KiB|MiB)$", tree, re.M)
        assert re.search(r"^ {6}State:\s+IN_PROGRESS$", tree, re.M)
        assert re.search(r"^ {6}State:\s+FINISHED$", tree, re.M)  # metadata

        # The one heavy slot is taken: a sync of another repository waits, server busy.
        create(daemon, "other", "--feed", server.url)
        busy = coordctl(daemon, "repo", "sync", "--repo-id", "other")
        assert busy.returncode == 0, busy.stderr
        assert "Repository sync postponed because the server is busy." in flat(busy.stdout)
        assert "every slot for heavy operations (sync, publish) is in use" in flat(busy.stdout)
        listing = records(coordctl(daemon, "tasks", "list").stdout)
        assert listing[-1]["Waiting For"] == "server busy (every heavy-operation slot is in use)"

        as_json = coordctl(daemon, "--json", "tasks", "details", "--task-id", task_id)
        assert json.loads(as_json.stdout)["progress"]["importer"]["content"]["items_total"] == 6

        cancel = coordctl(daemon, "tasks", "cancel", "--task-id", task_id, "--wait")
        assert cancel.returncode == 0, cancel.stderr
        assert f"Task {task_id} canceled." in cancel.stdout


def test_wait_follows_a_sync_then_copy(daemon, tmp_path):
    feed = build_feed(tmp_path / "feed", default_packages(5))
    with FeedServer(feed.root) as server:
        create(daemon, "src", "--feed", server.url)
        create(daemon, "dst")
        sync = coordctl(daemon, "repo", "sync", "--repo-id", "src", "--wait")
    assert sync.returncode == 0, sync.stderr
    assert sync.stdout.startswith("Repository sync finished.\n")
    assert re.search(r"^Packages:\s+5$", sync.stdout, re.M)
    assert "\x1b" not in sync.stdout + sync.stderr  # not a terminal: no progress line
    copy = coordctl(
        daemon, "--json", "repo", "copy", "--from", "src", "--to", "dst", "--name", "alpha*"
    )
    assert copy.returncode == 0, copy.stderr
    answer = json.loads(copy.stdout)
    assert answer["task"]["args"] == {"from": "src", "to": "dst", "name": "alpha*"}
    wait_for(lambda: states(daemon)[answer["task"]["id"]] == "finished", what="the copy")
    show = coordctl(daemon, "repo", "show", "--repo-id", "dst")
    assert re.search(r"^  Packages:\s+3$", show.stdout, re.M), show.stdout
    publish = coordctl(daemon, "--json", "repo", "publish", "--repo-id", "dst", "--wait")
    assert publish.returncode == 0, publish.stderr
    assert json.loads(publish.stdout)["task"]["state"] == "finished"
    show = coordctl(daemon, "repo", "show", "--repo-id", "dst")
    [path] = field(show.stdout, "Published Path")
    assert Path(path).is_dir()


def test_a_configuration_change_is_reported_done_without_wait(daemon):
    """Create and update are done as they are accepted: the answer says how they ended."""
    created = coordctl(daemon, "repo", "create", "--repo-id", "quick")
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("Repository create finished."), created.stdout
    updated = coordctl(
        daemon, "--json", "repo", "update", "--repo-id", "quick", "--description", "d"
    )
    assert updated.returncode == 0, updated.stderr
    answer = json.loads(updated.stdout)
    assert answer["verdict"] == "accepted"
    assert answer["task"]["state"] == "finished"
    assert answer["task"]["result"] == {"repo_id": "quick", "changed": ["description"]}
    shown = json.loads(coordctl(daemon, "--json", "repo", "show", "--repo-id", "quick").stdout)
    assert shown["description"] == "d"  # already visible: the answer came after the commit


def test_wait_on_a_failing_task_exits_task_failed(daemon):
    create(daemon, "nofeed")
    result = coordctl(daemon, "repo", "sync", "--repo-id", "nofeed", "--wait")
    assert result.returncode == exitcodes.TASK_FAILED
    assert "Repository sync failed: repository nofeed has no feed" in flat(result.stdout)
    assert field(result.stdout, "Task Id")


def _background(daemon: DaemonProcess, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "coordctl", "--socket", str(daemon.socket), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=daemon.env,
        # A test run started in the background of a shell ignores SIGINT, and so would its
        # children: coordctl must see Ctrl-C as a terminal would send it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _waiting_update(daemon: DaemonProcess) -> str:
    def find() -> str | None:
        for task in daemon.call("task.list", state="waiting")["tasks"]:
            if task["operation"] == "repo.update":
                return str(task["id"])
        return None

    return str(wait_for(find, what="the update to be queued"))


def test_wait_then_cancel_exits_canceled(daemon):
    create(daemon)
    with held(daemon):
        proc = _background(daemon, "repo", "update", "--repo-id", "demo", "--notes", "x", "--wait")
        task_id = _waiting_update(daemon)
        cancel = coordctl(daemon, "tasks", "cancel", "--task-id", task_id)
        assert cancel.returncode == 0
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == exitcodes.CANCELED, err
    assert "Repository update postponed due to another operation" in flat(out)
    assert f"Repository update was canceled (task {task_id})." in out


def test_ctrl_c_detaches_without_canceling(daemon):
    create(daemon)
    with held(daemon):
        proc = _background(daemon, "repo", "update", "--repo-id", "demo", "--notes", "x", "--wait")
        assert proc.stdout is not None
        printed = ""
        while not printed.startswith("Task Id:"):  # the postponed message ends with it
            printed = proc.stdout.readline()
            assert printed, "coordctl ended before saying the update was postponed"
        task_id = printed.split()[-1]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == exitcodes.INTERRUPTED == 130
        assert f"coordctl tasks details --task-id {task_id} --wait" in err
        assert f"coordctl tasks cancel --task-id {task_id}" in err
        assert states(daemon)[task_id] == "waiting"
    # Following it again picks it up where it is.
    follow = coordctl(daemon, "tasks", "details", "--task-id", task_id, "--wait")
    assert follow.returncode == 0, follow.stderr
    assert re.search(r"^Result:\s+Success$", follow.stdout, re.M)


def test_password_is_read_from_a_file_and_never_printed(daemon, tmp_path):
    secret = tmp_path / "password"
    secret.write_text("s3cr3t-from-a-file\n")
    args = ("repo", "create", "--repo-id", "auth", "--feed", "http://127.0.0.1:9/")
    created = coordctl(daemon, *args, "--username", "mirror", "--password-file", str(secret))
    assert created.returncode == 0, created.stderr
    shown = coordctl(daemon, "--json", "repo", "show", "--repo-id", "auth")
    assert json.loads(shown.stdout)["importer"]["password"] == "set"
    assert "s3cr3t" not in created.stdout + created.stderr + shown.stdout
    missing = coordctl(daemon, *args[:3], "other", *args[4:], "--password-file", "/nonexistent")
    assert missing.returncode == exitcodes.USAGE
    assert "cannot read /nonexistent" in missing.stderr


# -- versions, content and orphans -------------------------------------------------------------


UNIT_LINE = re.compile(r"^ *(\d+)  (\S+) +(?:\d\S* \S+)?  (\S+)$", re.M)


def units_of(text: str) -> list[str]:
    """The unit names of a listing's lines (``Id  Type  Size  Unit``)."""
    return [m.group(3) for m in UNIT_LINE.finditer(text)]


def next_page(text: str) -> list[str] | None:
    """The command a listing cut short prints for its next page, without ``coordctl``."""
    match = re.search(r"^More units follow; the next page:\n  coordctl (.*)$", text, re.M)
    return None if match is None else shlex.split(match.group(1))


def ok(daemon: DaemonProcess, *args: str) -> str:
    result = coordctl(daemon, *args)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def test_versions_content_rollback_and_publish_of_a_version(daemon, tmp_path):
    feed = build_feed(tmp_path / "feed", default_packages(5))
    with FeedServer(feed.root) as server:
        create(daemon, "demo", "--feed", server.url)
        first = ok(daemon, "repo", "sync", "--repo-id", "demo", "--wait")
        assert field(first, "Version") == ["1"]
        feed.add(Pkg("zulu", "1.0", "1", epoch="2"))
        feed.drop("Packages/a/alpha-1.0-1.x86_64.rpm")
        second = ok(daemon, "repo", "sync", "--repo-id", "demo", "--wait")
        assert field(second, "Version") == ["2"]
        assert field(second, "New Version") == ["true"]

        listing = ok(daemon, "repo", "versions", "list", "--repo-id", "demo")
        assert "                            Versions of demo\n" in listing
        newest, oldest = records(listing)
        assert (newest["Version"], oldest["Version"]) == ("2", "1")
        assert newest["Added"] == newest["Removed"] == "1 package"
        assert newest["Content"] == "5 packages, 2 errata"
        assert oldest["Added"] == "5 packages, 2 errata"
        assert oldest["Removed"] == "nothing"
        assert newest["Note"] == "sync"
        assert newest["Published"] == oldest["Published"] == "no"
        assert ISO.match(newest["Created"])
        short = ok(daemon, "repo", "versions", "list", "--repo-id", "demo", "--limit", "1")
        assert [r["Version"] for r in records(short)] == ["2"]
        assert "Older versions follow version 2: raise --limit to see them." in short
        paged = json.loads(
            ok(daemon, "--json", "repo", "versions", "list", "--repo-id", "demo", "--limit", "1")
        )
        assert [v["number"] for v in paged["versions"]] == [2]
        assert paged["next"] == 2

        shown = ok(daemon, "repo", "versions", "show", "--repo-id", "demo")
        assert "Version 2 of demo" in shown
        assert field(shown, "Base") == ["1"]
        assert re.search(r"^  Packages:\s+5$", shown, re.M)
        assert re.search(r"^  Errata:\s+2$", shown, re.M)
        one = json.loads(
            ok(daemon, "--json", "repo", "versions", "show", "--repo-id", "demo", "--version", "1")
        )
        assert one["repo_id"] == "demo"
        assert one["number"] == 1
        assert one["counts"]["rpm"] == 5

        diff = ok(daemon, "repo", "versions", "diff", "--repo-id", "demo")
        assert "Version 2 of demo against version 1" in diff
        added = diff[diff.index("Units Added:") : diff.index("Units Removed:")]
        removed = diff[diff.index("Units Removed:") :]
        assert units_of(added) == ["zulu-2:1.0-1.x86_64"]
        assert units_of(removed) == ["alpha-1.0-1.x86_64"]
        from_empty = json.loads(
            ok(daemon, "--json", "repo", "versions", "diff", "--repo-id", "demo", "--against", "0")
        )
        assert (from_empty["from"], from_empty["to"]) == (0, 2)
        assert from_empty["added"]["counts"]["rpm"] == 5
        assert from_empty["added"]["counts"]["erratum"] == 2
        assert not any(from_empty["removed"]["counts"].values())
        cut = ok(
            daemon,
            "repo",
            "versions",
            "diff",
            "--repo-id",
            "demo",
            "--against",
            "0",
            "--limit",
            "2",
        )
        assert len(units_of(cut)) == 2
        assert "... and 5 more (raise --limit to list them)" in cut

        # Paging with --name: each page ends with the command for the next, pinned to the
        # version it lists, so a sync in between changes nothing.
        page = ok(
            daemon, "repo", "content", "--repo-id", "demo", "--name", "alpha*", "--limit", "1"
        )
        assert "Content of demo, version 2" in page
        seen = units_of(page)
        command = next_page(page)
        assert command is not None
        assert command[command.index("--version") + 1] == "2"
        feed.add(Pkg("alpha", "3.0", "1"))
        third = ok(daemon, "repo", "sync", "--repo-id", "demo", "--wait")
        assert field(third, "Version") == ["3"]
        while command is not None:
            page = ok(daemon, *command)
            seen += units_of(page)
            command = next_page(page)
        assert seen == ["alpha-1.10-1.x86_64", "alpha-1.9-2.x86_64"]
        assert "There are no units" not in page

    every = ok(daemon, "repo", "content", "--repo-id", "demo", "--all", "--version", "2")
    assert next_page(every) is None
    assert sorted(units_of(every)) == sorted(
        [
            "alpha-1.10-1.x86_64",
            "alpha-1.9-2.x86_64",
            "bravo-2.0-3.x86_64",
            "charlie-2.0-3.x86_64",
            "zulu-2:1.0-1.x86_64",
            "COORDD-2024-0001",
            "COORDD-2024-0002",
        ]
    )
    latest = ok(daemon, "repo", "content", "--repo-id", "demo", "--name", "alpha*", "--all")
    assert "Content of demo, version 3" in latest
    assert "alpha-3.0-1.x86_64" in units_of(latest)
    as_json = coordctl(
        daemon,
        "--json",
        "repo",
        "content",
        "--repo-id",
        "demo",
        "--all",
        "--version",
        "2",
        "--type",
        "erratum",
    )
    assert as_json.returncode == 0, as_json.stderr
    errata = json.loads(as_json.stdout)  # one JSON array, whole
    assert [u["name"] for u in errata] == ["COORDD-2024-0001", "COORDD-2024-0002"]
    assert {u["type"] for u in errata} == {"erratum"}
    answer = json.loads(
        ok(
            daemon,
            "--json",
            "repo",
            "content",
            "--repo-id",
            "demo",
            "--type",
            "rpm",
            "--arch",
            "x86_64",
            "--limit",
            "2",
        )
    )
    assert answer["version"] == 3
    assert len(answer["units"]) == 2
    assert answer["next"] == answer["units"][-1]["id"]
    none = ok(daemon, "repo", "content", "--repo-id", "demo", "--arch", "noarch")
    assert none.endswith("There are no units to show.\n")

    # Roll back to version 1: a new version 4 with its content.
    rollback = ok(daemon, "repo", "rollback", "--repo-id", "demo", "--version", "1", "--wait")
    assert rollback.startswith("Repository rollback finished.\n")
    assert field(rollback, "Version") == ["4"]
    assert field(rollback, "From Version") == ["1"]
    assert field(rollback, "Added") == ["1 package"]  # alpha-1.0 back
    assert field(rollback, "Removed") == ["2 packages"]  # zulu and alpha-3.0 gone
    same = ok(daemon, "repo", "versions", "diff", "--repo-id", "demo", "--against", "1")
    assert "Version 4 of demo against version 1" in same
    assert field(same, "Added") == field(same, "Removed") == ["nothing"]
    assert records(ok(daemon, "repo", "versions", "list", "--repo-id", "demo"))[0]["Note"] == (
        "rollback to version 1"
    )

    # Publish version 2 while version 4 is the latest.
    publish = ok(daemon, "repo", "publish", "--repo-id", "demo", "--version", "2", "--wait")
    assert field(publish, "Version") == ["2"]
    [path] = field(publish, "Path")
    assert (Path(path) / "Packages/z/zulu-1.0-1.x86_64.rpm").exists()
    assert not (Path(path) / "Packages/a/alpha-1.0-1.x86_64.rpm").exists()
    show = ok(daemon, "repo", "show", "--repo-id", "demo")
    assert field(show, "Latest Version") == ["4"]
    assert field(show, "Published Version") == ["2"]
    assert field(show, "Retain Versions") == ["10"]
    assert re.search(r"^  Version:\s+4$", show, re.M)
    assert re.search(r"^  Packages:\s+5$", show, re.M)
    assert re.search(r"^  Revision:\s+\d+$", show, re.M)
    published = {
        r["Version"]: r["Published"]
        for r in records(ok(daemon, "repo", "versions", "list", "--repo-id", "demo"))
    }
    assert published == {"4": "no", "3": "no", "2": "yes", "1": "no"}
    repo = records(ok(daemon, "repo", "list"))[0]
    assert (repo["Latest Version"], repo["Published Version"]) == ("4", "2")
    history = records(ok(daemon, "repo", "tasks", "list", "--repo-id", "demo", "--all"))
    operations = [r["Operations"] for r in history]
    assert "publish (version 2)" in operations
    assert "rollback (to version 1)" in operations

    # Keep one version (and the published one): the next change drops the others.
    ok(daemon, "repo", "update", "--repo-id", "demo", "--retain-versions", "1", "--wait")
    ok(daemon, "repo", "rollback", "--repo-id", "demo", "--version", "2", "--wait")
    kept = records(ok(daemon, "repo", "versions", "list", "--repo-id", "demo"))
    assert [(r["Version"], r["Published"]) for r in kept] == [("5", "no"), ("2", "yes")]

    # A version that does not exist: the query says so; a task fails with the reason.
    missing = coordctl(daemon, "repo", "versions", "show", "--repo-id", "demo", "--version", "9")
    assert missing.returncode == exitcodes.NOT_FOUND
    assert missing.stderr == "coordctl: repository demo has no version 9\n"
    failed = coordctl(daemon, "repo", "rollback", "--repo-id", "demo", "--version", "9", "--wait")
    assert failed.returncode == exitcodes.TASK_FAILED
    assert "Repository rollback failed: repository demo has no version 9" in flat(failed.stdout)


def test_copy_of_a_version(daemon, tmp_path):
    feed = build_feed(tmp_path / "feed", default_packages(5))
    with FeedServer(feed.root) as server:
        create(daemon, "src", "--feed", server.url)
        create(daemon, "dst")
        ok(daemon, "repo", "sync", "--repo-id", "src", "--wait")
        feed.drop("Packages/a/alpha-1.0-1.x86_64.rpm")
        ok(daemon, "repo", "sync", "--repo-id", "src", "--wait")
    copy = ok(
        daemon,
        "repo",
        "copy",
        "--from",
        "src",
        "--to",
        "dst",
        "--version",
        "1",
        "--name",
        "alpha*",
        "--wait",
    )
    assert field(copy, "From Version") == ["1"]
    assert field(copy, "Version") == ["1"]
    assert field(copy, "Copied") == ["3"]  # version 1 still had alpha-1.0
    assert field(copy, "Already Present") == ["0"]
    assert "alpha-1.0-1.x86_64" in units_of(ok(daemon, "repo", "content", "--repo-id", "dst"))
    again = ok(daemon, "repo", "copy", "--from", "src", "--to", "dst", "--name", "alpha*", "--wait")
    assert field(again, "From Version") == ["2"]  # the latest, by default
    assert field(again, "Copied") == ["0"]
    assert field(again, "Already Present") == ["2"]
    assert field(again, "Version") == [""]  # nothing changed: no new version
    listing = records(ok(daemon, "repo", "versions", "list", "--repo-id", "dst"))
    assert [r["Note"] for r in listing] == ["copy from src version 1"]
    history = records(ok(daemon, "tasks", "list", "--state", "finished"))
    assert "copy (version 1, name alpha*)" in [r["Operations"] for r in history]


def test_orphans_of_a_deleted_repository_are_listed_then_removed(daemon, tmp_path):
    kept_feed = build_feed(
        tmp_path / "kept", [Pkg("kilo", "1.0", "1"), Pkg("lima", "1.0", "1")], errata=False, seed=1
    )  # other bytes than the other feed's: the pool would keep a file both name only once
    gone_feed = build_feed(tmp_path / "gone", default_packages(5))
    with FeedServer(kept_feed.root) as kept, FeedServer(gone_feed.root) as gone:
        create(daemon, "kept", "--feed", kept.url)
        create(daemon, "gone", "--feed", gone.url)
        ok(daemon, "repo", "sync", "--repo-id", "kept", "--wait")
        ok(daemon, "repo", "sync", "--repo-id", "gone", "--wait")
    before = ok(daemon, "repo", "content", "--repo-id", "kept", "--all")
    nothing = ok(daemon, "content", "orphans", "list")
    assert nothing.endswith("There is no orphaned content.\n")
    assert field(ok(daemon, "server", "status"), "Content") == [
        "7 files, " + output.human_size(2 * 4096 + 20497) + "; nothing orphaned"
    ]

    ok(daemon, "repo", "delete", "--repo-id", "gone", "--wait")
    status = field(ok(daemon, "server", "status"), "Content")
    assert status == [
        f"7 files, {output.human_size(28689)}; orphaned: 7 units, 5 files, "
        f"{output.human_size(20497)}"
    ]
    orphans = ok(daemon, "content", "orphans", "list", "--limit", "2")
    assert field(orphans, "Orphaned Units") == ["7"]
    assert field(orphans, "Orphaned Files") == ["5"]
    assert field(orphans, "Orphaned Size") == [output.human_size(20497)]
    assert units_of(orphans) == [
        "Packages/a/alpha-1.0-1.x86_64.rpm",
        "Packages/a/alpha-1.10-1.x86_64.rpm",
    ]
    assert "... and 5 more\n" in orphans
    assert len(re.findall(r"^  sha256:[0-9a-f]{64}  ", orphans, re.M)) == 2
    assert "... and 3 more\n" in orphans
    as_json = json.loads(ok(daemon, "--json", "content", "orphans", "list"))
    assert (as_json["orphan_units"], as_json["orphan_files"]) == (7, 5)
    assert len(as_json["units"]) == 7
    assert len(as_json["files"]) == 5

    # Removal updates the pool: it waits for what reads it, as a sync does.
    with held(daemon, "pool", "read", rtype="content") as lock_id:
        postponed = ok(daemon, "content", "orphans", "remove")
        assert flat(
            "Orphaned content removal postponed due to another operation. Progress on this "
            'task can be viewed using the commands under "tasks".'
        ) in flat(postponed)
        assert "Resource:  content - pool\nOperation: read\n" in postponed
        assert f"Held By:   task {lock_id}" in postponed
        task_id = task_id_of(postponed)
        waiting = records(ok(daemon, "tasks", "list", "--state", "waiting"))
        assert [r["Operations"] for r in waiting] == ["remove orphans"]
    follow = ok(daemon, "tasks", "details", "--task-id", task_id, "--wait")
    assert re.search(r"^Result:\s+Success$", follow, re.M)
    assert re.search(r"^  Units:\s+7$", follow, re.M)
    assert re.search(r"^  Files:\s+5$", follow, re.M)
    assert ok(daemon, "content", "orphans", "list").endswith("There is no orphaned content.\n")
    assert field(ok(daemon, "server", "status"), "Content") == [
        f"2 files, {output.human_size(2 * 4096)}; nothing orphaned"
    ]
    assert ok(daemon, "repo", "content", "--repo-id", "kept", "--all") == before
    again = ok(daemon, "content", "orphans", "remove", "--wait")
    assert again.startswith("Orphaned content removal finished.\n")
    assert field(again, "Units") == ["0"]
    assert field(again, "Bytes") == ["0 B"]


def test_a_repository_without_versions(daemon):
    create(daemon, "empty", "--retain-versions", "3")
    listing = ok(daemon, "repo", "versions", "list", "--repo-id", "empty")
    assert "There are no versions yet." in listing
    show = ok(daemon, "repo", "show", "--repo-id", "empty")
    assert field(show, "Latest Version") == ["None"]
    assert field(show, "Published Version") == ["Not published"]
    assert field(show, "Retain Versions") == ["3"]
    assert field(show, "Retain Package Versions") == ["All"]
    assert field(show, "Content") == ["None: sync the repository, or copy into it"]
    ok(daemon, "repo", "update", "--repo-id", "empty", "--retain-versions", "", "--wait")
    shown = json.loads(ok(daemon, "--json", "repo", "show", "--repo-id", "empty"))
    assert shown["retain_versions"] == 10  # the daemon's default again
    for args in (
        ["repo", "versions", "show"],
        ["repo", "versions", "diff"],
        ["repo", "content"],
    ):
        result = coordctl(daemon, *args, "--repo-id", "empty")
        assert result.returncode == exitcodes.NOT_FOUND, args
        assert result.stderr == "coordctl: repository empty has no version yet\n"
    # Published before its first version: an empty tree, "version 0".
    publish = ok(daemon, "repo", "publish", "--repo-id", "empty", "--wait")
    assert field(publish, "Version") == ["0"]
    show = ok(daemon, "repo", "show", "--repo-id", "empty")
    assert field(show, "Published Version") == ["0 (empty)"]
    rollback = json.loads(
        ok(daemon, "--json", "repo", "rollback", "--repo-id", "empty", "--version", "1")
    )
    assert rollback["task"]["operation"] == "repo.rollback"
    assert rollback["task"]["args"] == {"repo_id": "empty", "version": 1}
    task_id = rollback["task"]["id"]
    wait_for(lambda: states(daemon)[task_id] == "error", what="the rollback to fail")
    gone = coordctl(daemon, "--json", "repo", "content", "--repo-id", "nope", "--all")
    assert gone.returncode == exitcodes.NOT_FOUND
    assert json.loads(gone.stdout)["error"]["code"] == -32002


class PagedClient:
    """Answers ``repo.content`` with ``pages`` in turn (an exception is raised), recording
    the parameters of each call."""

    def __init__(self, pages: list[Any]) -> None:
        self.pages = pages
        self.calls: list[dict[str, Any]] = []

    def __enter__(self) -> PagedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def call(self, method: str, params: dict[str, Any]) -> Any:
        assert method == "repo.content"
        self.calls.append(params)
        page = self.pages.pop(0)
        if isinstance(page, Exception):
            raise page
        return page


def _unit(unit_id: int) -> dict[str, Any]:
    return {
        "id": unit_id,
        "type": "rpm",
        "name": f"p{unit_id}",
        "epoch": "0",
        "version": "1",
        "release": "1",
        "arch": "noarch",
        "href": f"p{unit_id}.rpm",
        "size": 10,
    }


def _paged(pages: list[Any], *args: str) -> tuple[int, str, PagedClient]:
    client = PagedClient(pages)
    argv = ["repo", "content", "--repo-id", "demo", *args]
    out = io.StringIO()
    ctx = Context(json_output="--json" in argv, out=out, err=io.StringIO())
    ctx.connect = lambda timeout=None: client
    status = execute(ctx, build_parser(argv).parse_args(argv))
    return status, out.getvalue(), client


def test_all_follows_next_from_one_version_and_streams_one_array():
    first = {"repo_id": "demo", "version": 7, "units": [_unit(1), _unit(2)], "next": 2}
    second = {"repo_id": "demo", "version": 7, "units": [_unit(5)], "next": None}
    status, text, client = _paged([first, second], "--json", "--all")
    assert status == exitcodes.OK
    assert text == json.dumps([_unit(1), _unit(2), _unit(5)], indent=2) + "\n"
    assert client.calls == [
        {"repo_id": "demo", "after": 0, "limit": names.MAX_PAGE},
        {"repo_id": "demo", "after": 2, "limit": names.MAX_PAGE, "version": 7},
    ]
    # Stopped midway by an error: the array stays open, so no parser takes it for a
    # whole listing, and the error object follows it.
    gone = NotFound("repository demo has no version 7", {"repo_id": "demo", "version": 7})
    status, text, _ = _paged([dict(first), gone], "--json", "--all")
    assert status == exitcodes.NOT_FOUND
    listed, error = text.rsplit("\n{", 1)
    assert listed.startswith("[\n  {")
    assert not listed.rstrip().endswith("]")
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    assert json.loads("{" + error)["error"]["code"] == -32002
    # Empty: still one array.
    status, text, _ = _paged(
        [{"repo_id": "demo", "version": 7, "units": [], "next": None}], "--json", "--all"
    )
    assert text == "[]\n"


def test_limit_beyond_a_page_merges_pages_and_names_the_next():
    full = {"repo_id": "demo", "version": 3, "units": [_unit(i) for i in range(1, 4)], "next": 3}
    rest = {"repo_id": "demo", "version": 3, "units": [_unit(9)], "next": 9}
    status, text, client = _paged([full, rest], "--json", "--limit", str(names.MAX_PAGE + 1))
    assert status == exitcodes.OK
    answer = json.loads(text)
    assert [u["id"] for u in answer["units"]] == [1, 2, 3, 9]
    assert answer["next"] == 9
    assert [c["limit"] for c in client.calls] == [names.MAX_PAGE, 1]
    status, text, _ = _paged([dict(full)], "--name", "p*", "--limit", "3")
    assert text.endswith(
        "More units follow; the next page:\n"
        "  coordctl repo content --repo-id demo --version 3 --name 'p*' --limit 3 --after 3\n"
    )


def test_the_client_spells_the_daemons_kinds_and_page():
    from coordd.content import units, versions

    assert names.UNIT_KINDS == units.KINDS
    assert names.MAX_PAGE == versions.MAX_PAGE
    assert set(output.KIND_NAMES) == set(names.UNIT_KINDS)


def test_unit_names_and_counts_read_as_people_write_them():
    rpm = {
        "id": 1,
        "type": "rpm",
        "name": "bash",
        "epoch": "1",
        "version": "5.2",
        "release": "3",
        "arch": "x86_64",
        "size": 1536,
    }
    assert repo_output.unit_name(rpm) == "bash-1:5.2-3.x86_64"
    assert repo_output.unit_name({**rpm, "epoch": "0"}) == "bash-5.2-3.x86_64"
    assert repo_output.unit_name({"id": 2, "type": "erratum", "name": "RHSA-1"}) == "RHSA-1"
    assert repo_output.unit_lines([rpm]) == "       1  rpm          1.5 KiB  bash-1:5.2-3.x86_64\n"
    assert output.counts_text({"rpm": 1, "erratum": 2, "delta": 0}) == "1 package, 2 errata"
    assert output.counts_text({"rpm": 0}) == "nothing"
    assert output.kind_counts({"rpm": 3})["Delta RPMs"] == 0


# -- --json, errors and exit statuses ---------------------------------------------------------


def test_json_on_every_command(daemon):
    def run(*args: str, status: int = 0) -> Any:
        result = coordctl(daemon, "--json", *args)
        assert result.returncode == status, (args, result.stdout, result.stderr)
        return json.loads(result.stdout)

    assert run("server", "status")["version"]
    created = run("repo", "create", "--repo-id", "j", "--feed", "http://127.0.0.1:9/", "--wait")
    assert created["task"]["state"] == "finished"
    assert created["task"]["args"]["config"]["importer"]["feed"] == "http://127.0.0.1:9/"
    run("repo", "create", "--repo-id", "k", "--wait")
    assert [r["id"] for r in run("repo", "list")["repositories"]] == ["j", "k"]
    shown = run("repo", "show", "--repo-id", "j")
    assert shown["importer"]["feed"] == "http://127.0.0.1:9/"
    assert "content" in shown
    updated = run(
        "repo",
        "update",
        "--repo-id",
        "j",
        "--display-name",
        "Jay",
        "--parallel-downloads",
        "3",
        "--tls-verify",
        "false",
        "--proxy",
        "http://127.0.0.1:3128/",
        "--wait",
    )
    assert updated["task"]["args"]["config"] == {
        "display_name": "Jay",
        "importer": {
            "parallel_downloads": 3,
            "tls_verify": False,
            "proxy": "http://127.0.0.1:3128/",
        },
    }
    cleared = run("repo", "update", "--repo-id", "j", "--proxy", "", "--wait")
    assert cleared["task"]["state"] == "finished"
    assert run("repo", "show", "--repo-id", "j")["importer"]["proxy"] is None
    with held(daemon, "k"):
        for command in (["sync"], ["publish"]):
            assert run("repo", *command, "--repo-id", "k")["verdict"] == "postponed"
        assert run("repo", "copy", "--from", "j", "--to", "k")["verdict"] == "postponed"
        assert run("repo", "delete", "--repo-id", "k")["verdict"] == "postponed"
        behind_delete = run("repo", "sync", "--repo-id", "k", status=exitcodes.REJECTED)
        assert behind_delete["error"]["data"]["conflicts"][0]["reason"] == "pending delete"
        tasks = run("repo", "tasks", "list", "--repo-id", "k")["tasks"]
        assert [t["operation"] for t in tasks] == [
            "lock",
            "repo.sync",
            "repo.publish",
            "repo.copy",
            "repo.delete",
        ]
        details = run("repo", "tasks", "details", "--task-id", tasks[1]["id"])
        assert details["waiting_for"][0]["task_id"] == tasks[0]["id"]
        assert run("tasks", "details", "--task-id", tasks[2]["id"])["operation"] == "repo.publish"
        assert len(run("tasks", "list")["tasks"]) == 5
        assert run("repo", "tasks", "cancel", "--task-id", tasks[4]["id"])["state"] == "canceled"
        assert run("tasks", "cancel", "--task-id", tasks[2]["id"])["state"] == "canceled"
        error = run("tasks", "cancel", "--task-id", tasks[2]["id"], status=exitcodes.INVALID_STATE)
        assert error["error"]["code"] == -32005
        rejected = run("repo", "create", "--repo-id", "k", status=exitcodes.REJECTED)
        assert rejected["error"]["data"]["conflicts"][0]["reason"] == "already exists"
    missing = run("repo", "show", "--repo-id", "nope", status=exitcodes.NOT_FOUND)
    assert missing["error"]["code"] == -32002
    usage = run("repo", "show", status=exitcodes.USAGE)
    assert "--repo-id" in usage["error"]["message"]
    run_json = coordctl(
        daemon, "--json", "run", "--resource", "repository:j=read", "--", sys.executable, "-c", ""
    )
    assert run_json.returncode == 0, run_json.stderr


def test_not_found_and_invalid_state_statuses(daemon):
    show = coordctl(daemon, "repo", "show", "--repo-id", "nope")
    assert show.returncode == exitcodes.NOT_FOUND == 4
    assert show.stderr == "coordctl: no repository nope\n"
    assert coordctl(daemon, "tasks", "details", "--task-id", "0" * 32).returncode == 4
    assert coordctl(daemon, "repo", "tasks", "list", "--repo-id", "nope").returncode == 4
    create(daemon)
    done = daemon.call("task.list", state="finished")["tasks"][0]["id"]
    again = coordctl(daemon, "tasks", "cancel", "--task-id", done)
    assert again.returncode == exitcodes.INVALID_STATE
    assert "already ended" in again.stderr
    bad = coordctl(daemon, "repo", "update", "--repo-id", "demo")
    assert bad.returncode == exitcodes.USAGE
    assert "nothing to update" in bad.stderr


def test_unreachable_names_the_socket_and_how_to_start(tmp_path):
    socket_path = tmp_path / "absent.sock"
    for args in (["server", "status"], ["repo", "list"]):
        result = subprocess.run(
            [sys.executable, "-m", "coordctl", "--socket", str(socket_path), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == exitcodes.UNREACHABLE == 6
        assert str(socket_path) in result.stderr
        assert "Start it with `coordd`" in result.stderr
    env = {**os.environ, "COORDD_SOCKET": str(socket_path)}
    result = subprocess.run(
        [sys.executable, "-m", "coordctl", "--json", "tasks", "list"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    assert result.returncode == exitcodes.UNREACHABLE
    assert json.loads(result.stdout)["error"]["data"]["socket"] == str(socket_path)


@pytest.mark.parametrize(
    "args",
    [
        ["bogus"],
        ["repo", "create"],
        ["repo", "create", "--repo-id", "x", "--only-newest", "maybe"],
        ["repo", "update", "--repo-id", "x", "--parallel-downloads", "0"],
        ["tasks", "list", "--state", "sleeping"],
        ["run", "--resource", "repository-demo", "--", "true"],
        ["run", "--resource", "repository:demo=write", "--", "true"],
        ["run", "--resource", "repository:demo=read"],
        ["repo", "rollback", "--repo-id", "x"],
        ["repo", "publish", "--repo-id", "x", "--version", "0"],
        ["repo", "content", "--repo-id", "x", "--all", "--limit", "5"],
        ["repo", "content", "--repo-id", "x", "--type", "srpm"],
        ["repo", "versions", "diff", "--repo-id", "x", "--against", "-1"],
        ["repo", "versions", "diff", "--repo-id", "x", "--limit", str(names.MAX_PAGE + 1)],
        ["content", "orphans", "list", "--limit", "0"],
        ["content", "orphans"],
        ["repo", "versions"],
        ["repo"],
        [],
    ],
)
def test_usage_errors_exit_2(daemon, args):
    result = subprocess.run(
        [sys.executable, "-m", "coordctl", "--socket", str(daemon.socket), *args],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == exitcodes.USAGE
    assert "usage: coordctl" in result.stderr
    assert result.stdout == ""


def test_version_and_help():
    version = subprocess.run(
        [sys.executable, "-m", "coordctl", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert version.returncode == 0
    assert re.fullmatch(r"coordctl \d+\.\d+\.\d+\n", version.stdout)
    helped = subprocess.run(
        [sys.executable, "-m", "coordctl", "repo", "tasks", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert helped.returncode == 0
    assert "details" in helped.stdout
    assert "cancel" in helped.stdout


def test_server_status_readable(daemon):
    result = coordctl(daemon, "server", "status")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("coordd ")
    assert field(result.stdout, "Socket") == [str(daemon.socket)]
    assert field(result.stdout, "Tasks") == ["0 running, 0 waiting"]
    assert re.search(r"^Heavy Slots:\s+0 of \d+ in use$", result.stdout, re.M)


def test_every_command_of_the_parser_has_its_function():
    def leaves(parser, words):
        subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subparsers or parser.get_default("command_name"):  # a command with more
            yield " ".join(words)
        for action in subparsers:
            for word, child in action.choices.items():
                yield from leaves(child, [*words, word])

    # shell is not a command function: the console script and the shell itself handle it.
    assert set(COMMANDS) == set(leaves(build_parser(), [])) - {"shell"}


def test_one_shot_commands_never_import_prompt_toolkit(daemon):
    code = (
        "import sys\n"
        "from coordctl.cli import main\n"
        f"status = main(['--socket', {str(daemon.socket)!r}, 'server', 'status'])\n"
        f"status |= main(['--socket', {str(daemon.socket)!r}, 'tasks', 'list'])\n"
        "leaked = sorted(m for m in sys.modules if m.startswith(('prompt_toolkit', 'asyncio', "
        "'coordctl.shell', 'anyio', 'jsonrpcserver', 'dataclasses')))\n"
        "print('LEAKED', leaked)\n"
        "sys.exit(status)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "LEAKED []" in result.stdout
    command = ["-X", "importtime", "-m", "coordctl", "--socket", str(daemon.socket)]
    timed = subprocess.run(
        [sys.executable, *command, "server", "status"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert timed.returncode == 0
    assert "coordctl.cli" in timed.stderr
    assert "prompt_toolkit" not in timed.stderr


def test_run_holds_the_resource_for_the_command(daemon, tmp_path):
    create(daemon)
    marker = tmp_path / "ran"
    result = coordctl(
        daemon,
        "run",
        "--resource",
        "repository:demo=update",
        "--",
        sys.executable,
        "-c",
        f"import pathlib; pathlib.Path({str(marker)!r}).write_text('x')",
    )
    assert result.returncode == 0, result.stderr
    assert marker.read_text() == "x"
    failed = coordctl(
        daemon,
        "run",
        "--resource",
        "thing:x=read",
        "--",
        sys.executable,
        "-c",
        "raise SystemExit(5)",
    )
    assert failed.returncode == 5


# -- rendering (pure) --------------------------------------------------------------------------


def test_postponed_by_a_busy_server_explains_it():
    answer = {
        "verdict": "postponed",
        "waiting_for": [{"reason": "server busy"}],
        "task": {"id": "t1"},
    }
    text = output.submitted("Repository sync", answer)
    assert text.startswith("Repository sync postponed because the server is busy.")
    assert "every slot for heavy operations (sync, publish) is in use" in flat(text)
    assert text.endswith("Task Id:   t1\n")
    assert "Resource:" not in text


def test_the_postponed_paragraph_wraps_like_pulp_v2():
    text = output.submitted(
        "Repository update",
        {
            "verdict": "postponed",
            "waiting_for": [
                {
                    "reason": "conflict",
                    "resource": {"type": "repository", "id": "demo"},
                    "operation": "update",
                    "task_id": "abc",
                }
            ],
            "task": {"id": "def"},
        },
    )
    assert text.startswith(
        "Repository update postponed due to another operation. Progress on this task can\n"
        'be viewed using the commands under "repo tasks".\n\n'
        "Resource:  repository - demo\n"
        "Operation: update\n"
    )


def test_progress_labels_and_sizes():
    progress = {
        "importer": {
            "content": {
                "details": {"delta_rpm": {"items_left": 0, "size_total": 0}},
                "error_details": [{"href": "a.rpm", "error": "checksum mismatch"}],
                "size_left": 3147523487,
                "num_success": 376,
            }
        }
    }
    text = "\n".join(output.tree(progress))
    assert "      Delta Rpm:\n        Items Left: 0\n        Size Total: 0 B" in text
    assert "    Num Success:   376" in text
    assert "    Size Left:     2.9 GiB" in text
    assert "    Error Details:\n      - Error: checksum mismatch\n        Href:  a.rpm" in text
    assert output.label("ca_file") == "CA File"
    assert output.human_size(1536) == "1.5 KiB"


def test_progress_line_of_a_sync():
    task = {
        "state": "running",
        "progress": {
            "importer": {
                "content": {
                    "state": "IN_PROGRESS",
                    "items_total": 10,
                    "items_left": 4,
                    "size_total": 10 * 2**20,
                    "size_left": 4 * 2**20,
                }
            }
        },
    }
    rate = Rate()
    line(task, "sync demo", 100.0, rate, 0)
    task["progress"]["importer"]["content"]["size_left"] = 2 * 2**20
    text = line(task, "sync demo", 102.0, rate, 1, width=120)
    assert text.startswith("sync demo [################----]  80% ")
    assert "6/10 items" in text
    assert "8.0 MiB/10.0 MiB" in text
    assert "1.0 MiB/s" in text
    assert "2s left" in text
    assert len(line(task, "sync demo", 103.0, rate, 2, width=40)) <= 39
    waiting = {
        "state": "waiting",
        "waiting_for": [{"reason": "server busy"}],
    }
    assert "waiting for server busy" in line(waiting, "sync demo", 0.0, Rate(), 0)


def test_task_list_fast_path_renders_like_the_records():
    tasks = [
        {
            "id": "a1",
            "operation": "lock",
            "args": {"command": ["sleep", "30"]},
            "resources": [{"type": "repository", "id": "demo", "kind": "update"}],
            "state": "running",
            "started": "2026-01-01T00:00:00Z",
            "waiting_for": [],
        },
        {
            "id": "b2",
            "operation": "repo.copy",
            "args": {"from": "a", "to": "b", "name": "x*"},
            "resources": [
                {"type": "repository", "id": "a", "kind": "read"},
                {"type": "repository", "id": "b", "kind": "update"},
            ],
            "state": "waiting",
            "waiting_for": [
                {
                    "reason": "conflict",
                    "resource": {"type": "repository", "id": "a"},
                    "operation": "update",
                    "task_id": "a1",
                },
                {"reason": "server busy"},
            ],
            "cancel_requested": True,
        },
        {
            "id": "c3",
            "operation": "repo.sync",
            "state": "error",
            "error": {"message": "boom"},
            "resources": [{"type": "repository", "id": "x", "kind": "update"}],
            "started": "2026-01-01T00:00:00Z",
            "finished": "2026-01-01T00:01:00Z",
        },
    ]
    expected = output.header("Tasks") + "".join(
        "\n" + output.block(output.records(output.task_fields(t))) for t in tasks
    )
    assert output.task_list(tasks) == expected
    assert "Waiting For: update on a (repository), task a1\n             server busy" in expected
    assert "Result:      Failed: boom" in expected
    assert "Operations:  copy (name x*)" in expected
    assert "State:       Waiting (cancel requested)" in expected
