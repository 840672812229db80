"""An HTTPS proxy that serves Google's hard-coded hosts from tokensmith (COMPAT.md §6).

hosts     which hosts are served (``HostPolicy``) and which names the CA may certify
ca        the name-constrained local CA (``LocalCA``) and its per-host leaf certificates
protocol  the proxy's HTTP/1.x request line and answers, sans I/O
server    ``serve_proxy``: CONNECT → TLS with a leaf → bytes relayed to the local API
listener  ``open_proxy``: the proxy as one listener of ``tokensmith serve``
"""

from tokensmith.proxy.ca import LocalCA, NotPermitted, system_roots
from tokensmith.proxy.hosts import HostPolicy
from tokensmith.proxy.listener import ProxyListener, open_proxy
from tokensmith.proxy.server import ProxyLimits, loopback_upstream, serve_proxy

__all__ = [
    "HostPolicy",
    "LocalCA",
    "NotPermitted",
    "ProxyLimits",
    "ProxyListener",
    "loopback_upstream",
    "open_proxy",
    "serve_proxy",
    "system_roots",
]
