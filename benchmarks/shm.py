"""Issue 12's shared-memory targets: get/put of 1 MiB and 64 MiB over shm vs the socket
path vs ``numpy.copyto``, in one run on one node.

Run: ``python -m benchmarks.shm [--reps N]``. Not yet part of ``memstore-bench``'s report:
this prints the medians (GB/s) and each target's ratio. ``--crossover``: put and get times
by size over shm and over the socket (the threshold's trade-off).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

import memstore

MiB = 1 << 20
SIZES = (MiB, 64 * MiB)


def _median_s(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(reps: int) -> dict:
    out: dict = {}
    with memstore.LocalCluster(shards=1) as cluster, cluster.client(timeout=60) as client:
        big = client._shm.threshold
        for size in SIZES:
            out[size] = _one_size(client, size, big, reps)
        client._shm.threshold = big
    return out


def _one_size(client, size: int, shm_threshold: int, reps: int) -> dict:
    src = np.ones(size // 8)
    dst = np.empty_like(src)
    row = {"copyto": size / _median_s(lambda: np.copyto(dst, src), reps)}
    for path, threshold in (("shm", shm_threshold), ("socket", 1 << 62)):
        client._shm.threshold = threshold
        client.put_tensor("x", src)
        row[f"{path}_put"] = size / _median_s(lambda: client.put_tensor("x", src), reps)
        row[f"{path}_get"] = size / _median_s(lambda: client.get_tensor("x"), reps)
        # a got array's first full read (what a caller pays before using it)
        row[f"{path}_get_read"] = size / _median_s(lambda: client.get_tensor("x").sum(), reps)
    row["sum_plain"] = size / _median_s(lambda: src.sum(), reps)
    client._shm.threshold = shm_threshold
    row["shm_empty_put"] = size / _median_empty_put(client, src, reps)
    return row


def _median_empty_put(client, src, reps: int) -> float:
    """``put_tensor`` of a ``client.empty`` array, filled beforehand (not timed)."""
    times = []
    for _ in range(reps):
        array = client.empty("x", src.shape, src.dtype)
        np.copyto(array, src)
        start = time.perf_counter()
        client.put_tensor("x", array)
        times.append(time.perf_counter() - start)
        del array
    return statistics.median(times)


def targets(m: dict) -> list[tuple[str, float, str]]:
    big, small = m[64 * MiB], m[MiB]
    return [
        ("64 MiB get >= 5 GB/s", big["shm_get"] / 1e9, ">= 5"),
        ("64 MiB get / copyto", big["shm_get"] / big["copyto"], ">= 0.5"),
        ("64 MiB first read / plain read", big["shm_get_read"] / big["sum_plain"], ">= 0.5"),
        ("64 MiB first read / copyto", big["shm_get_read"] / big["copyto"], ">= 0.5"),
        ("64 MiB put / copyto", big["shm_put"] / big["copyto"], ">= 0.5"),
        ("64 MiB empty() put >= 20 GB/s", big["shm_empty_put"] / 1e9, ">= 20"),
        ("1 MiB get shm / socket", small["shm_get"] / small["socket_get"], ">= 3"),
        ("1 MiB put shm / socket", small["shm_put"] / small["socket_put"], ">= 3"),
    ]


def crossover(reps: int, sizes=(128, 256, 512, 1024, 2048, 4096)) -> list[dict]:
    """Per size (KiB): put and get medians (us) over shm and over the socket, the better of
    two alternating rounds, and put + 1 / + 4 gets shm over socket: where the threshold
    (``MEMSTORE_SHM_THRESHOLD``) pays, by how often a tensor is read."""
    rows = []
    with memstore.LocalCluster(shards=1) as cluster, cluster.client(timeout=60) as client:
        for kib in sizes:
            src = np.ones(kib * 1024 // 8)
            times: dict = {}
            for _ in range(2):
                for path, threshold in (("shm", 1), ("socket", 1 << 62)):
                    client._shm.threshold = threshold
                    client.put_tensor("x", src)
                    for op, fn in (("put", lambda s=src: client.put_tensor("x", s)),
                                   ("get", lambda: client.get_tensor("x"))):  # fmt: skip
                        us = _median_s(fn, reps) * 1e6
                        times[f"{path}_{op}"] = min(times.get(f"{path}_{op}", us), us)
            shm, sock = times["shm_put"], times["socket_put"]
            for gets in (1, 4):
                times[f"put+{gets}get"] = (shm + gets * times["shm_get"]) / (
                    sock + gets * times["socket_get"]
                )
            rows.append({"kib": kib, **times})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.shm")
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--crossover", action="store_true", help="put/get by size, shm vs socket")
    args = p.parse_args()
    if args.crossover:
        for row in crossover(args.reps):
            print(", ".join(f"{k} {v:.2f}" if "+" in k else f"{k} {v:.0f}" for k, v in row.items()))
        return
    m = measure(args.reps)
    for size, row in m.items():
        print(f"{size // MiB} MiB: " + ", ".join(f"{k} {v / 1e9:.2f} GB/s" for k, v in row.items()))
    for name, ratio, target in targets(m):
        print(f"{name}: {ratio:.2f} (target {target})")
    print(json.dumps({str(k): v for k, v in m.items()}))


if __name__ == "__main__":
    main()
