"""The same-node direct path (issue 24): a shard's Unix stream socket.

Who may connect (``SO_PEERCRED``: the shard's own user only), a shard that vanishes (seen
at once), a client that vanishes (its parked waits go), the client output limit, fork,
the fallback to ZeroMQ, and the framing of messages on a byte stream (hypothesis).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import memstore
from memstore import framing, shm, wire


@pytest.fixture
def store():
    with memstore.LocalCluster(shards=1) as running:
        yield running


def unix_path(client: memstore.Client) -> str:
    (info,) = client.get_db_node_info([client.addresses[0]])
    assert info["unix"], "the shard offers no Unix socket"
    return info["unix"]


def info(client: memstore.Client) -> dict:
    return client.get_db_node_info([client.addresses[0]])[0]


def until(condition, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.02)


def test_a_same_node_client_uses_the_unix_socket_and_zmq_when_told(store, monkeypatch):
    """The direct path is the default on one node; ``MEMSTORE_UNIX=0`` keeps ZeroMQ."""
    with store.client(timeout=10) as client:
        client.put_tensor("x", np.arange(5))
        assert client.paths() == ["unix"]
        stats = info(client)
        assert stats["clients"] >= stats["unix_clients"] >= 1  # counted among the clients
    monkeypatch.setenv("MEMSTORE_UNIX", "0")
    with store.client(timeout=10) as client:
        np.testing.assert_array_equal(client.get_tensor("x"), np.arange(5))
        assert client.paths() == ["zmq"]


def test_a_shared_memory_root_deeper_than_a_socket_address_holds(tmp_path, monkeypatch):
    """A socket path past the kernel's 107 bytes is bound and reached through its
    directory's descriptor: a deep ``MEMSTORE_SHM_DIR`` keeps the direct path."""
    root = tmp_path / ("d" * 90)
    root.mkdir(mode=0o700)
    monkeypatch.setenv("MEMSTORE_SHM_DIR", str(root))
    with memstore.LocalCluster(shards=1) as deep, deep.client(timeout=10) as client:
        client.put_tensor("x", np.arange(5))
        assert len(os.fsencode(unix_path(client))) > framing.SUN_PATH_MAX
        assert client.paths() == ["unix"]
        np.testing.assert_array_equal(client.get_tensor("x"), np.arange(5))


def test_a_shard_that_vanishes_fails_waits_at_once_naming_it(store):
    """kill -9 of the shard: a parked poll (async and blocking) fails within a moment with
    ConnectionLost naming the shard, not at the end of its wait."""
    with store.client(timeout=30) as client:
        client.put_tensor("warm", np.ones(1))
        assert client.paths() == ["unix"]
        parked = client.poll_tensor_async("never", 100, 20_000)
        errors: list = []

        def blocking_poll() -> None:
            try:
                client.poll_tensor("never-either", 100, 20_000)
            except memstore.MemstoreError as exc:
                errors.append(exc)

        thread = threading.Thread(target=blocking_poll)
        thread.start()
        until(lambda: info(client)["parked"] == 2, "both polls parked on the shard")
        started = time.monotonic()
        store.shards[0].process.kill()
        with pytest.raises(memstore.ConnectionLost, match=store.addresses[0]):
            parked.result(10)
        thread.join(10)
        assert time.monotonic() - started < 5
        assert len(errors) == 1 and isinstance(errors[0], memstore.ConnectionLost), errors
        assert store.addresses[0] in str(errors[0])


def test_a_frozen_shard_costs_the_client_one_timeout_not_a_hang(store):
    """No heartbeats on the Unix path: a ``SIGSTOP``ped shard keeps its socket open, so a
    request to it fails with ``NoAnswer`` naming it after the client's timeout; once it
    goes on, the same client is served again."""
    with store.client(timeout=1) as client:
        client.put_tensor("x", np.arange(3))
        assert client.paths() == ["unix"]
        store.shards[0].process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(memstore.NoAnswer, match=store.addresses[0]):
                client.get_tensor("x")
            assert time.monotonic() - started < 5
        finally:
            store.shards[0].process.send_signal(signal.SIGCONT)
        np.testing.assert_array_equal(client.get_tensor("x"), np.arange(3))


def test_a_killed_shards_socket_directory_is_swept(store):
    """kill -9 leaves the shard's Unix-socket directory behind; a sweep (any later shard or
    client of the user does one) removes it, as it removes a dead shard's shm area."""
    with store.client(timeout=10) as client:
        directory = os.path.dirname(unix_path(client))
    assert os.path.basename(directory).startswith("memstore-unix-")
    store.shards[0].process.kill()
    store.shards[0].process.wait(10)
    assert os.path.isdir(directory)
    assert shm.sweep(os.path.dirname(directory)) >= 1
    assert not os.path.exists(directory)


def test_a_client_that_vanishes_has_its_parked_waits_dropped(store):
    """A raw Unix client parks a wait and closes its socket: the shard drops the wait."""
    with store.client(timeout=10) as client:
        path = unix_path(client)
        with socket.socket(socket.AF_UNIX) as raw:
            raw.connect(path)
            send(raw, wire.request(1, "wait", {"key": "later", "cond": "exists", "timeout": 60}))
            until(lambda: info(client)["parked"] == 1, "the wait parked")
        until(lambda: info(client)["parked"] == 0, "the closed connection's wait dropped")


def send(sock: socket.socket, frames: list) -> None:
    views = framing.views(frames)
    framing.send_all(sock, [framing.prefix(views), *views])


def test_a_unix_client_that_never_reads_is_disconnected_at_the_output_limit():
    """Gets sent and never read pass --client-output-limit: the shard closes the Unix
    connection (and counts it) instead of holding every reply."""
    limited = memstore.LocalCluster(shards=1, extra_args=["--client-output-limit", "1MiB"])
    with limited as store, store.client(timeout=10) as client:
        client.put_tensor("big", np.zeros(64 * 1024, np.uint8))
        with socket.socket(socket.AF_UNIX) as raw:
            raw.connect(unix_path(client))
            raw.settimeout(10)
            get = wire.request(7, "get", {"keys": ["big"]})
            for _ in range(200):  # 12.5 MiB of replies, far over the kernel's buffer
                try:
                    send(raw, get)
                except OSError:  # closed by the shard already
                    break
            until(lambda: info(client)["clients_evicted"] >= 1, "the reader disconnected")
        np.testing.assert_array_equal(client.get_tensor("big")[:3], [0, 0, 0])


def test_a_forked_child_does_not_use_the_parents_unix_socket(store):
    """In a forked child every call on the parent's client raises at once; the parent's
    connection keeps working after the child exits."""
    with store.client(timeout=10) as client:
        client.put_tensor("x", np.arange(3))
        assert client.paths() == ["unix"]
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report, never return into pytest
            try:
                try:
                    client.get_tensor("x")
                    outcome = "used the parent's socket"
                except memstore.MemstoreError as exc:
                    outcome = str(exc)
                os.write(write_end, outcome.encode())
            finally:
                os._exit(0)
        os.close(write_end)
        os.waitpid(pid, 0)
        with os.fdopen(read_end, "rb") as out:
            outcome = out.read().decode()
        assert "before a fork" in outcome, outcome
        for _ in range(20):
            np.testing.assert_array_equal(client.get_tensor("x"), np.arange(3))


def test_a_restarted_shard_is_reached_again_with_no_ghost_writes():
    """A put that failed while the shard was down is never applied; after a restart the
    client finds the new shard's socket by itself."""
    with memstore.LocalCluster(shards=1) as store, store.client(timeout=5) as client:
        client.put_tensor("warm", np.ones(1))
        store.shards[0].process.kill()
        store.shards[0].process.wait(10)
        with pytest.raises(memstore.ConnectionLost):
            client.put_tensor("ghost", np.ones(1))
        with pytest.raises(memstore.ConnectionLost):
            client.put_tensor_async("ghost_async", np.ones(1)).result(10)
        store.restart_shard(0)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.put_tensor("after", np.ones(1))
                break
            except memstore.ConnectionLost:
                assert time.monotonic() < deadline, "the client did not reconnect"
                time.sleep(0.05)
        assert not client.tensor_exists("ghost") and not client.tensor_exists("ghost_async")
        client.get_tensor("after")
        assert client.paths() == ["unix"]


# -- another Unix account ----------------------------------------------------------------------


def hello_over(path: str) -> dict:
    """Connect to ``path``, send a ``hello``, and say what came back (run as another user)."""
    result: dict = {}
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(path)
            result["connected"] = True
            send(sock, wire.request(1, "hello"))
            result["answer"] = sock.recv(1 << 16).hex()
    except OSError as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    return result


def test_another_user_cannot_use_the_unix_socket(store, other_user):
    """The directory is private (0700), so another account cannot even reach the socket;
    and where it could (the directory opened up by mistake), the shard checks the peer's
    credentials and closes the connection unanswered."""
    with store.client(timeout=10) as client:
        path = unix_path(client)
        assert os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700
        assert "PermissionError" in other_user.run(lambda: hello_over(path), timeout_s=10).get(
            "error", ""
        )
        os.chmod(os.path.dirname(path), 0o777)
        os.chmod(path, 0o777)
        outcome = other_user.run(lambda: hello_over(path), timeout_s=10)
        assert outcome.get("connected") and not outcome.get("answer"), outcome
        assert info(client)["unix_refused"] == 1
        client.put_tensor("still", np.ones(2))  # the shard serves its own user as before


# -- framing ------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    messages=st.lists(
        st.lists(st.binary(max_size=3000) | st.sampled_from([b"", bytes(40_000)]),
                 min_size=1, max_size=6),
        min_size=1, max_size=8,
    ),
    chunk=st.integers(1, 70_000),
)  # fmt: skip
def test_messages_survive_any_split_of_the_stream(messages, chunk):
    """Frames come out as they went in, however the byte stream is cut into reads."""
    left, right = socket.socketpair()
    with left, right:
        stream = b"".join(
            b"".join([framing.prefix(framing.views(m)), *m]) for m in messages
        )  # fmt: skip
        reader = framing.Reader(right, 16)
        got = []
        for at in range(0, len(stream), chunk):
            left.sendall(stream[at : at + chunk])
            while True:
                try:
                    reader.fill(socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                while (message := reader.message()) is not None:
                    got.append([bytes(f) for f in message])
        assert got == messages


def test_a_message_over_the_limits_is_refused():
    left, right = socket.socketpair()
    with left, right:
        left.sendall(framing.prefix(framing.views([b"a"] * 20)))
        reader = framing.Reader(right, 16)
        reader.fill()
        with pytest.raises(memstore.ProtocolError, match="20 frames"):
            reader.message()
        left.sendall(framing.prefix(framing.views([bytes(100)])))
        reader = framing.Reader(right, 16, max_bytes=50)
        reader.fill()
        with pytest.raises(memstore.ProtocolError, match="a frame of 100 bytes"):
            reader.message()
