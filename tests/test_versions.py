"""rpm version comparison and the newest-only choice (no feed, no server)."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from coordd.repo.yum.versions import compare_evr, rpmvercmp

KNOWN_VERCMP = [
    ("1.0", "1.0", 0),
    ("1.0", "2.0", -1),
    ("2.0.1", "2.0", 1),
    ("2.0", "2.0.1", -1),
    ("1.10", "1.9", 1),
    ("1.001", "1.1", 0),
    ("5.5p1", "5.5p2", -1),
    ("5.5p10", "5.5p1", 1),
    ("10xyz", "10.1xyz", -1),
    ("xyz10", "xyz10.1", -1),
    ("1.0a", "1.0", 1),
    ("a", "1", -1),
    ("1.0~rc1", "1.0", -1),
    ("1.0~rc1", "1.0~rc2", -1),
    ("1.0~rc1~git1", "1.0~rc1", -1),
    ("1.0^", "1.0", 1),
    ("1.0^git1", "1.0^git2", -1),
    ("1.0^git1", "1.01", -1),
    ("1.0^20160101", "1.0.1", -1),
    ("1.0~rc1^git1", "1.0~rc1", 1),
    ("1_0", "1.0", 0),
    ("", "", 0),
]


def test_rpmvercmp_known_cases() -> None:
    for a, b, expected in KNOWN_VERCMP:
        assert rpmvercmp(a, b) == expected, (a, b)
        assert rpmvercmp(b, a) == -expected, (b, a)
    assert compare_evr({"epoch": "1", "version": "1"}, {"epoch": "0", "version": "9"}) == 1
    assert compare_evr({"version": "1", "release": "10"}, {"version": "1", "release": "9"}) == 1


# rpm.vercmp in Lua refuses an empty version.
_version_text = hs.text(alphabet="0123456789abcXYZ.~^_+", min_size=1, max_size=8)


@pytest.mark.skipif(
    subprocess.run(["which", "rpm"], capture_output=True).returncode != 0,
    reason="rpm is not installed",
)
@settings(max_examples=5, deadline=None)
@given(hs.lists(hs.tuples(_version_text, _version_text), min_size=60, max_size=60))
def test_rpmvercmp_agrees_with_rpm(pairs: list[tuple[str, str]]) -> None:
    """Compare with rpm itself (its Lua ``rpm.vercmp``), 60 pairs per rpm call."""
    lua = " ".join(f'print(rpm.vercmp("{a}", "{b}")) print(" ")' for a, b in pairs)
    out = subprocess.run(
        ["rpm", "--eval", f"%{{lua: {lua}}}"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert [rpmvercmp(a, b) for a, b in pairs] == [int(x) for x in out]
