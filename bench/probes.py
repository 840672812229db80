"""Small questions the bench asks along the way: of the machine (load, CPU, versions, commit)
and of a server (does a deck's first request succeed; warm every distinct request; how long a
sequential round trip takes on a kept-alive connection).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import platform
import statistics
import subprocess
import time
from pathlib import Path

import httpx

from bench.load import Deck
from bench.options import ROOT

__all__ = [
    "commit",
    "cpu_model",
    "keepalive_round_trip",
    "loadavg",
    "preflight",
    "tool_version",
    "warm",
]


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def commit() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(ROOT), *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return done.stdout.strip()

    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = git("rev-parse", "--short", "HEAD") or "?"
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return commit + (" + uncommitted changes" if dirty else "")
    return "?"


def tool_version(args: list[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(args, capture_output=True, text=True, timeout=30)
        return (done.stdout or done.stderr).strip().splitlines()[0]
    return "absent"


def preflight(url: str, deck: Deck) -> str:
    """Empty if the deck's first request succeeds; otherwise what the server answered."""
    target, body = deck.requests[0]
    try:
        response = httpx.request(
            deck.method, url + target, headers=deck.headers, content=body or None, timeout=30
        )
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    if response.is_success:
        return ""
    return f"HTTP {response.status_code}: {response.text[:200]}"


def warm(url: str, deck: Deck, concurrency: int = 8) -> int:
    """Send every distinct request of ``deck`` once, so that a measurement sees the steady
    state of whatever the server caches per target; how many were not 2xx."""
    distinct = list(dict.fromkeys(deck.requests))
    with (
        httpx.Client(base_url=url, headers=deck.headers, timeout=60) as client,
        concurrent.futures.ThreadPoolExecutor(concurrency) as pool,
    ):
        statuses = list(
            pool.map(
                lambda r: client.request(deck.method, r[0], content=r[1] or None).status_code,
                distinct,
            )
        )
    return sum(not 200 <= status < 300 for status in statuses)


def keepalive_round_trip(port: int, path: str = "/healthz", count: int = 30) -> dict[str, float]:
    """Median ms of sequential GETs on one keep-alive connection, and on fresh connections."""
    kept: list[float] = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for _ in range(count):
            started = time.perf_counter()
            conn.request("GET", path)
            conn.getresponse().read()
            kept.append((time.perf_counter() - started) * 1000)
    finally:
        conn.close()
    fresh: list[float] = []
    for _ in range(count):
        started = time.perf_counter()
        one = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            one.request("GET", path)
            one.getresponse().read()
        finally:
            one.close()
        fresh.append((time.perf_counter() - started) * 1000)
    return {
        "keepalive_ms": statistics.median(kept[1:]),
        "new_connection_ms": statistics.median(fresh),
    }
