"""The load generator: wrk over keep-alive connections, replaying a deck of prepared requests.

A ``Deck`` is written to a file that ``bench/lua/deck.lua`` reads once per wrk thread; wrk's
result comes back as one JSON line. The load generator's own CPU time is read from
``wait4``'s resource usage, so the report can say how much of a shared core wrk took.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

from bench.procs import Processes

__all__ = ["Deck", "LoadResult", "run_wrk", "wrk_path"]

LUA = Path(__file__).resolve().parent / "lua" / "deck.lua"


def wrk_path() -> str | None:
    return shutil.which("wrk")


@dataclasses.dataclass(frozen=True)
class Deck:
    """Requests that differ only in path and body, all with the same method and headers."""

    method: str
    headers: dict[str, str]
    requests: list[tuple[str, str]]  # (path with query, body)

    def write(self, path: Path) -> Path:
        lines = [self.method]
        lines += [f"H {name}: {value}" for name, value in self.headers.items()]
        for target, body in self.requests:
            if "\t" in body or "\n" in body or "\t" in target:
                raise ValueError("a deck request may hold neither tabs nor newlines")
            lines.append(f"R {target}\t{body}")
        path.write_text("\n".join(lines) + "\n")
        return path


@dataclasses.dataclass(frozen=True)
class LoadResult:
    connections: int
    seconds: float
    requests: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non2xx: int
    socket_errors: int
    first_bad: str
    wrk_cpu_seconds: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> int:
        return self.non2xx + self.socket_errors


def run_wrk(
    processes: Processes,
    url: str,
    deck_file: Path,
    *,
    connections: int,
    seconds: int,
    threads: int = 1,
    cpus: str | None = None,
    log_path: Path,
) -> LoadResult:
    """Run wrk against ``url`` (scheme and host; paths come from the deck) for ``seconds``."""
    wrk = wrk_path()
    if wrk is None:
        raise RuntimeError("wrk is not installed (bench/run installs it: apt-get install wrk)")
    args = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "-s",
        str(LUA),
        url,
    ]
    env = {**os.environ, "BENCH_DECK": str(deck_file)}
    log_path.unlink(missing_ok=True)
    proc = processes.start(args, log_path=log_path, env=env, cpus=cpus)
    usage = processes.wait(proc, timeout=seconds + 30)
    text = log_path.read_text(errors="replace")
    line = next((x for x in text.splitlines() if x.startswith("BENCH_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result (exit {proc.returncode}):\n{text[-2000:]}")
    raw = json.loads(line.removeprefix("BENCH_RESULT "))
    return LoadResult(
        connections=connections,
        seconds=raw["duration_us"] / 1e6,
        requests=raw["requests"],
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        non2xx=raw["non2xx"],
        socket_errors=raw["connect_errors"]
        + raw["read_errors"]
        + raw["write_errors"]
        + raw["timeouts"],
        first_bad=raw["first_bad"],
        wrk_cpu_seconds=usage.ru_utime + usage.ru_stime if usage else 0.0,
    )
