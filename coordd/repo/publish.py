"""Publish a repository version: a directory tree that dnf/yum accept as a ``baseurl``.

The repodata (primary, filelists, other; updateinfo when the version has errata;
prestodelta when it has delta RPMs; the extra records such as comps kept as synced) is
written by createrepo_c from the units stored in the content database
(``coordd.repo.repodata``), not by reading RPM files again. Packages, delta RPMs and tree
files are hard links to the pool's files (copied only when the publication lives on another
filesystem); pool files are immutable (``coordd.content.pool``), so sharing inodes is safe.

A large version is published by a worker process (``python -m coordd.repo.publish``), so
the compression never holds the daemon's interpreter; a small one in a thread.

Signed metadata: with a signing key (``args["signing"]``), ``repodata/repomd.xml.asc`` (a
detached armored signature of repomd.xml) and ``repodata/repomd.xml.key`` (the public key)
are written into the build before it is swapped in, so a client never sees a repomd.xml
without its signature, or with the signature of another.

Atomic swap: ``publish_dir`` is a symbolic link to a generation directory beside it,
``.<name>.gen-<hex>``. A publication is built in ``.<name>.tmp-<hex>``, renamed to a new
generation, and a new symlink is renamed over ``publish_dir``; readers see the old tree or
the new one, never half of one. The generation swapped out stays for ``grace`` seconds (its
mtime marks when it was retired), so a client that read the old repomd.xml a moment before
the swap still finds the files it names; the next publish removes generations retired
longer ago. Leftovers of an interrupted publish (tmp dirs, link temporaries) match a fixed
pattern and are removed by the next publish (and at start-up), which makes publish
idempotent and restartable.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from coordd.api.errors import OperationFailed
from coordd.content.database import connect
from coordd.content.paths import UnsafePath, check_href, fsync_dir
from coordd.content.pool import Pool, link_or_copy
from coordd.content.units import METADATA
from coordd.content.versions import IN_VERSION
from coordd.content.worker import FAILED, Emit, serve
from coordd.repo.repodata import write_package_file, write_repodata
from coordd.repo.signing import SignatureError, sign_repomd

__all__ = [
    "DEFAULT_GRACE",
    "finish",
    "link",
    "package_file",
    "prepare",
    "publish_version",
    "unpublish",
]

DEFAULT_GRACE: Final = 300.0  # seconds a swapped-out tree stays readable


def _leftovers(name: str) -> re.Pattern[str]:
    return re.compile(rf"^\.{re.escape(name)}\.(gen|tmp|link)-[0-9a-f]{{32}}$")


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def publish_version(
    args: dict[str, Any],
    emit: Emit,
    check_cancelled: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Build a fresh publication of version ``args["number"]`` of ``args["repo_id"]`` and
    swap it in at ``args["publish_dir"]``, every step in this thread; ``emit`` hears the
    progress.

    ``args``: ``db`` and ``pool`` (paths), ``repo_id``, ``number``, ``revision``,
    ``publish_dir``, ``grace`` (seconds). ``Repositories.publish`` runs the same steps
    (``prepare``, ``link``, ``package_file`` three times, ``finish``) in worker processes
    for a large version.
    """
    build = prepare(args)
    try:
        args = {**args, "build": build}
        linked = link(args, emit, check_cancelled)
        return finish({**args, **linked}, check_cancelled)
    except BaseException:
        _remove(Path(build))
        raise


def _snapshot(args: dict[str, Any]) -> Any:
    db = connect(Path(args["db"]))
    db.execute("BEGIN")  # one snapshot: the version cannot change under the step
    return contextlib.closing(db)


def prepare(args: dict[str, Any]) -> str:
    """Clear an interrupted publish's leftovers; make the build directory; its path."""
    publish_dir = Path(args["publish_dir"])
    parent, name = publish_dir.parent, publish_dir.name
    parent.mkdir(parents=True, exist_ok=True)
    pattern = _leftovers(name)
    for entry in os.listdir(parent):
        match = pattern.match(entry)
        if match and match.group(1) in ("tmp", "link"):
            _remove(parent / entry)
    build = parent / f".{name}.tmp-{uuid.uuid4().hex}"
    (build / "repodata").mkdir(parents=True)
    return str(build)


def link(
    args: dict[str, Any], emit: Emit, check_cancelled: Callable[[], None] = lambda: None
) -> dict[str, int]:
    """Hard-link every file of the version from the pool into the build directory."""
    pool, build = Pool(Path(args["pool"])), Path(args["build"])
    repo_id, number = args["repo_id"], args["number"]
    with _snapshot(args) as db:
        rows = db.execute(
            "SELECT u.href, u.sha256 FROM repo_content rc JOIN units u ON u.id = rc.unit_id"
            f" WHERE {IN_VERSION} AND u.href IS NOT NULL AND u.kind != ?",
            (repo_id, number, number, METADATA),
        ).fetchall()
    emit({"step": "link", "items_total": len(rows), "items_done": 0})
    linked = copied = 0
    made: set[str] = set()
    for n, (href, sha256) in enumerate(rows):
        if n % 256 == 0:
            check_cancelled()
            emit({"items_done": n})
        try:
            check_href(href)
        except UnsafePath as exc:
            raise OperationFailed(f"publish refused: {exc}") from exc
        directory = href.rpartition("/")[0]
        if directory and directory not in made:
            (build / directory).mkdir(parents=True, exist_ok=True)
            made.add(directory)
        if sha256 is None:
            raise OperationFailed(f"publish failed: {href} is not in the pool; sync again")
        try:
            if link_or_copy(pool.path(sha256), build / href):
                linked += 1
            else:
                copied += 1
        except FileNotFoundError as exc:
            raise OperationFailed(
                f"publish failed: {href} is in the version but its file is missing from"
                " the pool; sync the repository again"
            ) from exc
        except FileExistsError:
            pass  # the same file listed twice (e.g. a tree file that is also a package)
    emit({"items_done": len(rows), "step": "repodata"})
    return {"linked": linked, "copied": copied, "files": len(rows)}


def package_file(args: dict[str, Any], emit: Emit) -> dict[str, Any]:
    """Write one of primary, filelists and other (``args["type"]``) into the build."""
    with _snapshot(args) as db:
        return write_package_file(
            db,
            args["repo_id"],
            args["number"],
            args["type"],
            Path(args["build"]) / "repodata",
            lambda: None,
        )


def finish(
    args: dict[str, Any], check_cancelled: Callable[[], None] = lambda: None
) -> dict[str, Any]:
    """Write the rest of the repodata and repomd.xml, then swap the build in.

    ``args["written"]``: the records of the package files if workers wrote them;
    ``args["signing"]``: ``{"key", "passphrase_file"}`` to sign repomd.xml with (its
    ``.asc`` and the public key as ``.key`` beside it), or None.
    """
    build = Path(args["build"])
    publish_dir = Path(args["publish_dir"])
    parent, name = publish_dir.parent, publish_dir.name
    with _snapshot(args) as db:
        written = write_repodata(
            db,
            Pool(Path(args["pool"])),
            args["repo_id"],
            args["number"],
            args.get("revision"),
            build / "repodata",
            check_cancelled,
            args.get("written"),
        )
    signed_by = None
    signing = args.get("signing")
    if signing:
        check_cancelled()
        try:
            signed_by = sign_repomd(build / "repodata", signing["key"], signing["passphrase_file"])
        except SignatureError as exc:
            raise OperationFailed(f"publish failed: signing repomd.xml: {exc}") from exc
    generation = parent / f".{name}.gen-{build.name.rpartition('-')[2]}"
    os.rename(build, generation)
    previous = _swap(publish_dir, generation)
    if previous is not None:
        with contextlib.suppress(FileNotFoundError):
            os.utime(previous)  # retired now: the grace period counts from here
    horizon = time.time() - float(args.get("grace", DEFAULT_GRACE))
    pattern = _leftovers(name)
    for entry in os.listdir(parent):
        match = pattern.match(entry)
        path = parent / entry
        if not match or path == generation:
            continue
        with contextlib.suppress(FileNotFoundError):
            if path.lstat().st_mtime < horizon or match.group(1) != "gen":
                _remove(path)
    return {
        "path": str(publish_dir),
        "version": args["number"],
        "linked": args["linked"],
        "copied": args["copied"],
        "tree_files": args["files"] - written["packages"] - written["delta_rpms"],
        "signed_by": signed_by,
        **written,
    }


JOBS: Final = {"link": link, "package_file": package_file}


def run_job(args: dict[str, Any], emit: Emit) -> dict[str, Any]:
    result: dict[str, Any] = JOBS[args["job"]](args, emit)
    return result


def _swap(publish_dir: Path, generation: Path) -> Path | None:
    """Point ``publish_dir`` at ``generation`` atomically; return the generation it left."""
    parent = publish_dir.parent
    previous: Path | None = None
    if publish_dir.is_symlink():
        previous = parent / os.readlink(publish_dir)
    elif publish_dir.exists():
        # A plain directory from elsewhere: keep it as a generation. Readers see no tree
        # between this rename and the symlink below; it happens once, never again.
        previous = parent / f".{publish_dir.name}.gen-{uuid.uuid4().hex}"
        os.rename(publish_dir, previous)
    link = parent / f".{publish_dir.name}.link-{uuid.uuid4().hex}"
    os.symlink(generation.name, link)
    try:
        os.replace(link, publish_dir)
    finally:
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
    fsync_dir(parent)
    return previous


def unpublish(publish_dir: Path) -> list[str]:
    """Remove a publication and every generation or leftover of it; idempotent."""
    parent = publish_dir.parent
    removed: list[str] = []
    if publish_dir.is_symlink() or publish_dir.exists():
        _remove(publish_dir)  # the name goes first, atomically; the trees after
        removed.append(str(publish_dir))
    if parent.is_dir():
        pattern = _leftovers(publish_dir.name)
        for entry in os.listdir(parent):
            if pattern.match(entry):
                _remove(parent / entry)
                removed.append(str(parent / entry))
    return removed


def main() -> int:
    return serve(run_job, {OperationFailed: FAILED, OSError: FAILED})


if __name__ == "__main__":
    sys.exit(main())
