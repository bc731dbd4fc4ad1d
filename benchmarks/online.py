"""The online-learning pattern: producers put snapshots at a fixed rate, consumers wait for
each one and get it; the figure is the end-to-end lag, put → consumer holds the array.

Each snapshot carries the producer's ``time.monotonic()`` at the moment it called put in
its first element (one clock for all processes of a machine), so the consumer computes the
lag from the data it received. Modes:

- memstore ``wait``: the consumer calls ``wait_tensor(key)`` (the shard answers with the
  tensor as soon as it is stored);
- memstore ``poll+get``: SmartRedis's pattern, ``poll_tensor`` then ``get_tensor``;
- Redis ``blpop+get``: the producer pipelines SET + RPUSH of the key to each consumer's
  list, the consumer BLPOPs the key and GETs the value.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks import targets
from benchmarks.harness import Env, rotated, sleep_until, start_time, summarize
from benchmarks.targets import MEMSTORE, REDIS, Spec

NAME = "online"
WAIT, POLL_GET, BLPOP_GET = "wait", "poll+get", "blpop+get"
ROUNDS = 2


def steps(preset) -> int:
    return ROUNDS


def run(env: Env) -> dict:
    p = env.preset
    spec = env.memstore(1)
    modes = [(spec, WAIT), (spec, POLL_GET)]
    if env.redis is not None:
        modes.append((env.redis, BLPOP_GET))
    lags: dict[str, list[float]] = {mode: [] for _, mode in modes}
    producers: dict[str, list[dict]] = {mode: [] for _, mode in modes}
    for turn in range(ROUNDS):
        for target, mode in rotated(modes, turn):
            lag, made = _round(env, target, mode, turn)
            lags[mode] += lag
            producers[mode] += made
            targets.cached(target).flush()
        env.step()
    lags_ms = {mode: [round(x * 1e3, 4) for x in values] for mode, values in lags.items()}
    period = 1.0 / p.online_rate_hz
    return {
        "unit": "milliseconds from the producer's put call to the consumer holding the array",
        "params": {
            "producers": p.online_producers,
            "consumers": p.online_consumers,
            "rate_hz": p.online_rate_hz,
            "snapshots_per_producer_per_round": p.online_snapshots,
            "rounds": ROUNDS,
            "size": p.online_size,
            "shards": 1,
        },
        "summary": {
            mode: {
                **summarize(values),
                "system": REDIS if mode == BLPOP_GET else MEMSTORE,
                "producer_rate_hz": _achieved_rate(producers[mode]),
                "producer_late_p99_ms": summarize(
                    [late for made in producers[mode] for late in made["late_ms"]]
                ).get("p99", 0.0),
                "target_rate_hz": 1.0 / period,
            }
            for mode, values in lags_ms.items()
        },
        "samples": lags_ms,
    }


def _achieved_rate(made: list[dict]) -> float:
    rates = [m["puts"] / m["seconds"] for m in made if m["seconds"] > 0]
    return float(np.mean(rates)) if rates else 0.0


def _round(env: Env, spec: Spec, mode: str, turn: int) -> tuple[list[float], list[dict]]:
    p = env.preset
    env.connect_workers(spec)
    at = start_time()
    prefix = f"snap{turn}"
    calls = [
        (consume, (spec, mode, prefix, c, p.online_producers, p.online_snapshots, p.timeout_s))
        for c in range(p.online_consumers)
    ] + [
        (
            produce,
            (
                spec,
                prefix,
                q,
                p.online_consumers,
                p.online_snapshots,
                p.online_rate_hz,
                p.online_size,
                at,
            ),
        )
        for q in range(p.online_producers)
    ]
    pending = [env.submit(fn, args) for fn, args in calls]
    results = [r.get(p.timeout_s * 2) for r in pending]
    lags = [lag for r in results[: p.online_consumers] for lag in r]
    return lags, results[p.online_consumers :]


def produce(
    spec: Spec,
    prefix: str,
    producer: int,
    consumers: int,
    count: int,
    rate: float,
    size: int,
    at: float,
) -> dict:
    """Worker process: put ``count`` snapshots, one every ``1/rate`` seconds from ``at``."""
    conn = targets.cached(spec)
    snapshot = np.random.default_rng(producer).standard_normal(size // 8)
    late = []
    sleep_until(at)
    t0 = time.monotonic()
    for i in range(count):
        due = at + i / rate
        sleep_until(due)
        key = f"{prefix}.{producer}.{i}"
        now = time.monotonic()
        late.append(round((now - due) * 1e3, 4))
        snapshot[0] = now
        if spec.kind == MEMSTORE:
            conn.put(key, snapshot)
        else:
            pipe = conn.client.pipeline(transaction=False)
            pipe.set(key, memoryview(snapshot).cast("B"))
            for c in range(consumers):
                pipe.rpush(f"{prefix}.notify.{c}", key)
            pipe.execute()
    return {"puts": count, "seconds": time.monotonic() - t0, "late_ms": late}


def consume(
    spec: Spec, mode: str, prefix: str, consumer: int, producers: int, count: int, timeout: float
) -> list[float]:
    """Worker process: receive every producer's ``count`` snapshots; the lag of each."""
    conn = targets.cached(spec)
    client = conn.client
    lags = []
    for i in range(count):
        for q in range(producers):
            key = f"{prefix}.{q}.{i}"
            if mode == WAIT:
                array = client.wait_tensor(key, timeout=timeout)
            elif mode == POLL_GET:
                if not client.poll_tensor(key, 1, int(timeout * 1000)):
                    raise RuntimeError(f"snapshot {key!r} did not arrive within {timeout}s")
                array = client.get_tensor(key)
            else:
                popped = client.blpop([f"{prefix}.notify.{consumer}"], timeout=timeout)
                if popped is None:
                    raise RuntimeError(f"no snapshot notice within {timeout}s")
                array = np.frombuffer(client.get(popped[1]), dtype=np.float64)
            lags.append(time.monotonic() - float(array[0]))
    return lags
