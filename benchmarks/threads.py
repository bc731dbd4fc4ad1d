"""Threads sharing one client: mixed 1 KiB gets and puts from 8 threads of one process.

``shared``: the threads use one :class:`memstore.Client`; ``separate``: each thread has its
own. Everything else is the same: one worker process, one shard, each thread alternating a
get and a put on its own keys (filled before the timed window), all threads starting at a
common instant, the rate covering the first start to the last finish. The ratio shared /
separate is what sharing a client costs; issue 11 asks for at least 0.8x.

Each thread stops after ``threads_s`` seconds or ``max_ops`` calls, whichever comes first;
a thread that has not finished a client timeout later fails the round.
"""

from __future__ import annotations

import threading
import time

from benchmarks import targets
from benchmarks.harness import Env, aggregate, rotated, sleep_until, start_time
from benchmarks.targets import Spec, Target
from benchmarks.throughput import summarize_records

NAME = "threads"
SHARED, SEPARATE = "shared", "separate"
MODES = (SHARED, SEPARATE)
LABELS = {SHARED: "one shared client", SEPARATE: "a client per thread"}


def steps(preset) -> int:
    return preset.threads_rounds


def run(env: Env) -> dict:
    p = env.preset
    spec = env.memstore(1)
    records = []
    for turn in range(p.threads_rounds):
        for mode in rotated(MODES, turn):
            args = (spec, mode, p.threads, p.threads_size, p.threads_keys, p.threads_s, p.max_ops)
            result = env.submit(thread_loop, args).get(p.threads_s + 4 * p.timeout_s)
            records.append({"round": turn, "mode": mode, **result})
        env.step()
    env.release_memstore(1)
    return {
        "unit": "operations per second (aggregate over all threads)",
        "params": {
            "threads": p.threads,
            "size": p.threads_size,
            "keys_per_thread": p.threads_keys,
            "rounds": p.threads_rounds,
            "seconds": p.threads_s,
            "mix": "alternating get and put",
            "shards": 1,
        },
        "summary": summarize_records(records, ("mode",)),
        "samples": records,
    }


def thread_loop(
    spec: Spec, mode: str, threads: int, size: int, nkeys: int, seconds: float, max_ops: int
) -> dict:
    """Worker process: ``threads`` threads on one shared connection or one each; the
    aggregate of their ``{ops, bytes, t0, t1}``."""
    if mode == SHARED:
        conns = [spec.connect()] * threads
    else:
        conns = [spec.connect() for _ in range(threads)]
    try:
        data = targets.payload(size, seed=1)
        keys = [[f"th.{t}.{j}" for j in range(nkeys)] for t in range(threads)]
        for conn, mine in zip(conns, keys, strict=True):
            for key in mine:
                conn.put(key, data)  # every get finds its key; every connection is warm
        at = start_time()
        results: list[dict | BaseException | None] = [None] * threads
        workers = [
            threading.Thread(
                target=_mixed,
                args=(conns[t], keys[t], data, at, seconds, max_ops, results, t),
                name=f"bench-thread-{t}",
                daemon=True,  # a hung call must not keep the worker process alive
            )
            for t in range(threads)
        ]
        for worker in workers:
            worker.start()
        deadline = at + seconds + spec.timeout  # the last call may take a whole timeout
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        for t, result in enumerate(results):
            if isinstance(result, BaseException):
                raise RuntimeError(f"{mode} client, thread {t}: {result!r}") from result
            if result is None:
                raise RuntimeError(
                    f"{mode} client, thread {t} did not finish within {seconds + spec.timeout} s"
                )
        record = aggregate(results)  # type: ignore[arg-type]
        record["per_thread_ops"] = record.pop("per_client_ops")
    finally:
        for conn in {id(c): c for c in conns}.values():
            conn.close()
    return {"threads": threads, "clients": len({id(c) for c in conns}), **record}


def _mixed(
    conn: Target,
    keys: list[str],
    data,
    at: float,
    seconds: float,
    max_ops: int,
    results: list,
    slot: int,
) -> None:
    """One thread: alternate get and put over ``keys`` until the time or the count is up."""
    try:
        get, put, nkeys = conn.get, conn.put, len(keys)
        ops = 0
        sleep_until(at)
        t0 = time.monotonic()
        end = t0 + seconds
        while ops < max_ops and time.monotonic() < end:
            key = keys[ops % nkeys]
            if ops & 1:
                put(key, data)
            else:
                get(key)
            ops += 1
        results[slot] = {"ops": ops, "bytes": ops * data.nbytes, "t0": t0, "t1": time.monotonic()}
    except BaseException as exc:  # handed to the main thread, which raises it
        results[slot] = exc
