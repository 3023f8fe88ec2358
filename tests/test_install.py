"""What an installation gives a user: man pages and completion where the tools look, a unit
whose documentation resolves, and a daemon that starts quietly on a system without rpm."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = {"man1": "coordctl.1", "man7": "coordd-api.7", "man8": "coordd.8"}
BASH_COMPLETION = Path("/usr/share/bash-completion/bash_completion")
RPM_CONFIG = Path("/usr/lib/rpm")


@pytest.fixture(scope="module")
def prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """coordd installed with pip (not editable) under a prefix of its own."""
    work = tmp_path_factory.mktemp("install")
    source = work / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", ".*_cache"),
    )
    target = work / "prefix"
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"),
            *("--no-deps", "--no-build-isolation", "--prefix", str(target), str(source)),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return target


def test_man_pages_are_installed_where_man_finds_them(prefix):
    for section, page in PAGES.items():
        installed = prefix / "share" / "man" / section / page
        assert installed.read_bytes() == (ROOT / "man" / page).read_bytes()
    if shutil.which("man") is None:
        pytest.skip("man is not installed (Debian package man-db)")
    found = subprocess.run(
        ["man", "-w", "8", "coordd"],
        env={**os.environ, "MANPATH": str(prefix / "share" / "man")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert found.stdout.strip() == str(prefix / "share" / "man" / "man8" / "coordd.8")


def test_bash_completion_is_installed_where_bash_completion_finds_it(prefix):
    installed = prefix / "share" / "bash-completion" / "completions" / "coordctl"
    assert (
        installed.read_bytes() == (ROOT / "coordctl" / "bash-completion" / "coordctl").read_bytes()
    )
    if not BASH_COMPLETION.is_file():
        pytest.skip("bash-completion is not installed")
    # bash-completion loads a command's completion on demand from $XDG_DATA_DIRS.
    program = f"source {BASH_COMPLETION}\n__load_completion coordctl && complete -p coordctl\n"
    result = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program],
        env={"PATH": os.environ["PATH"], "XDG_DATA_DIRS": str(prefix / "share")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.stdout.strip() == "complete -F _coordctl coordctl", result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_installed_unit_verifies_with_its_documentation(prefix, tmp_path):
    """``Documentation=man:coordd(8)`` resolves against the installed pages."""
    units = ROOT / "systemd"
    service = tmp_path / "coordd.service"
    service.write_text(
        (units / "coordd.service")
        .read_text()
        .replace("ExecStart=/usr/local/bin/coordd ", f"ExecStart={prefix / 'bin' / 'coordd'} ")
    )
    shutil.copy(units / "coordd.socket", tmp_path / "coordd.socket")
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=yes", str(tmp_path / "coordd.socket"), str(service)],
        env={**os.environ, "SYSTEMD_PAGER": "", "MANPATH": str(prefix / "share" / "man")},
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def _without_rpm_config(command: str, **popen: object) -> subprocess.Popen[str]:
    """Run ``command`` in a mount namespace where /usr/lib/rpm is an empty directory."""
    empty = Path(os.environ.get("TMPDIR", "/tmp"))
    script = f"mount --bind {empty}/coordd-empty-rpm {RPM_CONFIG} && exec {command}"
    (empty / "coordd-empty-rpm").mkdir(exist_ok=True)
    env = {key: value for key, value in os.environ.items() if key != "RPM_CONFIGDIR"}
    return subprocess.Popen(
        ["unshare", "--mount", "sh", "-c", script],
        env={**env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,  # type: ignore[arg-type]
    )


def _answers(socket: Path) -> bool:
    if not socket.is_socket():
        return False
    status = subprocess.run(
        [sys.executable, "-m", "coordctl", "--socket", str(socket), "server", "status"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        check=False,
    )
    return status.returncode == 0


def _can_hide_rpm_config() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.root
@pytest.mark.skipif(not _can_hide_rpm_config(), reason="needs root and mount namespaces")
def test_daemon_starts_quietly_without_the_systems_rpm(tmp_path):
    # The control: there, createrepo_c's own rpm library complains as it loads.
    control = _without_rpm_config(f"{sys.executable} -c 'import createrepo_c'")
    out, _ = control.communicate(timeout=60)
    assert "Unable to open /usr/lib/rpm/rpmrc" in out

    socket = tmp_path / "coordd.sock"
    daemon = _without_rpm_config(
        f"{sys.executable} -m coordd --socket {socket} --state-dir {tmp_path / 'state'}",
        cwd=tmp_path,
    )
    try:
        # Ready means answering (its signal handlers are set by then), not just listening.
        deadline = time.monotonic() + 60
        while not _answers(socket):
            assert daemon.poll() is None, daemon.communicate()[0]
            assert time.monotonic() < deadline, "the daemon did not start answering"
            time.sleep(0.05)
    finally:
        daemon.terminate()
        out, _ = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, out
    assert "rpmrc" not in out, out
