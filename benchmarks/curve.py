"""Issue 13's CURVE cost: 1 KiB get latency and 64 MiB get bandwidth, plain vs ``--secure``.

Run: ``python -m benchmarks.curve [--reps N]``. Both clusters are one local TCP shard with
the same-node shared-memory path off (``MEMSTORE_SHM=0``), so every byte crosses the socket
and, with CURVE, is encrypted and authenticated. Prints one JSON line per mode and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np

import memstore

KiB, MiB = 1 << 10, 1 << 20


def _median_s(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(secure: bool, reps: int) -> dict:
    with memstore.LocalCluster(1, secure=secure) as cluster, cluster.client(timeout=60) as client:
        client.put_tensor("small", np.zeros(KiB, dtype=np.uint8))
        client.put_tensor("big", np.zeros(64 * MiB, dtype=np.uint8))
        for _ in range(50):
            client.get_tensor("small")
        latency = _median_s(lambda: client.get_tensor("small"), reps * 100)
        client.get_tensor("big")
        big = _median_s(lambda: client.get_tensor("big"), reps)
    return {
        "secure": secure,
        "get_1KiB_us": round(latency * 1e6, 1),
        "get_64MiB_GBps": round(64 * MiB / big / 1e9, 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.curve", description=__doc__)
    p.add_argument("--reps", type=int, default=10, help="64 MiB gets (1 KiB: 100x as many)")
    args = p.parse_args(argv)
    os.environ["MEMSTORE_SHM"] = "0"  # the socket path, which CURVE encrypts
    plain, secure = measure(False, args.reps), measure(True, args.reps)
    print(json.dumps(plain))
    print(json.dumps(secure))
    ratio = {
        "latency_x": round(secure["get_1KiB_us"] / plain["get_1KiB_us"], 2),
        "bandwidth_x": round(secure["get_64MiB_GBps"] / plain["get_64MiB_GBps"], 3),
    }
    print(json.dumps(ratio))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
