"""The bench's outputs: targets judged against the figures, and results.json / .md / .png.

A result is a plain dict (what ``results.json`` holds), so a report can be redrawn from an old
``results.json`` with ``python -m bench.report bench/results/results.json``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["Target", "judge", "write_markdown", "write_plot"]

IDTOKEN = "generateIdToken"
TWO_HOP = "generateIdToken 2-hop"
CONFIG_LABELS = {"pinned": "(a) server on core 0, wrk on core 1", "workers": "(b) unpinned"}


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    goal: str  # as written in the issue
    value: float | None
    limit: float
    higher_is_better: bool
    unit: str = ""
    note: str = ""

    @property
    def passed(self) -> bool | None:
        if self.value is None:
            return None
        if self.higher_is_better:
            return self.value >= self.limit
        return self.value <= self.limit

    @property
    def margin(self) -> float | None:
        """Headroom as a fraction of the target: positive passes, negative misses."""
        if self.value is None or self.limit == 0:
            return None
        if self.higher_is_better:
            return (self.value - self.limit) / self.limit
        return (self.limit - self.value) / self.limit

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "passed": self.passed, "margin": self.margin}


def _run(results: dict[str, Any], config: str, endpoint: str, conns: str) -> dict[str, Any]:
    return (
        results.get("configs", {})
        .get(config, {})
        .get("endpoints", {})
        .get(endpoint, {})
        .get(conns, {})
    )


def judge(results: dict[str, Any]) -> list[Target]:
    """The targets of issue #7, each with its figure from this run (None: not measured)."""
    ceiling = results["ceiling"]
    single, multi = ceiling["single"], ceiling["multi"]
    big = str(results["options"]["connections"])
    small = str(results["options"]["p99_connections"])

    def rps(config: str, endpoint: str, conns: str = big) -> float | None:
        value = _run(results, config, endpoint, conns).get("rps")
        return None if value is None else float(value)

    def ratio(value: float | None, base: float | None) -> float | None:
        return None if value is None or not base else value / base

    workers = results["configs"].get("workers", {})
    workers_note = "" if workers.get("workers", 1) > 1 else "workers not supported yet"
    idtoken_small = _run(results, "pinned", IDTOKEN, small)
    idtoken_errors = sum(_run(results, "pinned", IDTOKEN, c).get("errors", 0) for c in (big, small))
    peer = results.get("peer", {}).get("pinned", {}).get(big, {}).get("rps")
    extras = results.get("extras", {})
    start = extras.get("start", {})
    scale = extras.get("scale", {})
    postgres = extras.get("postgres", {})
    metadata_note = "" if results["capabilities"]["metadata"] else "no metadata server yet"
    p99 = idtoken_small.get("p99_ms")
    if p99 is not None and idtoken_errors:
        p99 = float("inf")  # errors fail the target whatever the latency
    return [
        Target(
            "generateIdToken, pinned",
            "≥ 70 % of the single-core ceiling",
            ratio(rps("pinned", IDTOKEN), single),
            0.70,
            True,
            "× ceiling",
        ),
        Target(
            "generateIdToken 2-hop, pinned",
            "≥ 60 % of the single-core ceiling",
            ratio(rps("pinned", TWO_HOP), single),
            0.60,
            True,
            "× ceiling",
        ),
        Target(
            "generateIdToken, two workers",
            "≥ 65 % of the two-core ceiling",
            ratio(rps("workers", IDTOKEN), multi),
            0.65,
            True,
            "× ceiling",
            workers_note,
        ),
        Target(
            "generateIdToken vs node-oidc-provider",
            "≥ 1.4 × the peer, pinned",
            ratio(rps("pinned", IDTOKEN), peer),
            1.4,
            True,
            "×",
            "" if peer else "peer not measured",
        ),
        Target(
            f"generateIdToken p99 at {small} connections",
            "≤ 5 ms, no errors",
            p99,
            5.0,
            False,
            "ms",
            f"{idtoken_errors} errors" if idtoken_errors else "",
        ),
        Target(
            "metadata identity (cached), pinned",
            "≥ 15,000 req/s on one core",
            rps("pinned", "metadata identity"),
            15000.0,
            True,
            "req/s",
            metadata_note,
        ),
        Target(
            "start to /healthz, restart",
            "≤ 1 s (best of 3)",
            start.get("restart_ms"),
            1000.0,
            False,
            "ms",
        ),
        Target(
            "start to /healthz, first start",
            "≤ 1 s (best of 3, empty data dir)",
            start.get("first_ms"),
            1000.0,
            False,
            "ms",
        ),
        Target(
            "idle RSS, one process (--workers 1)",
            "≤ 100 MB",
            extras.get("idle_rss_mb"),
            100.0,
            False,
            "MB",
        ),
        Target(
            "idle memory, default workers (PSS)",
            "≤ 100 MB",
            extras.get("idle_default", {}).get("pss_mb"),
            100.0,
            False,
            "MB",
        ),
        Target(
            "100,000 vs 10 accounts",
            "within 5 % (rate ratio ≥ 0.95)",
            scale.get("ratio"),
            0.95,
            True,
            "×",
            scale.get("note", ""),
        ),
        Target(
            "PostgreSQL vs SQLite",
            "≥ 90 % of SQLite",
            postgres.get("ratio"),
            0.90,
            True,
            "×",
            postgres.get("note", ""),
        ),
    ]


def _samples(values: list[float]) -> str:
    return "samples " + ", ".join(f"{v:,.0f}" for v in values)


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    if value == float("inf"):
        return "∞"
    return f"{value:,.{digits}f}"


def _verdict(target: dict[str, Any]) -> str:
    if target["passed"] is None:
        return "not measured" + (f" ({target['note']})" if target["note"] else "")
    margin = target["margin"]
    word = "pass" if target["passed"] else "**miss**"
    how = "" if margin in (None, float("-inf")) else f" ({margin * 100:+.0f} %)"
    return word + how + (f" — {target['note']}" if target["note"] else "")


def _target_value(target: dict[str, Any]) -> str:
    value = target["value"]
    if value is None:
        return "—"
    unit = target["unit"]
    if unit == "× ceiling":
        return f"{value * 100:.1f} % of ceiling"
    if unit == "×":
        return f"{value:.2f} ×"
    return f"{_fmt(value, 1 if unit == 'ms' and value < 100 else 0)} {unit}"


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    ceiling = results["ceiling"]
    big = str(results["options"]["connections"])
    small = str(results["options"]["p99_connections"])
    lines = [
        f"# tokensmith bench — {meta['date']}",
        "",
        f"`{meta['command']}` on {meta['cpu']} ({meta['cores']} cores), tokensmith "
        f"{meta['tokensmith']} at {meta['commit']}, Python {meta['python']}, "
        f"load average at start {meta['loadavg_start']}.",
        "",
        f"**Ceiling** (`openssl speed -mr -seconds {results['options']['ceiling_seconds']} "
        f"rsa2048`, median of {len(ceiling['single_samples'])} samples through the run): "
        f"**{ceiling['single']:,.0f}** RSA-2048 signs per second on core 0 "
        f"({_samples(ceiling['single_samples'])}), "
        f"**{ceiling['single_cpu']:,.0f}** per CPU second "
        f"(one signature = {1000 / ceiling['single_cpu']:.2f} ms of CPU); "
        f"**{ceiling['multi']:,.0f}** per second with `-multi 2` "
        f"({_samples(ceiling['multi_samples'])}). "
        "“× ceiling” is req/s over the first (configuration a) or the last (b); "
        "“CPU/req” is the server's CPU time per request counted in signatures "
        "(1.0 would mean the server does nothing but sign), which holds even when other "
        "processes share the core.",
        "",
    ]
    for config, data in results["configs"].items():
        base = ceiling["single"] if config == "pinned" else ceiling["multi"]
        lines += [
            f"## Configuration {'(a)' if config == 'pinned' else '(b)'}: {data['label']}",
            "",
            f"| endpoint | req/s ({big} conn) | × ceiling | p50 ms | p99 ms | "
            f"p99 ms ({small} conn) | non-2xx / socket errors | server CPU (cores) | "
            "CPU/req (signatures) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        rows = list(data["endpoints"].items())
        peer = results.get("peer", {}).get(config)
        if peer:
            rows.append(("node-oidc-provider client_credentials (peer)", peer))
        for name, runs in rows:
            if "skipped" in runs:
                lines.append(f"| {name} | skipped: {runs['skipped']} |||||||| ")
                continue
            one, two = runs.get(big, {}), runs.get(small, {})
            signs = runs.get("signs", True)
            lines.append(
                "| "
                + " | ".join(
                    [
                        name,
                        _fmt(one.get("rps")),
                        f"{one['rps'] / base * 100:.1f} %" if signs and one.get("rps") else "—",
                        _fmt(one.get("p50_ms"), 1),
                        _fmt(one.get("p99_ms"), 1),
                        _fmt(two.get("p99_ms"), 1),
                        f"{one.get('non2xx', 0) + two.get('non2xx', 0)} / "
                        f"{one.get('socket_errors', 0) + two.get('socket_errors', 0)}",
                        _fmt(one.get("server_cpu_cores"), 2),
                        _fmt(
                            one["cpu_ms_per_request"] * ceiling["single_cpu"] / 1000
                            if one.get("cpu_ms_per_request")
                            else None,
                            1,
                        ),
                    ]
                )
                + " |"
            )
        wrk_cpu = [
            run.get("wrk_cpu_cores") or 0.0
            for _, runs in rows
            for run in runs.values()
            if isinstance(run, dict)
        ]
        notes = [
            *data.get("notes", []),
            f"the load generator (wrk) used at most {max(wrk_cpu, default=0):.2f} of a core",
        ]
        lines += [""] + [f"- {note}" for note in notes] + [""]
    lines += ["## Targets", "", "| target | goal | this run | verdict |", "|---|---|---|---|"]
    for target in results["targets"]:
        lines.append(
            f"| {target['name']} | {target['goal']} | {_target_value(target)} | "
            f"{_verdict(target)} |"
        )
    extras = results.get("extras", {})
    lines += ["", "## Other figures", ""]
    for key, value in extras.get("table", {}).items():
        lines.append(f"- {key}: {value}")
    if results.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {note}" for note in results["notes"]]
    return "\n".join(lines) + "\n"


def write_markdown(results: dict[str, Any], path: Path) -> None:
    path.write_text(markdown(results))


def write_plot(results: dict[str, Any], path: Path) -> None:
    """Throughput and p99 per endpoint, both configurations, the ceilings as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    big = str(results["options"]["connections"])
    small = str(results["options"]["p99_connections"])
    configs = list(results["configs"])
    names: list[str] = []
    for config in configs:
        for name in results["configs"][config]["endpoints"]:
            if name not in names:
                names.append(name)
    if results.get("peer"):
        names.append("peer (node-oidc-provider)")

    def run(config: str, name: str, conns: str) -> dict[str, Any]:
        if name.startswith("peer"):
            return results.get("peer", {}).get(config, {}).get(conns, {})
        return results["configs"][config]["endpoints"].get(name, {}).get(conns, {})

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(13, 9), constrained_layout=True)
    width = 0.8 / max(1, len(configs))
    xs = range(len(names))
    colors = {"pinned": "#3366aa", "workers": "#dd8833"}
    for i, config in enumerate(configs):
        offset = (i - (len(configs) - 1) / 2) * width
        label = CONFIG_LABELS.get(config, config)
        top.bar(
            [x + offset for x in xs],
            [run(config, n, big).get("rps", 0) for n in names],
            width,
            label=label,
            color=colors.get(config),
        )
        bottom.bar(
            [x + offset - width / 4 for x in xs],
            [run(config, n, big).get("p99_ms", 0) for n in names],
            width / 2,
            label=f"{label}, {big} conn",
            color=colors.get(config),
        )
        bottom.bar(
            [x + offset + width / 4 for x in xs],
            [run(config, n, small).get("p99_ms", 0) for n in names],
            width / 2,
            label=f"{label}, {small} conn",
            color=colors.get(config),
            alpha=0.45,
        )
    ceiling = results["ceiling"]
    top.axhline(ceiling["single"], color="#3366aa", linestyle="--", label="ceiling, one core")
    top.axhline(ceiling["multi"], color="#dd8833", linestyle=":", label="ceiling, two cores")
    top.set_yscale("log")
    top.set_ylabel(f"requests/s ({big} connections, log)")
    top.set_title("tokensmith throughput (RSA-2048 signing ceiling from openssl speed)")
    bottom.set_yscale("log")
    bottom.set_ylabel("p99 latency, ms (log)")
    bottom.axhline(5.0, color="grey", linestyle="--", label="5 ms target")
    for axis in (top, bottom):
        axis.set_xticks(list(xs))
        axis.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
        axis.legend(fontsize=7)
        axis.grid(axis="y", alpha=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> int:
    """Redraw results.md and results.png next to a results.json."""
    path = Path(argv[0]) if argv else Path(__file__).parent / "results" / "results.json"
    results = json.loads(path.read_text())
    write_markdown(results, path.with_suffix(".md"))
    write_plot(results, path.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
