"""Access control with real users: socket permissions, then SO_PEERCRED (docs/design.md §8).

The test (root) creates groups and users with ``groupadd``/``useradd`` for this run and
removes them afterwards. Each client runs in a forked child that drops to the user's uid,
gid and groups before it connects, so the daemon sees that user's kernel credentials. A
fork rather than a new interpreter: the test's Python may live where other users cannot
enter (``/root/.pyenv``), and the credentials the daemon checks are those of the process
that calls ``connect``, whatever program it runs.

Every method of ``Api.table`` is called by every kind of user, so a method added to the
table is checked here without anyone remembering to.

The daemons run as root (as the harness starts them), except one started through
``setpriv`` as a user of its own, to show that the daemon's own uid has admin access.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coordctl.client import Client, NotReachable
from coordd.api.errors import CoorddError, PermissionDenied, ProtocolError
from tests.helpers.daemon import DaemonProcess
from tests.helpers.feeds import real_rpms  # noqa: F401 - fixture

with warnings.catch_warnings():
    # jsonrpcserver 5.0.9 reads its schema with importlib.resources.read_text (and open_text),
    # deprecated in Python 3.11; pytest turns the warnings into errors at import time.
    warnings.filterwarnings("ignore", "(read|open)_text is deprecated", DeprecationWarning)
    from coordd.api.methods import Api

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[1]
PERMISSION_DENIED = PermissionDenied.code

# Which access each method needs, straight from the daemon's own table (the method objects
# are bound to no services here; only the names and access levels are read).
ACCESS: dict[str, str] = {name: access for name, (_, access) in Api(None).table.items()}  # type: ignore[arg-type]

# A missing task id, well formed.
NO_TASK = "0" * 32


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]


@dataclass(frozen=True)
class Accounts:
    admin_group: str
    read_group: str
    admin: User  # in the admin group only
    reader: User  # in the read group only
    outsider: User  # in neither
    service: User  # runs a daemon of its own


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=60)


def _user(name: str) -> User:
    entry = pwd.getpwnam(name)
    return User(name, entry.pw_uid, entry.pw_gid, tuple(os.getgrouplist(name, entry.pw_gid)))


@pytest.fixture(scope="module")
def accounts() -> Iterator[Accounts]:
    """Two groups and four users, unique to this run, removed at the end."""
    if os.geteuid() != 0:
        pytest.skip("creating users and groups needs root")
    for tool in ("groupadd", "useradd", "userdel", "groupdel"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (Debian package passwd)")
    tag = secrets.token_hex(3)
    admin_group, read_group = f"cdtest-gadm-{tag}", f"cdtest-grd-{tag}"
    members = {
        "admin": (f"cdtest-admin-{tag}", admin_group),
        "reader": (f"cdtest-read-{tag}", read_group),
        "outsider": (f"cdtest-none-{tag}", None),
        "service": (f"cdtest-svc-{tag}", None),
    }
    groups: list[str] = []
    users: list[str] = []
    try:
        for group in (admin_group, read_group):
            _run("groupadd", group)
            groups.append(group)
        for name, extra in members.values():
            # -U: a private primary group of the same name, so no shared default group
            # (such as "users") gives anyone access by accident.
            command = ["useradd", "-M", "-U", "-s", "/usr/sbin/nologin"]
            if extra:
                command += ["-G", extra]
            _run(*command, name)
            users.append(name)
        yield Accounts(
            admin_group=admin_group,
            read_group=read_group,
            **{role: _user(name) for role, (name, _) in members.items()},
        )
    finally:
        for name in users:
            subprocess.run(["userdel", name], capture_output=True, check=False)
            subprocess.run(["groupdel", name], capture_output=True, check=False)
        for group in groups:
            subprocess.run(["groupdel", group], capture_output=True, check=False)


# -- running code as another user ----------------------------------------------------------


def _drop_to(user: User) -> None:
    os.setgroups(list(user.groups))
    os.setgid(user.gid)
    os.setuid(user.uid)


def as_user(user: User, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a forked child with ``user``'s credentials; return its JSON result.

    An exception in the child is re-raised here as an AssertionError naming it.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        status = 1
        try:
            os.close(read_fd)
            try:
                _drop_to(user)
                outcome: dict[str, Any] = {"result": fn()}
            except BaseException as exc:
                outcome = {"exception": f"{type(exc).__name__}: {exc}"}
            with os.fdopen(write_fd, "w") as out:
                json.dump(outcome, out)
            status = 0
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        text = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"client as {user.name} died"
    assert text, f"client as {user.name} said nothing"
    outcome = json.loads(text)
    if "exception" in outcome:
        raise AssertionError(f"as {user.name}: {outcome['exception']}")
    return outcome["result"]


# -- the calls -------------------------------------------------------------------------------


def call_params(task_id: str) -> dict[str, dict[str, Any]]:
    """Plausible parameters for each method; repositories acc, acc2 and victim exist.

    A method missing here is still called (with no parameters): the access check comes
    before the parameters are looked at.
    """
    return {
        "server.status": {},
        "task.list": {"state": "all"},
        "task.get": {"task_id": task_id},
        "task.wait": {"task_id": task_id, "timeout": 0},
        "task.cancel": {"task_id": task_id},
        "events.subscribe": {"task_ids": [NO_TASK]},
        "events.unsubscribe": {},
        "repo.list": {},
        "repo.show": {"repo_id": "acc"},
        "repo.create": {"repo_id": f"made-{os.getuid()}"},
        "repo.update": {"repo_id": "acc", "description": f"changed by uid {os.getuid()}"},
        "repo.delete": {"repo_id": "victim"},
        "repo.sync": {"repo_id": "acc"},
        "repo.publish": {"repo_id": "acc"},
        "repo.copy": {"source": "acc", "target": "acc2"},
        "schedule.create": {"kind": "sync", "repo_id": "acc", "schedule": "2030-01-01T00:00Z/P1D"},
        "schedule.list": {"repo_id": "acc"},
        "repo.remove": {"repo_id": "acc", "names": ["nothing-*"]},
        "lock.acquire": {"resources": [{"type": "access-test", "id": "x", "kind": "read"}]},
        "lock.attach": {"task_id": task_id},
        "lock.release": {"task_id": task_id},
    }


def call_every_method(socket_path: str, task_id: str) -> dict[str, Any]:
    """Call each method of the table on one connection; each outcome is "ok" or the error."""
    params = call_params(task_id)
    outcomes: dict[str, Any] = {}
    with Client(socket_path, timeout=30) as client:
        for method in ACCESS:
            try:
                result = client.call(method, params.get(method, {}))
            except CoorddError as exc:
                outcomes[method] = {
                    "error": type(exc).__name__,
                    "code": exc.code,
                    "message": exc.message,
                }
            else:
                outcomes[method] = "ok"
                if method == "server.status":
                    outcomes["caller"] = result["caller"]
    return outcomes


def server_status(socket_path: str) -> dict[str, Any]:
    with Client(socket_path, timeout=30) as client:
        return client.call("server.status")


def refusal_at_connect(socket_path: str) -> dict[str, Any]:
    """Connect, send nothing, and read what the daemon says before it hangs up."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)  # the refusal comes at once; an idle connection would wait
        sock.connect(socket_path)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    return json.loads(data.decode())


def connect_error(socket_path: str) -> str:
    """Try to call ``server.status``; return how the connection was refused."""
    try:
        server_status(socket_path)
    except NotReachable as exc:
        return exc.reason
    raise AssertionError("the connection was not refused")


def assert_full_access(outcomes: dict[str, Any], who: str) -> None:
    denied = {
        m: o
        for m, o in outcomes.items()
        if isinstance(o, dict) and o.get("error") == "PermissionDenied"
    }
    assert denied == {}, f"{who} was denied"
    assert outcomes["caller"]["access"] == ["admin", "read"]
    # The mutations really went through, not just past the check.
    mutations = ("repo.create", "repo.update", "repo.sync", "repo.publish", "repo.copy")
    for method in (*mutations, "schedule.create"):
        assert outcomes[method] == "ok", (who, method, outcomes[method])


# -- daemons ---------------------------------------------------------------------------------


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def start_daemon(tmp_path: Path, accounts: Accounts, mode: str) -> DaemonProcess:
    daemon = DaemonProcess(tmp_path / "state")
    daemon.config_file().write_text(
        "[access]\n"
        f'admin_group = "{accounts.admin_group}"\n'
        f'read_group = "{accounts.read_group}"\n'
        f'socket_mode = "{mode}"\n'
    )
    # mkdtemp made the socket's directory 0700: other users could not reach the socket.
    daemon.run_dir.chmod(0o755)
    # A strict umask: the socket's mode must come from the configuration, not from umask.
    with umask(0o077):
        daemon.start()
    return daemon


@pytest.fixture
def shared_daemon(tmp_path: Path, accounts: Accounts) -> Iterator[tuple[DaemonProcess, str]]:
    """A root daemon whose socket anyone may open (0666): the daemon alone decides."""
    daemon = start_daemon(tmp_path, accounts, "0666")
    try:
        for repo in ("acc", "acc2", "victim"):
            created = daemon.call("repo.create", repo_id=repo)
        task_id = created["task"]["id"]
        assert daemon.call("task.wait", task_id=task_id)["state"] == "finished"
        yield daemon, task_id
    finally:
        daemon.cleanup()


# -- tests -----------------------------------------------------------------------------------


def test_the_table_has_both_access_levels():
    # Guards the tests below against passing vacuously.
    assert set(ACCESS.values()) == {"read", "admin"}
    assert ACCESS["server.status"] == "read"
    assert ACCESS["repo.create"] == "admin"


def test_admin_group_may_call_every_method(shared_daemon, accounts):
    daemon, task_id = shared_daemon
    outcomes = as_user(accounts.admin, lambda: call_every_method(str(daemon.socket), task_id))
    assert_full_access(outcomes, accounts.admin.name)
    created = daemon.call("task.list", state="all")["tasks"]
    assert {t["uid"] for t in created if t["operation"] == "repo.create"} >= {accounts.admin.uid}


def test_root_may_call_every_method(shared_daemon):
    daemon, task_id = shared_daemon
    assert_full_access(call_every_method(str(daemon.socket), task_id), "root")


def test_read_group_is_denied_exactly_the_admin_methods(shared_daemon, accounts):
    daemon, task_id = shared_daemon
    reader = accounts.reader
    before = daemon.call("task.list", state="all")["tasks"]
    outcomes = as_user(reader, lambda: call_every_method(str(daemon.socket), task_id))
    assert outcomes.pop("caller")["access"] == ["read"]
    assert set(outcomes) == set(ACCESS)
    params = call_params(task_id)
    for method, access in ACCESS.items():
        outcome = outcomes[method]
        if access == "admin":
            assert isinstance(outcome, dict), (method, outcome)
            assert outcome["code"] == PERMISSION_DENIED, (method, outcome)
            assert outcome["error"] == "PermissionDenied"
            assert f"{method} needs admin access" in outcome["message"], outcome["message"]
            assert f"uid {reader.uid} has read-only access" in outcome["message"]
        elif method in params:
            assert outcome == "ok", (method, outcome)
        else:  # a method these tests do not know yet: at least it was not refused
            assert not isinstance(outcome, dict) or outcome["code"] != PERMISSION_DENIED
    # Nothing the reader asked for was stored.
    assert daemon.call("task.list", state="all")["tasks"] == before
    assert daemon.call("schedule.list")["schedules"] == []
    assert "victim" in {r["id"] for r in daemon.call("repo.list")["repositories"]}


def test_read_group_cannot_upload(shared_daemon, accounts, real_rpms):  # noqa: F811
    """The reader passes an RPM it holds open: refused before the file is read, and the
    descriptor closed by the daemon."""
    daemon, _ = shared_daemon
    fd = os.open(real_rpms[0], os.O_RDONLY)  # opened here; the forked client inherits it

    def try_upload() -> Any:
        with Client(str(daemon.socket), timeout=30) as client:
            try:
                client.call("repo.upload", {"repo_id": "acc"}, fds=[fd])
            except CoorddError as exc:
                return {"code": exc.code, "message": exc.message}
            return "ok"

    try:
        outcome = as_user(accounts.reader, try_upload)
    finally:
        os.close(fd)
    assert outcome["code"] == PERMISSION_DENIED, outcome
    assert "repo.upload needs admin access" in outcome["message"]
    assert daemon.call("repo.versions.list", repo_id="acc")["versions"] == []
    assert not [
        t for t in daemon.call("task.list", state="all")["tasks"] if t["operation"] == "repo.upload"
    ]


def test_neither_group_is_refused_at_connect(shared_daemon, accounts):
    daemon, _ = shared_daemon
    outsider = accounts.outsider
    reply = as_user(outsider, lambda: refusal_at_connect(str(daemon.socket)))
    assert reply["id"] is None
    assert reply["error"]["code"] == PERMISSION_DENIED
    message = reply["error"]["message"]
    assert message.startswith("permission denied"), message
    assert f"uid {outsider.uid} is neither in the admin group nor in the read group" in message

    def through_the_client() -> str:
        try:
            server_status(str(daemon.socket))
        except PermissionDenied as exc:
            return exc.message
        except ProtocolError as exc:  # the daemon hung up before the request was sent
            return f"hung up: {exc.message}"
        return "served"

    assert as_user(outsider, through_the_client) != "served"
    # The daemon is unharmed and still serves the others.
    assert server_status(str(daemon.socket))["caller"]["access"] == ["admin", "read"]


def test_socket_file_mode_and_group_are_set_explicitly(tmp_path, accounts):
    daemon = start_daemon(tmp_path, accounts, "0660")
    try:
        info = daemon.socket.stat()
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o660  # not 0600 from the umask
        assert info.st_uid == 0
        assert info.st_gid == grp.getgrnam(accounts.read_group).gr_gid
        path = str(daemon.socket)
        # The read group gets in through the file's group permission...
        assert as_user(accounts.reader, lambda: server_status(path))["caller"]["access"] == ["read"]
        # ...everyone else is stopped by the file system before the daemon sees them.
        assert "permission denied" in as_user(accounts.outsider, lambda: connect_error(path))
    finally:
        daemon.cleanup()


# -- a daemon running as its own, unprivileged user ----------------------------------------------


class DaemonAs(DaemonProcess):
    """A coordd started through ``setpriv`` as another user (as systemd's ``User=`` does)."""

    def __init__(self, state_dir: Path, user: User, capabilities: list[str]) -> None:
        super().__init__(state_dir)
        self.env["PYTHONPATH"] = str(ROOT)
        self.prefix = [
            "setpriv",
            f"--reuid={user.uid}",
            f"--regid={user.gid}",
            "--clear-groups",
            *capabilities,
        ]

    def command(self) -> list[str]:
        return [*self.prefix, *super().command()]


def setpriv_capabilities(user: User) -> list[str]:
    """What ``setpriv`` must add for ``user`` to start this interpreter at all.

    Nothing when the interpreter and the checkout are reachable by other users. When they
    are not (``/root/.pyenv`` under a 0700 ``/root``), the ambient capability
    CAP_DAC_READ_SEARCH lets the process read and search directories anyway; it changes
    neither its uid nor what SO_PEERCRED reports, which is what this test is about.
    """
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is not installed (Debian package util-linux)")
    probe = [sys.executable, "-c", "import coordd.service.main"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for extra in ([], ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]):
        command = ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups"]
        done = subprocess.run(
            [*command, *extra, *probe], capture_output=True, env=env, cwd="/", check=False
        )
        if done.returncode == 0:
            return extra
    pytest.skip(f"{sys.executable} cannot be started as {user.name}: {done.stderr[-500:]!r}")


def test_the_daemons_own_user_has_admin_access(accounts):
    service = accounts.service
    capabilities = setpriv_capabilities(service)
    # Outside pytest's tmp_path, whose parent only root may enter; owned by the service
    # user, as systemd's StateDirectory= and RuntimeDirectory= would be.
    base = Path(tempfile.mkdtemp(prefix="cdt-"))
    daemon = DaemonAs(base / "state", service, capabilities)
    try:
        daemon.state_dir.mkdir()
        for directory in (base, daemon.state_dir, daemon.run_dir):
            os.chown(directory, service.uid, service.gid)
            directory.chmod(0o755)
        daemon.config_file().write_text(
            f'[access]\nadmin_group = "{accounts.admin_group}"\n'
            f'read_group = "{accounts.read_group}"\nsocket_mode = "0666"\n'
        )
        daemon.start()
        sock = str(daemon.socket)
        assert daemon.socket.stat().st_uid == service.uid
        assert (base / "state" / "coordd.db").stat().st_uid == service.uid

        for user in (service, accounts.admin):
            outcome = as_user(user, lambda: server_status(sock))
            assert outcome["caller"] == {"uid": user.uid, "access": ["admin", "read"]}, user
        assert server_status(sock)["caller"]["access"] == ["admin", "read"]  # root
        assert as_user(accounts.reader, lambda: server_status(sock))["caller"]["access"] == ["read"]
        reply = as_user(accounts.outsider, lambda: refusal_at_connect(sock))
        assert reply["error"]["code"] == PERMISSION_DENIED

        def create() -> dict[str, Any]:
            with Client(sock, timeout=30) as client:
                return client.call("repo.create", repo_id="own")

        created = as_user(service, create)
        assert created["verdict"] == "accepted"
        assert created["task"]["uid"] == service.uid
        assert daemon.stop() == 0, daemon.log_text()
    finally:
        daemon.cleanup()
        shutil.rmtree(base, ignore_errors=True)
