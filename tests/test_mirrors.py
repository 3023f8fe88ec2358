"""Metalink and mirrorlist parsing: mirror order, the checks on repomd.xml, hostile lists."""

from __future__ import annotations

import hashlib

import pytest

from coordd.repo.yum.errors import MetadataError
from coordd.repo.yum.mirrors import Expected, Mirrors, parse_metalink, parse_mirrorlist

REPOMD = b"<repomd>current</repomd>\n"
OLDER = b"<repomd>previous</repomd>\n"


def hashes(data: bytes, *names: str) -> str:
    return "".join(
        f'<hash type="{name}">{hashlib.new(name, data).hexdigest()}</hash>' for name in names
    )


def metalink(urls: str, data: bytes = REPOMD, alternates: bytes | None = None) -> bytes:
    """A metalink shaped as MirrorManager writes them."""
    alternate = ""
    if alternates is not None:
        alternate = (
            "<mm0:alternates><mm0:alternate><mm0:timestamp>1</mm0:timestamp>"
            f"<size>{len(alternates)}</size>"
            f"<verification>{hashes(alternates, 'md5', 'sha256')}</verification>"
            "</mm0:alternate></mm0:alternates>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<metalink version="3.0" xmlns="http://www.metalinker.org/" type="dynamic"'
        ' xmlns:mm0="http://fedorahosted.org/mirrormanager">'
        '<files><file name="repomd.xml"><mm0:timestamp>2</mm0:timestamp>'
        f"<size>{len(data)}</size>"
        f"<verification>{hashes(data, 'md5', 'sha1', 'sha256', 'sha512')}</verification>"
        f"{alternate}"
        f'<resources maxconnections="1">{urls}</resources></file></files></metalink>'
    ).encode()


def url(href: str, preference: int, protocol: str = "https") -> str:
    return f'<url protocol="{protocol}" type="{protocol}" preference="{preference}">{href}</url>'


def test_metalink_mirrors_in_preference_order():
    mirrors = parse_metalink(
        metalink(
            url("https://b.example/epel/9/x86_64/repodata/repomd.xml", 90)
            + url("rsync://c.example/epel/9/x86_64/repodata/repomd.xml", 100, "rsync")
            + url("https://a.example/pub/epel/9/x86_64/repodata/repomd.xml", 100)
            + url("http://d.example/epel/repodata/repomd.xml", 90, "http")
            + url("https://a.example/pub/epel/9/x86_64/repodata/repomd.xml", 80)
        )
    )
    # Highest preference first; ties keep the list's order; rsync and duplicates dropped.
    assert mirrors.urls == (
        "https://a.example/pub/epel/9/x86_64/",
        "https://b.example/epel/9/x86_64/",
        "http://d.example/epel/",
    )


def test_metalink_checks_repomd_against_its_hashes_and_alternates():
    mirrors = parse_metalink(
        metalink(url("https://a.example/repodata/repomd.xml", 100), alternates=OLDER)
    )
    mirrors.check_repomd(REPOMD, "https://a.example/")
    mirrors.check_repomd(OLDER, "https://a.example/")  # a mirror one version behind
    with pytest.raises(MetadataError, match=r"mirror https://a\.example/ does not match"):
        mirrors.check_repomd(b"<repomd>tampered</repomd>\n", "https://a.example/")
    # Same size, other bytes: the hashes decide.
    with pytest.raises(MetadataError):
        mirrors.check_repomd(REPOMD.replace(b"current", b"CURRENT"), "https://a.example/")


def test_expected_needs_every_listed_hash():
    sha256 = hashlib.sha256(REPOMD).hexdigest()
    expected = Expected(len(REPOMD), (("sha256", sha256), ("md5", "0" * 32)))
    assert not expected.matches(REPOMD)
    assert Expected(None, (("sha256", sha256),)).matches(REPOMD)


def test_mirrorlist_keeps_order_and_skips_what_it_cannot_use():
    mirrors = parse_mirrorlist(
        b"# generated\n"
        b"https://a.example/rocky/9/BaseOS/x86_64/os\n"
        b"\n"
        b"ftp://b.example/rocky/\n"
        b"http://c.example/rocky/9/BaseOS/x86_64/os/\n"
        b"https://a.example/rocky/9/BaseOS/x86_64/os/\n"
    )
    assert mirrors == Mirrors(
        (
            "https://a.example/rocky/9/BaseOS/x86_64/os/",
            "http://c.example/rocky/9/BaseOS/x86_64/os/",
        )
    )
    mirrors.check_repomd(b"anything", "https://a.example/")  # nothing to check against


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"<metalink", "malformed XML"),
        (
            b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY x "y">]>'
            b'<metalink xmlns="http://www.metalinker.org/"/>',
            "DOCTYPE",
        ),
        (b"<other/>", "root element"),
        (b'<metalink xmlns="http://www.metalinker.org/"><files/></metalink>', "expected one"),
        (metalink(url("ftp://a.example/repodata/repomd.xml", 100, "ftp")), "no http or https"),
        (
            metalink(url("https://a.example/repodata/repomd.xml", 100))
            .replace(b'type="sha256"', b'type="crc32"')
            .replace(b'type="sha512"', b'type="crc64"'),
            "no sha256 or stronger",
        ),
        (
            metalink(url("https://a.example/repodata/repomd.xml", 100)).replace(
                f"<size>{len(REPOMD)}</size>".encode(), b"<size>-1</size>"
            ),
            "not a number",
        ),
    ],
)
def test_hostile_metalinks_are_refused(data, message):
    with pytest.raises(MetadataError, match=message):
        parse_metalink(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"<?xml version='1.0'?><metalink/>", "set it as the metalink"),
        (b"# nothing\nrsync://a.example/\n", "no http or https"),
    ],
)
def test_hostile_mirrorlists_are_refused(data, message):
    with pytest.raises(MetadataError, match=message):
        parse_mirrorlist(data)
