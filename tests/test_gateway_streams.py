"""Redis stream commands through the RESP gateway (memstore/gateway/streams.py), with
redis-py's own stream calls, on the same streams the Python client reads and writes."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import memstore

redis = pytest.importorskip("redis")


@pytest.fixture(scope="module")
def store():
    with memstore.LocalCluster(2, resp_port=0) as running:
        yield running


@pytest.fixture
def r(store):
    port = int(store.resp_addresses[0].rsplit(":", 1)[1])
    with redis.Redis(port=port, protocol=2, socket_timeout=30) as connection:
        yield connection


@pytest.fixture
def client(store):
    with store.client(timeout=30) as native:
        yield native


def test_xadd_xlen_xrange_with_ids_that_sort_like_redis(r, request):
    key = request.node.name
    ids = [r.xadd(key, {"u": f"v{i}".encode(), "n": str(i)}) for i in range(5)]
    assert ids == [b"1-0", b"2-0", b"3-0", b"4-0", b"5-0"]
    assert r.xlen(key) == 5
    assert r.xrange(key) == [(i, {b"u": f"v{n}".encode(), b"n": str(n).encode()})
                             for n, i in enumerate(ids)]  # fmt: skip
    assert [i for i, _ in r.xrange(key, "2-0", "4-0")] == [b"2-0", b"3-0", b"4-0"]
    assert [i for i, _ in r.xrange(key, count=2)] == [b"1-0", b"2-0"]
    assert [i for i, _ in r.xrevrange(key, count=2)] == [b"5-0", b"4-0"]
    assert r.xlen("no-such-stream") == 0 and r.xrange("no-such-stream") == []


def test_maxlen_bounds_the_stream_and_xtrim_xdel_drop_steps(r, request):
    key = request.node.name
    for i in range(10):
        r.xadd(key, {"i": str(i)}, maxlen=4, approximate=False)
    assert r.xlen(key) == 4
    assert [i for i, _ in r.xrange(key)] == [b"7-0", b"8-0", b"9-0", b"10-0"]
    assert r.xtrim(key, maxlen=2, approximate=False) == 2
    assert r.xdel(key, "9-0") == 1
    assert [i for i, _ in r.xrange(key)] == [b"10-0"]


def test_redis_producer_python_trainer(r, client, request):
    """XADD from redis-py; the Python client reads dicts of uint8 arrays, in a group."""
    key = request.node.name
    for i in range(6):
        r.xadd(key, {"field": np.full(4, i, np.float32).tobytes()})
    stream = client.stream(key)
    group = stream.group("train")
    got = []
    for _ in range(6):
        step, item = group.take(timeout=10)
        got.append((step, np.frombuffer(item["field"].tobytes(), np.float32).tolist()))
        group.ack(step)
    assert got == [(i, [float(i)] * 4) for i in range(6)]


def test_python_producer_redis_consumer_group(r, client, request):
    """Stream.append from Python; XGROUP CREATE / XREADGROUP / XACK from redis-py get the
    tensors' raw bytes, each entry to one consumer."""
    key = request.node.name
    stream = client.stream(key, maxlen=32)
    assert r.xgroup_create(key, "g", id="0") is True
    with pytest.raises(redis.ResponseError, match="BUSYGROUP"):
        r.xgroup_create(key, "g", id="0")
    for i in range(4):
        stream.append({"x": np.full(2, i, np.int64)})
    stream.append(np.arange(3, dtype=np.uint8))  # a single tensor: the field "value"
    first = r.xreadgroup("g", "alice", {key: ">"}, count=3)
    second = r.xreadgroup("g", "bob", {key: ">"})
    entries = first[0][1] + second[0][1]
    assert [i for i, _ in entries] == [b"1-0", b"2-0", b"3-0", b"4-0", b"5-0"]
    assert entries[2][1] == {b"x": np.full(2, 2, np.int64).tobytes()}
    assert entries[4][1] == {b"value": bytes([0, 1, 2])}
    assert r.xack(key, "g", *[i for i, _ in entries]) == 5
    assert r.xack(key, "g", "1-0") == 0  # acked already
    assert r.xreadgroup("g", "alice", {key: ">"}) == []
    assert stream.group("g").stats()["acked"] == 5


def test_xread_block_is_woken_by_an_append_from_the_other_client(r, client, request):
    key = request.node.name
    stream = client.stream(key, maxlen=8)
    stream.append(np.zeros(1))
    replies: list = []
    reader = threading.Thread(target=lambda: replies.append(r.xread({key: "$"}, block=20000)))
    reader.start()
    waiter_parked = _parked(client)
    stream.append(np.ones(1))
    reader.join(30)
    assert not reader.is_alive()
    assert waiter_parked >= 1  # it waited on the shard, not in a polling loop
    ((name, entries),) = replies[0]
    assert name == key.encode() and [i for i, _ in entries] == [b"2-0"]
    assert r.xread({key: "0"}, count=1)[0][1][0][0] == b"1-0"
    assert r.xread({key: "2-0"}, block=100) == []  # nothing after step 1: a timeout (null)


def _parked(client) -> int:
    """Parked waits on the shards, once the blocked XREAD is among them (bounded)."""
    for _ in range(200):
        parked = sum(info["parked"] for info in client.get_db_node_info())
        if parked:
            return parked
        threading.Event().wait(0.01)  # a retry interval while the other thread parks
    return 0


def test_bad_input_gets_an_error_and_the_pipeline_goes_on(r, client, request):
    key = request.node.name
    client.put_tensor(f"{key}-tensor", np.ones(2))
    pipe = r.pipeline(transaction=False)
    pipe.xadd(f"{key}-tensor", {"a": "b"})  # a tensor's key
    pipe.execute_command("XADD", key, "MAXLEN", "0", "*", "a", "b")
    pipe.execute_command("XADD", key, "5-0", "a", "b")  # an explicit ID
    pipe.xreadgroup("nogroup", "c", {key: ">"})
    pipe.execute_command("XREAD", "STREAMS", key)  # unbalanced
    pipe.xadd(key, {"a": "b"})
    results = pipe.execute(raise_on_error=False)
    assert "WRONGTYPE" in str(results[0])
    assert "MAXLEN" in str(results[1]) and "takes *" in str(results[2])
    assert str(results[3]).startswith("No such key") or "NOGROUP" in str(results[3])
    assert "Unbalanced" in str(results[4])
    assert results[5] == b"1-0"
    np.testing.assert_array_equal(client.get_tensor(f"{key}-tensor"), [1, 1])
