"""OpenPGP signatures of ``repodata/repomd.xml``: checked on sync, made on publish.

Both run GnuPG (Debian's ``gnupg``) as a subprocess, as apt and Pulp's signing services do,
never in the daemon: ``verify`` turns the repository's armored public key into a keyring
with ``gpg --dearmor`` and checks the detached signature with ``gpgv`` against that keyring
alone; ``sign_repomd`` imports the configured secret key into a fresh home, signs with
``gpg --detach-sign --armor`` and exports the public key beside the signature.

Every run gets a home directory of its own, private (0700) and removed afterwards
(``GNUPGHOME`` and ``--homedir``), and an environment of only ``PATH`` and ``LC_ALL``: no
keyring of the daemon's user, root or anyone else is read or changed, and a ``gpg-agent``
started for the secret key is stopped before the home goes. Each subprocess has a timeout.
The functions block: callers run them in a thread, off the event loop.

A signature is accepted when at least one signature in the file is good and made by a key
of the keyring, and none is bad; a signature by another key beside a good one is ignored
(a feed rotating keys signs with both), and an expired or revoked key counts as bad.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

__all__ = [
    "KEY_FILE",
    "MAX_KEY",
    "MAX_SIGNATURE",
    "SIGNATURE_FILE",
    "SignatureError",
    "check_public_key",
    "sign_repomd",
    "verify",
]

MAX_KEY: Final = 64 * 1024  # characters of an armored public key (RHEL's holds two: ~5 KB)
MAX_SIGNATURE: Final = 64 * 1024  # bytes of a repomd.xml.asc (a few hundred, usually)
TIMEOUT: Final = 60.0  # seconds for one gpg or gpgv run
SIGNATURE_FILE: Final = "repomd.xml.asc"
KEY_FILE: Final = "repomd.xml.key"
_BEGIN: Final = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
_END: Final = "-----END PGP PUBLIC KEY BLOCK-----"
_PACKAGE: Final = "Debian package gnupg"
_GPG_ONLY: Final = ("--batch", "--yes")  # no questions; write over an output file


class SignatureError(Exception):
    """A signature could not be checked or made; the message says why, for the user."""


def check_public_key(text: str) -> None:
    """Refuse (``ValueError``, a message completing "gpgkey ...") text that is not one or
    more ASCII-armored OpenPGP public key blocks. What the blocks hold is left to gpg."""
    if len(text) > MAX_KEY:
        raise ValueError(f"is longer than {MAX_KEY} characters")
    if any(not (32 <= ord(c) < 127 or c in "\n\r\t") for c in text):
        raise ValueError("must be ASCII text (an armored OpenPGP public key)")
    if "PRIVATE KEY BLOCK" in text:
        raise ValueError("holds a secret key: give the public key (gpg --armor --export)")
    begin = text.find(_BEGIN)
    if begin < 0 or text.find(_END, begin) < 0:
        raise ValueError(
            f"must be an ASCII-armored OpenPGP public key ({_BEGIN} … {_END}), as"
            " gpg --armor --export writes it"
        )


@contextlib.contextmanager
def _home() -> Iterator[Path]:
    """A private GnuPG home for one run, removed (its agent stopped) afterwards."""
    with tempfile.TemporaryDirectory(prefix="coordd-gpg-") as name:
        home = Path(name)
        os.chmod(home, 0o700)
        try:
            yield home
        finally:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                # A secret key started an agent in this home; nothing else may use it.
                subprocess.run(
                    ["gpgconf", "--homedir", str(home), "--kill", "all"],
                    env=_env(home),
                    capture_output=True,
                    timeout=TIMEOUT,
                    check=False,
                )


def _env(home: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "LC_ALL": "C",
        "GNUPGHOME": str(home),
    }


def _run(args: list[str], home: Path, what: str) -> subprocess.CompletedProcess[str]:
    """Run ``gpg``/``gpgv`` (``args[0]``) with the private ``home``; never raises for its
    exit status."""
    try:
        return subprocess.run(
            [
                args[0],
                "--homedir",
                str(home),
                *(_GPG_ONLY if args[0] == "gpg" else ()),
                *args[1:],
            ],
            env=_env(home),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise SignatureError(f"{args[0]} is not installed ({_PACKAGE})") from None
    except subprocess.TimeoutExpired:
        raise SignatureError(f"{what}: {args[0]} did not finish in {TIMEOUT:.0f} seconds") from None


def _says(result: subprocess.CompletedProcess[str]) -> str:
    """gpg's last line of complaint, for an error message."""
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {result.returncode}"


def verify(public_key: str, data: bytes, signature: bytes) -> str:
    """Check the detached ``signature`` of ``data`` against ``public_key`` (armored) alone;
    the fingerprint of the key that made the good signature. Raises ``SignatureError``."""
    with _home() as home:
        (home / "key.asc").write_text(public_key, encoding="ascii")
        (home / "data").write_bytes(data)
        (home / "data.asc").write_bytes(signature)
        keyring = home / "keyring.gpg"
        result = _run(
            ["gpg", "--output", str(keyring), "--dearmor", str(home / "key.asc")],
            home,
            "gpgkey",
        )
        if result.returncode != 0 or not keyring.exists() or keyring.stat().st_size == 0:
            raise SignatureError(f"gpgkey is not a usable OpenPGP public key ({_says(result)})")
        result = _run(
            [
                *("gpgv", "--keyring", str(keyring), "--status-fd", "1"),
                *(str(home / "data.asc"), str(home / "data")),
            ],
            home,
            SIGNATURE_FILE,
        )
    status: dict[str, list[list[str]]] = {}
    for line in result.stdout.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "[GNUPG:]":
            status.setdefault(words[1], []).append(words[2:])
    for bad, problem in (
        ("BADSIG", "the signature by key {} does not match repomd.xml: it was changed"),
        ("EXPKEYSIG", "the signature was made by key {}, which has expired"),
        ("REVKEYSIG", "the signature was made by key {}, which has been revoked"),
        ("EXPSIG", "the signature by key {} has expired"),
    ):
        if bad in status:
            key = status[bad][0][0] if status[bad][0] else "?"
            raise SignatureError(f"{SIGNATURE_FILE}: {problem.format(key)}")
    if "VALIDSIG" in status and status["VALIDSIG"][0]:
        words = status["VALIDSIG"][0]
        return words[-1] if len(words) >= 10 else words[0]  # the primary key's fingerprint
    if "NO_PUBKEY" in status:
        keys = ", ".join(words[0] for words in status["NO_PUBKEY"] if words)
        raise SignatureError(
            f"{SIGNATURE_FILE}: signed by key {keys}, which the repository's gpgkey does not hold"
        )
    if "NODATA" in status:
        raise SignatureError(f"{SIGNATURE_FILE}: not an OpenPGP signature")
    raise SignatureError(f"{SIGNATURE_FILE}: the signature could not be verified ({_says(result)})")


def _secret_fingerprint(home: Path) -> str:
    """The fingerprint of the one secret primary key imported into ``home``."""
    result = _run(["gpg", "--with-colons", "--list-secret-keys"], home, "the signing key")
    fingerprints: list[str] = []
    primary = False
    for line in result.stdout.splitlines():
        fields = line.split(":")
        if fields[0] == "sec":
            primary = True
        elif fields[0] == "fpr" and primary and len(fields) > 9:
            fingerprints.append(fields[9])
            primary = False
        elif fields[0] in ("ssb", "pub", "sub"):
            primary = False
    if len(fingerprints) != 1:
        raise SignatureError(
            f"the signing key file must hold one secret key, not {len(fingerprints)}"
        )
    return fingerprints[0]


def sign_repomd(repodata: Path, key_file: str, passphrase_file: str | None = None) -> str:
    """Sign ``repodata/repomd.xml`` with the secret key in ``key_file`` (armored or not):
    write ``repomd.xml.asc`` (detached, armored) and ``repomd.xml.key`` (the public key)
    beside it, check the one against the other; the key's fingerprint."""
    repomd = repodata / "repomd.xml"
    with _home() as home:
        result = _run(["gpg", "--import", key_file], home, "the signing key")
        if result.returncode != 0:
            raise SignatureError(f"cannot import the signing key {key_file}: {_says(result)}")
        fingerprint = _secret_fingerprint(home)
        passphrase = (
            ["--passphrase-file", passphrase_file] if passphrase_file else ["--passphrase", ""]
        )
        signature = repodata / SIGNATURE_FILE
        result = _run(
            [
                *("gpg", "--pinentry-mode", "loopback", *passphrase, "--local-user", fingerprint),
                *("--armor", "--output", str(signature), "--detach-sign", str(repomd)),
            ],
            home,
            "signing repomd.xml",
        )
        if result.returncode != 0:
            raise SignatureError(f"cannot sign repomd.xml with {key_file}: {_says(result)}")
        public = repodata / KEY_FILE
        result = _run(
            ["gpg", "--armor", "--output", str(public), "--export", fingerprint],
            home,
            "exporting the public key",
        )
        if result.returncode != 0:
            raise SignatureError(f"cannot export the public key of {key_file}: {_says(result)}")
    verify(public.read_text(encoding="ascii"), repomd.read_bytes(), signature.read_bytes())
    return fingerprint
