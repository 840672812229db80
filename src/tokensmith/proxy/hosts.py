"""Which hosts the proxy answers for, and which names the local CA may certify.

Google's clients hard-code a few HTTPS hosts (COMPAT.md §2a, §3, §4a, §6):
``iamcredentials.googleapis.com`` (impersonated ID tokens and ``signBlob`` in Python),
``oauth2.googleapis.com`` (authorized_user files, Node's service-account grant),
``www.googleapis.com`` (``verify_oauth2_token``'s certificates), and so on. tokensmith serves
what those hosts serve, so its proxy terminates TLS for exactly them and nothing else; a
non-default universe domain (``"universe_domain": "example.test"`` in a key file) moves the
services to ``iamcredentials.<domain>``, ``oauth2.<domain>`` and ``iam.<domain>``.

Pure functions and values only: no I/O, no clock.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Iterable

__all__ = [
    "BASE_DOMAINS",
    "GOOGLE_HOSTS",
    "NOT_IMPLEMENTED",
    "UNIVERSE_SERVICES",
    "HostPolicy",
    "normalize_domain",
    "normalize_host",
    "printable",
]

# The domains the CA may ever certify (its X.509 name constraints), before configured extras.
BASE_DOMAINS = ("googleapis.com", "google.com", "google.internal")

# The Google hosts whose APIs tokensmith serves (routed by path on the one API listener).
GOOGLE_HOSTS = frozenset(
    {
        "iamcredentials.googleapis.com",
        "iam.googleapis.com",
        "oauth2.googleapis.com",
        "www.googleapis.com",
        "accounts.google.com",
        "cloudresourcemanager.googleapis.com",
    }
)

# Services a universe domain moves to ``<service>.<domain>``.
UNIVERSE_SERVICES = ("iamcredentials", "oauth2", "iam")

# Google hosts a client may well ask for that tokensmith does not implement: refused with a
# reason, so that the failure says what is missing rather than only "forbidden".
NOT_IMPLEMENTED = {
    "sts.googleapis.com": "the Security Token Service (workload identity federation)",
    "openidconnect.googleapis.com": "the OpenID Connect userinfo endpoint",
    "metadata.google.internal": "the metadata server over HTTPS (use plain HTTP to it)",
}

HTTPS_PORT = 443

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def normalize_host(host: str) -> str | None:
    """``host`` lower-cased without a trailing dot, or None if it is not a DNS host name.

    IP literals, wildcards, empty labels and non-ASCII names are not host names here.
    """
    name = host.strip().lower().removesuffix(".")
    if not name or len(name) > 253 or name.startswith("["):
        return None
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        return None
    labels = name.split(".")
    if not all(_LABEL.match(label) for label in labels):
        return None
    return name


def normalize_domain(domain: str) -> str:
    """A configured extra domain, checked: a DNS name of at least two labels.

    A single label (``test``, ``com``) would let the CA certify every name under a top-level
    domain, which is exactly what its name constraints are there to prevent.
    """
    name = normalize_host(domain)
    if name is None:
        raise ValueError(f"{domain!r} is not a DNS domain name")
    if "." not in name:
        raise ValueError(
            f"{domain!r} is a top-level domain; an extra domain needs at least two labels "
            "(example.test), or the local CA could certify every name under it"
        )
    return name


def printable(text: str, limit: int = 100) -> str:
    """``text`` fit to be echoed in an answer or a log: printable ASCII, bounded."""
    cleaned = "".join(c if " " < c < "\x7f" else "?" for c in text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def _within(name: str, domain: str) -> bool:
    return name == domain or name.endswith("." + domain)


@dataclasses.dataclass(frozen=True)
class HostPolicy:
    """The hosts the proxy tunnels to tokensmith: Google's, plus services of extra domains."""

    extra_domains: tuple[str, ...] = ()

    @classmethod
    def with_domains(cls, domains: Iterable[str]) -> HostPolicy:
        """A policy for these extra (universe) domains, validated and de-duplicated."""
        return cls(tuple(dict.fromkeys(normalize_domain(d) for d in domains if d.strip())))

    @property
    def hosts(self) -> frozenset[str]:
        extra = {f"{s}.{d}" for d in self.extra_domains for s in UNIVERSE_SERVICES}
        return GOOGLE_HOSTS | extra

    @property
    def ca_domains(self) -> tuple[str, ...]:
        """The permitted DNS subtrees of the local CA: Google's domains and the extras."""
        extra = [d for d in self.extra_domains if not any(_within(d, b) for b in BASE_DOMAINS)]
        return (*BASE_DOMAINS, *dict.fromkeys(extra))

    def refusal(self, host: str, port: int) -> str | None:
        """Why a ``CONNECT host:port`` is refused, or None if tokensmith serves it."""
        name = normalize_host(host)
        shown = f"{printable(host)}:{port}"
        if name is None:
            return (
                f"{shown} is not a host name tokensmith serves; tokensmith does not tunnel to "
                "the network"
            )
        if name in self.hosts:
            if port != HTTPS_PORT:
                return (
                    f"{name} is served on port {HTTPS_PORT} only (asked for {port}); tokensmith "
                    "does not tunnel to the network"
                )
            return None
        missing = NOT_IMPLEMENTED.get(name)
        if missing:
            return (
                f"{name} is {missing}, which tokensmith does not implement; tokensmith does not "
                "tunnel to the network"
            )
        return (
            f"{name} is not a host tokensmith serves, and tokensmith does not tunnel to the "
            f"network (it serves {', '.join(sorted(self.hosts))})"
        )
