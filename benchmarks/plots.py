"""PNG plots of a run, memstore and its baselines on the same axes (matplotlib, Agg).

One figure per workload, named ``<run name>-<workload>.png`` beside the JSON. Lines are
medians (p50); shaded bands reach to p99 where there are enough samples for one.
"""

from __future__ import annotations

from pathlib import Path

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

STYLE = {
    MEMSTORE: {"color": "#1f77b4", "marker": "o"},
    MEMSTORE_IPC: {"color": "#17becf", "marker": "D"},
    MEMSTORE_SHM: {"color": "#2ca02c", "marker": "v"},
    MEMSTORE_TCP: {"color": "#9467bd", "marker": "P"},
    FLOOR: {"color": "#7f7f7f", "marker": "s"},
    UNIX_FLOOR: {"color": "#bcbd22", "marker": "x"},
    REDIS: {"color": "#d62728", "marker": "^"},
    "memcpy": {"color": "black", "marker": "", "linestyle": "--"},
}
DPI = 90


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _size_axis(ax, sizes: list[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes)
    ax.set_xticklabels([size_label(s) for s in sizes], rotation=45, fontsize=8)
    ax.minorticks_off()
    ax.grid(True, which="major", alpha=0.3)


def _log_y(ax, axis: str = "y") -> None:
    """A log axis with plain-number labels at 1, 2, 5 x 10^k."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    scale = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    scale.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    scale.set_minor_locator(LogLocator(base=10, subs="auto"))
    scale.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 10 else f"{v:g}"))
    scale.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.grid(True, which="major", axis=axis, alpha=0.3)


def latency(result: dict, path: Path, title: str) -> None:
    plt = _pyplot()
    sizes = result["params"]["sizes"]
    summary = result["summary"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), sharey=True)
    panels = (("put", "put"), ("get", "get"), ("wake", "poll wake-up (put → parked consumer)"))
    for ax, (op, name) in zip(axes, panels, strict=True):
        for kind in (MEMSTORE, UNIX_FLOOR, MEMSTORE_IPC, MEMSTORE_TCP, FLOOR, REDIS):
            rows = summary.get(kind, {}).get(op)
            if not rows:
                continue
            p50 = [rows[str(s)]["p50"] for s in sizes]
            p99 = [rows[str(s)]["p99"] for s in sizes]
            label = LABELS[kind] + (" (BLPOP)" if op == "wake" and kind == REDIS else "")
            ax.plot(sizes, p50, label=label, **STYLE[kind])
            ax.fill_between(sizes, p50, p99, color=STYLE[kind]["color"], alpha=0.12)
        if op == "wake" and "get" in summary.get(MEMSTORE, {}):
            get = [summary[MEMSTORE]["get"][str(s)]["p50"] for s in sizes]
            ax.plot(sizes, get, color=STYLE[MEMSTORE]["color"], linestyle=":", label="memstore get")
        _log_y(ax)
        _size_axis(ax, sizes)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("tensor size")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("latency, µs (line p50, band to p99)")
    fig.suptitle(title, fontsize=11)
    _save(fig, path)


def bandwidth(result: dict, path: Path, title: str) -> None:
    plt = _pyplot()
    sizes = result["params"]["sizes"]
    summary = result["summary"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, op in zip(axes, ("put", "get"), strict=True):
        for kind in (MEMSTORE, MEMSTORE_SHM, UNIX_FLOOR, MEMSTORE_TCP, FLOOR, REDIS):
            rows = summary.get(kind, {}).get(op)
            if rows:
                ax.plot(
                    sizes, [rows[str(s)]["p50"] for s in sizes], label=LABELS[kind], **STYLE[kind]
                )
        copy = summary["memcpy"]["copy"]
        ax.plot(
            sizes,
            [copy[str(s)]["p50"] for s in sizes],
            label="numpy.copyto (memcpy)",
            **STYLE["memcpy"],
        )
        _log_y(ax)
        _size_axis(ax, sizes)
        ax.set_title(op, fontsize=10)
        ax.set_xlabel("tensor size")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("GB/s (median)")
    fig.suptitle(title, fontsize=11)
    _save(fig, path)


def throughput(result: dict, path: Path, title: str) -> None:
    plt = _pyplot()
    from benchmarks.throughput import MODES, lookup

    summary = result["summary"]
    configs = [(s, c) for s in result["params"]["shards"] for c in result["params"]["clients"]]
    every = (MEMSTORE, UNIX_FLOOR, MEMSTORE_TCP, FLOOR, REDIS)
    kinds = [k for k in every if any(r["system"] == k for r in summary)]
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(configs)), 4.2))
    width = 0.8 / (len(kinds) * len(MODES))
    highest = 1.0
    for i, (kind, mode) in enumerate((k, m) for k in kinds for m in MODES):
        values = []
        for shards, clients in configs:
            row = lookup(summary, shards=shards, clients=clients, system=kind, mode=mode)
            values.append(row["ops_per_s"] if row else 0)
        highest = max(highest, *values)
        xs = [x + (i - (len(kinds) * len(MODES) - 1) / 2) * width for x in range(len(configs))]
        ax.bar(
            xs,
            values,
            width,
            color=STYLE[kind]["color"],
            alpha=1.0 if mode != "sync" else 0.45,
            label=f"{LABELS[kind]} {mode}",
            edgecolor="black",
            linewidth=0.4,
        )
    ax.set_xticks(range(len(configs)))
    ax.set_xticklabels([f"{s} shard(s)\n{c} client(s)" for s, c in configs], fontsize=8)
    _log_y(ax)
    ax.set_ylim(top=highest * 4)  # room for the legend above the bars
    ax.set_ylabel(f"{result['params']['size']} B puts per second (aggregate)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=len(kinds))
    ax.set_title(title, fontsize=11)
    _save(fig, path)


def scaling(result: dict, path: Path, title: str) -> None:
    plt = _pyplot()
    from benchmarks.throughput import lookup

    params, summary = result["params"], result["summary"]
    clients = params["clients"]
    get_size = size_label(params["get_size"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    panels = (("puts", "pipelined small puts / s"), ("gets", f"GB/s of {get_size} gets"))
    markers = "osDv^<>p"
    for ax, (metric, ylabel) in zip(axes, panels, strict=True):
        for n, shards in enumerate(params["shards"]):
            rows = [
                lookup(summary, system=MEMSTORE, metric=metric, shards=shards, clients=c)
                for c in clients
            ]
            ys = [r["value"] if r else float("nan") for r in rows]
            color = plt.cm.Blues(0.45 + 0.55 * n / max(1, len(params["shards"]) - 1))
            ax.plot(
                clients,
                ys,
                marker=markers[n % len(markers)],
                color=color,
                label=f"memstore, {shards} shard(s)",
            )
            if rows[0]:
                ax.plot(
                    clients, [ys[0] * c / clients[0] for c in clients], linestyle=":", color=color
                )
        redis = [lookup(summary, system=REDIS, metric=metric, clients=c) for c in clients]
        if any(redis):
            ys = [r["value"] if r else float("nan") for r in redis]
            ax.plot(clients, ys, label=LABELS[REDIS], **STYLE[REDIS])
        _log_y(ax)
        ax.set_xscale("log", base=2)
        ax.set_xticks(clients)
        ax.set_xticklabels([str(c) for c in clients])
        ax.minorticks_off()
        ax.set_xlabel("client processes")
        ax.set_ylabel(ylabel + " (aggregate)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, title="dotted: linear from 1 client", title_fontsize=7)
    fig.suptitle(title, fontsize=11)
    _save(fig, path)


def online(result: dict, path: Path, title: str) -> None:
    plt = _pyplot()
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for mode, values in result["samples"].items():
        if not values:
            continue
        kind = result["summary"][mode]["system"]
        ordered = np.sort(values)
        ax.plot(
            ordered,
            np.arange(1, len(ordered) + 1) / len(ordered),
            label=f"{LABELS[kind].split()[0]} {mode}",
            color=STYLE[kind]["color"],
            linestyle="-" if mode != "poll+get" else "--",
        )
    _log_y(ax, "x")
    ax.set_xlabel("lag, ms: producer's put → consumer holds the array")
    ax.set_ylabel("fraction of snapshots")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    p = result["params"]
    setup = (
        f"{p['producers']} producers at {p['rate_hz']:g} Hz, "
        f"{p['consumers']} consumers, {size_label(p['size'])} snapshots"
    )
    ax.set_title(f"{title}\n{setup}", fontsize=10)
    _save(fig, path)


def inference(result: dict, path: Path, title: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    rows = result["summary"]
    ax.bar(
        [r["mode"] for r in rows], [r["ops_per_s"] for r in rows], color=STYLE[MEMSTORE]["color"]
    )
    ax.set_ylabel("run_model calls per second (aggregate)")
    ax.set_title(f"{title}\ndevice {result['params']['device']}", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    _save(fig, path)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    import matplotlib.pyplot as plt

    plt.close(fig)


FIGURES = {
    "latency": latency,
    "bandwidth": bandwidth,
    "throughput": throughput,
    "scaling": scaling,
    "online": online,
    "inference": inference,
}


def draw(run: dict, out_dir: Path) -> list[Path]:
    """Every figure the run has data for; the paths written."""
    written = []
    machine = run["machine"]
    where = f"{machine['usable_cores']} cores, {machine['cpu'][:40]}"
    for name, figure in FIGURES.items():
        result = run["results"].get(name)
        if not result or "summary" not in result:
            continue
        path = out_dir / f"{run['name']}-{name}.png"
        figure(result, path, f"memstore {name} — run '{run['name']}' ({where})")
        written.append(path)
    return written
