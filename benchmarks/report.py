"""The stdout report: one small table per workload, then the issues' targets, met or not.

Every number printed is read from the run's results; a target whose inputs were not
measured (a workload skipped, Redis missing) is shown as ``not measured``. The targets
themselves are :mod:`benchmarks.goals`.
"""

from __future__ import annotations

from benchmarks import curve, streams, threads
from benchmarks.gateway import table as gateway_table
from benchmarks.goals import ISSUES, Ratio, ratios
from benchmarks.presets import size_label
from benchmarks.targets import (
    FLOOR,
    LABELS,
    MEMSTORE,
    MEMSTORE_IPC,
    MEMSTORE_SHM,
    MEMSTORE_TCP,
    REDIS,
    UNIX_FLOOR,
)
from benchmarks.throughput import BULK_MODES, PIPELINED, SYNC, lookup


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit in ("ops/s", "steps/s"):
        return f"{value:,.0f} {unit}"
    if unit == "us":
        return f"{value:,.1f} us"
    return f"{value:.3f} {unit}"


def targets_table(rows: list[Ratio]) -> str:
    """The targets, issue by issue, newest first; ``met`` / ``MISSED`` per row."""
    width = max((len(r.name) for r in rows), default=6) + 2
    lines = [
        f"{'target':<{width}} {'memstore':>16} {'baseline':>16} {'ratio':>7}  {'goal':<8} result",
        "-" * (width + 60),
    ]
    for issue in sorted({r.issue for r in rows}, reverse=True):
        mine = [r for r in rows if r.issue == issue]
        met = sum(r.met is True for r in mine)
        lines.append(f"issue {issue} ({ISSUES.get(issue, '')}): {met} of {len(mine)} met")
        for r in mine:
            ratio = "n/a" if r.ratio is None else f"{r.ratio:.2f}x"
            verdict = {True: "met", False: "MISSED", None: "not measured"}[r.met]
            lines.append(
                f"  {r.name:<{width - 2}} {_fmt(r.value, r.unit):>16} "
                f"{_fmt(r.baseline, r.unit):>16} {ratio:>7}  {r.op} {r.limit:<5} {verdict}"
                + (f" ({r.note})" if r.note else "")
            )
    return "\n".join(lines)


def latency_table(result: dict) -> str:
    summary = result["summary"]
    paths = (MEMSTORE, UNIX_FLOOR, MEMSTORE_IPC, MEMSTORE_TCP, FLOOR, REDIS)
    kinds = [k for k in paths if k in summary]
    head = f"{'size':>8} {'op':<5}" + "".join(f" {LABELS[k]:>22}" for k in kinds)
    lines = ["latency p50 / p99 (us), one client, one shard", head]
    ops = [op for op in ("put", "get", "wake") if any(op in summary[k] for k in kinds)]
    for size in result["params"]["sizes"]:
        for op in ops:
            cells = []
            for kind in kinds:
                row = summary[kind].get(op, {}).get(str(size))
                cells.append(f"{row['p50']:.0f} / {row['p99']:.0f}" if row and row["n"] else "-")
            lines.append(f"{size_label(size):>8} {op:<5}" + "".join(f" {c:>22}" for c in cells))
    return "\n".join(lines)


def bandwidth_table(result: dict) -> str:
    summary = result["summary"]
    paths = (MEMSTORE, MEMSTORE_SHM, UNIX_FLOOR, MEMSTORE_TCP, FLOOR, REDIS)
    kinds = [k for k in paths if k in summary]
    head = f"{'size':>8} {'op':<5}" + "".join(f" {LABELS[k]:>21}" for k in kinds) + "  memcpy"
    lines = ["bandwidth, median GB/s, one client, one shard", head]
    for size in result["params"]["sizes"]:
        copy = summary["memcpy"]["copy"][str(size)]
        for op in ("put", "get"):
            cells = [f"{summary[k][op][str(size)]['p50']:.3f}" for k in kinds]
            lines.append(
                f"{size_label(size):>8} {op:<5}"
                + "".join(f" {c:>21}" for c in cells)
                + f"  {copy['p50']:.2f}"
            )
    return "\n".join(lines)


def throughput_table(result: dict) -> str:
    lines = [
        f"throughput, {result['params']['size']} B puts, ops/s (median over rounds)",
        f"{'shards':>6} {'clients':>7} {'system':<22} {'sync':>10} {'pipelined':>10} {'gain':>6}",
    ]
    summary = result["summary"]
    for shards in result["params"]["shards"]:
        for clients in result["params"]["clients"]:
            for kind in (MEMSTORE, UNIX_FLOOR, MEMSTORE_TCP, FLOOR, REDIS):
                sync = lookup(summary, shards=shards, clients=clients, system=kind, mode=SYNC)
                pipe = lookup(summary, shards=shards, clients=clients, system=kind, mode=PIPELINED)
                if not sync or not pipe:
                    continue
                gain = pipe["ops_per_s"] / sync["ops_per_s"] if sync["ops_per_s"] else 0.0
                lines.append(
                    f"{shards:>6} {clients:>7} {LABELS[kind]:<22} {sync['ops_per_s']:>10,.0f} "
                    f"{pipe['ops_per_s']:>10,.0f} {gain:>5.1f}x"
                )
                bulk = [lookup(summary, shards=shards, clients=clients, system=kind, mode=m)
                        for m in BULK_MODES]  # fmt: skip
                if all(bulk):
                    label = "  bulk put / get" + (" (x_tensors)" if kind == MEMSTORE else "")
                    lines.append(
                        f"{'':>6} {'':>7} {label:<22} {bulk[0]['ops_per_s']:>10,.0f} "
                        f"{bulk[1]['ops_per_s']:>10,.0f}"
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
        f"{params['consumers']} consumers, {size_label(params['size'])} snapshots; lag in ms",
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
    rates = {row["mode"]: row["ops_per_s"] for row in result["summary"]}
    for mode in ("batching off", "in-process"):
        if rates.get("batching on") and rates.get(mode):
            lines.append(f"  batching on / {mode}: {rates['batching on'] / rates[mode]:.2f}x")
    return "\n".join(lines)


def threads_table(result: dict) -> str:
    p = result["params"]
    lines = [
        f"threads: {p['threads']} threads in one process, {p['mix']} of {size_label(p['size'])}, "
        "ops/s (median over rounds)"
    ]
    rates = {row["mode"]: row["ops_per_s"] for row in result["summary"]}
    for mode in threads.MODES:
        if mode in rates:
            lines.append(f"  {threads.LABELS[mode]:<20} {rates[mode]:>10,.0f}")
    return "\n".join(lines)


def streams_table(result: dict) -> str:
    p = result["params"]
    lines = [
        f"streams: 1 producer, N consumers in a group (take + read + ack); rate: as fast as "
        f"it goes; lag (ms): append at {p['lag_rate_hz']:g} Hz -> a consumer holds the step",
        f"{'size':>8} {'N':>2} {'system':<18} {'steps/s':>9} {'MB/s':>8} {'lag p50':>8} "
        f"{'lag p99':>8} {'vs Redis':>9}",
    ]
    rows = result["summary"]
    for row in rows:
        redis = lookup(rows, system=REDIS, size=row["size"], consumers=row["consumers"])
        ratio = "-"
        if redis and redis["steps_per_s"] and row["system"] != REDIS:
            ratio = f"{row['steps_per_s'] / redis['steps_per_s']:.2f}x"
        lines.append(
            f"{size_label(row['size']):>8} {row['consumers']:>2} {LABELS[row['system']]:<18} "
            f"{row['steps_per_s']:>9,.0f} {row['mb_per_s']:>8.1f} {row['lag_p50_ms']:>8.2f} "
            f"{row['lag_p99_ms']:>8.2f} {ratio:>9}"
        )
    lines.append(
        f"stall: drop_oldest, maxlen {p['stall_maxlen']}, {p['stall_shards']} shards; "
        "producer append ms, shards' peak bytes vs (maxlen + 1) x (step + "
        f"{size_label(streams.STEP_OVERHEAD)}) + {size_label(streams.STREAM_OVERHEAD)}"
    )
    for row in result["stall"]:
        held = f"{row['peak_bytes'] / 1e6:.1f} / {row['bound_bytes'] / 1e6:.1f} MB"
        lines.append(
            f"  {row['variant']} consumer (holds {row['hold_s'] * 1e3:g} ms): append p50 "
            f"{row['append']['p50']:.2f} p99 {row['append']['p99']:.2f}; {row['appended']} "
            f"appended, {row['taken']} taken; peak {held}"
        )
    return "\n".join(lines)


TABLES = {
    "latency": latency_table,
    "bandwidth": bandwidth_table,
    "throughput": throughput_table,
    "scaling": scaling_table,
    "online": online_table,
    "inference": inference_table,
    "threads": threads_table,
    "streams": streams_table,
    "curve": curve.table,
    "gateway": gateway_table,
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
    rows = ratios(results, run.get("target_issues"))
    parts.append("targets (ratios of this run's measurements)\n" + targets_table(rows))
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
