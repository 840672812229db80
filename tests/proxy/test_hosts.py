"""Which CONNECT targets the proxy serves, and which domains the local CA may certify."""

from __future__ import annotations

import pytest

from tokensmith.proxy.hosts import GOOGLE_HOSTS, HostPolicy, normalize_domain, normalize_host

POLICY = HostPolicy.with_domains(["example.test"])


@pytest.mark.parametrize(
    "host",
    [
        *sorted(GOOGLE_HOSTS),
        "iamcredentials.example.test",
        "oauth2.example.test",
        "iam.example.test",
        "WWW.GoogleAPIs.com",
        "oauth2.googleapis.com.",
    ],
)
def test_served_hosts_are_allowed_on_443(host: str) -> None:
    """Google's credential hosts and the extra domain's services are tunnelled on port 443."""
    assert POLICY.refusal(host, 443) is None


@pytest.mark.parametrize(
    ("host", "port", "words"),
    [
        ("evil.example", 443, ["evil.example", "does not tunnel to the network"]),
        ("storage.googleapis.com", 443, ["storage.googleapis.com", "not a host tokensmith"]),
        ("sts.googleapis.com", 443, ["Security Token Service", "does not implement"]),
        ("www.googleapis.com", 8443, ["port 443 only", "8443"]),
        ("www.googleapis.com", 80, ["port 443 only"]),
        ("127.0.0.1", 443, ["127.0.0.1:443", "does not tunnel"]),
        ("[::1]", 443, ["[::1]:443", "does not tunnel"]),
        ("storage.example.test", 443, ["storage.example.test"]),
        ("example.test", 443, ["example.test"]),
        ("www.googleapis.com.evil.example", 443, ["www.googleapis.com.evil.example"]),
        ("bad\x01host", 443, ["bad?host:443"]),
    ],
)
def test_other_targets_are_refused_with_a_reason(host: str, port: int, words: list[str]) -> None:
    """Anything else is refused, and the reason names the target and what is wrong with it."""
    reason = POLICY.refusal(host, port)
    assert reason is not None
    for word in words:
        assert word in reason


def test_universe_hosts_need_the_domain_configured() -> None:
    """Without extra domains, iamcredentials.example.test is just another refused host."""
    assert HostPolicy().refusal("iamcredentials.example.test", 443) is not None


def test_ca_domains_are_googles_and_the_extras() -> None:
    """The CA's permitted subtrees: Google's three domains, then each extra domain once."""
    policy = HostPolicy.with_domains(["example.test", "Example.Test.", "api.googleapis.com"])
    assert policy.ca_domains == ("googleapis.com", "google.com", "google.internal", "example.test")


@pytest.mark.parametrize("domain", ["test", "com", "*.example.test", "1.2.3.4", "a..b", "-a.b", ""])
def test_unsafe_extra_domains_are_rejected(domain: str) -> None:
    """An extra domain must be a real DNS name of two labels or more (never a whole TLD)."""
    with pytest.raises(ValueError, match="domain"):
        normalize_domain(domain)


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("Oauth2.GoogleAPIs.com.", "oauth2.googleapis.com"),
        ("localhost", "localhost"),
        ("10.0.0.1", None),
        ("::1", None),
        ("ünïcode.example", None),
        ("x" * 64 + ".example", None),
    ],
)
def test_normalize_host(raw: str, normal: str | None) -> None:
    """Host names are lower-cased without the trailing dot; IPs and non-LDH names are not."""
    assert normalize_host(raw) == normal
