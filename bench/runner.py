"""``Bench``: the state of one run (its processes, results and notes) and its measuring steps.

``measure`` is the unit of every figure: a warm-up (every distinct request once, then one
second of wrk), then a run at ``connections`` and one at ``p99_connections``, with the
server's CPU time read from ``/proc`` around each. ``configuration`` measures every endpoint of
one server setup; ``peer`` does the same for node-oidc-provider.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench import fixtures
from bench.ceiling import rsa2048
from bench.load import Deck, LoadResult, run_wrk
from bench.options import ROOT, Options
from bench.probes import keepalive_round_trip, preflight, warm
from bench.procs import Processes, cpu_seconds, pss_mb, rss_mb
from bench.servers import PeerServer, TokensmithServer, serve_flags
from tokensmith.testing import free_port

__all__ = ["Bench", "rounds"]

# No signature per request (a static document; tokens the metadata server caches): no ratio to
# the ceiling.
NOT_SIGNING = {"/oauth2/v3/certs", "metadata identity", "metadata token"}
NAGLE_MS = 30.0
PEER_MODULES = ROOT / "bench" / "peer" / "node_modules" / "oidc-provider"
IDTOKEN = "generateIdToken"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-").lower()


def rounds(result: dict[str, Any]) -> str:
    ratios = result["round_ratios"]
    return f"{len(ratios)} alternating rounds: " + ", ".join(f"{r:.2f}" for r in ratios)


class Bench:
    def __init__(self, options: Options) -> None:
        self.o = options
        self.processes = Processes()
        self.started = time.monotonic()
        self.logs = options.out / "logs"
        self.work = options.out / "work.tmp"
        self.flags = serve_flags()
        self.workers = 2 if "--workers" in self.flags else 1
        self.metadata = "--metadata-port" in self.flags
        self.notes: list[str] = []
        self.results: dict[str, Any] = {
            "options": {
                k: str(v) if isinstance(v, Path) else v
                for k, v in dataclasses.asdict(options).items()
                if k != "postgres"
            },
            "capabilities": {"workers": self.workers > 1, "metadata": self.metadata},
            "configs": {},
            "peer": {},
            "extras": {"table": {}},
            "notes": self.notes,
        }
        self.single: list[float] = []
        self.single_cpu: list[float] = []
        self.multi: list[float] = []
        self.fixture: fixtures.Fixture | None = None

    # helpers ---------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:5.0f}s] {text}", flush=True)

    def over_budget(self, section: str, needs: float) -> bool:
        """True (and a note) if ``section``, taking about ``needs`` seconds at full length,
        would end the run past its budget."""
        needs = needs * self.o.seconds / 5
        if time.monotonic() - self.started + needs <= self.o.budget_seconds:
            return False
        self.note(
            f"{section}: skipped, it would end the run past its {self.o.budget_seconds:.0f} s "
            "budget (a busy machine makes every step slower)"
        )
        return True

    def note(self, text: str) -> None:
        self.say(f"note: {text}")
        self.notes.append(text)

    def table(self, key: str, value: str) -> None:
        self.say(f"{key}: {value}")
        self.results["extras"]["table"][key] = value

    def log(self, name: str) -> Path:
        return self.logs / f"{_slug(name)}.log"

    def server(self, data_dir: Path, name: str, **kwargs: Any) -> TokensmithServer:
        return TokensmithServer(
            self.processes, data_dir, free_port(), log_path=self.log(f"server-{name}"), **kwargs
        )

    def wrk(
        self, url: str, deck_file: Path, conns: int, seconds: int, cpus: str | None, threads: int
    ) -> LoadResult:
        return run_wrk(
            self.processes,
            url,
            deck_file,
            connections=conns,
            seconds=seconds,
            threads=threads,
            cpus=cpus,
            log_path=self.log(f"wrk-{deck_file.stem}-{conns}"),
        )

    def measure(
        self,
        label: str,
        pid: int,
        url: str,
        deck: Deck,
        *,
        wrk_cpus: str | None,
        threads: int,
        signs: bool = True,
    ) -> dict[str, Any]:
        """Warm-up, then ``connections`` and ``p99_connections`` runs, with the server's CPU."""
        problem = preflight(url, deck)
        if problem:
            self.note(f"{label}: skipped, the first request failed: {problem}")
            return {"skipped": problem[:120]}
        deck_file = deck.write(self.work / f"{_slug(label)}.deck")
        failed = warm(url, deck)
        if failed:
            self.note(f"{label}: {failed} of the warm-up requests failed")
        self.wrk(url, deck_file, self.o.connections, self.o.warmup_seconds, wrk_cpus, threads)
        out: dict[str, Any] = {"signs": signs}
        for conns, seconds in (
            (self.o.connections, self.o.seconds),
            (self.o.p99_connections, self.o.p99_seconds),
        ):
            before = cpu_seconds(pid)
            result = self.wrk(url, deck_file, conns, seconds, wrk_cpus, threads)
            cpu = cpu_seconds(pid) - before
            out[str(conns)] = {
                "rps": result.rps,
                "requests": result.requests,
                "seconds": result.seconds,
                "p50_ms": result.p50_ms,
                "p90_ms": result.p90_ms,
                "p99_ms": result.p99_ms,
                "max_ms": result.max_ms,
                "non2xx": result.non2xx,
                "socket_errors": result.socket_errors,
                "errors": result.errors,
                "server_cpu_cores": cpu / result.seconds if result.seconds else None,
                "cpu_ms_per_request": cpu * 1000 / result.requests if result.requests else None,
                "wrk_cpu_cores": result.wrk_cpu_seconds / result.seconds
                if result.seconds
                else None,
            }
            self.say(
                f"{label} @{conns}: {result.rps:,.0f} req/s, p50 {result.p50_ms:.1f} ms, "
                f"p99 {result.p99_ms:.1f} ms, errors {result.errors}, "
                f"server CPU {cpu / max(result.seconds, 1e-9):.2f} cores"
            )
            if result.first_bad:
                self.note(f"{label} @{conns}: first non-2xx: {result.first_bad[:160]}")
        return out

    def quick_rate(self, url: str, deck_file: Path) -> float:
        """One ``connections`` run, wrk on core 1: requests per second."""
        result = self.wrk(url, deck_file, self.o.connections, self.o.round_seconds, "1", 1)
        if result.errors:
            self.note(f"{deck_file.stem}: {result.errors} errors ({result.first_bad[:120]})")
        return result.rps

    # sections --------------------------------------------------------------------------------

    def sample_ceiling(self) -> None:
        seconds = self.o.ceiling_seconds
        single = rsa2048(seconds, cpus="0")
        multi = rsa2048(seconds, multi=2)
        assert single.cpu is not None
        self.single.append(single.wall)
        self.single_cpu.append(single.cpu)
        self.multi.append(multi.wall)
        self.say(
            f"ceiling: {single.wall:,.0f} signs/s on core 0 ({single.cpu:,.0f} per CPU second), "
            f"{multi.wall:,.0f} with -multi 2"
        )
        self.results["ceiling"] = {
            "single": statistics.median(self.single),
            "single_cpu": statistics.median(self.single_cpu),
            "multi": statistics.median(self.multi),
            "single_samples": self.single,
            "single_cpu_samples": self.single_cpu,
            "multi_samples": self.multi,
        }

    def configuration(
        self, key: str, data_dir: Path, *, cpus: str | None, wrk_cpus: str | None, threads: int
    ) -> None:
        workers = self.workers if key == "workers" else 1
        label = (
            "server pinned to core 0 (taskset -c 0), one process (--workers 1), "
            "wrk pinned to core 1"
            if key == "pinned"
            else f"server unpinned, --workers {workers}, wrk unpinned ({threads} threads)"
            if workers > 1
            else "server unpinned, one process (workers not supported yet), wrk unpinned"
        )
        notes: list[str] = []
        if key == "workers" and workers == 1:
            notes.append("workers not supported yet: `tokensmith serve` has no --workers")
        if not self.metadata:
            notes.append("no metadata server yet: `tokensmith serve` has no --metadata-port")
        metadata_port = free_port() if self.metadata else 0
        server = self.server(data_dir, key, cpus=cpus, workers=workers, metadata_port=metadata_port)
        endpoints: dict[str, Any] = {}
        self.results["configs"][key] = {"label": label, "workers": workers, "notes": notes}
        with server:
            notes.append(
                f"memory after start: {pss_mb(server.pid):.0f} MB PSS, "
                f"{rss_mb(server.pid, tree=True):.0f} MB RSS summed over the process tree"
            )
            if self.fixture is None:
                self.say("preparing accounts, keys and conditional grants over the REST API")
                self.fixture = fixtures.prepare(
                    server.url, data_dir, targets=self.o.accounts, assertions=self.o.assertions
                )
            if key == "pinned":
                trip = keepalive_round_trip(server.port)
                self.results["extras"]["round_trip"] = trip
                self.table(
                    "GET /healthz, one client, sequential",
                    f"{trip['keepalive_ms']:.1f} ms on a kept-alive connection, "
                    f"{trip['new_connection_ms']:.1f} ms on a new connection each time",
                )
                if trip["keepalive_ms"] > NAGLE_MS:
                    self.note(
                        "a kept-alive connection waits ~40 ms per response: Nagle's algorithm "
                        "meets delayed ACK (TCP_NODELAY is not set on accepted sockets), so "
                        "every figure below is bounded by latency, not CPU"
                    )
            decks = fixtures.decks(self.fixture, metadata=self.metadata)
            for name, deck in decks.items():
                url = server.metadata_url if name.startswith("metadata") else server.url
                endpoints[name] = self.measure(
                    f"{key} {name}",
                    server.pid,
                    url,
                    deck,
                    wrk_cpus=wrk_cpus,
                    threads=threads,
                    signs=name not in NOT_SIGNING,
                )
        self.results["configs"][key]["endpoints"] = endpoints

    def peer(self, key: str, *, cpus: str | None, wrk_cpus: str | None, threads: int) -> None:
        if not self.o.peer:
            return
        if not (PEER_MODULES.exists() and shutil.which("node")):
            self.note("node-oidc-provider not measured: node or bench/peer/node_modules missing")
            self.o = dataclasses.replace(self.o, peer=False)
            return
        workers = self.workers if key == "workers" else 1
        peer = PeerServer(
            self.processes,
            free_port(),
            log_path=self.log(f"peer-{key}"),
            cpus=cpus,
            workers=workers,
        )
        deck = fixtures.peer_deck(peer.client_id, peer.client_secret, peer.scope)
        with peer:
            self.results["peer"][key] = self.measure(
                f"{key} peer", peer.pid, peer.url, deck, wrk_cpus=wrk_cpus, threads=threads
            )
            self.results["peer"][key]["workers"] = workers

    def alternate(self, rates: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
        """Rates of each, measured in short alternating rounds (so drift hits them alike)."""
        samples: dict[str, list[float]] = {name: [] for name in rates}
        for _ in range(self.o.rounds):
            for name, rate in rates.items():
                samples[name].append(rate())
        return samples

    @staticmethod
    def compare(samples: dict[str, list[float]], top: str, base: str) -> dict[str, Any]:
        """Mean rates, their ratio, and the ratio round by round (how noisy it was)."""
        mean_top, mean_base = statistics.mean(samples[top]), statistics.mean(samples[base])
        return {
            f"{top}_rps": mean_top,
            f"{base}_rps": mean_base,
            "ratio": mean_top / mean_base if mean_base else None,
            "round_ratios": [t / b for t, b in zip(samples[top], samples[base], strict=True) if b],
            "samples": samples,
        }

    def small_server(self, name: str, accounts: int, database: str = "") -> TokensmithServer:
        data_dir = self.work / name
        fixtures.seed_database(data_dir, database, accounts)
        return self.server(data_dir, name, cpus="0", database=database, workers=1)

    @contextlib.contextmanager
    def ready(
        self, server: TokensmithServer, targets: int, fixture: fixtures.Fixture | None = None
    ) -> Iterator[Path]:
        """``server`` started and prepared (unless ``fixture`` is its data already); yields its
        generateIdToken deck file, warmed up."""
        with server:
            if fixture is None:
                fixture = fixtures.prepare(
                    server.url, server.data_dir, targets=targets, assertions=0
                )
            deck = fixtures.decks(fixture, metadata=False)[IDTOKEN]
            problem = preflight(server.url, deck)
            if problem:
                raise RuntimeError(f"generateIdToken fails on {server.data_dir}: {problem}")
            deck_file = deck.write(self.work / f"{server.data_dir.name}.deck")
            warm(server.url, deck)
            self.wrk(server.url, deck_file, self.o.connections, self.o.warmup_seconds, "1", 1)
            yield deck_file
