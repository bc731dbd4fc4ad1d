"""The stdout report: the issue's target ratios first, then one small table per workload.

Every number printed is read from the run's results; a ratio whose inputs were not
measured (a workload skipped, Redis missing) is shown as ``n/a`` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.targets import FLOOR, LABELS, MEMSTORE, REDIS
from benchmarks.throughput import PIPELINED, SYNC, lookup

KIB, MIB = 1 << 10, 1 << 20


@dataclass
class Ratio:
    """One target: ``ratio = value / baseline``, compared with ``limit`` (``<=`` or ``>=``)."""

    name: str
    value: float | None
    baseline: float | None
    unit: str
    op: str
    limit: float
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    @property
    def met(self) -> bool | None:
        r = self.ratio
        if r is None:
            return None
        return r <= self.limit if self.op == "<=" else r >= self.limit

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "value": self.value,
            "baseline": self.baseline,
            "unit": self.unit,
            "ratio": self.ratio,
            "target": f"{self.op} {self.limit}",
            "met": self.met,
            "note": self.note,
        }


def _p50(results: dict, workload: str, kind: str, op: str, size: int | None) -> float | None:
    """The median of one series at one size, or None where it was not measured."""
    by_kind = results.get(workload, {}).get("summary", {}).get(kind, {})
    row = by_kind.get(op, {}).get(str(size))
    return row.get("p50") if row and row.get("n") else None


def _latency(results: dict, kind: str, op: str, size: int) -> float | None:
    return _p50(results, "latency", kind, op, size)


def _bandwidth(results: dict, kind: str, op: str, size: int | None) -> float | None:
    return _p50(results, "bandwidth", kind, op, size)


def _bandwidth_size(results: dict) -> int | None:
    sizes = results.get("bandwidth", {}).get("params", {}).get("sizes", [])
    if 64 * MIB in sizes:
        return 64 * MIB
    return max((s for s in sizes if s <= 64 * MIB), default=None)


def _rate(results: dict, kind: str, mode: str) -> float | None:
    summary = results.get("throughput", {}).get("summary", [])
    row = lookup(summary, system=kind, mode=mode, shards=1, clients=1)
    return row["ops_per_s"] if row else None


def ratios(results: dict) -> list[Ratio]:
    """The issue's targets, computed from this run's measurements."""
    mine = _latency(results, MEMSTORE, "get", KIB)
    out = [
        Ratio(
            f"1 KiB get latency p50 vs {name}",
            mine,
            _latency(results, kind, "get", KIB),
            "us",
            "<=",
            limit,
        )
        for kind, name, limit in ((FLOOR, "raw ZeroMQ", 1.5), (REDIS, "Redis", 1.0))
    ]
    size = _bandwidth_size(results)
    label = f"{size // MIB} MiB" if size else "64 MiB"
    note = "" if size in (None, 64 * MIB) else f"largest size measured <= 64 MiB is {label}"
    for op in ("put", "get"):
        mine = _bandwidth(results, MEMSTORE, op, size)
        out += [
            Ratio(
                f"{label} {op} bandwidth vs {name}",
                mine,
                _bandwidth(results, kind, op, size),
                "GB/s",
                ">=",
                limit,
                note,
            )
            for kind, name, limit in ((FLOOR, "raw ZeroMQ", 0.8), (REDIS, "Redis", 2.0))
        ]
    small = results.get("throughput", {}).get("params", {}).get("size")
    small_label = f"{small} B" if small else "small"
    out.append(
        Ratio(
            f"pipelined _async {small_label} puts vs sync (1 client, 1 shard)",
            _rate(results, MEMSTORE, PIPELINED),
            _rate(results, MEMSTORE, SYNC),
            "ops/s",
            ">=",
            5.0,
        )
    )
    out.append(
        Ratio(
            "1 KiB poll wake-up p50 vs get latency p50",
            _latency(results, MEMSTORE, "wake", KIB),
            _latency(results, MEMSTORE, "get", KIB),
            "us",
            "<=",
            2.0,
        )
    )
    rates = _inference_rates(results)
    if rates:
        out.append(
            Ratio(
                "run_model, batching on vs off (issue 4)",
                rates.get("batching on"),
                rates.get("batching off"),
                "ops/s",
                ">=",
                3.0,
            )
        )
    return out


def _inference_rates(results: dict) -> dict:
    """Calls per second by mode, when the inference workload ran."""
    summary = results.get("inference", {}).get("summary")
    return {row["mode"]: row["ops_per_s"] for row in summary} if summary else {}


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "ops/s":
        return f"{value:,.0f} {unit}"
    if unit == "us":
        return f"{value:,.1f} us"
    return f"{value:.3f} {unit}"


def _size(n: int) -> str:
    if n >= MIB:
        return f"{n // MIB} MiB"
    if n >= KIB:
        return f"{n // KIB} KiB"
    return f"{n} B"


def targets_table(rows: list[Ratio]) -> str:
    lines = [
        f"{'target':<52} {'memstore':>16} {'baseline':>16} {'ratio':>7}  {'goal':<8} result",
        "-" * 112,
    ]
    for r in rows:
        ratio = "n/a" if r.ratio is None else f"{r.ratio:.2f}x"
        verdict = {True: "met", False: "MISSED", None: "not measured"}[r.met]
        lines.append(
            f"{r.name:<52} {_fmt(r.value, r.unit):>16} {_fmt(r.baseline, r.unit):>16} "
            f"{ratio:>7}  {r.op} {r.limit:<5} {verdict}" + (f" ({r.note})" if r.note else "")
        )
    return "\n".join(lines)


def latency_table(result: dict) -> str:
    summary = result["summary"]
    kinds = [k for k in (MEMSTORE, FLOOR, REDIS) if k in summary]
    head = f"{'size':>8} {'op':<5}" + "".join(f" {LABELS[k]:>24}" for k in kinds)
    lines = ["latency p50 / p99 (us), one client, one shard", head]
    for size in result["params"]["sizes"]:
        for op in ("put", "get", "wake"):
            cells = []
            for kind in kinds:
                row = summary[kind].get(op, {}).get(str(size))
                cells.append(f"{row['p50']:.0f} / {row['p99']:.0f}" if row and row["n"] else "-")
            lines.append(f"{_size(size):>8} {op:<5}" + "".join(f" {c:>24}" for c in cells))
    return "\n".join(lines)


def bandwidth_table(result: dict) -> str:
    summary = result["summary"]
    kinds = [k for k in (MEMSTORE, FLOOR, REDIS) if k in summary]
    head = f"{'size':>8} {'op':<5}" + "".join(f" {LABELS[k]:>18}" for k in kinds) + "  memcpy"
    lines = ["bandwidth, median GB/s, one client, one shard", head]
    for size in result["params"]["sizes"]:
        copy = summary["memcpy"]["copy"][str(size)]
        for op in ("put", "get"):
            cells = [f"{summary[k][op][str(size)]['p50']:.3f}" for k in kinds]
            lines.append(
                f"{_size(size):>8} {op:<5}"
                + "".join(f" {c:>18}" for c in cells)
                + f"  {copy['p50']:.2f}"
            )
    return "\n".join(lines)


def throughput_table(result: dict) -> str:
    lines = [
        f"throughput, {result['params']['size']} B puts, ops/s (median over rounds)",
        f"{'shards':>6} {'clients':>7} {'system':<20} {'sync':>10} {'pipelined':>10} {'gain':>6}",
    ]
    summary = result["summary"]
    for shards in result["params"]["shards"]:
        for clients in result["params"]["clients"]:
            for kind in (MEMSTORE, FLOOR, REDIS):
                sync = lookup(summary, shards=shards, clients=clients, system=kind, mode=SYNC)
                pipe = lookup(summary, shards=shards, clients=clients, system=kind, mode=PIPELINED)
                if not sync or not pipe:
                    continue
                gain = pipe["ops_per_s"] / sync["ops_per_s"] if sync["ops_per_s"] else 0.0
                lines.append(
                    f"{shards:>6} {clients:>7} {LABELS[kind]:<20} {sync['ops_per_s']:>10,.0f} "
                    f"{pipe['ops_per_s']:>10,.0f} {gain:>5.1f}x"
                )
    return "\n".join(lines)


def scaling_table(result: dict) -> str:
    params, summary = result["params"], result["summary"]
    lines = []
    for metric, unit, fmt in (
        ("puts", "pipelined puts, ops/s", ",.0f"),
        ("gets", "gets, GB/s", ".3f"),
    ):
        lines.append(f"scaling: {unit} (efficiency vs linear in clients)")
        columns = [f"{s} shard(s)" for s in params["shards"]] + ["Redis"]
        lines.append(f"{'clients':>8}" + "".join(f" {c:>20}" for c in columns))
        for clients in params["clients"]:
            cells = []
            for shards, kind in [*((s, MEMSTORE) for s in params["shards"]), (1, REDIS)]:
                row = lookup(summary, system=kind, metric=metric, shards=shards, clients=clients)
                if row is None:
                    cells.append("-")
                    continue
                eff = row.get("efficiency")
                cells.append(f"{row['value']:{fmt}}" + (f" ({eff:.0%})" if eff is not None else ""))
            lines.append(f"{clients:>8}" + "".join(f" {c:>20}" for c in cells))
    return "\n".join(lines)


def online_table(result: dict) -> str:
    params = result["params"]
    lines = [
        f"online learning: {params['producers']} producers at {params['rate_hz']:g} Hz, "
        f"{params['consumers']} consumers, {_size(params['size'])} snapshots; lag in ms",
        f"{'mode':<22} {'p50':>8} {'p99':>8} {'mean':>8} {'n':>6} {'producer Hz':>12}",
    ]
    for mode, row in result["summary"].items():
        label = f"{LABELS[row['system']].split()[0]} {mode}"
        lines.append(
            f"{label:<22} {row['p50']:>8.2f} {row['p99']:>8.2f} {row['mean']:>8.2f} "
            f"{row['n']:>6} {row['producer_rate_hz']:>12.1f}"
        )
    return "\n".join(lines)


def inference_table(result: dict) -> str:
    if "skipped" in result:
        return f"inference: {result['skipped']}"
    if "error" in result:
        return f"inference: failed: {result['error']}"
    p = result["params"]
    lines = [
        f"inference: run_model calls/s, {p['clients']} clients x {p['window']} in flight, "
        f"device {p['device']}"
    ]
    for row in result["summary"]:
        lines.append(f"  {row['mode']:<14} {row['ops_per_s']:>10,.0f}")
    rates = _inference_rates({"inference": result})
    for mode in ("batching off", "in-process"):
        if rates.get("batching on") and rates.get(mode):
            lines.append(f"  batching on / {mode}: {rates['batching on'] / rates[mode]:.2f}x")
    return "\n".join(lines)


TABLES = {
    "latency": latency_table,
    "bandwidth": bandwidth_table,
    "throughput": throughput_table,
    "scaling": scaling_table,
    "online": online_table,
    "inference": inference_table,
}


def render(run: dict) -> str:
    """The whole report for a run's JSON document."""
    results = run["results"]
    parts = [f"memstore benchmark '{run['name']}' ({run['preset']['name']} preset)"]
    for name, table in TABLES.items():
        result = results.get(name)
        if result is None:
            continue
        if "error" in result and name != "inference":
            parts.append(f"{name}: failed: {result['error']}")
        else:
            parts.append(table(result))
    parts.append("targets (ratios of this run's measurements)\n" + targets_table(ratios(results)))
    parts.append(f"baseline: {run['redis']}")
    m = run["machine"]
    loads = [m.get("load_average_at_start"), m.get("load_average_at_end")]
    start, end = (f"{x[0]:.2f}" if x else "?" for x in loads)
    parts.append(
        f"machine: {m['usable_cores']} usable cores, {m['cpu']}; 1-minute load average "
        f"{start} at start, {end} at the end. Other processes on the machine make timings "
        "noisy: compare systems within this run (they were measured in alternating rounds), "
        "not across runs."
    )
    return "\n\n".join(parts)
