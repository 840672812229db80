"""RSA signing keys and their public forms: PEM, JWK (RFC 7517) and self-signed X.509.

Google publishes each key three ways (``/oauth2/v1/certs`` x509 PEM, ``/oauth2/v3/certs`` JWKS,
``/service_accounts/v1/metadata/raw`` public key); ``PublicKey`` renders all three from one
parsed key, so nothing re-parses PEM on a request path. Key ids are 40 lowercase hex
characters, like Google's.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import functools
import secrets

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

__all__ = [
    "PrivateKey",
    "PublicKey",
    "cached_public_key",
    "generate_rsa_key",
    "load_private_pem",
    "load_public_pem",
    "new_key_id",
]

RSA_BITS = 2048


def new_key_id() -> str:
    return secrets.token_hex(20)


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclasses.dataclass(frozen=True)
class PublicKey:
    """A parsed RSA public key with its id; renders its published forms on demand (cached)."""

    key_id: str
    key: rsa.RSAPublicKey

    @functools.cached_property
    def pem(self) -> str:
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    @functools.cached_property
    def jwk(self) -> dict[str, str]:
        numbers = self.key.public_numbers()
        return {
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": self.key_id,
            "n": _b64url_uint(numbers.n),
            "e": _b64url_uint(numbers.e),
        }

    def verify_rs256(self, signature: bytes, data: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature

        try:
            self.key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return False
        return True


@dataclasses.dataclass(frozen=True)
class PrivateKey:
    """An RSA private key with its id; ``sign`` is RSASSA-PKCS1-v1_5 with SHA-256 (RS256)."""

    key_id: str
    key: rsa.RSAPrivateKey

    @functools.cached_property
    def public(self) -> PublicKey:
        return PublicKey(self.key_id, self.key.public_key())

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())

    def pkcs8_pem(self) -> str:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    def self_signed_certificate(self, common_name: str, not_before: float, not_after: float) -> str:
        """A self-signed X.509 PEM for publication (``/oauth2/v1/certs`` style)."""
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(int(self.key_id[:30], 16) or 1)
            .not_valid_before(_dt.datetime.fromtimestamp(int(not_before), tz=_dt.UTC))
            .not_valid_after(_dt.datetime.fromtimestamp(int(not_after), tz=_dt.UTC))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM).decode()


def generate_rsa_key(key_id: str | None = None) -> PrivateKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    return PrivateKey(key_id or new_key_id(), key)


def load_private_pem(key_id: str, pem: bytes, *, trusted: bool = False) -> PrivateKey:
    """Parse a PKCS#8 RSA key. ``trusted``: the key is one we generated and sealed ourselves,
    so cryptography's slow consistency check of the key's numbers can be skipped."""
    key = serialization.load_pem_private_key(
        pem, password=None, unsafe_skip_rsa_key_validation=trusted
    )
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("only RSA private keys are supported")
    return PrivateKey(key_id, key)


@functools.lru_cache(maxsize=8192)
def cached_public_key(key_id: str, pem: str) -> PublicKey:
    """A stored public key, parsed once: a key id's PEM never changes, and the hot paths
    (``/token`` assertions, self-signed JWTs, key documents) must not parse it per request."""
    return load_public_pem(key_id, pem.encode())


def load_public_pem(key_id: str, pem: bytes) -> PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("only RSA public keys are supported")
    return PublicKey(key_id, key)
