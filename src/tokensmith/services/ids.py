"""Identifier generation: Google-shaped numeric ids, opaque secrets and their hashes.

Unique ids of service accounts and users are 21 digits starting with 1 (like Google's);
project numbers are 12 digits. Secrets (refresh tokens, client secrets) are stored only as
SHA-256 hashes, so a copy of the store does not let anyone mint tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = [
    "hash_secret",
    "new_project_number",
    "new_secret",
    "new_unique_id",
    "secrets_equal",
]


def new_unique_id() -> str:
    return "1" + "".join(secrets.choice("0123456789") for _ in range(20))


def new_project_number() -> str:
    return secrets.choice("123456789") + "".join(secrets.choice("0123456789") for _ in range(11))


def new_secret(prefix: str = "", nbytes: int = 32) -> str:
    return prefix + secrets.token_urlsafe(nbytes)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secrets_equal(secret: str, expected_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), expected_hash)
