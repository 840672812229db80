"""The comparisons beside the endpoint tables: 100,000 accounts against 10, PostgreSQL against
SQLite (each in short alternating rounds, so that drift on a shared machine hits both sides
alike), and the start time and idle memory of ``tokensmith serve``.

Each is a function of the run's ``Bench``.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.procs import pss_mb, rss_mb
from bench.runner import Bench, rounds
from bench.servers import postgres_database, postgres_reachable

__all__ = ["postgres", "scale", "start_and_memory"]


def scale(bench: Bench) -> None:
    if bench.over_budget("100,000 vs 10 accounts", 60):
        return
    big_n = bench.o.big_accounts
    bench.say(f"seeding {big_n:,} accounts (SQLAlchemy Core executemany)")
    started = time.monotonic()
    big = bench.small_server("accounts-big", big_n)
    seeded = time.monotonic() - started
    small = bench.small_server("accounts-small", 10)
    targets = 8
    with bench.ready(big, targets) as big_deck, bench.ready(small, targets) as small_deck:
        samples = bench.alternate(
            {
                "big": lambda: bench.quick_rate(big.url, big_deck),
                "small": lambda: bench.quick_rate(small.url, small_deck),
            }
        )
    result = bench.compare(samples, "big", "small")
    note = "" if big_n >= 100_000 else f"--quick: {big_n:,} accounts, not 100,000"
    bench.results["extras"]["scale"] = {
        **result,
        "big_accounts": big_n,
        "small_accounts": 10,
        "seed_seconds": seeded,
        "note": note,
    }
    bench.table(
        f"generateIdToken with {big_n:,} vs 10 accounts (pinned, {targets} targets)",
        f"{result['big_rps']:,.0f} vs {result['small_rps']:,.0f} req/s = "
        f"{(result['ratio'] or 0):.3f} × ({rounds(result)}); "
        f"seeding {big_n:,} accounts took {seeded:.1f} s",
    )


def postgres(bench: Bench, sqlite_dir: Path) -> None:
    if not bench.o.postgres:
        bench.results["extras"]["postgres"] = {"note": "--no-postgres"}
        return
    if bench.over_budget("PostgreSQL vs SQLite", 60):
        bench.results["extras"]["postgres"] = {"note": "over budget"}
        return
    reason = postgres_reachable(bench.o.postgres)
    if reason:
        bench.note(f"PostgreSQL not measured: {reason}")
        bench.results["extras"]["postgres"] = {"note": reason}
        return
    with postgres_database(bench.o.postgres) as url:
        bench.say("seeding the PostgreSQL database")
        pg = bench.small_server("postgres", bench.o.accounts, database=url)
        sqlite = bench.server(sqlite_dir, "sqlite-again", cpus="0", workers=1)
        targets = bench.o.accounts
        with (
            bench.ready(pg, targets) as pg_deck,
            bench.ready(sqlite, targets, bench.fixture) as sqlite_deck,
        ):
            samples = bench.alternate(
                {
                    "sqlite": lambda: bench.quick_rate(sqlite.url, sqlite_deck),
                    "postgres": lambda: bench.quick_rate(pg.url, pg_deck),
                }
            )
    result = bench.compare(samples, "postgres", "sqlite")
    bench.results["extras"]["postgres"] = {**result, "note": ""}
    bench.table(
        f"generateIdToken on PostgreSQL vs SQLite ({targets:,} targets; server pinned, "
        "PostgreSQL unpinned)",
        f"{result['postgres_rps']:,.0f} vs {result['sqlite_rps']:,.0f} req/s = "
        f"{(result['ratio'] or 0):.3f} × ({rounds(result)})",
    )


def start_and_memory(bench: Bench) -> None:
    """Start time of ``tokensmith serve`` as a user runs it (default workers), and idle
    memory of one process and of the default."""
    if bench.over_budget("start time and idle memory", 30):
        return
    first: list[float] = []
    for i in range(3):
        with bench.server(bench.work / f"start-{i}", f"start-{i}") as server:
            first.append(server.start_seconds * 1000)
    again: list[float] = []
    default_pss = default_rss = 0.0
    for i in range(3):
        with bench.server(bench.work / "start-0", f"restart-{i}") as server:
            again.append(server.start_seconds * 1000)
            if i == 2:
                time.sleep(1.0)
                default_pss = pss_mb(server.pid)
                default_rss = rss_mb(server.pid, tree=True)
    with bench.server(bench.work / "start-0", "one-process", workers=1) as server:
        time.sleep(1.0)
        rss = rss_mb(server.pid, tree=True)
    start = {"first_ms": min(first), "restart_ms": min(again), "first": first, "again": again}
    bench.results["extras"]["start"] = start
    bench.results["extras"]["idle_rss_mb"] = rss
    bench.results["extras"]["idle_default"] = {"pss_mb": default_pss, "rss_mb": default_rss}
    bench.table(
        "start to first 200 from /healthz, default workers (best of 3)",
        f"{min(again):.0f} ms restarting on an existing data dir "
        f"({', '.join(f'{x:.0f}' for x in again)}); {min(first):.0f} ms on an empty one "
        f"({', '.join(f'{x:.0f}' for x in first)})",
    )
    bench.table("idle RSS, one process (--workers 1)", f"{rss:.0f} MB")
    bench.table(
        "idle memory, default workers",
        f"{default_pss:.0f} MB PSS ({default_rss:.0f} MB RSS summed over the processes)",
    )
