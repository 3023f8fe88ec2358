"""Throwaway OpenPGP keys for tests, made with GnuPG in a home of their own under tmp.

``make_key`` generates an ed25519 key (fast) in a private ``GNUPGHOME`` and exports its
secret and public halves to files; ``sign_file`` makes a detached armored signature with it
the way a feed's publisher would (``gpg --detach-sign --armor``), independently of the
daemon's own signing code. ``stop_agent`` ends the ``gpg-agent`` a key's home started;
``throwaway_key`` is the body of a fixture.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

GPG = shutil.which("gpg")
GPG_TIMEOUT = 60


@dataclass(frozen=True)
class Key:
    home: Path  # the GNUPGHOME that holds it
    fingerprint: str
    secret: Path  # armored secret key file, as [signing] key takes it
    public: Path  # armored public key file, as --gpgkey takes it
    passphrase: str

    @property
    def public_text(self) -> str:
        return self.public.read_text()


def _gpg(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert GPG is not None
    return subprocess.run(
        [GPG, "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", *args],
        capture_output=True,
        text=True,
        timeout=GPG_TIMEOUT,
        check=True,
    )


def make_key(directory: Path, name: str = "coordd test", *, passphrase: str = "") -> Key:
    """A new ed25519 signing key for ``name``, its files in ``directory``."""
    home = directory / "gnupg"
    home.mkdir(parents=True, mode=0o700)
    _gpg(home, "--passphrase", passphrase, "--quick-gen-key", f"{name} <test@example.org>",
         "ed25519", "sign", "never")  # fmt: skip
    listing = _gpg(home, "--with-colons", "--list-secret-keys").stdout
    fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line[:4] == "fpr:")
    secret, public = directory / "secret.asc", directory / "public.asc"
    secret.write_text(
        _gpg(home, "--passphrase", passphrase, "--armor", "--export-secret-keys").stdout
    )
    public.write_text(_gpg(home, "--armor", "--export").stdout)
    return Key(home, fingerprint, secret, public, passphrase)


def sign_file(key: Key, path: Path, signature: Path | None = None) -> Path:
    """Write the detached armored signature of ``path`` by ``key`` (``path.asc`` unless
    ``signature`` names another file); return its path."""
    out = signature or path.with_name(path.name + ".asc")
    out.unlink(missing_ok=True)
    _gpg(
        key.home,
        *("--passphrase", key.passphrase, "--local-user", key.fingerprint),
        *("--armor", "--output", str(out), "--detach-sign", str(path)),
    )
    return out


def stop_agent(key: Key) -> None:
    subprocess.run(
        ["gpgconf", "--homedir", str(key.home), "--kill", "all"],
        capture_output=True,
        timeout=GPG_TIMEOUT,
        check=False,
    )


def stop_dnf_agents(directory: Path) -> None:
    """End the ``gpg-agent`` dnf starts for each repository keyring (``pubring``) it made
    under ``directory`` (its cachedir) to check repo_gpgcheck, and leaves running."""
    for home in directory.rglob("pubring"):
        if home.is_dir():
            subprocess.run(
                ["gpgconf", "--homedir", str(home), "--kill", "all"],
                capture_output=True,
                timeout=GPG_TIMEOUT,
                check=False,
            )


def throwaway_key(factory: pytest.TempPathFactory, name: str) -> Iterator[Key]:
    """For a fixture: a key for ``name``, its agent stopped afterwards (skips when gpg is
    absent)."""
    if GPG is None:
        pytest.skip("gpg is not installed (Debian package gnupg)")
    key = make_key(factory.mktemp("gpg"), name)
    yield key
    stop_agent(key)
