"""Streams (issue 22) on real shards: appends, readers, bounds, consumer groups, close,
placement, bad input, info and snapshots. Every wait has a timeout; no sleeps."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import memstore
from memstore import DataSet
from memstore.placement import key_shard

DATA_PREFIX = "\x00step\x00"


def _ops(client) -> list[int]:
    return [info["ops"] for info in client.get_db_node_info()]


def _run_threads(target, count: int, timeout: float = 60.0) -> None:
    errors: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            target(i)
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        assert not thread.is_alive(), "a worker thread did not finish"
    if errors:
        raise errors[0]


# -- 1. append, read, latest, window, wait, iter ----------------------------------------------


def test_append_read_latest_window(client):
    s = client.stream("sim", maxlen=16)
    assert s.latest() == (None, None)
    assert s.window(4) == []
    steps = [s.append(np.full(3, i, dtype=np.int32)) for i in range(5)]
    assert steps == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(s.read(2), [2, 2, 2])
    step, x = s.latest()
    assert step == 4 and x.tolist() == [4, 4, 4]
    window = s.window(3)
    assert [w[0] for w in window] == [2, 3, 4]
    assert [w[1][0] for w in window] == [2, 3, 4]
    assert [w[0] for w in s.window(100)] == [0, 1, 2, 3, 4]
    with pytest.raises(memstore.KeyNotFound, match="not appended"):
        s.read(7)


def test_items_are_tensors_dicts_and_datasets(client):
    s = client.stream("kinds", maxlen=8)
    ds = DataSet("d")
    ds.add_tensor("y", np.arange(4.0))
    ds.add_meta_string("tag", "hello")
    s.append(np.eye(2))
    s.append({"u": np.ones(3), "v": np.zeros(2, dtype=np.int64)})
    s.append(ds)
    np.testing.assert_array_equal(s.read(0), np.eye(2))
    item = s.read(1)
    assert set(item) == {"u", "v"} and item["v"].dtype == np.int64
    got = s.read(2)
    assert isinstance(got, DataSet) and got.get_meta_strings("tag") == ["hello"]
    assert [kind for kind in (type(x) for _, x in s.window(3))] == [np.ndarray, dict, DataSet]


def test_async_twins_return_futures(client):
    s = client.stream("futures", maxlen=8)
    futures = [s.append_async(np.full(2, i)) for i in range(3)]
    assert sorted(f.result(10) for f in futures) == [0, 1, 2]
    assert s.read_async(1).result(10).tolist() == [1, 1]
    assert [step for step, _ in s.window_async(2).result(10)] == [1, 2]


def test_wait_is_answered_by_the_append(client):
    s = client.stream("waited", maxlen=8)
    assert s.wait(0, timeout=0.1) is False
    waiting = s.wait_async(0, timeout=30)
    s.append(np.ones(1))
    assert waiting.result(30) is True
    assert s.wait(0, timeout=0) is True


def test_iter_waits_for_new_steps_and_ends_after_close(client):
    s = client.stream("iterated", maxlen=64)
    got: list[tuple[int, float]] = []
    reader = threading.Thread(
        target=lambda: got.extend((step, float(x[0])) for step, x in s.iter(timeout=30))
    )
    reader.start()
    for i in range(10):
        s.append(np.full(1, float(i)))
    s.close()
    reader.join(30)
    assert not reader.is_alive()
    assert got == [(i, float(i)) for i in range(10)]
    assert [step for step, _ in s.iter(start=8)] == [8, 9]


def test_concurrent_producers_get_dense_steps(client, cluster):
    s = client.stream("dense", maxlen=1000)
    per_thread, threads = 25, 4
    given: dict[int, tuple[int, int]] = {}
    lock = threading.Lock()

    def produce(t: int) -> None:
        with cluster.client(timeout=10) as mine:
            stream = mine.stream("dense")
            for i in range(per_thread):
                step = stream.append(np.array([t, i]))
                with lock:
                    assert step not in given, f"step {step} given twice"
                    given[step] = (t, i)

    _run_threads(produce, threads)
    assert sorted(given) == list(range(per_thread * threads))  # none twice, none skipped
    for step, x in s.window(per_thread * threads):
        assert tuple(x.tolist()) == given[step]
    # each producer's own appends are numbered in the order it made them
    for t in range(threads):
        mine = [step for step, (tt, _) in sorted(given.items()) if tt == t]
        assert [given[step][1] for step in mine] == list(range(per_thread))


def test_window_is_one_request_home_and_one_per_shard(client):
    s = client.stream("win", maxlen=64)
    for i in range(30):
        s.append(np.full(4, i))
    home = key_shard("win", len(client.addresses))
    before = _ops(client)
    window = s.window(30)
    after = _ops(client)
    assert [step for step, _ in window] == list(range(30))
    # less each shard's own info; 30 steps hold data on all 3 shards but with p ~ 1e-5
    extra = [a - b - 1 for a, b in zip(after, before, strict=True)]
    assert extra == [2 if i == home else 1 for i in range(3)]
