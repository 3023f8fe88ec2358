"""The interactive shell in a real pseudo-terminal (pexpect), and completion in bash.

prompt_toolkit draws with escape sequences (the prompt's trailing space, for one, is a cursor
move), so the tests look for distinctive text and, where it matters, for the effect of a
line: a completed command is checked by running it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from coordctl.completion import candidates, command_tree
from coordctl.parser import build_parser
from tests.helpers.daemon import DaemonProcess, create, held

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "coordctl>"
TIMEOUT = 20


class Shell:
    """``coordctl`` with no arguments on a terminal, against ``daemon``."""

    def __init__(self, daemon: DaemonProcess, state_home: Path) -> None:
        env = {
            **daemon.env,
            "XDG_STATE_HOME": str(state_home),
            "TERM": "xterm",
            "PROMPT_TOOLKIT_NO_CPR": "1",  # nobody answers cursor-position requests here
        }
        env.pop("COLUMNS", None)
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", "coordctl"],
            env=env,
            cwd=str(ROOT),
            encoding="utf-8",
            timeout=TIMEOUT,
            dimensions=(40, 200),
        )
        self.expect(PROMPT)

    def expect(self, pattern: str) -> str:
        """Wait for ``pattern`` (a regular expression); return what came before it."""
        self.child.expect(pattern)
        return str(self.child.before)

    def run(self, line: str, until: str) -> str:
        """Send ``line``; wait for ``until`` then the prompt; return the output up to and
        including what matched ``until``."""
        self.child.sendline(line)
        out = self.expect(until) + str(self.child.after)
        self.expect(PROMPT)
        return out

    def close(self) -> int:
        if self.child.isalive():
            self.child.sendeof()
            self.child.expect(pexpect.EOF)
        self.child.close()
        return int(self.child.exitstatus or 0)


@pytest.fixture
def shell(daemon, tmp_path):
    shells: list[Shell] = []

    def start() -> Shell:
        s = Shell(daemon, tmp_path / "state-home")
        shells.append(s)
        return s

    yield start
    for s in shells:
        if s.child.isalive():
            s.child.terminate(force=True)


def test_tab_completes_a_command_an_option_and_a_repository_id(daemon, shell):
    create(daemon, "zebra-repo")
    create(daemon, "zulu")
    sh = shell()
    sh.child.send("server sta")
    sh.expect("sta")
    sh.child.send("\t")
    sh.expect("tus")  # completed in place: the line now says "server status"
    sh.child.send("\r")
    sh.expect(r"coordd \S+ is running")
    sh.expect(PROMPT)

    sh.child.send("repo show --rep")
    sh.expect("rep")
    sh.child.send("\t")
    sh.expect("o-id")
    sh.child.send(" zeb")
    sh.expect("zeb")
    sh.child.send("\t")  # fetched live from the daemon: zebra-repo, not zulu
    sh.expect("ra-repo")
    sh.child.send("\r")
    sh.expect(r"Id:\s+zebra-repo")
    sh.expect(PROMPT)
    assert sh.close() == 0


def test_history_is_kept_across_sessions(daemon, shell, tmp_path):
    create(daemon, "kept")
    first = shell()
    first.run("repo list", r"Id:\s+kept")
    assert first.close() == 0
    history = tmp_path / "state-home" / "coordd" / "coordctl_history"
    assert "+repo list" in history.read_text()

    second = shell()
    second.child.send("\x1b[A")  # Up: the previous session's line comes back
    second.expect("repo list")
    second.child.send("\r")
    second.expect(r"Id:\s+kept")
    second.expect(PROMPT)
    assert second.close() == 0


def test_a_notice_is_printed_above_the_prompt_when_a_task_ends(daemon, shell):
    create(daemon)
    sh = shell()
    seen = sh.run("repo create --repo-id quick --wait", "Repository create finished.")
    with held(daemon):
        out = sh.run("repo update --repo-id demo --notes later", r"Task Id:\s+\w+")
        assert "postponed due to another operation" in " ".join(out.split())
        task_id = re.findall(r"Task Id:\s+(\w+)", out)[-1]
    # The lock is released: the update runs while the shell sits at its prompt.
    notice = sh.expect(rf"Task {task_id} \(update demo\) finished\.")
    assert "repo update" not in notice  # nothing was typed: the prompt was idle
    sh.expect(PROMPT)  # drawn again below the notice
    seen += notice + sh.run("server status", r"is running")
    # The create was followed to its end in front of the user: no notice for it.
    assert "(create quick)" not in seen
    assert sh.close() == 0


def test_versions_and_orphans_in_the_shell(daemon, shell):
    create(daemon)
    sh = shell()
    sh.run("repo versions list --repo-id demo", "There are no versions yet")
    sh.run("repo content --repo-id demo", "repository demo has no version yet")
    sh.run("content orphans list", "There is no orphaned content")
    with held(daemon, "pool", "read", rtype="content"):
        out = sh.run("content orphans remove", r"Task Id:\s+\w+")
        assert "Orphaned content removal postponed" in " ".join(out.split())
        task_id = re.findall(r"Task Id:\s+(\w+)", out)[-1]
    # Named as people call it, and without the content pool every such task claims.
    sh.expect(rf"Task {task_id} \(remove orphans\) finished\.")
    sh.expect(PROMPT)
    assert sh.close() == 0


def test_errors_do_not_end_the_session(daemon, shell):
    sh = shell()
    sh.run("repo bogus", "invalid choice: 'bogus'")
    sh.run("repo show --repo-id nope", "no repository nope")
    sh.run('repo show --repo-id "unterminated', "No closing quotation")
    sh.run("repo show", "the following arguments are required: --repo-id")
    sh.run("shell", "already in the shell")
    sh.run("help repo tasks", r"usage: coordctl repo tasks")
    sh.run("help", r"exit, quit")
    sh.run("repo create --help", r"--display-name TEXT")
    sh.child.sendcontrol("c")  # Ctrl-C at the prompt only clears the line
    sh.expect(PROMPT)
    sh.run("server status", "is running")
    assert sh.child.isalive()
    assert sh.close() == 0


def test_ctrl_c_while_waiting_returns_to_the_prompt(daemon, shell):
    create(daemon)
    sh = shell()
    with held(daemon):
        sh.child.sendline("repo update --repo-id demo --notes x --wait")
        sh.expect(r"Task Id:\s+(\w+)")
        task_id = sh.child.match.group(1)
        sh.expect("waiting for update on demo")  # the live progress line
        sh.child.sendcontrol("c")
        sh.expect(f"Detached from task {task_id}")
        sh.expect(PROMPT)
        assert daemon.call("task.get", task_id=task_id)["state"] == "waiting"
    # Detached, not forgotten: the shell says when it ends.
    sh.expect(rf"Task {task_id} \(update demo\) finished\.")
    sh.expect(PROMPT)
    sh.run(f"tasks details --task-id {task_id}", r"Result:\s+Success")
    assert sh.close() == 0


def test_ctrl_d_and_exit_leave(daemon, shell):
    sh = shell()
    sh.child.sendeof()
    sh.child.expect(pexpect.EOF)
    sh.child.close()
    assert sh.child.exitstatus == 0
    sh = shell()
    sh.child.sendline("quit")
    sh.child.expect(pexpect.EOF)
    sh.child.close()
    assert sh.child.exitstatus == 0


def test_the_shell_starts_even_without_a_daemon(tmp_path):
    env = {
        **os.environ,
        "COORDD_SOCKET": str(tmp_path / "absent.sock"),
        "XDG_STATE_HOME": str(tmp_path),
        "PROMPT_TOOLKIT_NO_CPR": "1",
    }
    child = pexpect.spawn(
        sys.executable,
        ["-m", "coordctl", "shell"],
        env=env,
        cwd=str(ROOT),
        encoding="utf-8",
        timeout=TIMEOUT,
    )
    child.expect("cannot reach coordd at")
    child.expect(PROMPT)
    child.sendline("repo list")
    child.expect("Start it with `coordd`")
    child.expect(PROMPT)
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


# -- completion without a terminal ---------------------------------------------------------


def test_candidates_follow_the_parser():
    tree = command_tree(build_parser())

    def ids(kind: str) -> list[str]:
        return {"repo": ["demo", "other"], "task": ["t1"]}[kind]

    assert candidates(tree, [], "re") == ["repo"]
    assert candidates(tree, [], "", extra=["help"])[-1] == "help"
    assert candidates(tree, ["repo"], "ta") == ["tasks"]
    assert candidates(tree, ["repo", "tasks"], "") == ["list", "details", "cancel"]
    assert "--repo-id" in candidates(tree, ["repo", "sync"], "--")
    assert candidates(tree, ["repo", "sync", "--repo-id"], "d", ids) == ["demo"]
    assert candidates(tree, ["repo", "copy", "--from"], "", ids) == ["demo", "other"]
    assert candidates(tree, ["tasks", "cancel", "--task-id"], "", ids) == ["t1"]
    assert candidates(tree, ["repo", "update", "--tls-verify"], "") == ["true", "false"]
    assert candidates(tree, ["tasks", "list", "--state"], "r") == ["running"]
    # An option already given is not offered again; a repeatable one is.
    assert "--repo-id" not in candidates(tree, ["repo", "sync", "--repo-id", "x"], "--")
    assert "--state" in candidates(tree, ["tasks", "list", "--state", "waiting"], "--")
    assert candidates(tree, ["help", "repo"], "sh") == ["show"]
    assert candidates(tree, ["run", "--resource", "a:b=read", "--"], "") == []
    assert candidates(tree, ["--socket", "/x", "server"], "") == ["status"]
    # Versions, content and orphans come from the same tree.
    assert candidates(tree, ["repo"], "v") == ["versions"]
    assert candidates(tree, ["repo", "versions"], "") == ["list", "show", "diff"]
    assert candidates(tree, ["repo", "versions", "diff", "--repo-id"], "o", ids) == ["other"]
    assert "--against" in candidates(tree, ["repo", "versions", "diff"], "--")
    assert candidates(tree, ["repo", "content", "--type"], "") == [
        "rpm",
        "erratum",
        "delta",
        "file",
        "metadata",
    ]
    assert candidates(tree, ["repo", "content"], "--a") == ["--arch", "--after", "--all"]
    assert "--version" in candidates(tree, ["repo", "rollback"], "--")
    assert candidates(tree, [], "con") == ["content"]
    assert candidates(tree, ["content", "orphans"], "") == ["list", "remove", "schedules"]
    # A command with subcommands of its own: its options, and its schedules.
    assert candidates(tree, ["repo", "sync"], "") == ["schedules"]
    assert "--repo-id" in candidates(tree, ["repo", "sync"], "--")
    schedules = ["create", "list", "show", "update", "delete"]
    assert candidates(tree, ["repo", "publish", "schedules"], "") == schedules
    assert candidates(tree, ["repo", "sync", "schedules", "update", "--enabled"], "") == [
        "true",
        "false",
    ]
    assert "--failure-threshold" in candidates(
        tree, ["content", "orphans", "schedules", "create"], "--"
    )
    assert "--wait" in candidates(tree, ["content", "orphans", "remove"], "--")


def _bash_complete(line: str) -> list[str]:
    script = ROOT / "coordctl" / "bash-completion" / "coordctl"
    program = (
        f"source {script}\n"
        f'read -ra COMP_WORDS <<< "{line}"\n'
        '[[ "$LINE" == *" " ]] && COMP_WORDS+=("")\n'
        "COMP_CWORD=$((${#COMP_WORDS[@]} - 1))\n"
        "_coordctl\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    result = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "LINE": line},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [word for word in result.stdout.split("\n") if word]


def test_bash_completion_script():
    assert _bash_complete("coordctl re") == ["repo"]
    assert _bash_complete("coordctl repo ta") == ["tasks"]
    assert _bash_complete("coordctl repo tasks ") == ["list", "details", "cancel"]
    assert _bash_complete("coordctl --socket /tmp/x.sock repo sy") == ["sync"]
    assert "--repo-id" in _bash_complete("coordctl repo sync --")
    assert _bash_complete("coordctl tasks list --state w") == ["waiting"]
    assert _bash_complete("coordctl repo create --only-newest t") == ["true"]
    assert _bash_complete("coordctl run --resource a:b=read -- ls") == []
    assert _bash_complete("coordctl repo versions ") == ["list", "show", "diff"]
    assert _bash_complete("coordctl repo content --type e") == ["erratum"]
    assert "--all" in _bash_complete("coordctl repo content --repo-id demo --")
    assert _bash_complete("coordctl content orphans r") == ["remove"]
    assert _bash_complete("coordctl repo rollback --version 3 --w") == ["--wait"]
    # File names for repo upload, from the file system; options still after a dash.
    here = Path(__file__).resolve().parent
    assert _bash_complete(f"coordctl repo upload --repo-id demo {here}/test_she") == [
        f"{here}/test_shell.py"
    ]
    assert "--wait" in _bash_complete("coordctl repo upload --repo-id demo --w")
    assert _bash_complete("coordctl repo remove --repo-id demo --ne") == ["--nevra"]
