"""The local certificate authority the proxy's TLS certificates chain to.

Clients trust it through ``REQUESTS_CA_BUNDLE`` / ``NODE_EXTRA_CA_CERTS`` (COMPAT.md §6). Trust
in a private CA is dangerous in general, so this one is fenced in by X.509 name constraints
(RFC 5280 §4.2.1.10), marked critical: its permitted DNS subtrees are Google's domains and the
configured extra (universe) domains, and every IPv4 and IPv6 address is excluded. A verifier
therefore rejects anything it signs for another name, even if its key leaks.

Files, in ``DATA_DIR/ca/`` (a 0700 directory):

- ``ca.pem``: the CA certificate (ECDSA P-256, one year, renewed a month before it expires or
  when the wanted domains change);
- ``ca.key``: its private key, PKCS#8 PEM, mode 0600, never logged;
- ``bundle.pem``: ``ca.pem`` followed by the system's roots (certifi's when installed, else the
  operating system's), for ``REQUESTS_CA_BUNDLE`` so that other HTTPS keeps verifying.

Leaf certificates (one per host, ECDSA P-256, seven days, ``subjectAltName`` = the host) are
issued on demand, kept in memory only, and re-issued a day before they expire.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import ipaddress
import logging
import os
import ssl
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tokensmith.clock import Clock, SystemClock, to_datetime
from tokensmith.proxy.hosts import normalize_domain, normalize_host

__all__ = [
    "CA_LIFETIME",
    "LEAF_LIFETIME",
    "Leaf",
    "LocalCA",
    "NotPermitted",
    "system_roots",
]

log = logging.getLogger("tokensmith.proxy")

DAY = 86400.0
CA_LIFETIME = 365 * DAY
CA_RENEW_BEFORE = 30 * DAY
LEAF_LIFETIME = 7 * DAY
LEAF_RENEW_BEFORE = 1 * DAY
BACKDATE = 3600.0  # tolerate clients whose clocks run a little behind

_SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/ssl/cert.pem",  # macOS, OpenBSD
)
_EVERY_ADDRESS = (
    x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
    x509.IPAddress(ipaddress.ip_network("::/0")),
)


class NotPermitted(ValueError):
    """A certificate was asked for a name outside the CA's name constraints."""


@dataclasses.dataclass(frozen=True)
class Leaf:
    """A host's certificate and key, and the TLS server context that presents them."""

    host: str
    certificate: x509.Certificate
    not_after: float
    context: ssl.SSLContext


def system_roots() -> Path | None:
    """The CA bundle other HTTPS is verified with: certifi's if installed, else the system's."""
    try:
        import certifi
    except ImportError:
        pass
    else:
        return Path(certifi.where())
    candidates = [*_SYSTEM_BUNDLES, ssl.get_default_verify_paths().cafile or ""]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def _utc(seconds: float) -> _dt.datetime:
    return to_datetime(seconds)


def _seconds(when: _dt.datetime) -> float:
    return when.timestamp()


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data``: a private temporary file renamed over it."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _spki(public: CertificatePublicKeyTypes) -> bytes:
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _permitted(certificate: x509.Certificate) -> tuple[str, ...] | None:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.NameConstraints)
    except x509.ExtensionNotFound:
        return None
    permitted = constraints.value.permitted_subtrees or []
    return tuple(sorted(n.value for n in permitted if isinstance(n, x509.DNSName)))


class LocalCA:
    """A name-constrained CA and the leaf certificates it issues for the proxy."""

    def __init__(
        self,
        certificate: x509.Certificate,
        key: ec.EllipticCurvePrivateKey,
        directory: Path,
        clock: Clock | None = None,
    ) -> None:
        domains = _permitted(certificate)
        if not domains:
            raise ValueError("the CA certificate has no permitted DNS name constraints")
        self.certificate = certificate
        self._key = key
        self.directory = directory
        self.domains = domains
        self._clock: Clock = clock or SystemClock()
        self._leaves: dict[str, Leaf] = {}
        self._lock = threading.Lock()

    # files --------------------------------------------------------------------------------

    @property
    def ca_path(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def key_path(self) -> Path:
        return self.directory / "ca.key"

    @property
    def bundle_path(self) -> Path:
        return self.directory / "bundle.pem"

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def load_or_create(
        cls,
        directory: Path,
        domains: Sequence[str],
        clock: Clock | None = None,
        *,
        roots: Path | None = None,
    ) -> LocalCA:
        """The CA in ``directory``, created (or replaced) when missing, expiring or for other
        domains; ``bundle.pem`` is rewritten from it and ``roots`` (default: ``system_roots``).
        """
        clock = clock or SystemClock()
        wanted = tuple(sorted(dict.fromkeys(normalize_domain(d) for d in domains)))
        if not wanted:
            raise ValueError("the local CA needs at least one permitted domain")
        directory = Path(directory)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        ca = cls._load(directory, wanted, clock)
        if ca is None:
            ca = cls._create(directory, wanted, clock)
        ca.write_bundle(roots if roots is not None else system_roots())
        return ca

    @classmethod
    def _load(cls, directory: Path, wanted: tuple[str, ...], clock: Clock) -> LocalCA | None:
        cert_path, key_path = directory / "ca.pem", directory / "ca.key"
        if not cert_path.exists() and not key_path.exists():
            return None
        try:
            certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            log.warning("replacing the local CA in %s: cannot read it (%s)", directory, exc)
            return None
        reason = ""
        if not isinstance(key, ec.EllipticCurvePrivateKey) or _spki(key.public_key()) != _spki(
            certificate.public_key()
        ):
            reason = "its key does not match its certificate"
        elif _permitted(certificate) != wanted:
            reason = f"it is constrained to {_permitted(certificate)}, not {wanted}"
        elif _seconds(certificate.not_valid_after_utc) - clock.now() < CA_RENEW_BEFORE:
            reason = "it expires within 30 days"
        if reason:
            log.warning("replacing the local CA in %s: %s", directory, reason)
            return None
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        mode = key_path.stat().st_mode & 0o777
        if mode & 0o077:
            log.warning("%s was readable by others (mode %o); setting mode 0600", key_path, mode)
            key_path.chmod(0o600)
        return cls(certificate, key, directory, clock)

    @classmethod
    def _create(cls, directory: Path, domains: tuple[str, ...], clock: Clock) -> LocalCA:
        now = clock.now()
        key = ec.generate_private_key(ec.SECP256R1())
        public = key.public_key()
        ski = x509.SubjectKeyIdentifier.from_public_key(public)
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tokensmith"),
                x509.NameAttribute(
                    NameOID.COMMON_NAME, f"tokensmith local CA {ski.digest[:4].hex()}"
                ),
            ]
        )
        constraints = x509.NameConstraints(
            permitted_subtrees=[x509.DNSName(d) for d in domains],
            excluded_subtrees=list(_EVERY_ADDRESS),
        )
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_utc(now - BACKDATE))
            .not_valid_after(_utc(now + CA_LIFETIME))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(constraints, critical=True)
            .add_extension(ski, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                critical=False,
            )
            .sign(key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_atomic(directory / "ca.key", key_pem, 0o600)
        _write_atomic(
            directory / "ca.pem", certificate.public_bytes(serialization.Encoding.PEM), 0o644
        )
        log.info("created the local CA %s for %s", directory / "ca.pem", ", ".join(domains))
        return cls(certificate, key, directory, clock)

    def write_bundle(self, roots: Path | None) -> Path:
        """Write ``bundle.pem``: this CA, then the certificates of ``roots`` (if any)."""
        parts = [self.certificate_pem]
        if roots is None:
            log.warning(
                "no system CA bundle found: %s holds only the local CA, so other HTTPS will "
                "not verify with it",
                self.bundle_path,
            )
        else:
            extra = roots.read_bytes()
            parts.append(extra if extra.endswith(b"\n") else extra + b"\n")
        _write_atomic(self.bundle_path, b"".join(parts), 0o644)
        return self.bundle_path

    # leaves -------------------------------------------------------------------------------

    def permits(self, host: str) -> bool:
        name = normalize_host(host)
        return name is not None and any(name == d or name.endswith("." + d) for d in self.domains)

    def issue(self, host: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A fresh leaf certificate and key for ``host``; NotPermitted outside the constraints."""
        name = normalize_host(host)
        if name is None or not self.permits(name):
            raise NotPermitted(
                f"the local CA is constrained to {', '.join(self.domains)}; it does not "
                f"certify {host!r}"
            )
        now = self._clock.now()
        ca_end = _seconds(self.certificate.not_valid_after_utc)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tokensmith")]
        if len(name) <= 64:  # the upper bound of a commonName
            subject.append(x509.NameAttribute(NameOID.COMMON_NAME, name))
        ca_ski = x509.SubjectKeyIdentifier.from_public_key(self._key.public_key())
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(subject))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_utc(now - BACKDATE))
            .not_valid_after(_utc(min(now + LEAF_LIFETIME, ca_end)))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        return certificate, key

    def leaf(self, host: str) -> Leaf:
        """The cached leaf for ``host`` (issued now if absent or within a day of expiry)."""
        name = normalize_host(host)
        if name is None:
            raise NotPermitted(f"{host!r} is not a host name")
        with self._lock:
            cached = self._leaves.get(name)
            if cached is not None and self._clock.now() < cached.not_after - LEAF_RENEW_BEFORE:
                return cached
            certificate, key = self.issue(name)
            leaf = Leaf(
                host=name,
                certificate=certificate,
                not_after=_seconds(certificate.not_valid_after_utc),
                context=self._server_context(certificate, key),
            )
            self._leaves[name] = leaf
            return leaf

    def _server_context(
        self, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey
    ) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # The upstream speaks HTTP/1.1 only; say so, so that h2-capable clients fall back.
        context.set_alpn_protocols(["http/1.1"])
        chain = (
            certificate.public_bytes(serialization.Encoding.PEM)
            + self.certificate_pem
            + key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        _load_chain(context, chain)
        return context


def _load_chain(context: ssl.SSLContext, pem: bytes) -> None:
    """``load_cert_chain`` from memory: ``ssl`` reads only files, so hand it an anonymous one
    (``memfd``, never on disk) where the platform has it, else a private temporary file."""
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None and Path("/proc/self/fd").is_dir():
        fd = memfd_create("tokensmith-leaf", getattr(os, "MFD_CLOEXEC", 0))
        try:
            os.write(fd, pem)
            context.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="tokensmith-leaf-") as private:
        path = Path(private) / "leaf.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        context.load_cert_chain(str(path))
