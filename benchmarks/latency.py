"""Latency of one put, one get and one poll wake-up, 8 B … 1 MiB, next to the floor and Redis.

- put / get: the time of one blocking call from one client, on one shard (one floor server,
  one Redis), memstore over ``tcp://`` and over ``ipc://``. Rounds alternate the systems'
  order.
- poll wake-up: a consumer process is parked in ``poll_tensor`` (checked on the shard:
  ``parked`` ≥ 1) when the producer calls ``put_tensor``; the figure is the time from that
  call to the consumer's return. Redis's nearest equivalent is a client blocked in BLPOP
  woken by a pipelined SET + RPUSH. A preset with ``wake_iters=0`` skips it.
"""

from __future__ import annotations

import time
from functools import partial

from benchmarks import targets
from benchmarks.harness import Env, per_series, rotated, summarize, timed_calls
from benchmarks.targets import MEMSTORE, REDIS, Spec

NAME = "latency"
OPS = ("put", "get")
WAKE = "wake"
#: How long a parked consumer waits before giving up (it is woken well before).
_WAKE_TIMEOUT_S = 10.0


def steps(preset) -> int:
    return len(preset.latency_sizes) * preset.latency_rounds


def run(env: Env) -> dict:
    p = env.preset
    specs = [*env.systems(shards=1), env.memstore(1, ipc=True)]
    conns = {spec.kind: targets.cached(spec) for spec in specs}
    samples: dict = {kind: {op: {} for op in (*OPS, WAKE)} for kind in conns}
    for kind in conns:
        if kind not in (MEMSTORE, REDIS) or not p.wake_iters:
            del samples[kind][WAKE]
    for size in p.latency_sizes:
        data = targets.payload(size, seed=size)
        key = f"lat.{size}"
        for conn in conns.values():
            conn.put(key, data)  # something to get
        for kind in samples:
            for op in samples[kind]:
                samples[kind][op][str(size)] = []
        for turn in range(p.latency_rounds):
            for spec in rotated(specs, turn):
                conn = conns[spec.kind]
                for op in rotated(OPS, turn):
                    fn = partial(conn.put, key, data) if op == "put" else partial(conn.get, key)
                    samples[spec.kind][op][str(size)] += timed_calls(
                        fn, p.latency_iters, p.latency_batch_s
                    )
                if WAKE in samples[spec.kind]:
                    samples[spec.kind][WAKE][str(size)] += _wake_samples(
                        env, spec, conn, size, data, p.wake_iters, p.latency_batch_s
                    )
            env.step()
        for conn in conns.values():
            conn.flush()
    return _result(p, samples)


def _result(p, samples: dict) -> dict:
    us = per_series(samples, lambda size, values: [round(t * 1e6, 2) for t in values])
    summary = per_series(us, lambda size, values: summarize(values))
    return {
        "unit": "microseconds",
        "params": {
            "sizes": list(p.latency_sizes),
            "rounds": p.latency_rounds,
            "iters_per_round": p.latency_iters,
            "batch_s": p.latency_batch_s,
            "wake_iters_per_round": p.wake_iters,
            "shards": 1,
            "clients": 1,
        },
        "summary": summary,
        "samples": us,
    }


# -- poll wake-up ----------------------------------------------------------------------------


def _wake_samples(env: Env, spec: Spec, conn, size: int, data, iters: int, budget: float) -> list:
    samples = []
    env.connect_workers(spec)
    end = time.perf_counter() + budget
    for i in range(iters):
        key = f"wake.{size}.{i}"
        waiting = env.submit(_wait_for, (spec, key))
        _until_parked(spec, conn, waiting)
        t_put = time.monotonic()
        if spec.kind == MEMSTORE:
            conn.put(key, data)
        else:
            pipe = conn.client.pipeline(transaction=False)
            pipe.set(key, memoryview(data).cast("B"))
            pipe.rpush(f"notify.{key}", b"1")
            pipe.execute()
        found, t_woken = waiting.get(_WAKE_TIMEOUT_S * 2)
        if not found:
            raise RuntimeError(f"{spec.kind}: the parked consumer of {key!r} was not woken")
        samples.append(t_woken - t_put)
        if spec.kind == MEMSTORE:
            conn.client.delete_tensor(key)
        else:
            conn.client.delete(key)
        if time.perf_counter() > end:
            break
    return samples


def _until_parked(spec: Spec, conn, waiting, limit_s: float = _WAKE_TIMEOUT_S) -> None:
    """Return once the consumer's request is parked on the server."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if waiting.ready():
            raise RuntimeError(f"{spec.kind}: the consumer returned before anything was put")
        if spec.kind == MEMSTORE:
            parked = sum(info["parked"] for info in conn.client.get_db_node_info())
        else:
            parked = conn.client.info("clients")["blocked_clients"]
        if parked:
            return
        time.sleep(0.0005)
    raise RuntimeError(f"{spec.kind}: the consumer was not parked within {limit_s}s")


def _wait_for(spec: Spec, key: str) -> tuple[bool, float]:
    """Worker process: block until ``key`` is written; whether it was, and when we knew."""
    conn = targets.cached(spec)
    if spec.kind == MEMSTORE:
        found = conn.client.poll_tensor(key, 1, int(_WAKE_TIMEOUT_S * 1000))
    else:
        found = conn.client.blpop([f"notify.{key}"], timeout=_WAKE_TIMEOUT_S) is not None
    return found, time.monotonic()
