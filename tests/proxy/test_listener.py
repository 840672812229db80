"""``open_proxy``: the proxy as a listener of ``tokensmith serve`` — start-up failures before
anything runs, what ``server.json`` records, and serving until cancelled."""

from __future__ import annotations

import asyncio
import socket
import stat
import threading
from pathlib import Path

import pytest

from tests.proxy.conftest import read_all, status_and_body
from tokensmith.proxy import ProxyListener, open_proxy
from tokensmith.testing import LiveServer

pytestmark = pytest.mark.slow


def test_bad_domain_fails_before_binding(tmp_path: Path) -> None:
    """A top-level extra domain is refused before any socket or CA file exists."""
    with pytest.raises(ValueError, match="top-level domain"):
        open_proxy("127.0.0.1", 0, ["com"], tmp_path / "ca", ("127.0.0.1", 9))
    assert not (tmp_path / "ca").exists()


def test_port_in_use_is_an_os_error(tmp_path: Path) -> None:
    """A taken port is the same clear OSError as the API's, and no CA is made for nothing."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match="already in use"):
            open_proxy("127.0.0.1", port, [], tmp_path / "ca", ("127.0.0.1", 9))
    assert not (tmp_path / "ca").exists()


def _serve_in_thread(listener: ProxyListener) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()

    async def run() -> None:
        task = asyncio.ensure_future(listener.serve())
        await asyncio.to_thread(stop.wait)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
    thread.start()
    return thread, stop


def test_open_proxy_records_and_serves(tmp_path: Path, live: LiveServer) -> None:
    """The listener says where it is and which CA to trust, and serves CONNECT until stopped."""
    listener = open_proxy(
        "127.0.0.1", 0, ["example.test", ""], tmp_path / "ca", ("127.0.0.1", live.port)
    )
    port = listener.sock.getsockname()[1]
    record = listener.record()
    assert record["url"] == f"http://127.0.0.1:{port}"
    assert record["ca"] == str((tmp_path / "ca" / "ca.pem").resolve())
    assert Path(record["ca_bundle"]).read_bytes().startswith(listener.ca.certificate_pem)
    assert "iamcredentials.example.test" in record["hosts"].split(",")
    assert stat.S_IMODE((tmp_path / "ca" / "ca.key").stat().st_mode) == 0o600
    assert record["url"] in listener.describe()
    thread, stop = _serve_in_thread(listener)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"CONNECT evil.example:443 HTTP/1.1\r\n\r\n")
            status, body = status_and_body(read_all(sock))
        assert status == "HTTP/1.1 403 Forbidden"
        assert b"evil.example" in body
    finally:
        stop.set()
        thread.join(10)
        listener.sock.close()
    assert not thread.is_alive()
