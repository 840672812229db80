"""The command-line flags of ``bench/run`` and the lengths of a full and a ``--quick`` run."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

__all__ = ["RESULTS", "ROOT", "Options", "parse_options"]

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


@dataclasses.dataclass(frozen=True)
class Options:
    quick: bool
    connections: int
    p99_connections: int
    seconds: int
    p99_seconds: int
    warmup_seconds: int
    ceiling_seconds: int
    accounts: int
    big_accounts: int
    assertions: int
    rounds: int
    round_seconds: int
    budget_seconds: float
    postgres: str
    peer: bool
    keep: bool
    out: Path


def parse_options(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="bench/run",
        description="Measure tokensmith serve under wrk against the OpenSSL ceiling and a peer.",
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run (~2 minutes)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--p99-connections", type=int, default=4)
    parser.add_argument("--seconds", type=int, help="length of each measurement")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "TOKENSMITH_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="admin URL of a PostgreSQL server (a database is created there and dropped)",
    )
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-peer", action="store_true", help="skip node-oidc-provider")
    parser.add_argument("--keep", action="store_true", help="keep the data directories")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    seconds = args.seconds or (1 if quick else 5)
    return Options(
        quick=quick,
        connections=args.connections,
        p99_connections=args.p99_connections,
        seconds=seconds,
        p99_seconds=seconds if quick else max(1, seconds - 2),
        warmup_seconds=1,
        ceiling_seconds=1 if quick else 3,
        accounts=200 if quick else 1000,
        big_accounts=10_000 if quick else 100_000,
        assertions=50 if quick else 300,
        rounds=1 if quick else 4,
        round_seconds=seconds if quick else max(1, seconds - 2),
        budget_seconds=240.0 if quick else 570.0,
        postgres="" if args.no_postgres else args.postgres,
        peer=not args.no_peer,
        keep=bool(args.keep),
        out=args.out,
    )
