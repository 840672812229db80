"""One bench run, end to end: what ``bench/run`` executes once the tools are installed.

Order of a run (each step bounded; the whole run stops by itself and stops what it started):

1. the ceiling: ``openssl speed rsa2048`` on one core and with ``-multi 2`` (sampled again
   between configurations and at the end: the median is the baseline);
2. configuration (a): ``tokensmith serve`` pinned to core 0, wrk pinned to core 1, SQLite with
   1,000 service accounts; every endpoint at 16 connections, then at 4 for p99;
3. configuration (b): the same data, server unpinned with two workers where ``--workers``
   exists (wrk unpinned too);
4. the peer, node-oidc-provider, in both configurations;
5. generateIdToken with 100,000 accounts against 10 accounts, rounds alternated;
6. PostgreSQL against SQLite (a fresh database, dropped afterwards), rounds alternated;
7. start time to the first ``/healthz`` and idle memory.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import sys
import time
from typing import Any

from bench import extras, fixtures, report
from bench.load import wrk_path
from bench.options import parse_options
from bench.probes import commit, cpu_model, loadavg, tool_version
from bench.runner import Bench

__all__ = ["main", "run"]


def run(bench: Bench) -> dict[str, Any]:
    """Every step of a run, in order; the results as ``results.json`` holds them."""
    o = bench.o
    bench.results["meta"] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "bench/run" + (" --quick" if o.quick else ""),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "tokensmith": importlib.metadata.version("tokensmith"),
        "commit": commit(),
        "wrk": tool_version(["wrk", "-v"]),
        "openssl": tool_version(["openssl", "version"]),
        "node": tool_version(["node", "--version"]),
        "loadavg_start": loadavg(),
        "serve_flags": sorted(bench.flags),
    }
    bench.say(
        f"tokensmith {bench.results['meta']['tokensmith']} "
        f"({bench.results['meta']['commit']}); load average {loadavg()}; "
        f"workers {'yes' if bench.workers > 1 else 'not supported yet'}, "
        f"metadata server {'yes' if bench.metadata else 'not yet'}"
    )
    bench.sample_ceiling()
    sqlite_dir = bench.work / "sqlite"
    bench.say(f"seeding {o.accounts:,} service accounts (SQLite)")
    fixtures.seed_database(sqlite_dir, "", o.accounts)
    bench.configuration("pinned", sqlite_dir, cpus="0", wrk_cpus="1", threads=1)
    bench.peer("pinned", cpus="0", wrk_cpus="1", threads=1)
    bench.sample_ceiling()
    bench.configuration("workers", sqlite_dir, cpus=None, wrk_cpus=None, threads=2)
    bench.peer("workers", cpus=None, wrk_cpus=None, threads=2)
    extras.scale(bench)
    extras.postgres(bench, sqlite_dir)
    extras.start_and_memory(bench)
    bench.sample_ceiling()
    bench.results["meta"]["loadavg_end"] = loadavg()
    bench.results["meta"]["seconds"] = time.monotonic() - bench.started
    busy = False
    with contextlib.suppress(ValueError, IndexError):
        busy = float(bench.results["meta"]["loadavg_start"].split()[0]) > 1.0
    if busy:
        bench.notes.append(
            "the machine was busy when the run started (load average "
            f"{bench.results['meta']['loadavg_start']}): read the ratios, not the absolutes"
        )
    bench.results["targets"] = [t.as_dict() for t in report.judge(bench.results)]
    return bench.results


def _stop_on_signals() -> None:
    """SIGTERM and SIGHUP end the run like Ctrl-C does: through the cleanup below."""

    def stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    if wrk_path() is None:
        print("wrk is not installed: run bench/run (it installs wrk), or apt-get install wrk")
        return 2
    _stop_on_signals()
    options.out.mkdir(parents=True, exist_ok=True)
    bench = Bench(options)
    shutil.rmtree(bench.logs, ignore_errors=True)
    shutil.rmtree(bench.work, ignore_errors=True)
    bench.logs.mkdir(parents=True)
    bench.work.mkdir(parents=True)
    try:
        results = run(bench)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping every process the bench started", file=sys.stderr)
        return 130
    finally:
        bench.processes.stop_all()
        if not options.keep:
            shutil.rmtree(bench.work, ignore_errors=True)
    (options.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    report.write_markdown(results, options.out / "results.md")
    report.write_plot(results, options.out / "results.png")
    print()
    print((options.out / "results.md").read_text())
    print(f"wrote {options.out}/results.json, results.md, results.png (raw logs in logs/)")
    return 0
