"""Streams (issue 22): one producer appends steps, N consumers in one group take and ack them.

For each step size and consumer count, every system runs two phases on a fresh stream:

- ``rate``: the producer appends as fast as it can (at most ``streams_steps`` steps and
  ``streams_bytes`` bytes, for at most ``streams_s`` seconds; ``maxlen`` holds them all, so
  nothing is dropped); the figure is steps (and MB) consumed per second, from the first
  append to the last consumer done.
- ``lag``: the producer appends at ``streams_rate_hz``, a pace every system keeps; the figure
  is each step's lag, from the producer's append call to a consumer holding the array.

Each step's first float64 is the producer's ``time.monotonic()`` when it called append (one
clock for every process of a machine), so a consumer computes the lag from the data it got.
memstore: ``Stream.append`` / ``Group.take(ack=previous step)`` (one request per step each
side; the last step's ``ack`` alone) over sockets (``memstore``) and with
the same-node shared-memory path (``memstore-shm``, the path a stream's large steps take by
default); Redis: redis-py ``XADD MAXLEN ~`` / ``XREADGROUP COUNT 1 BLOCK`` / ``XACK`` of the
same bytes, the end of the stream an ``end`` entry per consumer.

Then the ``stall`` phase, memstore on two shards: a ``drop_oldest`` stream of
``streams_stall_maxlen`` steps of the largest size, the producer appending as fast as it can
while its one consumer keeps up (``fast``) or holds every step ``streams_slow_s`` seconds
(``slow``). The figures are the producer's append latency in both cases (a producer that
waited on the slow consumer would take ``streams_slow_s`` per append) and the shards' bytes
(``info``) sampled while it runs, against :func:`memory_bound`.
"""

from __future__ import annotations

import os
import time

import numpy as np

from benchmarks import targets
from benchmarks.harness import Env, rotated, sleep_until, start_time, summarize
from benchmarks.presets import KiB
from benchmarks.targets import REDIS, Spec
from memstore.errors import StepDropped

NAME = "streams"
RATE, LAG = "rate", "lag"
FAST, SLOW = "fast", "slow"
GROUP = "bench"
#: Bytes a shard holds per step beyond the step's data: the data key's entry (1 KiB),
#: its frame's allocator slack (up to 1 KiB), its key and shape, and the step's and a
#: pending delivery's share of the stream state (160 B each): docs/design.md, "Streams".
STEP_OVERHEAD = 3 * KiB
#: Bytes per stream beyond its steps: the state's own entry and its groups.
STREAM_OVERHEAD = 4 * KiB
#: Seconds between two samples of the shards' bytes during the stall phase.
MEMORY_EVERY_S = 0.01


def memory_bound(maxlen: int, size: int, producers: int = 1) -> int:
    """What the shards may hold for a stream of ``maxlen`` steps of ``size`` bytes: each
    producer's step in flight too, whose data is stored before its append drops the
    oldest step (docs/design.md, "Streams")."""
    return (maxlen + producers) * (size + STEP_OVERHEAD) + STREAM_OVERHEAD


def steps(preset) -> int:
    return len(preset.streams_sizes) * len(preset.streams_consumers) + 1


def run(env: Env) -> dict:
    p = env.preset
    systems = [env.memstore(1), env.memstore_shm()]
    if env.redis is not None:
        systems.append(env.redis)
    records = []
    for size in p.streams_sizes:
        for consumers in p.streams_consumers:
            for turn in range(p.streams_rounds):
                for spec in rotated(systems, turn):
                    for phase in (RATE, LAG):
                        records.append(measure(env, spec, phase, size, consumers, turn))
            env.step()
    stall = [measure_stall(env, variant) for variant in (FAST, SLOW)]
    env.step()
    return {
        "unit": "steps/s and MB/s consumed; lag and append latency in milliseconds",
        "params": {
            "sizes": list(p.streams_sizes),
            "consumers": list(p.streams_consumers),
            "rounds": p.streams_rounds,
            "rate_steps": p.streams_steps,
            "rate_bytes": p.streams_bytes,
            "seconds": p.streams_s,
            "lag_rate_hz": p.streams_rate_hz,
            "lag_steps": p.streams_lag_steps,
            "stall_maxlen": p.streams_stall_maxlen,
            "stall_steps": p.streams_stall_steps,
            "slow_hold_s": p.streams_slow_s,
            "step_overhead": STEP_OVERHEAD,
            "stream_overhead": STREAM_OVERHEAD,
            "shards": 1,
            "stall_shards": 2,
        },
        "summary": summarize_records(records),
        "stall": stall,
        "samples": records,
    }


def rate_steps(preset, size: int) -> int:
    """Steps of a ``rate`` phase: bounded in count and in bytes held."""
    return max(1, min(preset.streams_steps, preset.streams_bytes // size))


def measure(env: Env, spec: Spec, phase: str, size: int, consumers: int, turn: int) -> dict:
    """One phase on a fresh stream: rate, lags and append latencies."""
    p = env.preset
    count = rate_steps(p, size) if phase == RATE else p.streams_lag_steps
    pace = 0.0 if phase == RATE else p.streams_rate_hz
    name = f"bench.{phase}.{size}.{consumers}.{turn}"
    maxlen = count + consumers  # every step held: nothing dropped, on any system
    create(spec, name, maxlen)
    env.connect_workers(spec)
    at = start_time()
    taking = [env.submit(consume, (spec, name, count, p.timeout_s)) for _ in range(consumers)]
    made = env.submit(produce, (spec, name, count, size, pace, at, p.streams_s, maxlen, consumers))
    produced = made.get(p.timeout_s * 2)
    got = [t.get(p.timeout_s * 2) for t in taking]
    targets.cached(spec).flush()
    span = max(g["t1"] for g in got) - produced["t0"]
    taken = sum(g["steps"] for g in got)
    return {
        "system": spec.kind,
        "phase": phase,
        "size": size,
        "consumers": consumers,
        "round": turn,
        "appended": produced["appends"],
        "steps": taken,
        "seconds": span,
        "steps_per_s": taken / span if span > 0 else 0.0,
        "mb_per_s": taken * size / span / 1e6 if span > 0 else 0.0,
        "lag_ms": [x for g in got for x in g["lag_ms"]],
        "append_ms": produced["append_ms"],
    }


def create(spec: Spec, name: str, maxlen: int, policy: str = "drop_oldest") -> None:
    """The stream and its consumer group, made before any worker uses them."""
    conn = targets.cached(spec)
    if spec.kind == REDIS:
        conn.client.xgroup_create(name, GROUP, id="0", mkstream=True)
    else:
        conn.client.stream(name, maxlen=maxlen, policy=policy).group(GROUP)


def measure_stall(env: Env, variant: str) -> dict:
    """The producer's append latency on a drop_oldest stream, its consumer fast or slow,
    and the shards' bytes sampled meanwhile."""
    p = env.preset
    spec = env.memstore(2)
    size = max(p.streams_sizes)
    name = f"bench.stall.{variant}"
    create(spec, name, p.streams_stall_maxlen)
    env.connect_workers(spec)
    hold = p.streams_slow_s if variant == SLOW else 0.0
    at = start_time()
    taking = env.submit(consume, (spec, name, p.streams_stall_steps, p.timeout_s, hold))
    args = (
        spec,
        name,
        p.streams_stall_steps,
        size,
        0.0,
        at,
        p.streams_s,
        p.streams_stall_maxlen,
        1,
    )
    made = env.submit(produce, args)
    peak = watch_memory(targets.cached(spec).client, made, at + p.timeout_s)
    produced = made.get(p.timeout_s)
    got = taking.get(p.timeout_s * 2)
    targets.cached(spec).flush()
    append_ms = produced["append_ms"]
    return {
        "variant": variant,
        "hold_s": hold,
        "size": size,
        "maxlen": p.streams_stall_maxlen,
        "appended": produced["appends"],
        "taken": got["steps"],
        "dropped_while_taken": got["dropped"],
        "append": summarize(append_ms),
        "peak_bytes": peak,
        "bound_bytes": memory_bound(p.streams_stall_maxlen, size),
        "append_ms": append_ms,
    }


def watch_memory(client, made, deadline: float) -> int:
    """The most bytes the shards held together, sampled until ``made`` is ready."""
    peak = 0
    while time.monotonic() < deadline:
        done = made.ready()
        peak = max(peak, sum(info["bytes"] for info in client.get_db_node_info()))
        if done:
            return peak
        time.sleep(MEMORY_EVERY_S)
    raise TimeoutError(f"the stall phase's producer did not finish by {deadline:.1f}")


def produce(
    spec: Spec,
    name: str,
    count: int,
    size: int,
    pace: float,
    at: float,
    seconds: float,
    maxlen: int,
    consumers: int,
) -> dict:
    """Worker process: append up to ``count`` steps from ``at`` (one every ``1/pace`` s, or
    as fast as it can), for at most ``seconds``; then end the stream."""
    append, finish = appender(spec, name, maxlen, consumers)
    array = np.random.default_rng(count).standard_normal(size // 8)
    took = []
    sleep_until(at)
    t0 = time.monotonic()
    end = t0 + seconds
    for i in range(count):
        if pace:
            sleep_until(at + i / pace)
        start = time.monotonic()
        if start > end:
            break
        array[0] = start
        append(array)
        took.append(round((time.monotonic() - start) * 1e3, 4))
    finish()
    return {"appends": len(took), "t0": t0, "append_ms": took}


def appender(spec: Spec, name: str, maxlen: int, consumers: int) -> tuple:
    """``(append(array), finish())`` for ``name`` on ``spec``'s system."""
    conn = targets.cached(spec)
    if spec.kind != REDIS:
        stream = conn.client.stream(name)
        return stream.append, stream.close
    client = conn.client

    def append(array: np.ndarray) -> None:
        client.xadd(name, {"d": memoryview(array).cast("B")}, maxlen=maxlen, approximate=True)

    def finish() -> None:
        for _ in range(consumers):  # each consumer stops at the first end entry it reads
            client.xadd(name, {"end": b"1"})

    return append, finish


def consume(spec: Spec, name: str, limit: int, timeout: float, hold: float = 0.0) -> dict:
    """Worker process: take, read and ack steps until the stream ends (at most ``limit``
    steps, each within ``timeout``); ``hold`` seconds of pretend work per step."""
    take, ack = taker(spec, name, timeout)
    lags, dropped, done = [], 0, None
    for _ in range(limit + 1):
        try:
            got = take(done)
        except StepDropped:  # drop_oldest removed it after it was handed to us
            dropped += 1
            done = None  # the take acked it
            continue
        done = None
        if got is None:
            break
        step, array = got
        lags.append(round((time.monotonic() - float(array[0])) * 1e3, 4))
        if hold:
            time.sleep(hold)  # the deliberately slow consumer
        done = ack(step)
    if done is not None:
        ack(done, last=True)
    return {"steps": len(lags), "dropped": dropped, "lag_ms": lags, "t1": time.monotonic()}


def taker(spec: Spec, name: str, timeout: float) -> tuple:
    """``(take(done) -> (step, array) or None at the end, ack(step, last=False))`` on
    ``spec``'s system. memstore's ack of a step rides on the next take (``done``: what
    ``ack`` returned), the last one sent alone; Redis acks each step by an ``XACK``."""
    conn = targets.cached(spec)
    if spec.kind != REDIS:
        group = conn.client.stream(name).group(GROUP)

        def later(step: int, last: bool = False) -> int | None:
            return group.ack(step) if last else step

        return (lambda done: group.take(timeout=timeout, ack=done)), later
    client = conn.client
    me = f"consumer-{os.getpid()}"

    def take(done: None) -> tuple | None:
        reply = client.xreadgroup(GROUP, me, {name: ">"}, count=1, block=int(timeout * 1e3))
        if not reply:
            raise TimeoutError(f"stream {name!r}: no entry within {timeout}s")
        entry, fields = reply[0][1][0]
        if b"end" in fields:
            client.xack(name, GROUP, entry)
            return None
        return entry, np.frombuffer(fields[b"d"], dtype=np.float64)

    def ack(entry: bytes, last: bool = False) -> None:
        client.xack(name, GROUP, entry)

    return take, ack


def summarize_records(records: list[dict]) -> list[dict]:
    """Per system, size and consumer count: the median rate over rounds (``rate`` phase)
    and lag percentiles over every step of the ``lag`` phase."""
    rows: dict[tuple, dict] = {}
    for r in records:
        key = (r["system"], r["size"], r["consumers"])
        row = rows.setdefault(key, {"rates": [], "mbs": [], "lags": [], "appends": []})
        if r["phase"] == RATE:
            row["rates"].append(r["steps_per_s"])
            row["mbs"].append(r["mb_per_s"])
        else:
            row["lags"] += r["lag_ms"]
            row["appends"] += r["append_ms"]
    out = []
    for (system, size, consumers), row in rows.items():
        lag, append = summarize(row["lags"]), summarize(row["appends"])
        out.append(
            {
                "system": system,
                "size": size,
                "consumers": consumers,
                "steps_per_s": float(np.median(row["rates"])) if row["rates"] else None,
                "mb_per_s": float(np.median(row["mbs"])) if row["mbs"] else None,
                "lag_p50_ms": lag.get("p50"),
                "lag_p99_ms": lag.get("p99"),
                "lag_n": lag["n"],
                "append_p50_ms": append.get("p50"),
                "append_p99_ms": append.get("p99"),
            }
        )
    return out
