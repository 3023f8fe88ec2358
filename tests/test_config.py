"""Configuration: defaults, the TOML file, overrides, error messages, reload, round trip."""

from __future__ import annotations

import dataclasses
import grp
import logging
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordd.service import config as config_module
from coordd.service.config import (
    RELOADABLE,
    RESTART_REQUIRED,
    Config,
    ConfigError,
    default_heavy_slots,
    environment_overrides,
    load_config,
)
from coordd.service.values import DAY, format_duration, parse_duration

# A group every Linux system has, for settings that must name an existing group.
EXISTING_GROUP = grp.getgrgid(0).gr_name
MISSING_GROUP = "coordd-no-such-group"


@pytest.fixture(autouse=True)
def user_home(monkeypatch, tmp_path):
    """An empty home, so a user's real ~/.config/coordd never leaks into a test."""
    for name in ("XDG_RUNTIME_DIR", "XDG_STATE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    return tmp_path / "home"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "coordd.toml"
    path.write_text(text)
    return path


def problems_of(tmp_path: Path, text: str, overrides=None) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides or {}, system=False)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def only_problem(tmp_path: Path, text: str) -> str:
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1, problems
    prefix = f"{tmp_path / 'coordd.toml'}: "
    assert problems[0].startswith(prefix)
    return problems[0].removeprefix(prefix)


# --- defaults ------------------------------------------------------------------------------


def test_user_defaults(user_home, tmp_path):
    config = load_config(None, {}, system=False)
    assert config.socket_path == tmp_path / "run" / "coordd" / "coordd.sock"
    assert config.state_dir == user_home / ".local" / "state" / "coordd"
    assert config.socket_mode == 0o600
    assert config == Config.defaults(system=False)


def test_system_defaults():
    config = Config.defaults(system=True)
    assert config.socket_path == Path("/run/coordd/coordd.sock")
    assert config.state_dir == Path("/var/lib/coordd")
    assert config.socket_mode == 0o660


def test_default_values():
    config = Config.defaults(system=False)
    assert config.heavy_slots == default_heavy_slots()
    assert config.retention_s == 7 * DAY
    assert config.max_frame_bytes == 1024 * 1024
    assert config.max_batch == 100
    assert config.max_connections == 256
    assert config.idle_timeout_s == 300
    assert config.cancel_grace_s == 10
    assert config.reattach_grace_s == 30
    assert config.max_attempts == 3
    assert config.progress_persist_interval_s == 2.0
    assert config.admin_group is None
    assert config.read_group is None
    assert config.log_level == "info"


@pytest.mark.parametrize(
    ("cpus", "slots"), [(1, 2), (2, 2), (4, 2), (6, 3), (8, 4), (16, 8), (128, 8)]
)
def test_heavy_slots_default_from_the_machine(cpus, slots):
    assert default_heavy_slots(cpus) == slots


def test_missing_default_file_is_fine(user_home):
    assert not (user_home / ".config").exists()
    load_config(None, {}, system=False)


def test_default_file_is_read(user_home):
    config_dir = user_home / ".config" / "coordd"
    config_dir.mkdir(parents=True)
    (config_dir / "coordd.toml").write_text("[tasks]\nheavy_slots = 5\n")
    assert load_config(None, {}, system=False).heavy_slots == 5


def test_xdg_config_home_is_honoured(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    (tmp_path / "xdg" / "coordd").mkdir(parents=True)
    (tmp_path / "xdg" / "coordd" / "coordd.toml").write_text('log_level = "debug"\n')
    assert load_config(None, {}, system=False).log_level == "debug"


# --- the file ------------------------------------------------------------------------------


def test_full_file(tmp_path):
    path = write(
        tmp_path,
        f"""
        socket = "/srv/coordd/c.sock"
        state_dir = "/srv/coordd/state"
        log_level = "WARNING"

        [tasks]
        heavy_slots = 4
        retention = "12h"
        max_attempts = 5
        cancel_grace = 2.5
        reattach_grace = "1m30s"
        progress_persist_interval = 0.5

        [limits]
        max_frame_bytes = 65536
        max_batch = 10
        max_connections = 32
        idle_timeout = "10m"

        [access]
        admin_group = "{EXISTING_GROUP}"
        read_group = "{EXISTING_GROUP}"
        socket_mode = "0640"
        """,
    )
    config = load_config(path, {}, system=False)
    assert config == Config(
        socket_path=Path("/srv/coordd/c.sock"),
        state_dir=Path("/srv/coordd/state"),
        heavy_slots=4,
        retention_s=12 * 3600,
        max_frame_bytes=65536,
        max_batch=10,
        max_connections=32,
        idle_timeout_s=600,
        cancel_grace_s=2.5,
        reattach_grace_s=90,
        max_attempts=5,
        progress_persist_interval_s=0.5,
        admin_group=EXISTING_GROUP,
        read_group=EXISTING_GROUP,
        socket_mode=0o640,
        log_level="warning",
    )


def test_dotted_keys_are_the_same_as_tables(tmp_path):
    path = write(tmp_path, "tasks.heavy_slots = 7\n")
    assert load_config(path, {}, system=False).heavy_slots == 7


@pytest.mark.parametrize(
    ("toml", "seconds"),
    [
        ("604800", 604800.0),
        ("1.5", 1.5),
        ('"7d"', 7 * DAY),
        ('"12h"', 12 * 3600.0),
        ('"30m"', 1800.0),
        ('"45s"', 45.0),
        ('"1h30m"', 5400.0),
        ('"1.5h"', 5400.0),
        ('"2w"', 14 * DAY),
        ('" 7 D "', 7 * DAY),
        ('"90"', 90.0),
        ("0", 0.0),
    ],
)
def test_durations(tmp_path, toml, seconds):
    path = write(tmp_path, f"[tasks]\nretention = {toml}\n")
    assert load_config(path, {}, system=False).retention_s == seconds


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('"7 days"', 'cannot read "7 days" as a duration; use a number of seconds'),
        ('""', 'cannot read "" as a duration'),
        ('"h"', 'cannot read "h" as a duration'),
        ('"1x"', 'cannot read "1x" as a duration'),
        ('"-5s"', 'cannot read "-5s" as a duration'),
        ("true", "must be a duration, not a boolean (True)"),
        ("[1]", "must be a duration, not an array ([1])"),
        ("nan", "must be a finite duration, got nan"),
        ("inf", "must be a finite duration, got inf"),
        ("-5", "must be at least 0 seconds, got -5"),
    ],
)
def test_bad_durations(tmp_path, toml, message):
    problem = only_problem(tmp_path, f"[tasks]\nretention = {toml}\n")
    assert problem.startswith("tasks.retention: ")
    assert message in problem


def test_idle_timeout_has_a_floor(tmp_path):
    problem = only_problem(tmp_path, '[limits]\nidle_timeout = "0s"\n')
    assert problem == "limits.idle_timeout: must be at least 1 seconds, got 0"


@pytest.mark.parametrize(
    ("toml", "mode"), [('"0660"', 0o660), ('"660"', 0o660), ('"0o600"', 0o600), ("0o640", 0o640)]
)
def test_socket_mode(tmp_path, toml, mode):
    path = write(tmp_path, f"[access]\nsocket_mode = {toml}\n")
    assert load_config(path, {}, system=False).socket_mode == mode


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("660", 'got 660 (decimal); write it as a string such as "0660"'),
        ('"0999"', "must be an octal permission mode such as \"0660\", not '0999'"),
        ('"4755"', "must be an octal permission mode"),
        ('"rw-rw----"', "must be an octal permission mode"),
        ("6.6", "not a number (6.6)"),
    ],
)
def test_bad_socket_modes(tmp_path, toml, message):
    problem = only_problem(tmp_path, f"[access]\nsocket_mode = {toml}\n")
    assert problem.startswith("access.socket_mode: ")
    assert message in problem


def test_log_level_is_case_insensitive_and_checked(tmp_path):
    assert load_config(write(tmp_path, 'log_level = "Debug"\n'), {}, False).log_level == "debug"
    problem = only_problem(tmp_path, 'log_level = "verbose"\n')
    assert problem == 'log_level: must be one of debug, info, warning, error, not "verbose"'


# --- error messages ------------------------------------------------------------------------


def test_unknown_key_in_a_table_suggests_the_nearest(tmp_path):
    problem = only_problem(tmp_path, "[tasks]\nheavy_slot = 3\n")
    assert problem == "unknown key 'heavy_slot' in [tasks]; did you mean 'heavy_slots'?"


def test_unknown_key_at_top_level_suggests_the_nearest(tmp_path):
    problem = only_problem(tmp_path, 'sockt = "/x.sock"\n')
    assert problem == "unknown key 'sockt' at the top level; did you mean 'socket'?"


def test_unknown_table_suggests_the_nearest(tmp_path):
    problem = only_problem(tmp_path, "[limit]\nmax_batch = 3\n")
    assert problem == "unknown table [limit]; did you mean [limits]?"


def test_key_in_the_wrong_table_lists_the_valid_ones(tmp_path):
    problem = only_problem(tmp_path, "[access]\nmax_batch = 3\n")
    assert problem == (
        "unknown key 'max_batch' in [access]; valid: admin_group, read_group, socket_mode"
    )


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[tasks]\nheavy_slots = "4"', 'tasks.heavy_slots: must be an integer, not a string ("4")'),
        ("[tasks]\nheavy_slots = true", "tasks.heavy_slots: must be an integer, not a boolean"),
        ("[tasks]\nheavy_slots = 2.0", "tasks.heavy_slots: must be an integer, not a number (2.0)"),
        ("socket = 5", "socket: must be a path (a string), not an integer (5)"),
        ('socket = "run/c.sock"', "socket: must be an absolute path, not 'run/c.sock'"),
        ('state_dir = ""', "state_dir: must be a path, not an empty string"),
        ("tasks = 3", "[tasks] must be a table, not an integer (3)"),
        ("[socket]\npath = '/x'", "socket must be a value, not a table"),
        ("[access]\nadmin_group = 0", "access.admin_group: must be a group name (a string)"),
        ('[access]\nread_group = ""', "access.read_group: must be a group name, not an empty"),
    ],
)
def test_wrong_types(tmp_path, toml, message):
    assert message in only_problem(tmp_path, toml + "\n")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[tasks]\nheavy_slots = 0", "tasks.heavy_slots: must be between 1 and 256, got 0"),
        ("[tasks]\nmax_attempts = 101", "tasks.max_attempts: must be between 1 and 100, got 101"),
        ("[limits]\nmax_frame_bytes = 10", "limits.max_frame_bytes: must be between 1024 and"),
        ("[limits]\nmax_connections = -1", "limits.max_connections: must be between 1 and 65536"),
    ],
)
def test_out_of_range(tmp_path, toml, message):
    assert message in only_problem(tmp_path, toml + "\n")


def test_unknown_group(tmp_path):
    assert grp.getgrall()  # the lookup works at all on this machine
    problem = only_problem(tmp_path, f'[access]\nadmin_group = "{MISSING_GROUP}"\n')
    assert problem == (
        f"access.admin_group: names group '{MISSING_GROUP}', which does not exist on this system"
    )


def test_every_problem_is_reported_at_once(tmp_path):
    problems = problems_of(tmp_path, 'sockt = "/x"\n[tasks]\nheavy_slots = 0\nretention = "soon"\n')
    assert len(problems) == 3
    assert [p.split(": ", 1)[1].split(":")[0].split(";")[0] for p in problems] == [
        "unknown key 'sockt' at the top level",
        "tasks.heavy_slots",
        "tasks.retention",
    ]


def test_missing_explicit_file(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=f"^configuration file {missing} does not exist$"):
        load_config(missing, {}, system=False)


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match=f"^cannot read configuration file {tmp_path}: "):
        load_config(tmp_path, {}, system=False)  # a directory


def test_invalid_toml_names_the_place(tmp_path):
    path = write(tmp_path, "[tasks]\nheavy_slots = = 3\n")
    with pytest.raises(ConfigError, match=rf"^{path}: not valid TOML: .*line 2"):
        load_config(path, {}, system=False)


def test_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "coordd.toml"
    path.write_bytes(b'log_level = "\xff"\n')
    with pytest.raises(ConfigError, match=rf"^{path}: not valid TOML"):
        load_config(path, {}, system=False)


# --- overrides -----------------------------------------------------------------------------


def test_overrides_beat_the_file_which_beats_defaults(tmp_path):
    path = write(tmp_path, "[tasks]\nheavy_slots = 3\nmax_attempts = 4\n")
    config = load_config(path, {"heavy_slots": 5, "max_batch": None}, system=False)
    assert config.heavy_slots == 5  # override
    assert config.max_attempts == 4  # file
    assert config.max_batch == 100  # None: not given, default stays


def test_environment_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("COORDD_SOCKET", "/env/c.sock")
    monkeypatch.setenv("COORDD_STATE_DIR", "")  # empty counts as unset
    overrides = environment_overrides()
    assert overrides == {"socket_path": Path("/env/c.sock")}
    path = write(tmp_path, 'socket = "/file/c.sock"\nstate_dir = "/file/state"\n')
    config = load_config(path, overrides, system=False)
    assert config.socket_path == Path("/env/c.sock")
    assert config.state_dir == Path("/file/state")
    assert environment_overrides({"COORDD_STATE_DIR": "/s"}) == {"state_dir": Path("/s")}


def test_command_line_paths_are_relative_to_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    config = load_config(None, {"state_dir": "state", "socket_path": Path("c.sock")}, False)
    assert config.state_dir == tmp_path / "state"
    assert config.socket_path == tmp_path / "c.sock"


def test_overrides_are_validated(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(None, {"retention_s": "forever", "heavy_slot": 2}, system=False)
    assert info.value.problems == [
        'retention_s (command line or environment): cannot read "forever" as a duration; '
        'use a number of seconds (e.g. 90) or a string with units w, d, h, m, s (e.g. "7d", '
        '"12h", "1h30m", "45s")',
        "unknown setting 'heavy_slot'; did you mean 'heavy_slots'?",
    ]


def test_overrides_accept_duration_strings():
    assert load_config(None, {"retention_s": "3d"}, system=False).retention_s == 3 * DAY


# --- output and reload ---------------------------------------------------------------------


def round_trip(tmp_path: Path, config: Config) -> Config:
    path = tmp_path / "effective.toml"
    path.write_text(config.to_toml(), encoding="utf-8")
    return load_config(path, {}, system=False)


@pytest.mark.parametrize("system", [False, True])
def test_to_toml_round_trips_defaults(tmp_path, system):
    config = Config.defaults(system)
    assert round_trip(tmp_path, config) == config


def test_to_toml_round_trips_everything_set(tmp_path):
    config = dataclasses.replace(
        Config.defaults(True),
        socket_path=Path('/odd "dir"/with\\back\tslash/c.sock'),
        retention_s=12.25,
        cancel_grace_s=0,
        reattach_grace_s=3661,
        admin_group=EXISTING_GROUP,
        read_group=EXISTING_GROUP,
        socket_mode=0o640,
        log_level="error",
    )
    text = config.to_toml()
    assert 'reattach_grace = "1h1m1s"' in text
    assert 'retention = "7d"' in Config.defaults(True).to_toml()
    assert 'socket_mode = "0640"' in text
    assert round_trip(tmp_path, config) == config


def test_to_toml_shows_unset_groups_as_comments():
    text = Config.defaults(False).to_toml()
    assert '# admin_group = ""' in text
    assert "\nadmin_group" not in text


@settings(max_examples=200, deadline=None)
@given(
    name=st.text(
        st.characters(exclude_categories=["Cs"], exclude_characters="\0/"),
        min_size=1,
        max_size=30,
    ),
    seconds=st.one_of(
        st.integers(min_value=0, max_value=10**9).map(float),
        st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False),
    ),
)
def test_to_toml_round_trips_any_path_and_duration(tmp_path_factory, name, seconds):
    tmp_path = tmp_path_factory.mktemp("rt")
    config = dataclasses.replace(
        Config.defaults(False), state_dir=Path("/") / name, retention_s=seconds
    )
    assert round_trip(tmp_path, config) == config


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, '"0s"'), (45, '"45s"'), (90, '"1m30s"'), (7 * DAY, '"7d"'), (2.5, "2.5")],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text
    assert parse_duration(text.strip('"') if text.startswith('"') else float(text)) == seconds


def test_reload_applies_reloadable_settings_and_warns_about_the_rest(caplog):
    old = Config.defaults(False)
    new = dataclasses.replace(
        old,
        heavy_slots=old.heavy_slots + 1,
        log_level="debug",
        socket_path=Path("/elsewhere.sock"),
        state_dir=Path("/elsewhere"),
    )
    with caplog.at_level(logging.INFO, logger="coordd.config"):
        reloaded = old.replace_reloadable(new)
    assert reloaded.heavy_slots == old.heavy_slots + 1
    assert reloaded.log_level == "debug"
    assert reloaded.socket_path == old.socket_path
    assert reloaded.state_dir == old.state_dir
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert all("until coordd is restarted" in w for w in warnings)
    assert any("socket_path" in w for w in warnings)
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert sorted(m.split()[1] for m in infos) == ["heavy_slots", "log_level"]


def test_reload_without_changes_logs_nothing(caplog):
    config = Config.defaults(False)
    with caplog.at_level(logging.DEBUG, logger="coordd.config"):
        assert config.replace_reloadable(config) == config
    assert caplog.records == []


def test_every_field_is_reloadable_or_needs_a_restart():
    names = {f.name for f in dataclasses.fields(Config)}
    assert names == RELOADABLE | RESTART_REQUIRED
    assert not RELOADABLE & RESTART_REQUIRED
    assert {"heavy_slots", "retention_s", "log_level", "cancel_grace_s"} <= RELOADABLE


def test_every_field_has_a_toml_key():
    # A field the file cannot set would silently be stuck at its default.
    assert {spec.field for spec in config_module._SPECS} == {
        f.name for f in dataclasses.fields(Config)
    }


def test_loaded_paths_are_absolute():
    config = load_config(None, {}, system=False)
    assert config.socket_path.is_absolute()
    assert os.path.isabs(config.state_dir)
