"""The proxy as one listener of ``tokensmith serve``: its socket, CA, hosts and upstream.

``open_proxy`` does the parts that can fail at start-up (the domains, the port, the CA files)
before anything is announced; the composition root then runs ``ProxyListener.serve`` in the
event loop beside the HTTP listeners (in each worker, on the inherited socket) and records
``record()`` in ``server.json`` for ``tokensmith env``.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Sequence
from pathlib import Path

from tokensmith.clock import Clock
from tokensmith.process import bind
from tokensmith.proxy.ca import LocalCA
from tokensmith.proxy.hosts import HostPolicy
from tokensmith.proxy.server import ProxyLimits, serve_proxy

__all__ = ["ProxyListener", "open_proxy"]


@dataclasses.dataclass(frozen=True)
class ProxyListener:
    sock: socket.socket
    ca: LocalCA
    policy: HostPolicy
    upstream: tuple[str, int]
    limits: ProxyLimits = dataclasses.field(default_factory=ProxyLimits)

    @property
    def url(self) -> str:
        """What ``HTTPS_PROXY`` should say."""
        host, port = self.sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}"

    async def serve(self) -> None:
        """Serve until cancelled."""
        await serve_proxy(self.sock, self.ca, self.upstream, self.policy, self.limits)

    def record(self) -> dict[str, str]:
        """Where clients find the proxy and the CA they must trust (for ``server.json``)."""
        return {
            "url": self.url,
            "ca": str(self.ca.ca_path.resolve()),
            "ca_bundle": str(self.ca.bundle_path.resolve()),
            "hosts": ",".join(sorted(self.policy.hosts)),
        }

    def describe(self) -> str:
        return f"{self.url} (HTTPS_PROXY; trust {self.ca.bundle_path.resolve()})"


def open_proxy(
    host: str,
    port: int,
    domains: Sequence[str],
    ca_dir: Path,
    upstream: tuple[str, int],
    clock: Clock | None = None,
) -> ProxyListener:
    """Check ``domains`` (ValueError), bind ``host:port`` (OSError), load or create the CA.

    ``domains`` are extra universe domains; empty entries are ignored.
    """
    policy = HostPolicy.with_domains(domains)
    sock = bind(host, port, option="--proxy-port")
    try:
        ca = LocalCA.load_or_create(ca_dir, policy.ca_domains, clock)
    except BaseException:
        sock.close()
        raise
    return ProxyListener(sock=sock, ca=ca, policy=policy, upstream=upstream)
