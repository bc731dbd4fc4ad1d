"""Issue 13's CURVE cost: 1 KiB latency and 64 MiB bandwidth, plain vs ``--secure``, one run.

``memstore-bench --secure`` (or ``--only curve``) runs it as a suite workload; ``python -m
benchmarks.curve [--preset quick]`` alone. Both clusters are one local TCP shard, up side by
side, with the same-node shared-memory path off (``MEMSTORE_SHM=0``), so every byte crosses
the socket and, with CURVE, is encrypted and authenticated. The two modes take turns every
few calls (a tenth of a round), so load from other processes falls on both alike. The large
size is the preset's largest bandwidth size up to 64 MiB (64 MiB in quick and full).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from functools import partial

import memstore
from benchmarks import targets
from benchmarks.harness import per_series, rotated, summarize, timed_calls
from benchmarks.presets import PRESETS, size_label

NAME = "curve"
KiB, MiB = 1 << 10, 1 << 20
MODES = ("plain", "secure")
OPS = ("put", "get")
SMALL = 1 * KiB
#: Each round's calls per (mode, op) are made in this many chunks, the modes alternating.
_CHUNKS = 10


def steps(preset) -> int:
    return preset.latency_rounds + preset.bandwidth_rounds


def _large(preset) -> int:
    return max(s for s in preset.bandwidth_sizes if s <= 64 * MiB)


def run(env) -> dict:
    """Seconds per call for each mode, op and size; the summary is p50 etc. of those."""
    p = env.preset
    large = _large(p)
    seconds = {mode: {op: {str(SMALL): [], str(large): []} for op in OPS} for mode in MODES}
    with (
        memstore.LocalCluster(1) as plain,
        memstore.LocalCluster(1, secure=True) as secure,
        plain.client(timeout=p.timeout_s) as plain_client,
        secure.client(timeout=p.timeout_s) as secure_client,
    ):
        clients = {"plain": plain_client, "secure": secure_client}
        for size, rounds, iters, budget in (
            (SMALL, p.latency_rounds, p.latency_iters, p.latency_batch_s),
            (large, p.bandwidth_rounds, p.bandwidth_reps, p.bandwidth_batch_s),
        ):
            data = targets.payload(size, seed=size)
            key = f"curve.{size}"
            for client in clients.values():
                client.put_tensor(key, data)  # something to get; warms both paths
                client.get_tensor(key)
            calls = {
                (mode, op): partial(clients[mode].put_tensor, key, data)
                if op == "put"
                else partial(clients[mode].get_tensor, key)
                for mode in MODES
                for op in OPS
            }
            chunk = max(1, iters // _CHUNKS)
            for turn in range(rounds):
                # Short chunks, the modes taking turns: load from other processes on the
                # machine drifts over seconds and would otherwise fall on one mode only.
                end = time.perf_counter() + budget * len(calls)
                for i in range(_CHUNKS if iters >= _CHUNKS else iters):
                    for mode in rotated(MODES, turn + i):
                        for op in rotated(OPS, turn):
                            got = timed_calls(calls[mode, op], chunk, budget)
                            seconds[mode][op][str(size)] += got
                    if time.perf_counter() > end:
                        break
                env.step()
            for client in clients.values():
                client.delete_tensor(key)
    return _result(p, large, seconds)


def _result(p, large: int, seconds: dict) -> dict:
    summary = per_series(seconds, lambda size, values: summarize(values))
    overhead = {
        op: {
            size: round(summary["secure"][op][size]["p50"] / summary["plain"][op][size]["p50"], 3)
            for size in (str(SMALL), str(large))
        }
        for op in OPS
    }
    return {
        "unit": "seconds per blocking call, one client, one shard; overhead: secure p50 / plain",
        "params": {
            "sizes": [SMALL, large],
            "latency_rounds": p.latency_rounds,
            "bandwidth_rounds": p.bandwidth_rounds,
            "shm": os.environ.get("MEMSTORE_SHM", ""),
        },
        "summary": summary,
        "overhead": overhead,
        "samples": seconds,
    }


def table(result: dict) -> str:
    """The report's ``curve`` section: p50 per mode, and secure / plain."""
    small, large = result["params"]["sizes"]
    lines = [
        "CURVE (--secure) vs plain TCP, one client, one shard, median",
        f"{'size':>8} {'op':<5} {'plain':>14} {'secure':>14} {'secure/plain time':>18}",
    ]
    for size in (small, large):
        for op in OPS:
            cells = []
            for mode in MODES:
                p50 = result["summary"][mode][op][str(size)]["p50"]
                small_cell, large_cell = f"{p50 * 1e6:.1f} us", f"{size / p50 / 1e9:.3f} GB/s"
                cells.append(small_cell if size == small else large_cell)
            ratio = result["overhead"][op][str(size)]
            lines.append(
                f"{size_label(size):>8} {op:<5} {cells[0]:>14} {cells[1]:>14} {ratio:>17.2f}x"
            )
    return "\n".join(lines)


class _Alone:
    """What :func:`run` needs of the suite's ``Env`` when this module runs by itself."""

    def __init__(self, preset):
        self.preset = preset

    def step(self, n: int = 1) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.curve", description=__doc__)
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)
    before = os.environ.get("MEMSTORE_SHM")
    os.environ["MEMSTORE_SHM"] = "0"  # the socket path, which CURVE encrypts
    try:
        result = run(_Alone(PRESETS[args.preset]))
    finally:
        if before is None:
            os.environ.pop("MEMSTORE_SHM", None)
        else:
            os.environ["MEMSTORE_SHM"] = before
    print(table(result))
    print(json.dumps(result["overhead"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
