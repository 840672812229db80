"""Sealing of private keys at rest, and the key-encryption key file."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from tokensmith.crypto.sealing import KeyEncryptionKey, SealingError, load_or_create_kek


def test_seal_round_trip_binds_the_key_id() -> None:
    """A sealed blob opens under its own key id only, and never contains the plaintext."""
    kek = KeyEncryptionKey(b"\x07" * 32)
    sealed = kek.seal(b"-----BEGIN PRIVATE KEY-----secret", "kid-1")
    assert b"secret" not in sealed
    assert kek.open(sealed, "kid-1") == b"-----BEGIN PRIVATE KEY-----secret"
    with pytest.raises(SealingError, match="does not open"):
        kek.open(sealed, "kid-2")


@pytest.mark.parametrize("damage", ["flip", "truncate", "magic"])
def test_tampered_blobs_do_not_open(damage: str) -> None:
    """Any change to a sealed blob is detected (AES-GCM authentication)."""
    kek = KeyEncryptionKey(b"\x01" * 32)
    sealed = bytearray(kek.seal(b"payload", "k"))
    if damage == "flip":
        sealed[-1] ^= 1
    elif damage == "truncate":
        del sealed[10:]
    else:
        sealed[0:3] = b"xx1"
    with pytest.raises(SealingError):
        kek.open(bytes(sealed), "k")


def test_kek_file_is_created_private_and_reused(tmp_path: Path) -> None:
    """A missing KEK is generated with mode 0600 once, then read back unchanged."""
    path = tmp_path / "data" / "kek.key"
    first, generated = load_or_create_kek(path)
    assert generated
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second, generated_again = load_or_create_kek(path)
    assert not generated_again
    assert second.open(first.seal(b"x", "k"), "k") == b"x"


def test_kek_given_inline_wins_and_is_validated(tmp_path: Path) -> None:
    """TOKENSMITH_KEK's base64 value is used as is; a malformed or short one is refused."""
    inline = base64.b64encode(b"\x02" * 32).decode()
    kek, generated = load_or_create_kek(tmp_path / "unused.key", inline)
    assert not generated
    assert not (tmp_path / "unused.key").exists()
    assert kek.open(KeyEncryptionKey(b"\x02" * 32).seal(b"y", "k"), "k") == b"y"
    with pytest.raises(ValueError, match="base64"):
        KeyEncryptionKey.from_b64("not base64!")
    with pytest.raises(ValueError, match="32 bytes"):
        KeyEncryptionKey.from_b64(base64.b64encode(b"short").decode())
