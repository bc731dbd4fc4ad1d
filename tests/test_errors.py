"""Every error the issue lists, caused for real: malformed frames sent raw to a shard, a full
store, an oversized message, a killed shard, missing addresses; and the error classes."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import memstore
from memstore import errors, wire
from memstore.placement import key_shard

V = wire.VERSION
F4 = {"dtype": "<f4", "shape": [4], "order": "C"}


def pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def req(op: str, req_id: int = 9, **fields) -> bytes:
    return pack({"v": V, "id": req_id, "op": op, **fields})


@pytest.fixture(scope="module")
def shard():
    """One shard, for raw-socket abuse."""
    with memstore.LocalCluster(shards=1) as running:
        yield running


@pytest.fixture
def guarded(shard):
    """A client of ``shard`` that stored a tensor before the test; the test must leave the
    shard serving and that tensor intact."""
    with shard.client(timeout=10) as client:
        client.flush_db()
        client.put_tensor("precious", np.arange(5, dtype=np.float64))
        yield client
        np.testing.assert_array_equal(client.get_tensor("precious"), np.arange(5))
        client.put_tensor("after", np.ones(2))
        assert client.tensor_exists("after")


@pytest.fixture
def raw(shard):
    """A bare DEALER socket connected to ``shard``."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(shard.addresses[0])
    yield sock
    sock.close()


def ask(sock, frames: list, timeout_s: float = 10.0) -> tuple[dict, list]:
    """Send raw frames, return the decoded reply header and its payload frames."""
    sock.send_multipart(frames)
    assert sock.poll(int(timeout_s * 1000)), "the shard did not answer"
    header, *payload = sock.recv_multipart()
    return msgpack.unpackb(header), payload


MALFORMED = {
    "garbage-bytes": [b"\xc1\xff garbage"],
    "empty-frame": [b""],
    "not-a-map": [pack([V, 9, "get"])],
    "wrong-version": [pack({"v": V + 1, "id": 9, "op": "get", "keys": ["k"]})],
    "bool-version": [pack({"v": True, "id": 9, "op": "get", "keys": ["k"]})],
    "no-id": [pack({"v": V, "op": "get", "keys": ["k"]})],
    "no-op": [pack({"v": V, "id": 9, "keys": ["k"]})],
    "op-not-str": [pack({"v": V, "id": 9, "op": 5})],
    "unknown-op": [req("frobnicate")],
    "put-short-payload": [req("put", keys=["k"], metas=[F4]), b"\0" * 15],
    "put-long-payload": [req("put", keys=["k"], metas=[F4]), b"\0" * 17],
    "put-object-dtype": [req("put", keys=["k"], metas=[{**F4, "dtype": "|O"}]), b"\0" * 32],
    "put-unknown-dtype": [req("put", keys=["k"], metas=[{**F4, "dtype": "nope"}]), b"\0" * 16],
    "put-str-dtype": [req("put", keys=["k"], metas=[{**F4, "dtype": "<U1"}]), b"\0" * 16],
    "put-bad-shape": [req("put", keys=["k"], metas=[{**F4, "shape": [-4]}]), b"\0" * 16],
    "put-bad-order": [req("put", keys=["k"], metas=[{**F4, "order": "K"}]), b"\0" * 16],
    "put-overflowing-shape": [
        req("put", keys=["k"], metas=[{**F4, "shape": [2**32, 2**32]}]),
        b"",
    ],
    "put-meta-not-map": [req("put", keys=["k"], metas=["f4"]), b"\0" * 16],
    "put-no-keys": [req("put", metas=[F4]), b"\0" * 16],
    "put-no-metas": [req("put", keys=["k"]), b"\0" * 16],
    "put-no-payload": [req("put", keys=["k"], metas=[F4])],
    "put-more-keys-than-frames": [req("put", keys=["k", "j"], metas=[F4, F4]), b"\0" * 16],
    "put-keys-not-list": [req("put", keys="k", metas=[F4]), b"\0" * 16],
    "put-key-not-str": [req("put", keys=[7], metas=[F4]), b"\0" * 16],
    "put-empty-key": [req("put", keys=[""], metas=[F4]), b"\0" * 16],
    "put-huge-key": [req("put", keys=["k" * 70_000], metas=[F4]), b"\0" * 16],
    "get-no-keys": [req("get")],
    "get-key-not-str": [req("get", keys=[b"k"])],
    "delete-no-key": [req("delete", kind="tensor")],
    "delete-unknown-kind": [req("delete", key="k", kind="blob")],
    "exists-key-list": [req("exists", key=["k"], kind=None)],
    "copy-no-dst": [req("copy", src="precious", kind="tensor")],
    "wait-no-timeout": [req("wait", key="k", kind="tensor")],
    "wait-negative-timeout": [req("wait", key="k", kind="tensor", timeout=-1)],
    "wait-str-timeout": [req("wait", key="k", kind="tensor", timeout="1")],
    "wait-nan-timeout": [req("wait", key="k", kind="tensor", timeout=float("nan"))],
    "wait-inf-timeout": [req("wait", key="k", kind="tensor", timeout=float("inf"))],
    "wait-unknown-cond": [req("wait", key="k", kind="list", cond="len_ne", timeout=1)],
    "wait-cond-not-str": [req("wait", key="k", kind="list", cond=["len_eq"], timeout=1)],
    "wait-n-not-int": [req("wait", key="k", kind="list", cond="len_eq", n="3", timeout=1)],
    "list-push-not-strs": [req("list_push", key="l", items=[1, 2])],
    "list-push-no-items": [req("list_push", key="l")],
    "list-set-not-strs": [req("list_set", key="l", items=[None])],
    "list-range-float": [req("list_range", key="l", start=0.5, end=1)],
    "dataset-not-map": [req("put_dataset", key="ds", dataset=[1])],
    "dataset-frames-mismatch": [req("put_dataset", key="ds", dataset={"tensors": []}), b"x"],
    "dataset-tensor-no-name": [
        req("put_dataset", key="ds", dataset={"tensors": [{"meta": F4}]}),
        b"\0" * 16,
    ],
    "dataset-tensor-bad-size": [
        req("put_dataset", key="ds", dataset={"tensors": [{"name": "u", "meta": F4}]}),
        b"\0" * 3,
    ],
    "cluster-bad-index": [req("cluster", shards=["tcp://127.0.0.1:1"], index=5)],
    "cluster-not-addresses": [req("cluster", shards=[1, 2], index=0)],
}


@pytest.mark.parametrize("frames", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_request_gets_protocol_error_and_shard_keeps_serving(raw, guarded, frames):
    """A malformed request is answered with code "protocol" (with its id when it has one);
    the shard keeps serving and nothing stored is lost or created."""
    header, payload = ask(raw, frames)
    assert header["ok"] is False, header
    assert header["code"] == "protocol", header
    assert header["msg"]
    assert payload == []
    if header["id"] != -1:
        assert header["id"] == 9
    assert isinstance(errors.from_wire(header["code"], header["msg"]), memstore.ProtocolError)
    for key in ("k", "j", "ds", "l"):
        assert not guarded.key_exists(key)
    assert guarded.get_db_node_info()[0]["keys"] == 1


def test_unknown_op_is_named_and_keeps_the_request_id(raw, guarded):
    """The error for an unknown op names the op and answers the request's own id."""
    header, _ = ask(raw, [req("frobnicate", req_id=123456)])
    assert header["id"] == 123456 and "frobnicate" in header["msg"]


def test_size_mismatch_message_names_key_and_sizes(raw, guarded):
    """A wrong payload size is explained: key, dtype, shape, expected and actual bytes."""
    header, _ = ask(raw, [req("put", keys=["snap"], metas=[F4]), b"\0" * 15])
    assert all(text in header["msg"] for text in ("snap", "<f4", "16", "15"))


def test_a_burst_of_bad_requests_then_a_good_one(raw, guarded):
    """Every malformed request in a burst is answered, then a valid one on the same socket."""
    for frames in MALFORMED.values():
        raw.send_multipart(frames)
    raw.send_multipart([req("exists", req_id=77, key="precious", kind="tensor")])
    replies = []
    while len(replies) < len(MALFORMED) + 1:
        assert raw.poll(10_000), f"only {len(replies)} answers"
        replies.append(msgpack.unpackb(raw.recv_multipart()[0]))
    assert all(r["code"] == "protocol" for r in replies[:-1])
    assert replies[-1] == {"v": V, "id": 77, "ok": True, "exists": True}


def test_a_valid_raw_put_and_get(raw, guarded):
    """The raw frames the tests above spoil do work when well formed (the tests test
    the error, not a typo)."""
    data = np.arange(4, dtype="<f4")
    header, _ = ask(raw, [req("put", keys=["k"], metas=[F4]), data.tobytes()])
    assert header["ok"] is True
    header, payload = ask(raw, [req("get", keys=["k"])])
    assert header["metas"] == [F4]
    np.testing.assert_array_equal(np.frombuffer(payload[0], "<f4"), data)
    guarded.delete_tensor("k")


def test_a_bug_in_a_handler_is_remote_error_and_shard_keeps_serving(raw, guarded):
    """A request that trips an unexpected exception is answered (remote error), not fatal."""
    # list_range on a dataset entry: WrongType is the expected answer here, not a crash.
    guarded.put_dataset(memstore.DataSet("ds"))
    header, _ = ask(raw, [req("list_range", key="ds", start=0, end=-1)])
    assert header["ok"] is False and header["code"] in ("wrong_type", "remote")
    guarded.delete_dataset("ds")


# -- full store, oversized messages ----------------------------------------------------------


@pytest.fixture(scope="module")
def limited():
    """One shard with a 1 MiB store and a 700 KiB message limit."""
    with memstore.LocalCluster(
        shards=1, max_memory="1MiB", extra_args=["--max-message", "700KiB"]
    ) as running:
        yield running


@pytest.fixture
def small(limited):
    with limited.client(timeout=10) as client:
        client.flush_db()
        yield client


def kib(n: int) -> np.ndarray:
    return np.ones(n * 1024, dtype=np.uint8)


def test_store_full_refuses_and_loses_nothing(small):
    """A put past --max-memory raises StoreFull naming the key; what is stored stays."""
    small.put_tensor("a", kib(600))
    used = small.get_db_node_info()[0]["bytes"]
    with pytest.raises(memstore.StoreFull, match="'b'") as info:
        small.put_tensor("b", kib(600))
    assert isinstance(info.value, MemoryError)
    assert not small.tensor_exists("b")
    np.testing.assert_array_equal(small.get_tensor("a"), kib(600))
    assert small.get_db_node_info()[0]["bytes"] == used
    small.put_tensor("c", kib(100))  # still serving, room left is still usable
    small.put_tensor("a", kib(300))  # a smaller replacement frees room
    small.put_tensor("b", kib(500))


def test_store_full_refuses_a_batch_whole(small):
    """A put_tensors batch that does not fit on its shard stores none of its tensors."""
    small.put_tensor("a", kib(500))
    with pytest.raises(memstore.StoreFull):
        small.put_tensors({"x": kib(200), "y": kib(200), "z": kib(200)})
    assert not any(small.key_exists(k) for k in "xyz")
    assert small.get_db_node_info()[0]["keys"] == 1


def test_store_full_on_list_push_and_dataset(small):
    """Datasets and list appends are refused the same way when the store is full."""
    small.put_tensor("a", kib(600))
    big = memstore.DataSet("big")
    big.add_tensor("u", kib(600))
    with pytest.raises(memstore.StoreFull):
        small.put_dataset(big)
    assert not small.key_exists("big")
    with pytest.raises(memstore.StoreFull):
        small.append_to_list("agg", big)
    assert small.get_list_length("agg") == 0


def test_store_full_counts_dataset_metadata(small):
    """Metadata is stored data too: datasets whose strings exceed --max-memory are refused."""
    stored = 0
    with pytest.raises(memstore.StoreFull):
        for i in range(20):
            ds = memstore.DataSet(f"meta{i}")
            ds.add_meta_string("text", "x" * 200_000)
            small.put_dataset(ds)
            stored += 1
    assert stored <= 5
    assert small.get_db_node_info()[0]["bytes"] >= stored * 200_000


def test_oversized_request_is_protocol_error(small):
    """A request whose frames together pass --max-message is refused with ProtocolError
    naming the limit; the shard keeps serving."""
    with pytest.raises(memstore.ProtocolError, match="max-message"):
        small.put_tensors({"h1": kib(400), "h2": kib(400)})
    assert not small.key_exists("h1") and not small.key_exists("h2")
    small.put_tensor("fine", kib(10))
    np.testing.assert_array_equal(small.get_tensor("fine"), kib(10))


def test_a_frame_over_max_message_is_refused_by_the_client(small):
    """A frame the shard would cut off (libzmq's MAXMSGSIZE drops the sender's connection)
    is refused before it is sent, naming --max-message; the client keeps working. (The
    shard's side, for clients that send it anyway: test_oversized_frames_never_land...)"""
    with pytest.raises(memstore.ProtocolError, match=r"max-message.*nothing was sent"):
        small.put_tensor("huge", kib(800))
    with pytest.raises(memstore.ProtocolError, match="max-message"):
        small.put_tensor_async("huge", kib(800))
    small.put_tensor("fine", kib(10))
    np.testing.assert_array_equal(small.get_tensor("fine"), kib(10))
    assert not small.key_exists("huge")


def test_oversized_frames_never_land_in_shard_memory():
    """Frames far over --max-message do not raise the shard's peak RSS by their size (before,
    each was received whole and only then refused)."""
    frame = b"\0" * (64 << 20)
    with (
        memstore.LocalCluster(shards=1, extra_args=["--max-message", "1MiB"]) as one,
        one.client(timeout=10) as client,
    ):
        before = client.get_db_node_info()[0]["rss_peak"]
        for _ in range(3):
            sock = zmq.Context.instance().socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(one.addresses[0])
            sock.send_multipart([req("put", keys=["big"], metas=[F4]), frame])
            ask(sock, [req("hello")])  # the shard is alive and has read what it will
            sock.close()
        after = client.get_db_node_info()[0]
        assert not client.key_exists("big")
    # Margin: 16 MiB of receive buffers and allocator slack, a quarter of one frame.
    assert after["rss_peak"] - before < 16 << 20, (before, after)


# -- a killed shard --------------------------------------------------------------------------


@pytest.fixture
def doomed():
    """Two shards (which the test may kill)."""
    with memstore.LocalCluster(shards=2) as running:
        yield running


def key_on(addresses: list[str], shard: int, prefix: str = "k") -> str:
    return next(
        f"{prefix}{i}" for i in range(1000) if key_shard(f"{prefix}{i}", len(addresses)) == shard
    )


def test_killed_shard_gives_connection_lost_naming_it(doomed):
    """After a shard is killed, a request for a key on it raises ConnectionLost naming its
    address within the client's timeout; the other shard keeps working."""
    with doomed.client(timeout=1) as client:
        alive, dead = key_on(client.addresses, 0), key_on(client.addresses, 1)
        client.put_tensor(alive, np.ones(2))
        client.put_tensor(dead, np.ones(2))
        victim = doomed.shards[1]
        victim.process.kill()
        victim.process.wait(timeout=10)
        for call in (
            lambda: client.get_tensor(dead),
            lambda: client.put_tensor(dead, np.zeros(1)),
            lambda: client.tensor_exists(dead),
        ):
            start = time.monotonic()
            with pytest.raises(memstore.ConnectionLost) as info:
                call()
            elapsed = time.monotonic() - start
            assert victim.address in str(info.value)
            assert isinstance(info.value, ConnectionError)
            # Within the client's 1 s timeout (plus slack); sooner when the drop is seen first.
            assert elapsed < 1 + 2.0, elapsed
        np.testing.assert_array_equal(client.get_tensor(alive), np.ones(2))
        with pytest.raises(memstore.ConnectionLost):
            client.get_db_node_info()


def test_requests_in_flight_fail_as_soon_as_their_shard_dies(doomed):
    """A poll parked on a shard that then dies fails with ConnectionLost when the connection
    drops, not after its 30 s poll deadline plus the client's timeout."""
    with doomed.client(timeout=10) as client:
        dead = key_on(client.addresses, 1)
        parked = client.poll_tensor_async(dead, 100, 300)
        assert client.get_db_node_info([client.addresses[1]])[0]["parked"] == 1
        victim = doomed.shards[1]
        start = time.monotonic()
        victim.process.kill()
        victim.process.wait(timeout=10)
        with pytest.raises(memstore.ConnectionLost, match=re.escape(victim.address)):
            parked.result(timeout=20)
        assert time.monotonic() - start < 5  # the 30 s poll and 10 s timeout did not run out


def test_a_key_sent_to_the_wrong_shard_is_refused_naming_its_owner(doomed):
    """A shard refuses a key another shard owns (a client with a stale shard list), naming
    the owner, and stores nothing."""
    mine, theirs = key_on(doomed.addresses, 0), key_on(doomed.addresses, 1)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(doomed.addresses[0])
    try:
        header, _ = ask(sock, [req("put", keys=[theirs], metas=[F4]), b"\0" * 16])
        assert header["code"] == "protocol"
        assert doomed.addresses[1] in header["msg"] and theirs in header["msg"]
        header, _ = ask(sock, [req("put", keys=[mine], metas=[F4]), b"\0" * 16])
        assert header["ok"] is True
    finally:
        sock.close()
    with doomed.client(timeout=10) as client:
        assert not client.key_exists(theirs) and client.key_exists(mine)


def test_no_client_can_rewrite_the_cluster_topology(doomed):
    """After start, a ``cluster`` call naming another list, another index or another shard
    is refused; every key stays readable through the real shard list."""
    first, second = doomed.addresses
    keys = [f"k{i}" for i in range(6)]
    with doomed.client(timeout=10) as client:
        for key in keys:
            client.put_tensor(key, np.arange(3.0))
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(first)
    hostile = {
        "reordered": {"shards": [second, first], "index": 1},
        "shrunk": {"shards": [first], "index": 0},
        "grown": {"shards": [first, second, "tcp://127.0.0.1:1"], "index": 0},
        "other-shard": {"shards": [first, second], "index": 1},
        "duplicates": {"shards": [first, first], "index": 0},
        "empty": {"shards": [], "index": 0},
    }
    try:
        for name, fields in hostile.items():
            header, _ = ask(sock, [req("cluster", **fields)])
            assert header["ok"] is False and header["code"] == "protocol", name
        same, _ = ask(sock, [req("cluster", shards=[first, second], index=0)])
        assert same["ok"] is True  # the launcher's own call, repeated, is harmless
        hello, _ = ask(sock, [req("hello")])
        assert hello["shards"] == [first, second] and hello["index"] == 0
    finally:
        sock.close()
    with doomed.client(timeout=10) as client:
        for key in keys:
            np.testing.assert_array_equal(client.get_tensor(key), np.arange(3.0))


def test_killed_first_shard_fails_client_construction(doomed):
    """A client whose first shard is down raises ConnectionLost naming it, not a hang."""
    doomed.shards[0].process.kill()
    doomed.shards[0].process.wait(timeout=10)
    start = time.monotonic()
    with pytest.raises(memstore.ConnectionLost, match=re.escape(doomed.addresses[0])):
        memstore.Client(doomed.address, timeout=1)
    assert time.monotonic() - start < 3


# -- addresses -------------------------------------------------------------------------------


@pytest.fixture
def no_env(monkeypatch):
    for name in ("MEMSTORE_ADDRESS", "SSDB", "MEMSTORE_ADDRESS_FILE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_no_address_explains_how_to_give_one(no_env):
    """Client() with no address anywhere raises MemstoreError naming every way to give one."""
    with pytest.raises(memstore.MemstoreError) as info:
        memstore.Client()
    message = str(info.value)
    for way in ("address=", "MEMSTORE_ADDRESS", "SSDB", "MEMSTORE_ADDRESS_FILE"):
        assert way in message


def test_address_from_environment(no_env, shard):
    """MEMSTORE_ADDRESS, then SSDB, then MEMSTORE_ADDRESS_FILE give the address."""
    no_env.setenv("SSDB", shard.address)
    with memstore.Client(timeout=5) as client:
        assert client.addresses == shard.addresses
    no_env.setenv("SSDB", "127.0.0.1:1")  # MEMSTORE_ADDRESS wins over SSDB
    no_env.setenv("MEMSTORE_ADDRESS", shard.address)
    with memstore.Client(timeout=5) as client:
        assert client.addresses == shard.addresses


def test_address_file_errors_name_the_file(no_env, tmp_path):
    """A missing or empty address file is a MemstoreError naming it."""
    no_env.setenv("MEMSTORE_ADDRESS_FILE", str(tmp_path / "missing.addr"))
    with pytest.raises(memstore.MemstoreError, match=r"missing\.addr"):
        memstore.Client()
    empty = tmp_path / "empty.addr"
    empty.write_text("\n# nothing\n")
    no_env.setenv("MEMSTORE_ADDRESS_FILE", str(empty))
    with pytest.raises(memstore.MemstoreError, match=r"empty\.addr"):
        memstore.Client()


@pytest.mark.parametrize(
    "address",
    [
        "http://h:1",
        "justahost",
        "host:port",
        ":80",
        " , ",
        "tcp://127.0.0.1",
        "tcp://:5",
        "tcp://127.0.0.1:abc",
        "127.0.0.1:99999",
        "ipc://",
    ],
)
def test_bad_addresses_are_memstore_errors(address):
    """Addresses that are not host:port, tcp:// or ipc:// are refused, naming the address."""
    with pytest.raises(memstore.MemstoreError):
        memstore.Client(address, timeout=1)


def test_bad_timeout_is_value_error():
    """A non-positive timeout is refused before anything connects."""
    with pytest.raises(ValueError):
        memstore.Client("127.0.0.1:1", timeout=0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("scheme", ["tcp", "bare", "ipc"])
def test_nothing_listening_is_connection_lost(scheme, tmp_path):
    """A client pointed at an address where no shard listens raises ConnectionLost naming
    it, within its timeout."""
    port = _free_port()
    address = {
        "tcp": f"tcp://127.0.0.1:{port}",
        "bare": f"127.0.0.1:{port}",
        "ipc": f"ipc://{tmp_path}/nobody.sock",
    }[scheme]
    start = time.monotonic()
    with pytest.raises(memstore.ConnectionLost, match=re.escape(address.split("//")[-1])):
        memstore.Client(address, timeout=0.5)
    assert time.monotonic() - start < 2.5


# -- the classes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "builtin", "code"),
    [
        (memstore.KeyNotFound, KeyError, "not_found"),
        (memstore.Timeout, TimeoutError, "timeout"),
        (memstore.StoreFull, MemoryError, "store_full"),
        (memstore.ProtocolError, ValueError, "protocol"),
        (memstore.WrongType, TypeError, "wrong_type"),
        (memstore.ConnectionLost, ConnectionError, "connection_lost"),
        (memstore.NoAnswer, TimeoutError, "no_answer"),
        (memstore.AuthError, memstore.MemstoreError, "auth"),
        (memstore.RemoteError, memstore.MemstoreError, "remote"),
        (memstore.ModelError, memstore.RemoteError, "model"),
    ],
)
def test_error_hierarchy(cls, builtin, code):
    """Each error is a MemstoreError and the builtin it stands for, and crosses the wire by
    its code as the same class with the same message."""
    assert issubclass(cls, memstore.MemstoreError)
    assert issubclass(cls, builtin)
    assert cls.code == code
    rebuilt = errors.from_wire(code, "key 'x' is wrong")
    assert type(rebuilt) is cls
    assert str(rebuilt) == "key 'x' is wrong"


def test_unknown_wire_code_is_remote_error():
    """A code this client does not know becomes a RemoteError carrying the message."""
    rebuilt = errors.from_wire("brand_new_code", "something odd")
    assert type(rebuilt) is memstore.RemoteError and "something odd" in str(rebuilt)


def test_key_not_found_message_is_not_quoted():
    """str(KeyNotFound) is the message itself, not KeyError's repr of it."""
    assert str(memstore.KeyNotFound("tensor 'u' not found")) == "tensor 'u' not found"


def test_every_exported_error_is_in_the_tree():
    """The package exports the whole error tree and nothing outside it pretends to be one."""
    exported = {name for name in memstore.__all__ if name.endswith(("Error", "Lost"))}
    exported |= {"KeyNotFound", "Timeout", "StoreFull", "WrongType"}
    for name in exported:
        assert issubclass(getattr(memstore, name), memstore.MemstoreError)


# -- fuzzing the protocol --------------------------------------------------------------------

junk = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=4)
    | st.binary(max_size=4)
    | st.lists(st.integers(-2, 2), max_size=3)
    | st.dictionaries(st.text(max_size=3), st.integers(-5, 5), max_size=2)
)
keyish = st.sampled_from(["k", "j", "l", "ds", "{t}x"]) | junk
metas = (
    st.fixed_dictionaries(
        {},
        optional={
            "dtype": st.sampled_from(["<f4", "|u1", "bfloat16", "|O", "<M8[s]", "x"]) | junk,
            "shape": st.lists(st.integers(-1, 4) | junk, max_size=3) | junk,
            "order": st.sampled_from(["C", "F"]) | junk,
        },
    )
    | junk
)
small_timeouts = (
    st.none()
    | st.booleans()
    | st.floats(-1, 0.3)
    | st.sampled_from([float("nan"), float("inf"), float("-inf")])
    | st.text(max_size=3)
)
fields = st.fixed_dictionaries(
    {},
    optional={
        "key": keyish,
        "keys": st.lists(keyish, max_size=3) | junk,
        "metas": st.lists(metas, max_size=3) | junk,
        "src": keyish,
        "dst": keyish,
        "kind": st.sampled_from(["tensor", "dataset", "list", None]) | junk,
        "items": st.lists(st.text(max_size=3) | junk, max_size=3) | junk,
        "start": st.integers(-5, 5) | junk,
        "end": st.integers(-5, 5) | junk,
        "cond": st.sampled_from(["exists", "len_eq", "len_ge", "len_le"]) | junk,
        "n": st.integers(0, 3) | junk,
        "timeout": small_timeouts,
        "fetch": st.booleans() | junk,
        "dataset": st.fixed_dictionaries(
            {},
            optional={
                "tensors": st.lists(
                    st.fixed_dictionaries({}, optional={"name": keyish, "meta": metas}) | junk,
                    max_size=2,
                )
                | junk,
                "meta": junk,
            },
        )
        | junk,
    },
)
FOUNDATION_OPS = [
    "put",
    "get",
    "delete",
    "exists",
    "copy",
    "rename",
    "put_dataset",
    "get_dataset",
    "list_push",
    "list_set",
    "list_range",
    "list_len",
    "wait",
    "info",
    "keys",
    "hello",
]


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    op=st.sampled_from(FOUNDATION_OPS),
    extra=fields,
    payload=st.lists(st.binary(max_size=24), max_size=3),
)
def test_any_request_gets_an_answer_and_never_an_internal_error(raw, guarded, op, extra, payload):
    """Whatever fields and frames a request carries, the shard answers it (same id) with a
    value or a precise error; none is an unexpected internal failure (code "remote")."""
    header, _ = ask(raw, [pack({"v": V, "id": 5, "op": op, **extra}), *payload], timeout_s=5)
    assert header["id"] == 5
    if not header["ok"]:
        assert header["code"] in {"protocol", "not_found", "wrong_type", "store_full"}, header


# -- missed deadlines ------------------------------------------------------------------------


@pytest.fixture
def silent_shard():
    """A ROUTER that answers ``hello`` and nothing else: a shard that stopped answering."""
    context = zmq.Context.instance()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            if not router.poll(50):
                continue
            identity, *frames = router.recv_multipart()
            header = wire.unpack_header(frames[0])
            if header["op"] == "hello":
                router.send_multipart([identity, *wire.reply(header["id"], {"index": 0})])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"tcp://127.0.0.1:{port}"
    stop.set()
    thread.join(5)
    router.close()


def test_a_missed_deadline_is_no_answer_both_timeout_and_connection_lost(silent_shard):
    """A shard that does not answer in time raises NoAnswer on the fast path and through a
    future alike: code catching ConnectionLost (as before) or Timeout (a deadline) gets it."""
    assert issubclass(memstore.NoAnswer, memstore.ConnectionLost)
    assert issubclass(memstore.NoAnswer, memstore.Timeout)
    with memstore.Client(silent_shard, timeout=0.3) as client:
        with pytest.raises(memstore.NoAnswer, match="did not answer"):
            client.get_tensor("x")  # blocking: the fast path
        error = client.get_tensor_async("x").exception(5)  # the pump
        assert isinstance(error, memstore.NoAnswer) and isinstance(error, TimeoutError)
        with pytest.raises(memstore.ConnectionLost):
            client.tensor_exists("x")


@pytest.fixture
def bare_shard():
    """The address of a shard process no launcher has told its cluster yet (as right after
    a restart); killed after the test."""
    from memstore.config import READY_LINE

    proc = subprocess.Popen(
        [sys.executable, "-m", "memstore.server", "--bind", "tcp://127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:  # the shard prints its ready line once it serves, or exits
        ready = (line for line in proc.stdout if line.startswith(READY_LINE))
        line = next(ready, None)
        assert line is not None, f"the shard exited with {proc.wait(10)} before serving"
        yield line[len(READY_LINE) :].strip()
    finally:
        proc.kill()
        proc.wait(10)


def request(address: str, op: str, **fields) -> tuple[dict, list]:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    try:
        return ask(sock, [req(op, **fields)])
    finally:
        sock.close()


@pytest.mark.parametrize("others", [[], ["tcp://127.0.0.1:1"]], ids=["alone", "longer"])
def test_keys_stored_before_the_cluster_call_stay_when_the_list_is_that_shard_alone(
    bare_shard, others
):
    """A client may reach a restarted shard before its launcher's ``cluster`` call: a list
    of that shard alone places every key where it is and is taken; a longer list, which
    would place them elsewhere, is refused naming the keys held."""
    with memstore.Client(bare_shard, timeout=10) as client:
        client.put_tensor("early", np.arange(3.0))
        reply, _ = request(bare_shard, "cluster", shards=[bare_shard, *others], index=0)
        if others:
            assert reply["ok"] is False and "already holds 1 keys" in reply["msg"], reply
        else:
            assert reply["ok"] is True, reply
        np.testing.assert_array_equal(client.get_tensor("early"), np.arange(3.0))
