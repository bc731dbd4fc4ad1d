"""Bandwidth of large puts and gets, 1 MiB … 256 MiB, next to the floor, Redis and memcpy.

One client, one shard; each transfer is one blocking call, and GB/s = bytes / its time.
memstore is measured over its sockets and, on a shard of its own, over the same-node
shared-memory path (``memstore-shm``: a get hands over a copy-on-write mapping).
``numpy.copyto`` of the same bytes is the same-node limit: no store can move data between
processes faster than one memory copy.
"""

from __future__ import annotations

from functools import partial

from benchmarks import floor, targets
from benchmarks.harness import Env, per_series, rotated, summarize, timed_calls

NAME = "bandwidth"
OPS = ("put", "get")
MEMCPY = "memcpy"


def steps(preset) -> int:
    return len(preset.bandwidth_sizes) * preset.bandwidth_rounds


def run(env: Env) -> dict:
    p = env.preset
    specs = [*env.systems(shards=1), env.memstore_shm()]
    conns = {spec.kind: targets.cached(spec) for spec in specs}
    seconds: dict = {kind: {op: {} for op in OPS} for kind in conns}
    seconds[MEMCPY] = {"copy": {}}
    for size in p.bandwidth_sizes:
        data = targets.payload(size, seed=size)
        key = f"bw.{size}"
        for conn in conns.values():
            conn.put(key, data)  # also warms every allocator on the path
        for ops in seconds.values():
            for by_size in ops.values():
                by_size[str(size)] = []
        for turn in range(p.bandwidth_rounds):
            for kind in rotated([*conns, MEMCPY], turn):
                if kind == MEMCPY:
                    seconds[MEMCPY]["copy"][str(size)] += floor.memcpy_seconds(
                        size, p.bandwidth_reps, p.bandwidth_batch_s
                    )
                    continue
                conn = conns[kind]
                for op in rotated(OPS, turn):
                    fn = partial(conn.put, key, data) if op == "put" else partial(conn.get, key)
                    seconds[kind][op][str(size)] += timed_calls(
                        fn, p.bandwidth_reps, p.bandwidth_batch_s
                    )
            env.step()
        for conn in conns.values():
            conn.flush()
        del data
    return _result(p, seconds)


def _result(p, seconds: dict) -> dict:
    gbps = per_series(seconds, lambda size, values: [round(int(size) / t / 1e9, 4) for t in values])
    return {
        "unit": "GB/s (1e9 bytes per second), one sample per transfer",
        "params": {
            "sizes": list(p.bandwidth_sizes),
            "rounds": p.bandwidth_rounds,
            "reps_per_round": p.bandwidth_reps,
            "batch_s": p.bandwidth_batch_s,
            "shards": 1,
            "clients": 1,
        },
        "summary": per_series(gbps, lambda size, values: summarize(values)),
        "samples": gbps,
    }
