"""Snapshot throughput and the longest serving pause during a save (issue 13, item 1).

``python -m benchmarks.snapshot [--mib 256] [--small 20000] [--dir DIR]``: one shard holds
``--mib`` MiB in 1 MiB tensors plus ``--small`` 64-byte ones; a second client gets a
small key in a loop (one request in flight) while ``client.save`` runs, and the longest
gap between its answers is the serving pause a save causes, next to the same figure
measured with no save running.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time

import numpy as np

import memstore


def _ping(cluster, stop: threading.Event, gaps: list[float]) -> None:
    with cluster.client(timeout=60) as client:
        last = time.perf_counter()
        while not stop.is_set():
            client.get_tensor("small0")
            now = time.perf_counter()
            gaps.append(now - last)
            last = now


def _longest_gap(cluster, action) -> tuple[float, float, int]:
    stop, gaps = threading.Event(), []
    pinger = threading.Thread(target=_ping, args=(cluster, stop, gaps))
    pinger.start()
    time.sleep(0.3)
    gaps.clear()
    started = time.perf_counter()
    action()
    seconds = time.perf_counter() - started
    stop.set()
    pinger.join(60)
    return max(gaps), seconds, len(gaps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    p.add_argument("--mib", type=int, default=256)
    p.add_argument("--small", type=int, default=20000)
    p.add_argument("--dir", help="snapshot directory (default: a temporary one)")
    args = p.parse_args()
    directory = args.dir or tempfile.mkdtemp(prefix="memstore-snap-")
    with memstore.LocalCluster(shards=1) as cluster, cluster.client(timeout=600) as client:
        block = np.random.default_rng(0).integers(0, 255, 1 << 20, dtype=np.uint8)
        for i in range(args.mib):
            client.put_tensor(f"big{i}", block)
        small = np.zeros(16, dtype=np.float32)
        for i in range(args.small):
            client.put_tensor(f"small{i}", small)
        idle, _, n_idle = _longest_gap(cluster, lambda: time.sleep(2.0))
        results = []
        pause, seconds, n_save = _longest_gap(
            cluster, lambda: results.extend(client.save(directory))
        )
        (result,) = results
        restore_started = time.perf_counter()
        with memstore.LocalCluster(shards=1, restore=directory) as again:
            restored = time.perf_counter() - restore_started
            with again.client(timeout=60) as check:
                assert check.get_tensor("big0").tobytes() == block.tobytes()
    mb = result["bytes"] / 1e6
    print(f"keys {result['keys']}, file {mb:.1f} MB, {directory}")
    print(
        f"save: {seconds:.2f}s wall, shard wrote in {result['seconds']:.2f}s = "
        f"{mb / result['seconds']:.0f} MB/s (sha256 + write + fsync)"
    )
    print(f"loop turn taking the snapshot: {result['pause'] * 1e3:.2f} ms")
    print(
        f"longest gap between answers to a pinging client: {pause * 1e3:.1f} ms during the "
        f"save ({n_save} gets), {idle * 1e3:.1f} ms with no save ({n_idle} gets)"
    )
    print(f"restore (start a shard + load + verify): {restored:.2f}s = {mb / restored:.0f} MB/s")
    if not args.dir:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
