"""Issue 25, the client's half: hangs and misbehaviour found by a review and hostile probes.

Each test reproduces one defect against real shard processes (or a raw ZeroMQ socket that
plays a lying shard), with real threads, forks and signals; every wait has a timeout.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import memstore


@pytest.fixture(scope="module")
def store():
    """A 1-shard store shared by the tests of this module that do not break it."""
    with memstore.LocalCluster(shards=1) as running:
        yield running


# -- item 1: cancel() runs callbacks with no lock held ----------------------------------------


@pytest.mark.parametrize("cancellers", [1, 4])
def test_a_callback_of_a_cancelled_future_may_block_on_the_same_client(store, cancellers):
    with store.client(timeout=2) as client:
        future = client.poll_tensor_async("never", 100, 3)
        called = threading.Event()
        outcome: list = []

        def blocking_callback(_):
            called.set()
            try:
                outcome.append(client.poll_tensor("never2", 100, 5))
            except Exception as exc:  # recorded for the assert below
                outcome.append(exc)

        future.add_done_callback(blocking_callback)
        barrier = threading.Barrier(cancellers, timeout=5)
        answers: list = []

        def cancel():
            barrier.wait()
            answers.append(future.cancel())

        threads = [threading.Thread(target=cancel, daemon=True) for _ in range(cancellers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=6)
        assert called.is_set() and not any(t.is_alive() for t in threads), "cancel() deadlocked"
        assert answers == [True] * cancellers
        assert outcome == [False]  # the callback ran once, and its blocking call was answered
        assert future.cancelled()
        client.put_tensor("after", np.zeros(3))
        assert client.get_tensor("after").tolist() == [0.0, 0.0, 0.0]
