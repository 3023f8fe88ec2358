"""Open a metadata file decompressed according to its magic bytes, never its name.

Real repositories use gz (RHEL up to 9), zst (createrepo_c 1.0 and later), xz and bz2.
``DECODERS`` maps each format's magic bytes to the function that opens a stream of it,
as httpx's ``_decoders.py`` maps content encodings to decoders; a file that starts with
none of them is read as it is.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Final, Protocol

import zstandard


class Reader(Protocol):
    """A binary stream: what every decoder returns."""

    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


class UnsupportedCompression(ValueError):
    """The file is compressed in a format no decoder here reads; the message names it."""


def _gzip(raw: IO[bytes]) -> Reader:
    return gzip.GzipFile(fileobj=raw, mode="rb")


def _xz(raw: IO[bytes]) -> Reader:
    return lzma.LZMAFile(raw, mode="rb")


def _bz2(raw: IO[bytes]) -> Reader:
    return bz2.BZ2File(raw, mode="rb")


def _zstd(raw: IO[bytes]) -> Reader:
    reader: Reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    return reader


def _zchunk(raw: IO[bytes]) -> Reader:
    raise UnsupportedCompression("zchunk compression is not supported")


#: Magic bytes → decoder. Every decoder returns at most ``size`` bytes per ``read``,
#: whatever the ratio, so a caller can stop a decompression bomb after the first chunk
#: past its limit.
DECODERS: Final[dict[bytes, Callable[[IO[bytes]], Reader]]] = {
    b"\x1f\x8b": _gzip,
    b"\xfd7zXZ\x00": _xz,
    b"BZh": _bz2,
    b"\x28\xb5\x2f\xfd": _zstd,
    b"\x00ZCK1": _zchunk,
}
_MAGIC_LENGTH: Final = max(len(magic) for magic in DECODERS)
#: Corrupt data surfaces as one of these while reading (gzip and bz2 raise OSError).
CORRUPT_DATA_ERRORS: Final = (OSError, EOFError, lzma.LZMAError, zstandard.ZstdError)


def _decoder(magic: bytes) -> Callable[[IO[bytes]], Reader] | None:
    for prefix, decoder in DECODERS.items():
        if magic.startswith(prefix):
            return decoder
    return None


@contextlib.contextmanager
def decompressed(path: Path) -> Iterator[Reader]:
    """Open ``path`` decompressed according to its magic bytes (not its name).

    Raises ``UnsupportedCompression`` for a format no decoder reads.
    """
    with open(path, "rb") as f:
        decoder = _decoder(f.read(_MAGIC_LENGTH))
    with open(path, "rb") as raw:
        stream: Reader = raw if decoder is None else decoder(raw)
        try:
            yield stream
        finally:
            stream.close()


__all__ = ["CORRUPT_DATA_ERRORS", "DECODERS", "Reader", "UnsupportedCompression", "decompressed"]
