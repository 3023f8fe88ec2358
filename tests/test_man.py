"""The man pages: clean under mandoc's lint, generated from the parsers, and the API page
documenting every method of the daemon's table with its parameters."""

from __future__ import annotations

import importlib
import inspect
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from types import ModuleType

import pytest

from coordctl import exitcodes
from coordctl.parser import build_parser
from coordd.api import errors

ROOT = Path(__file__).resolve().parents[1]
MAN = ROOT / "man"
PAGES = ("coordctl.1", "coordd.8", "coordd-api.7")

sys.path.insert(0, str(MAN))
import generate  # noqa: E402 - man/generate.py, found through the path above


def daemon_module(name: str) -> ModuleType:
    """Import a daemon module; jsonrpcserver 5.0.9 warns about its own use of
    importlib.resources at import time, which is not ours to fix here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return importlib.import_module(name)


def roff(text: str) -> str:
    """An option or name as it is written in roff (minus signs escaped)."""
    return text.replace("-", "\\-")


@pytest.mark.skipif(shutil.which("mandoc") is None, reason="mandoc is not installed")
@pytest.mark.parametrize("page", PAGES)
def test_mandoc_lint_is_clean(page):
    result = subprocess.run(
        ["mandoc", "-Tlint", str(MAN / page)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""


def test_generated_files_are_up_to_date():
    daemon_module("coordd.service.main")
    stale = [
        str(path.relative_to(ROOT))
        for path, text in generate.outputs().items()
        if not path.exists() or path.read_text() != text
    ]
    assert stale == [], f"run python man/generate.py: {stale} are out of date"


def test_coordctl_page_names_every_command_and_option():
    page = (MAN / "coordctl.1").read_text()
    parser = build_parser()
    for path, leaf in generate.leaves(parser):
        words = " ".join(path)
        assert f'.SS "{words}"' in page, words
        section = page.split(f'.SS "{words}"', 1)[1].split("\n.SS ", 1)[0]
        for action in leaf._actions:
            for option in action.option_strings:
                if option in ("-h", "--help", "--json"):
                    continue
                assert roff(option) in section, f"{words}: {option}"
    for option in ("--socket", "--json", "--version"):
        assert roff(option) in page
    exit_section = page.split(".SH EXIT STATUS", 1)[1].split(".SH ", 1)[0]
    for status in exitcodes.DESCRIPTIONS:
        assert f".B {status}\n" in exit_section, status


def test_coordd_page_names_every_option_and_exit_status():
    main = daemon_module("coordd.service.main")
    page = (MAN / "coordd.8").read_text()
    for action in main.build_parser()._actions:
        for option in action.option_strings:
            if option not in ("-h", "--help"):
                assert roff(option) in page, option
    exit_section = page.split(".SH EXIT STATUS", 1)[1].split(".SH ", 1)[0]
    for name, value in vars(main).items():
        if name.startswith("EXIT_") and isinstance(value, int):
            assert f".B {value}\n" in exit_section, name


def test_api_page_documents_every_method_with_its_parameters():
    rpc = daemon_module("coordd.api.methods")
    page = (MAN / "coordd-api.7").read_text()
    api = rpc.Api(rpc.Services(None, None, None))  # type: ignore[arg-type] - only the table is read
    assert len(api.table) >= 18
    for name, (method, access) in api.table.items():
        heading = f'.BR {name} " ({access})"'
        assert heading in page, f"{name} is not documented as {access}"
        entry = page.split(heading, 1)[1]
        entry = re.split(r"\n\.(?:TP|SS|SH|PP)\n", entry, maxsplit=1)[0]
        parameters = list(inspect.signature(method).parameters)[1:]  # after the caller
        for parameter in parameters:
            assert parameter in entry, f"{name}: parameter {parameter} is not documented"
        if not parameters:
            assert "No parameters." in entry, name


def test_api_page_documents_notifications_and_error_codes():
    page = (MAN / "coordd-api.7").read_text()
    notifications = page.split(".SH NOTIFICATIONS", 1)[1].split(".SH ", 1)[0]
    for name in ("task.changed", "task.progress", "lock.granted", "lock.cancel", "lock.revoked"):
        assert f".B {name}\n" in notifications, name
    codes = [
        errors.PARSE_ERROR,
        errors.INVALID_REQUEST,
        errors.METHOD_NOT_FOUND,
        errors.INVALID_PARAMS,
        errors.INTERNAL_ERROR,
        *errors.BY_CODE,
    ]
    error_section = page.split(".SH ERRORS", 1)[1].split(".SH ", 1)[0]
    for code in codes:
        assert f".B \\{code}\n" in error_section, code
