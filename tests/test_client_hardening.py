"""Issue 25, the client's half: hangs and misbehaviour found by a review and hostile probes.

Each test reproduces one defect against real shard processes (or a raw ZeroMQ socket that
plays a lying shard), with real threads, forks and signals; every wait has a timeout.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


# -- item 2: a client used after fork() says so at once, and leaves the parent's alone ----

_FORKED = r"""
import glob, json, os, sys, time
import numpy as np
import memstore


client = memstore.Client(sys.argv[1], timeout=5)
big = np.arange(1 << 18, dtype=np.float64)  # 2 MiB: over the shared-memory threshold
client.put_tensor("big", big)
kept = client.empty("kept", big.shape)  # an upload file the child must not remove
kept[...] = 1.0
pending = client.poll_tensor_async("never", 100, 50)  # in flight when the child is made
areas = sorted(glob.glob("/dev/shm/memstore-client-*-%d-*" % os.getpid()))
child = os.fork()
if child == 0:
    seen = []
    for call in (
        lambda: client.get_tensor("big"),
        lambda: client.put_tensor_async("x", big),
        lambda: client.tensor_exists("big"),
        lambda: client.empty("e", big.shape),
        lambda: pending.result(timeout=5),
    ):
        start = time.monotonic()
        try:
            call()
            seen.append("no error")
        except memstore.MemstoreError as exc:
            seen.append(f"{type(exc).__name__}: {exc} ({time.monotonic() - start:.1f}s)")
    print(json.dumps(seen), flush=True)
    del kept
    sys.exit(0)  # atexit and finalizers run, as in any child that returns normally
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    pid, status = os.waitpid(child, os.WNOHANG)
    if pid:
        break
    time.sleep(0.05)
else:
    os.kill(child, 9)
    print(json.dumps("child hung"), flush=True)
    os.waitpid(child, 0)
client.put_tensor("kept", kept)  # the parent's allocation and area are intact
assert (client.get_tensor("kept") == 1.0).all()
assert (client.get_tensor("big") == big).all()
futures = [client.put_tensor_async(f"after{i}", big[:10]) for i in range(20)]
memstore.wait(futures, timeout=10)
assert sorted(glob.glob("/dev/shm/memstore-client-*-%d-*" % os.getpid())) == areas
print(json.dumps("parent ok"), flush=True)
"""


def test_a_client_used_in_a_forked_child_raises_at_once(store, tmp_path):
    script = tmp_path / "forked.py"
    script.write_text(_FORKED)
    done = subprocess.run(
        [sys.executable, str(script), store.address],
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 0, (lines, done.stderr[-3000:])
    seen, parent = lines
    assert parent == "parent ok"
    assert len(seen) == 5, seen
    for outcome in seen:
        assert "before a fork" in outcome and "make a new Client" in outcome
        assert outcome.endswith("(0.0s)"), outcome


def _use_inherited(client, results):
    try:
        client.get_tensor("big")
        results.put("no error")
    except memstore.MemstoreError as exc:
        results.put(str(exc))


def test_multiprocessing_fork_workers_are_told_to_make_their_own_client(store):
    context = multiprocessing.get_context("fork")
    with store.client(timeout=5) as client:
        client.put_tensor("big", np.zeros(10))
        results = context.Queue()
        workers = [context.Process(target=_use_inherited, args=(client, results)) for _ in range(3)]
        for worker in workers:
            worker.start()
        try:
            got = [results.get(timeout=20) for _ in workers]
        finally:
            for worker in workers:
                worker.join(timeout=10)
                if worker.exitcode is None:
                    worker.kill()
                    worker.join(timeout=10)
        assert [worker.exitcode for worker in workers] == [0] * len(workers)
        assert all("before a fork" in text for text in got), got
        assert client.get_tensor("big").tolist() == [0.0] * 10


# -- item 3: a coalesced batch stays under the shard's --max-message -------------------------


@pytest.fixture(scope="module")
def small_messages():
    """A 1-shard store that refuses requests over 64 KiB (no shared memory: all on sockets)."""
    with memstore.LocalCluster(shards=1, shm=False, extra_args=["--max-message", "64KiB"]) as s:
        yield s


@pytest.mark.parametrize("threads", [1, 4])
def test_async_puts_under_max_message_are_not_batched_over_it(small_messages, threads):
    with small_messages.client(timeout=5) as client:
        data = np.ones(30 * 1024, dtype=np.uint8)  # 30 KiB: two fit in 64 KiB, three do not
        futures: list = []
        lock = threading.Lock()

        def submit(t):
            mine = [client.put_tensor_async(f"p{t}.{i}", data) for i in range(20)]
            with lock:
                futures.extend(mine)

        workers = [threading.Thread(target=submit, args=(t,)) for t in range(threads)]
        start = time.monotonic()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=10)
        memstore.wait(futures, timeout=10)
        errors = [f.exception(0) for f in futures if f.exception(0) is not None]
        assert errors == [] and time.monotonic() - start < 4, errors[:2]
        names = [f"p{t}.{i}" for t in range(threads) for i in range(20)]
        assert all(client.get_tensors(names[:5])[0].nbytes == data.nbytes for _ in (0,))
        assert all(client.tensor_exists(name) for name in names)


def test_a_batch_the_shard_refuses_whole_fails_its_parts_at_once(small_messages):
    with small_messages.client(timeout=5) as client:
        # As a client that was not told the limit (a shard whose hello had no max_message):
        # it builds batches over 64 KiB, and the shard refuses each as a whole.
        client._requests.max_message = 0
        data = np.ones(30 * 1024, dtype=np.uint8)
        start = time.monotonic()
        futures = [client.put_tensor_async(f"r{i}", data) for i in range(20)]
        memstore.wait(futures, timeout=10)
        assert time.monotonic() - start < 2.5  # at once, not after the 5 s timeout
        errors = [f.exception(0) for f in futures if f.exception(0) is not None]
        assert errors, "no batch was refused: the test no longer covers a refusal"
        for error in errors:
            assert isinstance(error, memstore.ProtocolError)
            assert "max-message" in str(error)  # the shard's reason
        client.put_tensor("after", data)  # the connection is still good
        assert client.get_tensor("after").nbytes == data.nbytes


# -- item 6: a signal mid-exchange never leaves a half-read socket in the pool ----------------


_INTERRUPTED = r"""
import json, logging, os, signal, sys, threading, time
import numpy as np
import memstore

malformed = []
handler = logging.Handler()
handler.emit = lambda record: "malformed" in record.getMessage() and malformed.append(1)
logging.getLogger("memstore").addHandler(handler)
client = memstore.Client(sys.argv[1], timeout=5, shm=False)
names = [f"s{i}" for i in range(8)]
client.put_tensors({name: np.full(4096, i, dtype=np.float64) for i, name in enumerate(names)})
client.get_tensors(names)  # the pool's first sockets exist before fds are counted
fds_before = len(os.listdir("/proc/self/fd"))
main, stop, go, armed = threading.get_ident(), threading.Event(), threading.Event(), [True]

def interrupter():
    go.wait(timeout=10)
    for _ in range(400):
        if stop.is_set():
            break
        signal.pthread_kill(main, signal.SIGINT)
        stop.wait(0.002)

def interrupt(signum, frame):
    if armed:
        raise KeyboardInterrupt

signal.signal(signal.SIGINT, interrupt)
thread = threading.Thread(target=interrupter, daemon=True)
thread.start()
interrupted = answered = wrong = 0
deadline = time.monotonic() + 20
while True:  # every step inside the try: a signal may land on any of them
    try:
        go.set()
        if not thread.is_alive():
            armed.clear()  # from here on a late signal raises nothing
            break
        if time.monotonic() > deadline:
            stop.set()
        got = client.get_tensors(names)
        wrong += [int(a[0]) for a in got] != list(range(8))
        answered += 1
    except KeyboardInterrupt:
        interrupted += 1
thread.join(timeout=5)
got = client.get_tensors(names)
transport = client._requests.transport
print(json.dumps({
    "interrupted": interrupted, "answered": answered, "wrong": wrong,
    "malformed": len(malformed), "fds": len(os.listdir("/proc/self/fd")) - fds_before,
    "after": [int(a[0]) for a in got], "pooled": [transport._made[0], len(transport._free[0])],
}), flush=True)
"""


def test_interrupts_during_blocking_gets_leave_no_half_read_socket(store, tmp_path):
    """SIGINT every 2 ms (400 at most) while the main thread makes blocking gets: the calls
    interrupted raise KeyboardInterrupt; no socket is pooled half-read (no "dropped a
    malformed reply"), none leaks, and the client works on. In a process of its own: a
    signal landing in pytest's own hooks would fail the test for pytest's sake."""
    script = tmp_path / "interrupted.py"
    script.write_text(_INTERRUPTED)
    done = subprocess.run(
        [sys.executable, str(script), store.address], capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["interrupted"] > 10, result
    assert result["wrong"] == 0 and result["malformed"] == 0, result
    assert result["after"] == list(range(8)), result
    assert result["fds"] < 40, result
    made, free = result["pooled"]
    assert made == free, result  # every socket made is back in the pool, none lost


# -- item 7: lists copied across shards; ghost writes; submits racing close() ----------------


def test_a_list_is_copied_and_renamed_across_shards_by_raw_keys(cluster):
    from memstore.placement import key_shard

    with cluster.client(timeout=5) as client:
        client.flush_db()
        names = [f"l{i}" for i in range(64)]
        src = names[0]
        dst = next(n for n in names if key_shard(n, 3) != key_shard(src, 3))
        client.keys.list_push(src, ["a", "b"])
        client.keys.copy(src, dst, "list")
        assert client.keys.list_range(dst, 0, -1) == ["a", "b"]
        client.keys.delete(dst)
        client.keys.rename(src, dst, "list")
        assert client.keys.list_range(dst, 0, -1) == ["a", "b"]
        assert not client.keys.exists(src)
        with pytest.raises(memstore.KeyNotFound, match="l0"):
            client.keys.copy(src, dst, "list")


def test_submits_racing_close_fail_at_once_and_leak_no_socket(store):
    import os

    with store.client(timeout=5) as warm:
        warm.put_tensor("x", np.zeros(4))
    fds_before = len(os.listdir("/proc/self/fd"))
    for _ in range(40):
        client = store.client(timeout=5)
        futures: list = []
        errors: list = []
        barrier = threading.Barrier(4, timeout=5)

        def submit(client=client, futures=futures, errors=errors, barrier=barrier):
            barrier.wait()
            for i in range(20):
                try:
                    futures.append(client.put_tensor_async(f"c{i}", np.zeros(4)))
                except memstore.ConnectionLost as exc:
                    errors.append(exc)

        threads = [threading.Thread(target=submit) for _ in range(3)]
        for thread in threads:
            thread.start()
        barrier.wait()
        client.close()
        for thread in threads:
            thread.join(timeout=10)
        start = time.monotonic()
        memstore.wait(futures, timeout=3)  # all done at once, none waits the 5 s timeout
        assert time.monotonic() - start < 1
        for error in errors + [f.exception(0) for f in futures if f.exception(0)]:
            assert isinstance(error, memstore.ConnectionLost) and "closed" in str(error)
    assert len(os.listdir("/proc/self/fd")) - fds_before < 8


def test_a_request_queued_when_its_shard_dropped_is_never_sent_after(single, monkeypatch):
    import zmq

    monkeypatch.setenv("MEMSTORE_UNIX", "0")  # ZeroMQ's reconnecting pump socket, looked into
    with single.client(timeout=5, shm=False) as client:
        entered, release = threading.Event(), threading.Event()

        def hold_the_pump(_):
            entered.set()
            release.wait(timeout=20)

        first = client.tensor_exists_async("x")
        first.add_done_callback(hold_the_pump)
        assert entered.wait(timeout=5)
        try:  # the pump is held: this put stays queued while the shard goes and comes back
            ghost = client.put_tensor_async("ghost", np.zeros(4))
            single.restart_shard(0)
            with single.client(timeout=5) as other:
                assert not other.tensor_exists("ghost")
            # the pump's socket reconnected to the new shard (read while the pump is held)
            pump_socket = client._requests.transport._pump_conns[0].socket
            assert pump_socket.poll(10_000, zmq.POLLOUT)
        finally:
            release.set()
        with pytest.raises(memstore.ConnectionLost):
            ghost.result(timeout=5)
        with single.client(timeout=5) as other:
            assert not other.tensor_exists("ghost"), "a failed put was written after all"
        client.put_tensor("after", np.zeros(4))  # and the client works on
        assert client.tensor_exists("after")


# -- item 15: a lying shard gets ProtocolError naming it, never a raw error or a foreign file --


class LyingShard:
    """A raw ROUTER on loopback that answers ``hello`` with ``self.hello`` and every other
    request with ``self.answer(header)``: a header map (its ``v`` and ``id`` filled in) and
    payload frames."""

    def __init__(self):
        import zmq

        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        port = self.socket.bind_to_random_port("tcp://127.0.0.1")
        self.address = f"tcp://127.0.0.1:{port}"
        self.hello: dict = {"shards": [self.address], "index": 0, "features": ["batch"]}
        self.answer = lambda header: ({"ok": True}, [])
        self.batch_reply: dict | None = None  # set: the envelope every batch is answered with
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        import msgpack

        while not self.stop.is_set():
            if not self.socket.poll(50):
                continue
            identity, *frames = self.socket.recv_multipart()
            header = msgpack.unpackb(frames[0])
            if header["op"] == "batch" and self.batch_reply is not None:
                envelope = {"v": 1, "id": 0, **self.batch_reply}
                self.socket.send_multipart([identity, msgpack.packb(envelope)])
                continue
            parts = [header] if header["op"] != "batch" else None
            if parts is None:  # answer each part of a batch on its own
                at, parts = 1, []
                for count in header["n"]:
                    parts.append(msgpack.unpackb(frames[at]))
                    at += count
            for part in parts:
                if part["op"] == "hello":
                    fields, payload = {"ok": True, **self.hello}, []
                else:
                    fields, payload = self.answer(part)
                reply = {"v": 1, "id": part["id"], **fields}
                try:
                    packed = msgpack.packb(reply)
                except (TypeError, ValueError, OverflowError):  # hypothesis made it too odd
                    packed = msgpack.packb({"v": 1, "id": part["id"], "ok": True})
                self.socket.send_multipart([identity, packed, *payload])

    def close(self):
        self.stop.set()
        self.thread.join(timeout=5)
        self.socket.close()
        self.context.term()


@pytest.fixture(scope="module")
def liar():
    shard = LyingShard()
    yield shard
    shard.close()


@pytest.fixture(scope="module")
def lied_to(liar):
    with memstore.Client(liar.address, timeout=2, shm=False) as client:
        yield client


def _calls(client):
    return {
        "get": lambda: client.get_tensor("k"),
        "get_async": lambda: client.get_tensor_async("k").result(timeout=5),
        "gets": lambda: client.get_tensors(["k", "l"]),
        "exists": lambda: client.tensor_exists("k"),
        "exists_async": lambda: client.tensor_exists_async("k").result(timeout=5),
        "poll": lambda: client.poll_tensor("k", 10, 1),
        "list_range": lambda: client.keys.list_range("k", 0, -1),
        "dataset": lambda: client.get_dataset("k"),
    }


_junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
_reply_fields = st.fixed_dictionaries(
    {"ok": st.sampled_from([True, True, False]) | _junk},
    optional={
        name: _junk | st.just([{"dtype": "<f8", "shape": [2]}])
        for name in ("exists", "found", "metas", "files", "shm", "dataset", "items", "code", "msg")
    },
)


def _assert_named(error, address):
    assert isinstance(error, memstore.MemstoreError), repr(error)
    if isinstance(error, memstore.ProtocolError):
        assert address in str(error), error


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    fields=_reply_fields,
    payload=st.lists(st.binary(max_size=24), max_size=3),
    call=st.sampled_from(sorted(_calls(None))),
)
def test_garbage_replies_raise_protocol_error_naming_the_shard(
    liar, lied_to, fields, payload, call
):
    liar.answer = lambda header: (fields, payload)
    try:
        _calls(lied_to)[call]()
    except Exception as exc:  # the point: which exceptions come out
        _assert_named(exc, liar.address)
        if fields["ok"] is True:  # a success reply that cannot be read
            assert isinstance(exc, memstore.ProtocolError), repr(exc)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    hello=st.fixed_dictionaries(
        {},
        optional={
            name: _junk for name in ("shards", "index", "max_message", "features", "shm", "address")
        },
    )
)
def test_a_garbage_hello_raises_protocol_error_naming_the_shard(liar, hello):
    liar.hello = hello
    try:
        memstore.Client(liar.address, timeout=2).close()
    except Exception as exc:
        _assert_named(exc, liar.address)
    finally:
        liar.hello = {"shards": [liar.address], "index": 0, "features": ["batch"]}


def _offer(directory, token="t0ken"):
    from memstore.shm import boot_id, pid_ns

    os.makedirs(directory, mode=0o700)
    with open(os.path.join(directory, "probe"), "w") as probe:
        probe.write(token)
    return {"dir": str(directory), "boot_id": boot_id(), "pidns": pid_ns(),
            "uid": os.geteuid(), "probe": token}  # fmt: skip


@pytest.mark.parametrize("where", ["outside", "symlink", "not_a_shard_dir"])
def test_a_shared_memory_offer_outside_the_root_is_refused(liar, tmp_path, where):
    from memstore.shm import root

    name = f"memstore-shard-1-{os.getpid()}-{'ab' * 16}"
    if where == "outside":  # a real shard's layout, in another directory
        offer = _offer(tmp_path / name)
    elif where == "symlink":  # in the root, but a link to a directory elsewhere
        offer = _offer(tmp_path / "elsewhere")
        link = os.path.join(root(), name)
        os.symlink(tmp_path / "elsewhere", link)
        offer["dir"] = link
    else:  # in the root, but not named as a shard's directory
        offer = _offer(os.path.join(root(), f"not-a-shard-{os.getpid()}"))
    liar.hello = {"shards": [liar.address], "index": 0, "features": ["batch", "shm"],
                  "shm": offer}  # fmt: skip
    liar.answer = lambda header: (
        {"ok": True, "metas": [{"dtype": "<f8", "shape": [4]}], "files": ["1"], "shm": offer},
        [b""],
    )
    try:
        with memstore.Client(liar.address, timeout=2, shm=True) as client:
            with pytest.raises(memstore.ProtocolError, match=liar.address):
                client.get_tensor("k")
            assert client._shm.links[0] is None
        assert not [p for p in os.listdir(tmp_path) if p.startswith("memstore-client")]
        assert not os.path.exists(os.path.join(offer["dir"], "1"))
    finally:
        liar.hello = {"shards": [liar.address], "index": 0, "features": ["batch"]}
        if where == "symlink":
            os.unlink(link)
        elif where == "not_a_shard_dir":
            shutil.rmtree(offer["dir"])


@pytest.mark.parametrize("name", ["../probe", "/etc/passwd", "a/b", "..", "", "ff/../1"])
def test_file_names_that_are_paths_are_refused(store, liar, name):
    with store.client(timeout=2) as real:  # a real shard's directory, for a real offer
        hello = real._requests.sync(
            real._requests.to_shard, 0, "hello", {}, decode=lambda h, p: h, what="hello"
        )
    offer = hello["shm"]
    if offer is None:
        pytest.skip("no shared memory here")
    liar.hello = {"shards": [liar.address], "index": 0, "features": ["batch", "shm"],
                  "shm": offer}  # fmt: skip
    liar.answer = lambda header: (
        {"ok": True, "metas": [{"dtype": "<u1", "shape": [4]}], "files": [name]},
        [b""],
    )
    try:
        with memstore.Client(liar.address, timeout=2, shm=True) as client:
            assert client._shm.links[0] is not None
            with pytest.raises(memstore.ProtocolError, match=liar.address):
                client.get_tensor("k")
    finally:
        liar.hello = {"shards": [liar.address], "index": 0, "features": ["batch"]}


@pytest.mark.parametrize(
    "envelope",
    [
        {"ok": True, "n": [3, 1]},
        {"ok": True, "n": "x"},
        {"ok": True},
        {"ok": False, "code": 7},
        {"ok": False, "code": "protocol", "msg": "too big"},
    ],
)
def test_a_bad_batch_reply_fails_its_parts_at_once(liar, lied_to, envelope):
    liar.batch_reply = envelope
    try:
        start = time.monotonic()
        futures = [lied_to.put_tensor_async(f"b{i}", np.zeros(2)) for i in range(50)]
        memstore.wait(futures, timeout=5)
        assert time.monotonic() - start < 1.5  # not after the 2 s timeout
        errors = [f.exception(0) for f in futures if f.exception(0) is not None]
        assert errors, "nothing was batched: the test no longer covers a batch reply"
        for error in errors:
            assert isinstance(error, memstore.ProtocolError), repr(error)
            assert liar.address in str(error) or "too big" in str(error)
    finally:
        liar.batch_reply = None


def test_a_submit_waiting_for_a_connection_ends_when_the_client_closes(single):
    client = single.client(timeout=5)
    client.put_tensor("x", np.zeros(2))  # the fast path only: the pump has no socket yet
    single.shards[0].process.kill()
    single.shards[0].process.wait(timeout=10)
    fds_before = len(os.listdir("/proc/self/fd"))
    outcome: list = []
    started = threading.Event()

    def submit():
        started.set()
        try:
            outcome.append(client.put_tensor_async("y", np.zeros(2)))
        except memstore.MemstoreError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=submit)
    thread.start()
    assert started.wait(timeout=5)
    time.sleep(0.3)  # let it reach the wait for a connection (shorter only weakens the test)
    closed_at = time.monotonic()
    client.close()
    thread.join(timeout=10)
    assert time.monotonic() - closed_at < 1.5, "the submit waited out its timeout"
    (error,) = outcome
    assert isinstance(error, memstore.ConnectionLost) and "closed" in str(error), error
    assert len(os.listdir("/proc/self/fd")) <= fds_before


def test_async_puts_of_many_tensors_are_not_batched_over_the_frame_cap(store):
    from memstore.config import MAX_FRAMES

    per_call = 1000  # each request: 1001 frames; 100 of them would pass the frame cap
    calls = MAX_FRAMES // per_call + 20
    with store.client(timeout=10, shm=False) as client:
        tiny = np.zeros(1, dtype=np.uint8)
        tensors = [{f"f{c}.{i}": tiny for i in range(per_call)} for c in range(calls)]
        entered, release = threading.Event(), threading.Event()

        def hold_the_pump(_):
            entered.set()
            release.wait(timeout=20)

        client.tensor_exists_async("x").add_done_callback(hold_the_pump)
        assert entered.wait(timeout=5)
        try:  # all queued while the pump is held: its next turn coalesces them
            futures = [client.put_tensors_async(batch) for batch in tensors]
        finally:
            release.set()
        start = time.monotonic()
        memstore.wait(futures, timeout=30)
        errors = [f.exception(0) for f in futures if f.exception(0) is not None]
        assert errors == [] and time.monotonic() - start < 9, errors[:1]
        assert client.tensor_exists(f"f{calls - 1}.{per_call - 1}")
