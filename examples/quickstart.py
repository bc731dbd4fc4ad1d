"""Quick start: a producer streams snapshots, a consumer waits for and reads each one.

Run with ``make demo`` (or ``python examples/quickstart.py``). It starts a 2-shard store
on this machine, so nothing else is needed.
"""

from __future__ import annotations

import threading
import time

import numpy as np

import memstore

STEPS = 20


def producer(client: memstore.Client) -> None:
    field = np.zeros((256, 256), dtype=np.float32)
    pending = []
    for step in range(STEPS):
        field += np.random.default_rng(step).standard_normal(field.shape, dtype=np.float32)
        pending.append(client.put_tensor_async(f"field_{step}", field.copy()))  # non-blocking
        snapshot = memstore.DataSet(f"snapshot_{step}")
        snapshot.add_tensor("field", field.copy())
        snapshot.add_meta_scalar("step", step)
        client.append_to_list("snapshots", snapshot)
    memstore.wait(pending, timeout=30)


def consumer(client: memstore.Client) -> None:
    for step in range(STEPS):
        field = client.wait_tensor(f"field_{step}", timeout=30)  # the shard wakes us
        print(f"consumer: step {step:2d} mean {field.mean():+.3f} std {field.std():.3f}")
    assert client.poll_list_length("snapshots", STEPS, poll_frequency_ms=100, num_tries=300)
    datasets = client.get_datasets_from_list("snapshots")
    steps = [int(ds.get_meta_scalars("step")[0]) for ds in datasets]
    print(f"consumer: list 'snapshots' holds steps {steps[0]}..{steps[-1]} ({len(steps)})")


def main() -> None:
    started = time.perf_counter()
    with memstore.LocalCluster(shards=2) as cluster:
        print(f"store: {cluster.address}")
        with cluster.client() as reader, cluster.client() as writer:
            thread = threading.Thread(target=consumer, args=(reader,))
            thread.start()
            producer(writer)
            thread.join(timeout=60)
            for info in writer.get_db_node_info():
                print(f"shard {info['address']}: {info['keys']} keys, {info['bytes']} bytes")
    print(f"done in {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
