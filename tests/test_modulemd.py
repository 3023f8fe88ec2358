"""modules.yaml split into its documents, and the streams a copy keeps."""

from __future__ import annotations

import pytest

from coordd.content.modules import choose
from coordd.repo.yum.errors import MetadataError
from coordd.repo.yum.modulemd import parse_artifact, split_documents

STREAM = """\
document: modulemd
version: 2
data:
  name: {name}
  stream: "{stream}"
  description: |
    A block scalar may hold lines like these:
    ---
    ...
  artifacts:
    rpms:
{artifacts}
"""


def stream(name: str, number: str, *artifacts: str) -> str:
    lines = "".join(f"    - {a}\n" for a in artifacts)
    return STREAM.format(name=name, stream=number, artifacts=lines)


def test_documents_split_at_their_markers_only() -> None:
    text = (
        "%YAML 1.2\n---\n"
        + stream("m", "1", "m-0:1.0-1.noarch", "m-lib-1.0-1.x86_64")
        + "...\n# a comment between documents\n---\n"
        + stream("m", "2", "m-0:2.0-1.noarch")
        + "...\n---\ndocument: modulemd-defaults\nversion: 1\ndata: {module: m, stream: '2'}\n"
        + "---\n# only a comment\n"
    )
    docs = split_documents(text, "modules")
    assert [(d.document, d.name, d.stream) for d in docs] == [
        ("modulemd", "m", "1"),
        ("modulemd", "m", "2"),
        ("modulemd-defaults", "m", "2"),
    ]
    assert docs[0].artifacts == ("m-0:1.0-1.noarch", "m-lib-0:1.0-1.x86_64")
    assert "    ---\n    ...\n" in docs[0].text  # the block scalar is kept whole


def test_choose_keeps_streams_whose_packages_are_all_present() -> None:
    text = "---\n" + stream("m", "1", "m-0:1.0-1.noarch", "m-lib-0:1.0-1.noarch")
    text += "---\n" + stream("m", "2", "m-0:2.0-1.noarch")
    text += "---\n" + stream("n", "1", "n-0:1.0-1.noarch")
    text += "---\ndocument: modulemd-defaults\nversion: 1\ndata: {module: m, stream: '2'}\n"
    text += "---\ndocument: modulemd-defaults\nversion: 1\ndata: {module: n, stream: '1'}\n"
    docs = split_documents(text, "modules")
    kept = choose(docs, {"m-0:1.0-1.noarch", "m-0:2.0-1.noarch", "n-0:2.0-1.noarch"})
    assert [(d.document, d.name, d.stream) for d in kept] == [
        ("modulemd", "m", "2"),
        ("modulemd-defaults", "m", "2"),
    ]
    assert choose(docs, set()) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("--- !!python/object/apply:os.system ['true']\n", "document at line 1"),
        ("---\ndata: {name: m}\n", "has no document kind"),
        ("---\n[1, 2\n", "document at line 2"),
        ("---\n" + stream("m", "1", "not-a-nevra"), "artifact 'not-a-nevra'"),
        (
            "---\na: &a [x, x, x, x]\nb: &b [*a, *a, *a, *a]\ndocument: modulemd\n"
            "data: {name: m, artifacts: {rpms: [*b, *b, *b]}}\n",
            "artifact",
        ),
    ],
)
def test_bad_documents_are_refused(text: str, message: str) -> None:
    with pytest.raises(MetadataError, match=message):
        split_documents(text, "modules")


def test_artifacts_are_named_with_their_epoch() -> None:
    assert parse_artifact("perl-DBI-1.641-4.el9.x86_64") == "perl-DBI-0:1.641-4.el9.x86_64"
    assert parse_artifact("nodejs-1:18.14.2-2.module+el8.x86_64") == (
        "nodejs-1:18.14.2-2.module+el8.x86_64"
    )
    assert parse_artifact("nonsense") is None
