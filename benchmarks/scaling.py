"""Aggregate throughput and bandwidth over a grid of shards x clients, and its efficiency.

For each shard count M and client count N (client processes): pipelined small puts
(ops/s) and blocking gets of ``scaling_get_size`` tensors spread over the shards (GB/s).
Efficiency is measured against linear scaling in clients: ``X(M, N) / (N * X(M, 1))``.
Redis (one server, the same clients) is measured alongside as the reference. On a machine
with fewer cores than shards + clients, the processes share cores and the curve flattens:
the JSON records the core count next to the figures.
"""

from __future__ import annotations

import time

from benchmarks import targets
from benchmarks.harness import Env, aggregate, rotated, sleep_until, start_time
from benchmarks.targets import MEMSTORE, REDIS, Spec
from benchmarks.throughput import PIPELINED, measure, summarize_records

NAME = "scaling"
PUTS, GETS = "puts", "gets"
#: how many keys the gets cycle through: enough to land on every shard
_GET_KEYS = 16


def steps(preset) -> int:
    return len(preset.scaling_shards) * len(preset.scaling_clients)


def run(env: Env) -> dict:
    p = env.preset
    records: list[dict] = []
    data = targets.payload(p.scaling_get_size, seed=7)
    if env.redis is not None:
        _fill(env.redis, data)
    for shards in p.scaling_shards:
        spec = env.memstore(shards)
        _fill(spec, data)
        for turn, clients in enumerate(p.scaling_clients):
            runs = [(spec, PUTS), (spec, GETS)]
            if env.redis is not None and shards == p.scaling_shards[0]:
                runs += [(env.redis, PUTS), (env.redis, GETS)]
            for target, metric in rotated(runs, turn):
                record = _measure(env, target, metric, clients)
                records.append({"shards": shards if target.kind == MEMSTORE else 1, **record})
            env.step()
        env.release_memstore(shards)
    summary = summarize_records(records, ("system", "metric", "shards", "clients"))
    _add_efficiency(summary)
    return {
        "unit": "puts: operations per second; gets: GB/s; aggregate over all clients",
        "params": {
            "shards": list(p.scaling_shards),
            "clients": list(p.scaling_clients),
            "seconds": p.scaling_s,
            "put_size": p.small_size,
            "get_size": p.scaling_get_size,
            "window": p.pipeline_window,
            "note": "Redis is one server; it is measured with the first shard count only",
        },
        "summary": summary,
        "samples": records,
    }


def _fill(spec: Spec, data) -> None:
    conn = targets.cached(spec)
    for j in range(_GET_KEYS):
        conn.put(f"sc.{j}", data)


def _measure(env: Env, spec: Spec, metric: str, clients: int) -> dict:
    p = env.preset
    if metric == PUTS:
        record = measure(env, spec, PIPELINED, clients, p.small_size, p.scaling_s)
    else:
        at = start_time()
        results = env.run_parallel(get_loop, [(spec, c, at, p.scaling_s) for c in range(clients)])
        record = {"clients": clients, "system": spec.kind, **aggregate(results)}
    record["metric"] = metric
    return record


def get_loop(spec: Spec, client_id: int, at: float, seconds: float) -> dict:
    """Worker process: blocking gets cycling over the filled keys until ``seconds`` pass."""
    conn = targets.cached(spec)
    ops = nbytes = 0
    sleep_until(at)
    t0 = time.monotonic()
    end = t0 + seconds
    while time.monotonic() < end:
        nbytes += conn.get(f"sc.{(client_id + ops) % _GET_KEYS}").nbytes
        ops += 1
    return {"ops": ops, "bytes": nbytes, "t0": t0, "t1": time.monotonic()}


def _add_efficiency(summary: list[dict]) -> None:
    """``efficiency`` = X(M, N) / (N * X(M, 1)) for each row that has a 1-client partner."""
    for row in summary:
        field = "ops_per_s" if row["metric"] == PUTS else "gb_per_s"
        row["value"] = row[field]
        single = next(
            (
                r
                for r in summary
                if r["system"] == row["system"]
                and r["metric"] == row["metric"]
                and r["shards"] == row["shards"]
                and r["clients"] == 1
            ),
            None,
        )
        if single and single[field] > 0:
            row["efficiency"] = row[field] / (row["clients"] * single[field])


__all__ = ["NAME", "REDIS", "run", "steps"]
