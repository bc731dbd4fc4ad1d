"""Throughput of many small puts: blocking calls vs many in flight, N clients x M shards.

Each client is its own process and writes its own set of keys for a fixed time. ``sync``
waits for every put; ``pipelined`` keeps a window of puts in flight (memstore
``put_tensor_async`` for the window, then every future's ``result()``; a raw DEALER
sending the window; a redis-py pipeline of the same window). The floor runs M servers like
memstore's M shards; Redis is one server. A client stops after ``seconds`` or
``max_ops`` puts, whichever comes first.
"""

from __future__ import annotations

import statistics
import time

from benchmarks import targets
from benchmarks.harness import Env, aggregate, rotated, sleep_until, start_time
from benchmarks.targets import Spec

NAME = "throughput"
SYNC, PIPELINED = "sync", "pipelined"
BULK_PUT, BULK_GET = "bulk put", "bulk get"
MODES = (SYNC, PIPELINED)
#: memstore's put_tensors / get_tensors of a window (one request per shard) against a
#: redis-py pipeline of the same SETs / GETs: measured on the same-node path and Redis only.
BULK_MODES = (BULK_PUT, BULK_GET)
BULK_SYSTEMS = (targets.MEMSTORE, targets.REDIS)


def steps(preset) -> int:
    return len(preset.throughput_shards) * len(preset.throughput_clients)


def run(env: Env) -> dict:
    p = env.preset
    records = []
    for shards in p.throughput_shards:
        specs = env.systems(shards=shards)
        for clients in p.throughput_clients:
            for turn in range(p.throughput_rounds):
                for spec in rotated(specs, turn):
                    bulk = BULK_MODES if spec.kind in BULK_SYSTEMS else ()
                    for mode in rotated((*MODES, *bulk), turn):
                        record = measure(env, spec, mode, clients, p.small_size, p.throughput_s)
                        records.append({"shards": shards, "round": turn, **record})
            env.step()
        env.release_memstore(shards)
    return {
        "unit": "operations per second (aggregate over all clients)",
        "params": {
            "size": p.small_size,
            "clients": list(p.throughput_clients),
            "shards": list(p.throughput_shards),
            "rounds": p.throughput_rounds,
            "seconds": p.throughput_s,
            "window": p.pipeline_window,
            "keys_per_client": p.keys_per_client,
        },
        "summary": summarize_records(records, ("shards", "clients", "system", "mode")),
        "samples": records,
    }


def measure(env: Env, spec: Spec, mode: str, clients: int, size: int, seconds: float) -> dict:
    """``clients`` processes putting ``size``-byte tensors for ``seconds``; aggregate rate."""
    p = env.preset
    at = start_time()
    results = env.run_parallel(
        put_loop,
        [
            (spec, mode, size, c, p.keys_per_client, p.pipeline_window, at, seconds, p.max_ops)
            for c in range(clients)
        ],
    )
    return {"clients": clients, "system": spec.kind, "mode": mode, **aggregate(results)}


def put_loop(
    spec: Spec,
    mode: str,
    size: int,
    client_id: int,
    nkeys: int,
    window: int,
    at: float,
    seconds: float,
    max_ops: int,
) -> dict:
    """Worker process: put (``bulk get``: get) small tensors under this client's keys until
    ``seconds`` pass or ``max_ops`` are done."""
    conn = targets.cached(spec)
    data = targets.payload(size, seed=client_id)
    keys = [f"tp.{client_id}.{i}" for i in range(nkeys)]
    if mode == BULK_GET:
        conn.put_bulk(keys, data)  # what it reads, before the clock starts
    ops = 0
    sleep_until(at)
    t0 = time.monotonic()
    end = t0 + seconds
    if mode == SYNC:
        put = conn.put
        while ops < max_ops and time.monotonic() < end:
            put(keys[ops % nkeys], data)
            ops += 1
    else:
        call = {
            PIPELINED: lambda batch: conn.put_many(batch, data),
            BULK_PUT: lambda batch: conn.put_bulk(batch, data),
            BULK_GET: conn.get_bulk,
        }[mode]
        while ops < max_ops and time.monotonic() < end:
            start = ops % nkeys
            batch = keys[start : start + window]
            call(batch)
            ops += len(batch)
    return {"ops": ops, "bytes": ops * size, "t0": t0, "t1": time.monotonic()}


def summarize_records(records: list[dict], by: tuple[str, ...]) -> list[dict]:
    """Median ``ops_per_s`` and ``gb_per_s`` over rounds, per combination of ``by``."""
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        groups.setdefault(tuple(record[k] for k in by), []).append(record)
    return [
        {
            **dict(zip(by, key, strict=True)),
            "ops_per_s": statistics.median(r["ops_per_s"] for r in group),
            "gb_per_s": statistics.median(r["gb_per_s"] for r in group),
            "rounds": len(group),
        }
        for key, group in groups.items()
    ]


def lookup(summary: list[dict], **match) -> dict | None:
    """The summary row whose fields equal ``match``."""
    for row in summary:
        if all(row.get(k) == v for k, v in match.items()):
            return row
    return None
