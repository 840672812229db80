"""Sealing of private keys at rest under a key-encryption key (KEK).

AES-256-GCM with a random 96-bit nonce; the key id is bound in as associated data, so a sealed
blob copied onto another key's row does not open. A store copied without the KEK reveals no
private key. Format: ``b"ts1" || nonce(12) || ciphertext+tag``.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["KeyEncryptionKey", "SealingError", "load_or_create_kek"]

_MAGIC = b"ts1"
KEK_BYTES = 32


class SealingError(Exception):
    """A sealed blob does not open under this KEK (wrong KEK, tampering, or another key's row)."""


class KeyEncryptionKey:
    def __init__(self, key: bytes) -> None:
        if len(key) != KEK_BYTES:
            raise ValueError(f"the key-encryption key must be {KEK_BYTES} bytes")
        self._aead = AESGCM(key)

    @classmethod
    def from_b64(cls, text: str) -> KeyEncryptionKey:
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except ValueError:
            raise ValueError("the key-encryption key is not valid base64") from None
        return cls(raw)

    def seal(self, plaintext: bytes, key_id: str) -> bytes:
        nonce = secrets.token_bytes(12)
        return _MAGIC + nonce + self._aead.encrypt(nonce, plaintext, key_id.encode())

    def open(self, sealed: bytes, key_id: str) -> bytes:
        if not sealed.startswith(_MAGIC) or len(sealed) < len(_MAGIC) + 12 + 16:
            raise SealingError(f"sealed key {key_id} is not in a known format")
        nonce = sealed[len(_MAGIC) : len(_MAGIC) + 12]
        try:
            return self._aead.decrypt(nonce, sealed[len(_MAGIC) + 12 :], key_id.encode())
        except InvalidTag:
            raise SealingError(
                f"sealed key {key_id} does not open under this key-encryption key "
                "(is TOKENSMITH_KEK / --kek-file the one this store was created with?)"
            ) from None


def load_or_create_kek(path: Path, given_b64: str = "") -> tuple[KeyEncryptionKey, bool]:
    """The operator's KEK (given directly or read from ``path``), else a new one written 0600.

    Returns the key and whether it was generated just now (the caller warns loudly then).
    """
    if given_b64:
        return KeyEncryptionKey.from_b64(given_b64), False
    if path.exists():
        return KeyEncryptionKey.from_b64(path.read_text()), False
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = secrets.token_bytes(KEK_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.b64encode(raw).decode() + "\n")
    return KeyEncryptionKey(raw), True
