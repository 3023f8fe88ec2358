"""The systemd units: verified by systemd itself, sandbox scored, kept in step with the code."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from coordd.service import locations as paths
from coordd.service.config import Config

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "systemd"
SERVICE = UNITS / "coordd.service"
SOCKET = UNITS / "coordd.socket"
SYSUSERS = UNITS / "coordd.sysusers"
MAX_EXPOSURE = 2.5  # systemd-analyze security calls up to 2.9 "OK"; we want a margin

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (Debian package systemd)"
)


def settings(unit: Path) -> dict[str, list[str]]:
    """Each ``Key=value`` of a unit file, all values of a repeated key in order."""
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match, f"not a simple time span: {value!r}"
    return int(match[1]) * (60 if match[2] == "min" else 1)


def run_analyze(*args: str, cwd: Path, env: dict[str, str] | None = None):
    return subprocess.run(
        [ANALYZE, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "SYSTEMD_PAGER": "", **(env or {})},
        timeout=60,
    )


def units_with_runnable_exec_start(tmp_path: Path) -> tuple[Path, Path]:
    """Copies of the units whose ExecStart points at an executable that exists here.

    ``systemd-analyze verify`` checks that ExecStart's program exists, and
    /usr/local/bin/coordd exists only where coordd is installed system-wide. Rather than
    skip that check or install into the system, the copy names the ``coordd`` on PATH
    when there is one, else a stub script made for this step; everything else in the
    units is verified exactly as written.
    """
    [exec_start] = settings(SERVICE)["ExecStart"]
    program, _, arguments = exec_start.partition(" ")
    assert program == "/usr/local/bin/coordd"
    assert arguments == "--system"
    installed = shutil.which("coordd")
    if installed is None:
        stub = tmp_path / "coordd"
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
        installed = str(stub)
    service = tmp_path / SERVICE.name
    service.write_text(
        SERVICE.read_text().replace(f"ExecStart={program} ", f"ExecStart={installed} ")
    )
    socket = tmp_path / SOCKET.name
    shutil.copy(SOCKET, socket)
    return socket, service


@needs_analyze
def test_units_verify_clean(tmp_path):
    socket, service = units_with_runnable_exec_start(tmp_path)
    # Man pages are checked separately below, against the repository's own pages.
    result = run_analyze("verify", "--man=no", str(socket), str(service), cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@needs_analyze
def test_documentation_pages_exist(tmp_path):
    """Every ``Documentation=man:…`` page is in man/, and systemd finds it there."""
    pages = []
    for unit in (SERVICE, SOCKET):
        for documentation in settings(unit)["Documentation"]:
            pages += re.findall(r"man:([\w.-]+)\((\d)\)", documentation)
    assert ("coordd", "8") in pages
    assert ("coordctl", "1") in pages
    manpath = tmp_path / "man"
    for name, section in set(pages):
        source = ROOT / "man" / f"{name}.{section}"
        assert source.is_file(), f"Documentation= names man:{name}({section}); {source} is missing"
        (manpath / f"man{section}").mkdir(parents=True, exist_ok=True)
        shutil.copy(source, manpath / f"man{section}" / source.name)
    socket, service = units_with_runnable_exec_start(tmp_path)
    result = run_analyze(
        "verify",
        "--man=yes",
        str(socket),
        str(service),
        cwd=tmp_path,
        env={"MANPATH": str(manpath)},
    )
    assert (result.returncode, result.stderr) == (0, "")


@needs_analyze
def test_service_sandbox_exposure():
    result = run_analyze("security", "--offline=yes", str(SERVICE), cwd=ROOT)
    assert result.returncode == 0, result.stderr
    match = re.search(
        r"Overall exposure level for coordd\.service: (\d+\.\d+) (\w+)", result.stdout
    )
    assert match, result.stdout
    print(f"systemd-analyze security: exposure {match[1]} {match[2]}")
    assert float(match[1]) <= MAX_EXPOSURE, result.stdout


def test_units_agree_with_the_code():
    service, socket = settings(SERVICE), settings(SOCKET)
    assert socket["ListenStream"] == [str(paths.SYSTEM_SOCKET)]
    assert socket["FileDescriptorName"] == ["coordd"]
    assert socket["SocketMode"] == [f"{Config.defaults(system=True).socket_mode:04o}"]
    assert socket["Accept"] == ["no"]
    assert service["Type"] == ["notify"]
    assert Path("/var/lib", service["StateDirectory"][0]) == paths.SYSTEM_STATE_DIR
    assert Path("/etc", service["ConfigurationDirectory"][0]) == paths.SYSTEM_CONFIG_FILE.parent
    assert Path("/run", service["RuntimeDirectory"][0]) == paths.SYSTEM_SOCKET.parent
    assert service["RuntimeDirectoryPreserve"] == ["yes"]  # the socket unit's socket lives there
    # Stopping must leave a canceled task its grace period, and then some.
    assert seconds(service["TimeoutStopSec"][0]) > Config.defaults(True).cancel_grace_s + 5


def test_units_name_the_users_and_groups_sysusers_creates():
    declared = {}
    for line in SYSUSERS.read_text().splitlines():
        fields = line.split()
        if fields and not fields[0].startswith("#"):
            declared.setdefault(fields[0], set()).add(fields[1])
    assert declared == {"u": {"coordd"}, "g": {"coordd-admin", "coordd-read"}}
    service, socket = settings(SERVICE), settings(SOCKET)
    groups = declared["g"] | declared["u"]  # a "u" line creates the user's group too
    assert service["User"] == ["coordd"]
    assert service["Group"][0] in groups
    assert socket["SocketUser"] == ["coordd"]
    assert socket["SocketGroup"] == ["coordd-read"]


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="systemd-sysusers missing")
@pytest.mark.skipif(os.geteuid() != 0, reason="systemd-sysusers --root needs root")
def test_sysusers_creates_the_accounts(tmp_path):
    (tmp_path / "etc").mkdir()
    result = subprocess.run(
        ["systemd-sysusers", f"--root={tmp_path}", str(SYSUSERS)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    passwd_lines = (tmp_path / "etc/passwd").read_text().splitlines()
    passwd = {line.split(":")[0]: line.split(":") for line in passwd_lines}
    groups = {line.split(":")[0] for line in (tmp_path / "etc/group").read_text().splitlines()}
    assert passwd["coordd"][5] == "/var/lib/coordd"
    assert passwd["coordd"][6].endswith("nologin")
    assert {"coordd", "coordd-admin", "coordd-read"} <= groups


PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1

MDWE_CHILD = """
    import ctypes, io, mmap, os, sys, tempfile
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl({set_mdwe}, {refuse}, 0, 0, 0) != 0:
        print("unsupported", os.strerror(ctypes.get_errno()))
        sys.exit(0)
    # The restriction is in force: writable and executable memory is refused.
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        print("W+X mapping allowed")
        sys.exit(1)
    except PermissionError:
        pass
    # Loaded only now, so their shared libraries are mapped under the restriction.
    import sqlite3, ssl, hashlib, lxml.etree, zstandard, createrepo_c, anyio, aiohttp
    import aiosqlite, jsonrpcserver
    import coordd.service.config, coordd.service.log, coordd.service.systemd
    db = sqlite3.connect(":memory:")
    db.execute("create table t (x)")
    db.execute("insert into t values (1)")
    ssl.create_default_context()
    hashlib.sha256(b"x").hexdigest()
    packed = zstandard.ZstdCompressor().compress(b"x" * 100_000)
    assert zstandard.ZstdDecompressor().decompress(packed) == b"x" * 100_000
    doc = io.BytesIO(b"<metadata><package><name>foo</name></package></metadata>")
    assert [e.tag for _, e in lxml.etree.iterparse(doc, resolve_entities=False)][-1] == "metadata"
    package = createrepo_c.Package()
    package.name, package.arch, package.epoch = "foo", "noarch", "0"
    package.version, package.release = "1", "1"
    package.pkgId, package.checksum_type, package.location_href = "0" * 64, "sha256", "foo.rpm"
    out = tempfile.mkdtemp()
    primary = createrepo_c.PrimaryXmlFile(out + "/primary.xml.zst", createrepo_c.ZSTD_COMPRESSION)
    primary.set_num_of_pkgs(1)
    primary.add_pkg(package)
    primary.close()
    print("ok")
"""


def test_memory_deny_write_execute_does_not_break_the_libraries():
    """MemoryDenyWriteExecute=yes would kill the daemon at the first JIT or W+X mapping.

    systemd enforces it with a seccomp filter; the kernel's prctl(PR_SET_MDWE) (Linux 6.3+)
    refuses the same mappings, so the daemon's libraries are loaded and exercised under it.
    """
    if not sys.platform.startswith("linux"):
        pytest.skip("Linux only")
    code = MDWE_CHILD.format(set_mdwe=PR_SET_MDWE, refuse=PR_MDWE_REFUSE_EXEC_GAIN)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    if result.stdout.startswith("unsupported"):
        pytest.skip(f"this kernel has no PR_SET_MDWE: {result.stdout.strip()}")
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr
