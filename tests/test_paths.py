"""Default locations of the socket, state and configuration, and the client's socket choice."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from coordd.api import address
from coordd.service import locations as paths
from coordd.service.locations import Paths

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def user_env(monkeypatch, tmp_path):
    """A user with a home, a runtime directory and no coordd variables, not root."""
    for name in (
        "XDG_RUNTIME_DIR",
        "XDG_STATE_HOME",
        "XDG_CONFIG_HOME",
        address.SOCKET_ENV,
        paths.STATE_DIR_ENV,
    ):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    # Keep the real /run/coordd out of the client's choice.
    monkeypatch.setattr(address, "SYSTEM_SOCKET", tmp_path / "system" / "coordd.sock")
    return tmp_path


def bind_socket(path: Path) -> socket.socket:
    path.parent.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    return sock


def test_system_paths_are_fixed(monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/somewhere")
    monkeypatch.setenv(address.SOCKET_ENV, "/elsewhere.sock")
    assert paths.system_paths() == Paths(
        Path("/run/coordd/coordd.sock"),
        Path("/var/lib/coordd"),
        Path("/etc/coordd/coordd.toml"),
    )


def test_user_paths_from_xdg(user_env, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", "/xdg/state")
    monkeypatch.setenv("XDG_CONFIG_HOME", "/xdg/config")
    assert paths.user_paths() == Paths(
        user_env / "run" / "coordd" / "coordd.sock",
        Path("/xdg/state/coordd"),
        Path("/xdg/config/coordd/coordd.toml"),
    )


def test_user_paths_default_to_home(user_env):
    home = user_env / "home"
    where = paths.user_paths()
    assert where.state_dir == home / ".local" / "state" / "coordd"
    assert where.config_file == home / ".config" / "coordd" / "coordd.toml"


@pytest.mark.parametrize("value", [None, "", "relative/run"])
def test_socket_falls_back_to_tmp_without_a_usable_runtime_dir(user_env, monkeypatch, value):
    # The XDG specification: relative values are invalid and must be ignored.
    if value is None:
        monkeypatch.delenv("XDG_RUNTIME_DIR")
    else:
        monkeypatch.setenv("XDG_RUNTIME_DIR", value)
    assert paths.user_paths().socket == Path("/tmp/coordd-1000/coordd.sock")


def test_relative_xdg_state_and_config_are_ignored(user_env, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", "state")
    monkeypatch.setenv("XDG_CONFIG_HOME", "config")
    home = user_env / "home"
    assert paths.user_paths().state_dir == home / ".local" / "state" / "coordd"
    assert paths.user_paths().config_file == home / ".config" / "coordd" / "coordd.toml"


def test_default_paths_follow_euid_unless_told(user_env, monkeypatch):
    assert paths.default_paths() == paths.user_paths()
    assert paths.default_paths(system=True) == paths.system_paths()
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert paths.is_system_default()
    assert paths.default_paths() == paths.system_paths()
    assert paths.default_paths(system=False) == paths.user_paths()


def test_client_prefers_the_environment(user_env, monkeypatch):
    bind_socket(paths.user_paths().socket).close()
    monkeypatch.setenv(address.SOCKET_ENV, "/nonexistent/x.sock")
    assert address.client_socket_path() == Path("/nonexistent/x.sock")


def test_client_prefers_an_existing_user_socket(user_env):
    user = paths.user_paths().socket
    with bind_socket(user), bind_socket(address.SYSTEM_SOCKET):
        assert address.client_socket_path() == user


def test_client_tries_the_system_socket_when_no_user_socket_exists(user_env):
    user = paths.user_paths().socket
    user.parent.mkdir(parents=True)
    user.write_text("not a socket")
    with bind_socket(address.SYSTEM_SOCKET):
        assert address.client_socket_path() == address.SYSTEM_SOCKET


def test_client_names_the_users_own_default_when_nothing_exists(user_env, monkeypatch):
    assert address.client_socket_path() == paths.user_paths().socket
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert address.client_socket_path() == address.SYSTEM_SOCKET


def test_paths_is_an_immutable_value():
    a = Paths(Path("/s"), Path("/d"), Path("/c"))
    assert a == Paths(Path("/s"), Path("/d"), Path("/c"))
    assert a != Paths(Path("/s"), Path("/d"), Path("/other"))
    assert len({a, Paths(Path("/s"), Path("/d"), Path("/c"))}) == 1
    with pytest.raises(AttributeError):
        a.socket = Path("/x")
    assert "state_dir=PosixPath('/d')" in repr(a)


def test_ensure_owned_dir_creates_a_private_directory(tmp_path):
    target = tmp_path / "a" / "coordd"
    paths.ensure_owned_dir(target)
    assert target.is_dir()
    assert target.stat().st_mode & 0o777 == 0o700
    paths.ensure_owned_dir(target)  # existing and fine: no error


def test_ensure_owned_dir_refuses_a_symlink(tmp_path):
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(PermissionError, match="not a directory"):
        paths.ensure_owned_dir(tmp_path / "link")


def test_ensure_owned_dir_refuses_a_writable_directory(tmp_path):
    target = tmp_path / "open"
    target.mkdir()
    target.chmod(0o777)
    with pytest.raises(PermissionError, match="writable by group or others"):
        paths.ensure_owned_dir(target)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory to another user")
def test_ensure_owned_dir_refuses_someone_elses_directory(tmp_path):
    target = tmp_path / "theirs"
    target.mkdir(mode=0o700)
    os.chown(target, 65534, 65534)
    with pytest.raises(PermissionError, match="belongs to uid 65534"):
        paths.ensure_owned_dir(target)


def test_importing_the_address_costs_no_other_modules():
    # coordctl imports this module on every one-shot command (and, through the package,
    # the names leaf that holds coordd.__version__).
    code = (
        "import sys, pathlib; before = set(sys.modules); import coordd.api.address; "
        "print(sorted(set(sys.modules) - before))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout
    assert out.strip() == "['coordd', 'coordd.api', 'coordd.api.address', 'coordd.api.names']"
