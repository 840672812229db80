"""The local CA: name-constrained to the hosts tokensmith serves, private key kept private,
leaves issued per host, and a bundle that keeps other HTTPS verifying."""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import stat
import subprocess
from pathlib import Path

import certifi
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID

from tests.proxy.conftest import POLICY
from tokensmith.clock import FixedClock, to_datetime
from tokensmith.proxy import LocalCA, NotPermitted

START = 1_800_000_000.0
DAY = 86400


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def local_ca(tmp_path: Path, clock: FixedClock) -> LocalCA:
    return LocalCA.load_or_create(tmp_path / "ca", POLICY.ca_domains, clock)


def verify(ca: LocalCA, leaf: x509.Certificate, host: str, when: float = START) -> None:
    """Path validation as a TLS client does it, by cryptography's X.509 verifier."""
    store = verification.Store([ca.certificate])
    verifier = (
        verification.PolicyBuilder()
        .store(store)
        .time(to_datetime(when))
        .build_server_verifier(verification.DNSName(host))
    )
    verifier.verify(leaf, [])


def forged_leaf(ca: LocalCA, san: x509.GeneralName) -> x509.Certificate:
    """A leaf for ``san`` signed with the CA's key read from disk, as a thief of ca.key would."""
    key = serialization.load_pem_private_key(ca.key_path.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forged")]))
        .issuer_name(ca.certificate.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(to_datetime(START - 60))
        .not_valid_after(to_datetime(START + DAY))
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )


def test_ca_is_name_constrained_to_the_served_domains(local_ca: LocalCA) -> None:
    """The CA carries critical NameConstraints permitting exactly Google's domains and the
    configured extra domain, and excluding every IP address."""
    extension = local_ca.certificate.extensions.get_extension_for_class(x509.NameConstraints)
    assert extension.critical
    permitted = extension.value.permitted_subtrees or []
    assert sorted(n.value for n in permitted) == [
        "example.test",
        "google.com",
        "google.internal",
        "googleapis.com",
    ]
    assert all(isinstance(n, x509.DNSName) for n in permitted)
    excluded = extension.value.excluded_subtrees or []
    assert {n.value for n in excluded} == {
        ipaddress.ip_network("0.0.0.0/0"),
        ipaddress.ip_network("::/0"),
    }
    constraints = local_ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length == 0


def test_ca_files_and_their_modes(local_ca: LocalCA) -> None:
    """ca.key is 0600 in a 0700 directory; ca.pem is the certificate; bundle.pem is the CA
    followed by the system roots (certifi's here)."""
    assert stat.S_IMODE(local_ca.key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(local_ca.directory.stat().st_mode) == 0o700
    assert x509.load_pem_x509_certificate(local_ca.ca_path.read_bytes()) == local_ca.certificate
    bundle = local_ca.bundle_path.read_bytes()
    assert bundle.startswith(local_ca.certificate_pem)
    assert bundle.endswith(Path(certifi.where()).read_bytes())
    assert b"PRIVATE KEY" not in bundle


def test_leaf_for_a_served_host_verifies(local_ca: LocalCA) -> None:
    """A leaf for www.googleapis.com chains to the CA, names only that host and lives 7 days."""
    leaf = local_ca.leaf("www.googleapis.com").certificate
    verify(local_ca, leaf, "www.googleapis.com")
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["www.googleapis.com"]
    lifetime = leaf.not_valid_after_utc - to_datetime(START)
    assert lifetime == dt.timedelta(days=7)
    with pytest.raises(verification.VerificationError):
        verify(local_ca, leaf, "oauth2.googleapis.com")


def test_leaf_for_an_extra_domain_verifies(local_ca: LocalCA) -> None:
    """Hosts under the configured universe domain are certified too."""
    verify(
        local_ca,
        local_ca.leaf("iamcredentials.example.test").certificate,
        "iamcredentials.example.test",
    )


@pytest.mark.parametrize("host", ["example.com", "googleapis.com.evil.example", "10.0.0.1"])
def test_no_leaf_outside_the_constraints(local_ca: LocalCA, host: str) -> None:
    """The CA refuses to issue for a name its constraints do not permit."""
    with pytest.raises(NotPermitted, match=r"constrained to|not a host name"):
        local_ca.leaf(host)
    with pytest.raises(NotPermitted):
        local_ca.issue(host)


@pytest.mark.parametrize(
    ("san", "host"),
    [
        (x509.DNSName("evil.example"), "evil.example"),
        (x509.DNSName("www.google.com.evil.example"), "www.google.com.evil.example"),
    ],
)
def test_forged_leaf_fails_on_the_name_constraints(
    local_ca: LocalCA, san: x509.GeneralName, host: str
) -> None:
    """A leaf for another site, signed with the (stolen) CA key, does not verify."""
    with pytest.raises(verification.VerificationError, match=r"name constraints"):
        verify(local_ca, forged_leaf(local_ca, san), host)


def test_forged_leaf_for_a_permitted_name_verifies(local_ca: LocalCA) -> None:
    """Control for the two tests around it: the same forgery for a permitted name passes, so
    what rejects the others is the name constraints."""
    verify(local_ca, forged_leaf(local_ca, x509.DNSName("www.google.com")), "www.google.com")


def test_forged_ip_leaf_fails_on_the_name_constraints(local_ca: LocalCA) -> None:
    """IP addresses are excluded: a stolen key cannot certify 10.0.0.1 either."""
    leaf = forged_leaf(local_ca, x509.IPAddress(ipaddress.ip_address("10.0.0.1")))
    store = verification.Store([local_ca.certificate])
    verifier = (
        verification.PolicyBuilder()
        .store(store)
        .time(to_datetime(START))
        .build_server_verifier(verification.IPAddress(ipaddress.ip_address("10.0.0.1")))
    )
    with pytest.raises(verification.VerificationError):
        verifier.verify(leaf, [])


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_openssl_agrees(local_ca: LocalCA, tmp_path: Path) -> None:
    """OpenSSL accepts the served leaf and rejects the forged one for its name."""
    good = tmp_path / "good.pem"
    good.write_bytes(
        local_ca.leaf("oauth2.googleapis.com").certificate.public_bytes(serialization.Encoding.PEM)
    )
    bad = tmp_path / "bad.pem"
    bad.write_bytes(
        forged_leaf(local_ca, x509.DNSName("evil.example")).public_bytes(serialization.Encoding.PEM)
    )
    attime = ["-attime", str(int(START) + 60)]
    ok = subprocess.run(
        ["openssl", "verify", *attime, "-CAfile", str(local_ca.ca_path), str(good)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    refused = subprocess.run(
        ["openssl", "verify", *attime, "-CAfile", str(local_ca.ca_path), str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode != 0
    assert "permitted subtree violation" in refused.stdout + refused.stderr


def test_leaves_are_cached_and_renewed_before_expiry(local_ca: LocalCA, clock: FixedClock) -> None:
    """The same leaf serves a host for six days; a day before expiry a new one is issued."""
    first = local_ca.leaf("iam.googleapis.com")
    clock.advance(5 * DAY)
    assert local_ca.leaf("IAM.googleapis.com.") is first
    clock.advance(1 * DAY + 1)
    renewed = local_ca.leaf("iam.googleapis.com")
    assert renewed is not first
    assert renewed.certificate.not_valid_after_utc > first.certificate.not_valid_after_utc


def test_restart_keeps_the_ca(tmp_path: Path, clock: FixedClock) -> None:
    """Loading the same directory again keeps the CA clients already trust."""
    first = LocalCA.load_or_create(tmp_path / "ca", POLICY.ca_domains, clock)
    again = LocalCA.load_or_create(tmp_path / "ca", POLICY.ca_domains, clock)
    assert again.certificate == first.certificate


def test_other_domains_replace_the_ca(tmp_path: Path, clock: FixedClock) -> None:
    """A different set of extra domains needs different constraints: a new CA is made."""
    first = LocalCA.load_or_create(tmp_path / "ca", POLICY.ca_domains, clock)
    other = LocalCA.load_or_create(tmp_path / "ca", ("googleapis.com", "other.test"), clock)
    assert other.certificate != first.certificate
    assert other.domains == ("googleapis.com", "other.test")
    assert x509.load_pem_x509_certificate(other.ca_path.read_bytes()) == other.certificate


def test_expiring_ca_is_replaced(tmp_path: Path, clock: FixedClock) -> None:
    """A month before the CA expires, the next start makes a new one."""
    first = LocalCA.load_or_create(tmp_path / "ca", POLICY.ca_domains, clock)
    clock.advance(340 * DAY)
    renewed = LocalCA.load_or_create(tmp_path / "ca", POLICY.ca_domains, clock)
    assert renewed.certificate != first.certificate
    leaf = renewed.leaf("www.googleapis.com").certificate
    assert leaf.not_valid_after_utc <= renewed.certificate.not_valid_after_utc


def test_leaf_never_outlives_the_ca(tmp_path: Path, clock: FixedClock) -> None:
    """Three days before the CA expires, a leaf ends with the CA, not seven days later."""
    ca = LocalCA.load_or_create(tmp_path / "ca", POLICY.ca_domains, clock)
    clock.advance(362 * DAY)
    leaf = ca.leaf("www.googleapis.com").certificate
    assert leaf.not_valid_after_utc == ca.certificate.not_valid_after_utc


def test_loose_key_mode_is_tightened(tmp_path: Path, clock: FixedClock) -> None:
    """A ca.key someone made readable to others is set back to 0600 on the next start."""
    first = LocalCA.load_or_create(tmp_path / "ca", POLICY.ca_domains, clock)
    first.key_path.chmod(0o644)
    LocalCA.load_or_create(tmp_path / "ca", POLICY.ca_domains, clock)
    assert stat.S_IMODE(first.key_path.stat().st_mode) == 0o600


def test_unreadable_ca_is_replaced(tmp_path: Path, clock: FixedClock) -> None:
    """A corrupt ca.key (or a missing half) is replaced, not a crash."""
    first = LocalCA.load_or_create(tmp_path / "ca", POLICY.ca_domains, clock)
    first.key_path.write_text("not a key")
    replaced = LocalCA.load_or_create(tmp_path / "ca", POLICY.ca_domains, clock)
    assert replaced.certificate != first.certificate
    assert stat.S_IMODE(replaced.key_path.stat().st_mode) == 0o600


def test_bundle_without_system_roots(tmp_path: Path, clock: FixedClock) -> None:
    """Given roots are appended after the CA; where none exist the bundle is the CA alone."""
    roots = tmp_path / "roots.pem"
    roots.write_bytes(Path(certifi.where()).read_bytes()[:2000].rpartition(b"\n")[0])
    ca = LocalCA.load_or_create(tmp_path / "ca", POLICY.ca_domains, clock, roots=roots)
    assert ca.bundle_path.read_bytes() == ca.certificate_pem + roots.read_bytes() + b"\n"
    ca.write_bundle(None)
    assert ca.bundle_path.read_bytes() == ca.certificate_pem
