"""The client transport under threads, cancels, dropped clients and dead shards.

One regression test per defect of the transport issue, each against real shard processes,
then property tests that interleave submits, waits and cancels from several threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import os
import socket as pysocket
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import memstore
from memstore.config import client_sockets
from memstore.deploy.local import start_shards
from memstore.deploy.processes import stop_processes


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- threads ---------------------------------------------------------------------------------


def test_a_thread_waiting_on_another_threads_future_does_not_block_it(client):
    """While a watcher thread waits on the main thread's parked wait, the main thread's own
    unrelated calls go through at once (they used to block for the whole wait)."""
    waiting = client.wait_tensor_async("never", timeout=3)
    watcher = threading.Thread(target=waiting.exception, args=(20,))
    watcher.start()
    try:
        for i in range(20):
            client.put_tensor(f"w{i}", np.arange(i))
            np.testing.assert_array_equal(client.get_tensor(f"w{i}"), np.arange(i))
        assert not waiting.done()  # all twenty round trips happened inside the wait
    finally:
        watcher.join(timeout=30)
    assert isinstance(waiting.exception(0), memstore.Timeout)


def test_two_threads_waiting_on_each_others_chained_futures_do_not_deadlock(client):
    """Chained calls (append_to_list: a put, then a push) made in one thread and waited on
    in another, both ways at once, complete."""
    made: dict[str, list] = {}
    ready = threading.Barrier(2, timeout=20)
    results: dict[str, list] = {}

    def work(me: str, other: str) -> None:
        dataset = memstore.DataSet(f"ds_{me}")
        dataset.add_tensor("t", np.arange(3))
        made[me] = [client.append_to_list_async(f"list_{me}", dataset) for _ in range(50)]
        ready.wait()
        results[me] = [f.result(timeout=30) for f in made[other]]

    threads = [threading.Thread(target=work, args=p) for p in (("a", "b"), ("b", "a"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert sorted(results["a"]) == sorted(results["b"]) == list(range(1, 51))


@pytest.mark.every_path
def test_more_threads_than_sockets_share_one_client_with_bounded_sockets(client):
    """More threads at once than the fast-path pool each read back what they wrote,
    and the client never holds more than its fixed sockets per shard."""
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(40):
                client.put_tensor(f"t{t}.{i}", np.array([t, i]))
                np.testing.assert_array_equal(client.get_tensor(f"t{t}.{i}"), [t, i])
                futures = [client.get_tensor_async(f"t{t}.{j}") for j in range(i + 1)]
                assert [f.result(10)[1] for f in futures] == list(range(i + 1))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(client_sockets() + 4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert all(made <= client_sockets() for made in client._requests.transport._made)


@pytest.mark.every_path
def test_short_lived_threads_do_not_leak_sockets(client):
    """Sockets are per client and shard, not per thread: 60 threads that each make one call
    leave the process's descriptor count where a handful of threads leave it."""

    def burst(n: int) -> None:
        for i in range(n):
            thread = threading.Thread(target=client.tensor_exists, args=(f"x{i}",))
            thread.start()
            thread.join(timeout=10)

    burst(5)
    before = open_fds()
    burst(60)
    assert open_fds() - before <= 4  # was 5 descriptors per thread and shard


# -- futures ---------------------------------------------------------------------------------


@pytest.mark.every_path
def test_cancel_really_cancels_and_the_late_reply_breaks_nothing(client):
    """A cancelled wait's answer, when it comes, is dropped: the next calls work."""
    waiting = client.wait_tensor_async("later", timeout=10)
    assert waiting.cancel() and waiting.cancelled()
    with pytest.raises(concurrent.futures.CancelledError):
        waiting.result(0)
    client.put_tensor("later", np.ones(2))  # the shard now answers the cancelled wait
    for _ in range(20):
        assert client.tensor_exists("later") is True
    done = client.put_tensor_async("d", np.ones(1))
    done.result(10)
    assert done.cancel() is False  # too late: it is answered


def test_futures_progress_without_being_driven(client):
    """concurrent.futures.wait / as_completed and result(0) after them need no driving."""
    puts = [client.put_tensor_async(f"p{i}", np.full(3, i)) for i in range(100)]
    _done, not_done = concurrent.futures.wait(puts, timeout=30)
    assert not not_done and all(f.result(0) is None for f in puts)
    gets = {client.get_tensor_async(f"p{i}"): i for i in range(100)}
    seen = [gets[f] for f in concurrent.futures.as_completed(gets, timeout=30)]
    assert sorted(seen) == list(range(100))
    assert all(f.result(0)[0] == i for f, i in gets.items())


def test_asyncio_can_await_a_future(client):
    """asyncio.wrap_future turns a memstore future into an awaitable."""

    async def main():
        await asyncio.wrap_future(client.put_tensor_async("aio", np.arange(4)))
        return await asyncio.wrap_future(client.get_tensor_async("aio"))

    np.testing.assert_array_equal(asyncio.run(main()), np.arange(4))


def test_a_blocking_call_inside_a_done_callback_completes(client):
    """Callbacks run on the pump thread; a blocking call made there still gets its answer."""
    client.put_tensor("cb", np.arange(2))
    got: list = []
    finished = threading.Event()

    def callback(_):
        got.append(client.get_tensor("cb"))
        got.append(client.get_tensors(["cb", "cb"]))
        finished.set()

    client.put_tensor_async("other", np.ones(1)).add_done_callback(callback)
    assert finished.wait(30)
    np.testing.assert_array_equal(got[0], np.arange(2))
    assert len(got[1]) == 2


@pytest.mark.every_path
def test_pipelined_requests_are_coalesced_in_order(client):
    """A window of async puts and gets of one key travels in a few batch messages, and each
    get sees the put before it."""

    def counts():
        infos = client.get_db_node_info()
        return sum(i["ops"] for i in infos), sum(i["messages"] for i in infos)

    ops_before, messages_before = counts()
    futures = []
    for i in range(300):
        futures.append(client.put_tensor_async("seq", np.array([i])))
        futures.append(client.get_tensor_async("seq"))
    memstore.wait(futures, timeout=30)
    assert [f.result(0)[0] for f in futures[1::2]] == list(range(300))
    ops_after, messages_after = counts()
    assert ops_after - ops_before == 600 + 3  # each request counted once (the info call: +3)
    assert messages_after - messages_before < 600 / 2  # coalesced: was one message each


@pytest.mark.every_path
def test_a_failing_request_in_a_batch_fails_alone(client):
    futures = [client.put_tensor_async(f"b{i}", np.ones(1)) for i in range(10)]
    bad = client.get_tensor_async("missing")
    futures += [client.get_tensor_async(f"b{i}") for i in range(10)]
    memstore.wait([*futures, bad], timeout=30)
    assert isinstance(bad.exception(0), memstore.KeyNotFound)
    assert all(f.exception(0) is None for f in futures)


# -- dropped clients -------------------------------------------------------------------------


@pytest.mark.every_path
def test_clients_dropped_without_close_release_their_sockets(cluster):
    """Twenty clients made, used and dropped without close(): new clients keep working
    (the seventh used to fail with 'Address already in use') and descriptors come back."""

    def use_and_drop(i: int) -> None:
        client = memstore.Client(cluster.address, timeout=10)
        client.put_tensor(f"drop{i}", np.ones(2))
        client.get_tensor_async(f"drop{i}").result(10)  # the pump thread too

    use_and_drop(0)
    gc.collect()
    before = open_fds()
    for i in range(1, 21):
        use_and_drop(i)
    gc.collect()
    assert open_fds() - before <= 4
    with memstore.Client(cluster.address, timeout=10) as client:
        assert all(client.tensor_exists(f"drop{i}") for i in range(21))


def test_a_future_outlives_its_dropped_client(cluster):
    """Dropping the client does not fail what it already sent: the future completes."""
    future = memstore.Client(cluster.address, timeout=10).poll_tensor_async("late", 100, 50)
    gc.collect()
    with memstore.Client(cluster.address, timeout=10) as other:
        other.put_tensor("late", np.ones(1))
    assert future.result(10) is True


# -- dead shards -----------------------------------------------------------------------------


def free_port() -> int:
    with pysocket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def restartable():
    """One shard on a fixed port, which the test may kill and start again there."""
    port = free_port()
    shards = start_shards(1, port=port)
    running = {"shards": shards, "port": port}
    yield running
    stop_processes(running["shards"])


def kill(running: dict) -> None:
    for shard in running["shards"]:
        shard.process.kill()
        shard.process.wait(timeout=10)


def restart(running: dict) -> None:
    running["shards"] = start_shards(1, port=running["port"])


def test_a_dead_shard_fails_fast_and_recovers_at_the_same_address(restartable):
    """After kill -9, every request for the shard raises ConnectionLost at once (it used to
    wait the whole timeout each); after a restart the same client works again."""
    address = restartable["shards"][0].address
    with memstore.Client(address, timeout=4) as client:
        client.put_tensor("x", np.ones(1))
        kill(restartable)
        started = time.monotonic()
        for _ in range(10):
            for call in (lambda: client.get_tensor("x"), lambda: client.tensor_exists("x")):
                with pytest.raises(memstore.ConnectionLost, match=address):
                    call()
        assert time.monotonic() - started < 4  # twenty failures inside one client timeout
        restart(restartable)
        deadline = time.monotonic() + 20
        while True:  # the client reconnects by itself (20 ms, backing off to 1 s)
            try:
                client.put_tensor("x", np.full(1, 2))
                break
            except memstore.ConnectionLost:
                assert time.monotonic() < deadline, "the client did not reconnect"
                time.sleep(0.05)
        np.testing.assert_array_equal(client.get_tensor("x"), [2])


def test_writes_that_raised_are_never_applied_later(restartable):
    """No ghost writes: puts that raised ConnectionLost while the shard was down do not
    appear when a shard listens at that address again."""
    address = restartable["shards"][0].address
    with memstore.Client(address, timeout=3) as client:
        client.put_tensor("warm", np.ones(1))
        kill(restartable)
        for i in range(3):
            with pytest.raises(memstore.ConnectionLost):
                client.put_tensor(f"ghost{i}", np.ones(1))
        with pytest.raises(memstore.ConnectionLost):
            client.put_tensor_async("ghost_async", np.ones(1)).result(10)
        restart(restartable)
    with memstore.Client(address, timeout=10) as fresh:
        assert not any(fresh.tensor_exists(f"ghost{i}") for i in range(3))
        assert not fresh.tensor_exists("ghost_async")


def test_kill_and_restart_under_load_from_four_threads(restartable):
    """Four threads put and get while the shard is killed and restarted: every call either
    succeeds with the right value or raises ConnectionLost, none hangs, and all four are
    served again after the restart."""
    address = restartable["shards"][0].address
    client = memstore.Client(address, timeout=3)
    stop = threading.Event()
    after_restart = threading.Event()
    outcomes: dict[int, dict] = {
        t: {"ok": 0, "lost": 0, "ok_after": 0, "bad": []} for t in range(4)
    }

    def load(t: int) -> None:
        mine = outcomes[t]
        for i in range(100_000):
            if stop.is_set():
                return
            try:
                client.put_tensor(f"l{t}", np.array([i]))
                value = client.get_tensor(f"l{t}")[0]
                if value != i:
                    mine["bad"].append((i, value))
                mine["ok"] += 1
                mine["ok_after"] += after_restart.is_set()
            except memstore.ConnectionLost:
                mine["lost"] += 1
                time.sleep(0.01)
            except BaseException as exc:
                mine["bad"].append(exc)

    threads = [threading.Thread(target=load, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 30
        while min(o["ok"] for o in outcomes.values()) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        kill(restartable)
        time.sleep(0.5)  # let the threads run into the dead shard
        restart(restartable)
        after_restart.set()
        deadline = time.monotonic() + 30
        while min(o["ok_after"] for o in outcomes.values()) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        client.close()
    assert not any(t.is_alive() for t in threads)
    for mine in outcomes.values():
        assert mine["bad"] == []
        assert mine["lost"] >= 1 and mine["ok_after"] >= 20


# -- interleavings (hypothesis stateful) -----------------------------------------------------

THREADS = 3


class Interleavings(RuleBasedStateMachine):
    """Async puts/gets, cancels and short parked waits issued from three threads in any
    order against a real shard: no deadlock, no lost or duplicated reply, per-key order
    kept. Each thread owns its keys, so what a get must see is known exactly."""

    cluster: memstore.LocalCluster

    def __init__(self):
        super().__init__()
        self.client = memstore.Client(self.cluster.address, timeout=20)
        self.client.flush_db()
        self.workers = [concurrent.futures.ThreadPoolExecutor(1) for _ in range(THREADS)]
        self.last: dict[str, int] = {}  # key -> value of the latest put issued
        self.gets: list = []  # (future, key, expected value or None for missing)
        self.cancels: list = []  # (future, cancel() returned)
        self.waits: list = []
        self.puts: list = []
        self.counter = 0

    def on(self, thread: int, fn):
        return self.workers[thread].submit(fn).result(timeout=30)

    @rule(thread=st.integers(0, THREADS - 1), slot=st.integers(0, 2), sync=st.booleans())
    def put(self, thread, slot, sync):
        key = f"t{thread}.k{slot}"
        self.counter += 1
        value = self.counter
        if sync:
            self.on(thread, lambda: self.client.put_tensor(key, np.array([value])))
        else:
            self.puts.append(
                self.on(thread, lambda: self.client.put_tensor_async(key, np.array([value])))
            )
        self.last[key] = value

    @rule(thread=st.integers(0, THREADS - 1), slot=st.integers(0, 2), sync=st.booleans())
    def get(self, thread, slot, sync):
        key = f"t{thread}.k{slot}"
        expected = self.last.get(key)
        if sync and expected is not None:
            assert self.on(thread, lambda: self.client.get_tensor(key))[0] == expected
        else:
            self.gets.append((self.on(thread, lambda: self.client.get_tensor_async(key)), key,
                              expected))  # fmt: skip

    @rule(thread=st.integers(0, THREADS - 1), seconds=st.sampled_from([0.0, 0.05, 0.3]))
    def park(self, thread, seconds):
        self.waits.append(
            self.on(thread, lambda: self.client.wait_tensor_async("nobody", timeout=seconds))
        )

    @precondition(lambda self: self.gets or self.waits)
    @rule(thread=st.integers(0, THREADS - 1), pick=st.integers(0, 1000))
    def cancel(self, thread, pick):
        pool = (self.gets and [g[0] for g in self.gets]) or self.waits
        future = pool[pick % len(pool)]
        self.cancels.append((future, self.on(thread, future.cancel)))

    @rule()
    def settle(self):
        pending = [g[0] for g in self.gets] + self.waits + self.puts
        _done, not_done = concurrent.futures.wait(pending, timeout=60)
        assert not not_done, "a reply was lost"
        for future, key, expected in self.gets:
            if future.cancelled():
                continue
            if expected is None:
                assert isinstance(future.exception(0), memstore.KeyNotFound)
            else:
                assert future.result(0)[0] == expected, key
        for future in self.waits:
            assert future.cancelled() or isinstance(future.exception(0), memstore.Timeout)
        for future, said in self.cancels:
            assert future.cancelled() == said
        assert all(f.exception(0) is None for f in self.puts)
        self.gets, self.waits, self.cancels, self.puts = [], [], [], []

    @invariant()
    def nothing_answered_stays_in_the_books(self):
        """Only unanswered requests are pending (cancelled ones until their answer comes)."""
        pending = list(self.client._requests.transport._pending.values())
        assert all(r.cancelled() or not r.done() for r in pending)

    def teardown(self):
        try:
            self.settle()
        finally:
            for worker in self.workers:
                worker.shutdown(wait=True)
            self.client.close()


@pytest.fixture(scope="module")
def interleaving_cluster():
    with memstore.LocalCluster(shards=2) as running:
        yield running


def test_interleavings_from_threads(interleaving_cluster):
    Interleavings.cluster = interleaving_cluster
    run = Interleavings.TestCase
    run.settings = settings(
        max_examples=15,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    run().runTest()


@pytest.mark.every_path
def test_close_fails_a_blocking_wait_in_another_thread(cluster):
    """close() ends another thread's blocking call on the fast path with ConnectionLost,
    well before that call's own 60 s wait would end."""
    client = cluster.client(timeout=10)
    outcome: list = []

    def wait() -> None:
        try:
            client.wait_tensor("never", timeout=60)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=wait)
    thread.start()
    with cluster.client(timeout=10) as watcher:  # until the wait is parked on its shard
        deadline = time.monotonic() + 20
        while sum(i["parked"] for i in watcher.get_db_node_info()) == 0:
            assert time.monotonic() < deadline, "the wait never reached its shard"
            time.sleep(0.01)
    client.close()
    thread.join(timeout=20)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], memstore.ConnectionLost)


def test_answered_requests_do_not_pile_up_in_the_deadline_heap(client):
    """A long pipeline with a long timeout keeps the pump's books proportional to what is
    in flight, not to everything ever sent."""
    for _ in range(10):
        memstore.wait([client.put_tensor_async(f"h{i}", np.ones(1)) for i in range(1000)], 30)
    client.put_tensor_async("last", np.ones(1)).result(10)
    assert len(client._requests.transport._deadlines) <= 2 * 1000 + 1024


def test_async_requests_beyond_the_inflight_cap_wait_for_room(cluster, monkeypatch):
    """MEMSTORE_CLIENT_MAX_INFLIGHT bounds what one client has unanswered: with 4 waits
    parked, a 5th submit waits for room, raises Timeout at the client's timeout without
    sending anything, and goes as soon as an answer makes room. (It used to be queued at
    once, however many were in flight.)"""
    monkeypatch.setenv("MEMSTORE_CLIENT_MAX_INFLIGHT", "4")
    with cluster.client(timeout=1) as capped, cluster.client(timeout=10) as other:
        other.flush_db()
        waits = [capped.wait_tensor_async("gate", timeout=60) for _ in range(4)]
        started = time.monotonic()
        with pytest.raises(memstore.Timeout, match="MEMSTORE_CLIENT_MAX_INFLIGHT=4"):
            capped.put_tensor_async("more", np.ones(1))
        assert 0.9 < time.monotonic() - started < 5
        assert not other.tensor_exists("more")  # nothing was sent
        other.put_tensor("gate", np.ones(1))
        assert all(w.result(10)[0] == 1 for w in waits)

    with cluster.client(timeout=30) as capped, cluster.client(timeout=10) as other:
        waits = [capped.wait_tensor_async("gate2", timeout=60) for _ in range(4)]
        sent: dict = {}
        submitter = threading.Thread(
            target=lambda: sent.update(f=capped.put_tensor_async("more", np.full(1, 5)))
        )
        submitter.start()
        submitter.join(0.5)
        assert submitter.is_alive()  # waiting for room, not queued
        other.put_tensor("gate2", np.ones(1))
        submitter.join(10)
        assert not submitter.is_alive()
        sent["f"].result(10)
        assert all(w.result(10)[0] == 1 for w in waits)
        np.testing.assert_array_equal(other.get_tensor("more"), [5])


def test_a_callback_on_the_pump_may_go_over_the_inflight_cap(cluster, monkeypatch):
    """Only the pump makes room, so submits from its callbacks are exempt (no deadlock)."""
    monkeypatch.setenv("MEMSTORE_CLIENT_MAX_INFLIGHT", "1")
    with cluster.client(timeout=10) as capped:
        done: dict = {}
        finished = threading.Event()

        def more(_):
            try:
                futures = [capped.put_tensor_async(f"cb{i}", np.full(1, i)) for i in range(3)]
                done["n"] = sum(f.result(10) is None for f in futures)
            finally:
                finished.set()

        capped.put_tensor_async("first", np.ones(1)).add_done_callback(more)
        assert finished.wait(30)
        assert done["n"] == 3
        np.testing.assert_array_equal(capped.get_tensor("cb2"), [2])
