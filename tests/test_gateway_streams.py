"""The gateway's stream commands (issue 22 item 4): redis-py's X* calls against a real
gateway (served by a shard process, ``resp_port``) over real shards, on the same streams
``memstore.Stream`` uses, both ways. Every wait has a timeout; no sleeps."""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import memstore
from memstore.gateway.commands import CommandError
from memstore.gateway.server import WORKERS
from memstore.gateway.stream_ids import first_after, lower_bound, step_id, step_of, upper_bound

redis = pytest.importorskip("redis")


@pytest.fixture(scope="module")
def cluster():
    """Two shards, the first also serving the RESP gateway."""
    with memstore.LocalCluster(2, resp_port=0) as running:
        yield running


@pytest.fixture(scope="module")
def gateway(cluster):
    """The gateway's port."""
    return int(cluster.resp_addresses[0].rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def client(cluster):
    with cluster.client(timeout=10) as connected:
        yield connected


@pytest.fixture
def r(gateway, client):
    client.flush_db()
    with redis.Redis(port=gateway, protocol=2, socket_timeout=10) as connection:
        yield connection


def _fields(entry) -> dict:
    return {k.decode(): v for k, v in entry[1].items()}


# -- ids -----------------------------------------------------------------------------------


@given(st.integers(0, 2**63 - 1))
def test_a_steps_id_reads_back_as_the_step_and_bounds_it(step):
    raw = step_id(step).encode()
    assert step_of(raw, "k") == step
    assert lower_bound(raw, "k") == step == upper_bound(raw, "k")
    assert first_after(raw, "k") == step + 1
    assert lower_bound(str(step).encode(), "k") == step == upper_bound(str(step).encode(), "k")
    assert first_after(str(step).encode(), "k") == step  # "s" is "s-0", below "s-1"


@given(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 5), st.integers(0, 5))
def test_ids_sort_as_their_steps(a, b, seq_a, seq_b):
    """A step lies in XRANGE's [x, y] exactly when Redis would let its id in."""
    x, y = f"{a}-{seq_a}".encode(), f"{b}-{seq_b}".encode()
    for step in {a - 1, a, a + 1, b - 1, b, b + 1} - {-1}:
        inside = (a, seq_a) <= (step, 1) <= (b, seq_b)
        assert (lower_bound(x, "k") <= step <= upper_bound(y, "k")) == inside
        after = (step, 1) > (a, seq_a)
        assert (step >= first_after(x, "k")) == after
        assert (step >= lower_bound(b"(" + x, "k")) == after


@pytest.mark.parametrize("raw", [b"abc", b"1-x", b"-1", b"1-", b"18446744073709551616-0"])
def test_a_bad_id_is_refused_naming_the_stream(raw):
    with pytest.raises(CommandError, match=r"Invalid stream ID.*'feed'"):
        lower_bound(raw, "feed")


# -- commands ------------------------------------------------------------------------------


def _keys(client) -> int:
    """Keys on the shards: a stream's state and one data key per held step."""
    return sum(info["keys"] for info in client.get_db_node_info())


def test_xadd_xlen_xrange_xtrim_xdel(r, client):
    ids = [r.xadd("s", {"a": bytes([i]) * 3, "b": b""}) for i in range(5)]
    assert ids == [b"0-1", b"1-1", b"2-1", b"3-1", b"4-1"]
    assert client.stream("s").settings["maxlen"] == 1024  # made without MAXLEN
    assert _keys(client) == 1 + 5
    assert r.xlen("s") == 5 and r.xlen("missing") == 0
    got = r.xrange("s", "1", "3-1")
    assert [i for i, _ in got] == [b"1-1", b"2-1", b"3-1"]
    assert got[0][1] == {b"a": b"\x01\x01\x01", b"b": b""}
    assert [i for i, _ in r.xrange("s", "(1-1", "+", count=2)] == [b"2-1", b"3-1"]
    assert r.xrange("missing", "-", "+") == []
    assert r.xdel("s", "2-1", "2-0", "99-1") == 1
    assert [i for i, _ in r.xrange("s", "-", "+")] == [b"0-1", b"1-1", b"3-1", b"4-1"]
    assert r.xtrim("s", maxlen=2, approximate=False) == 2
    assert [i for i, _ in r.xrange("s", "-", "+")] == [b"3-1", b"4-1"]
    assert _keys(client) == 1 + 2  # the dropped steps' data is deleted on the shards
    assert r.xadd("s", {"c": b"x"}, maxlen=1, approximate=True) == b"5-1"
    assert r.xlen("s") == 1
    assert r.xadd("nomk", {"c": b"x"}, nomkstream=True) is None and r.exists("nomk") == 0


def test_xrevrange_reads_newest_first(r):
    for i in range(6):
        r.xadd("rev", {"i": str(i).encode()})
    r.xdel("rev", "4-1")
    assert [i for i, _ in r.xrevrange("rev")] == [b"5-1", b"3-1", b"2-1", b"1-1", b"0-1"]
    assert [i for i, _ in r.xrevrange("rev", "4", "1-1", count=2)] == [b"3-1", b"2-1"]
    assert r.xrevrange("rev", "+", "-", count=1) == [(b"5-1", {b"i": b"5"})]
    assert r.xrevrange("rev", "1", "2") == [] and r.xrevrange("missing") == []


def test_redis_xadd_is_read_by_the_python_stream_and_group(r, client):
    r.xadd("feed", {"u": np.arange(4, dtype=np.float32).tobytes(), "tag": b"hi"}, maxlen=8)
    stream = client.stream("feed")
    assert stream.settings["maxlen"] == 8  # made by XADD MAXLEN 8
    item = stream.read(0)
    assert item["tag"].dtype == np.uint8 and item["tag"].tobytes() == b"hi"
    np.testing.assert_array_equal(item["u"].view(np.float32), np.arange(4, dtype=np.float32))
    group = stream.group("trainers", start="oldest")
    step, got = group.take(timeout=5)
    assert step == 0 and got["tag"].tobytes() == b"hi" and group.ack(step) == 1


def test_python_appends_are_read_by_xrange_and_xreadgroup(r, client):
    stream = client.stream("sim", maxlen=4)
    stream.append({"x": np.arange(3, dtype=np.int64)})
    stream.append(np.ones((2, 2), dtype=np.float64))
    dataset = memstore.DataSet("d")
    dataset.add_tensor("y", np.array([7], dtype=np.int8))
    stream.append(dataset)
    entries = r.xrange("sim", "-", "+")
    assert _fields(entries[0]) == {"x": np.arange(3, dtype=np.int64).tobytes()}
    assert _fields(entries[1]) == {"tensor": np.ones(4).tobytes()}  # shape and dtype are gone
    assert _fields(entries[2]) == {"y": b"\x07"}
    assert r.xgroup_create("sim", "g", id="0") is True
    got = r.xreadgroup("g", "worker-1", {"sim": ">"}, count=2)
    assert [i for i, _ in got[0][1]] == [b"0-1", b"1-1"]
    assert r.xack("sim", "g", "0-1", "1-1") == 2
    assert r.xack("sim", "g", "0-1", "2-1", "9-1") == 0  # acked already, never delivered
    r.xreadgroup("g", "worker-1", {"sim": ">"})
    assert r.xack("sim", "g", "1-1", "2-1", "9-1") == 1  # the one pending counts
    assert stream.group("g").stats()["acked"] == 3


def test_xreadgroup_delivers_each_step_to_one_consumer(r):
    for i in range(4):
        r.xadd("work", {"i": str(i).encode()})
    r.xgroup_create("work", "g", id="0")
    first = r.xreadgroup("g", "a", {"work": ">"}, count=3)[0][1]
    second = r.xreadgroup("g", "b", {"work": ">"}, count=3)[0][1]
    assert [i for i, _ in first] == [b"0-1", b"1-1", b"2-1"] and [i for i, _ in second] == [b"3-1"]
    assert r.xreadgroup("g", "b", {"work": ">"}, count=3) == []  # nothing left: nil
    assert r.xgroup_create("work", "late", id="$") is True
    r.xadd("work", {"i": b"4"})
    assert [i for i, _ in r.xreadgroup("g", "a", {"work": ">"}, noack=True)[0][1]] == [b"4-1"]
    assert [i for i, _ in r.xreadgroup("late", "a", {"work": ">"})[0][1]] == [b"4-1"]


def test_xread_reads_after_an_id_and_dollar_waits_for_new_steps(r, gateway):
    r.xadd("t", {"a": b"1"})
    r.xadd("t", {"a": b"2"})
    assert [i for i, _ in r.xread({"t": "0"})[0][1]] == [b"0-1", b"1-1"]
    assert [i for i, _ in r.xread({"t": "0-1"}, count=5)[0][1]] == [b"1-1"]
    assert r.xread({"t": "$"}) == [] and r.xread({"t": "1-1"}, block=50) == []


def _read_in_thread(port: int, call) -> tuple[threading.Thread, list]:
    got: list = []

    def run() -> None:
        with redis.Redis(port=port, protocol=2, socket_timeout=30) as other:
            got.append(call(other))

    thread = threading.Thread(target=run)
    thread.start()
    return thread, got


def _parked(client) -> int:
    return sum(info["parked"] for info in client.get_db_node_info())


def _wait_parked(client, stream: str, before: int) -> None:
    """Until the shards hold one more parked waiter than ``before`` (bounded)."""
    for _ in range(2000):
        if _parked(client) > before:
            return
    raise AssertionError(f"no wait parked on stream {stream!r}")


def test_xread_block_is_woken_by_a_python_append(r, client, gateway):
    stream = client.stream("live", maxlen=8)
    stream.append({"a": np.zeros(1, np.uint8)})
    before = _parked(client)
    thread, got = _read_in_thread(gateway, lambda o: o.xread({"live": "$"}, block=20000))
    _wait_parked(client, "live", before)
    stream.append({"a": np.full(2, 9, np.uint8)})
    thread.join(30)
    assert not thread.is_alive()
    assert got[0][0][1] == [(b"1-1", {b"a": b"\x09\x09"})]


def test_xread_block_waits_for_a_stream_not_made_yet(r, client, gateway):
    """A consumer may start first: its XREAD BLOCK makes the stream (null settings) and
    waits on it; the producer's settings replace the null ones."""
    before = _parked(client)
    thread, got = _read_in_thread(gateway, lambda o: o.xread({"later": "$"}, block=20000))
    _wait_parked(client, "later", before)
    client.stream("later", maxlen=3).append({"a": np.ones(1, np.uint8)})
    thread.join(30)
    assert not thread.is_alive() and got[0][0][1] == [(b"0-1", {b"a": b"\x01"})]
    assert client.stream("later").settings["maxlen"] == 3


def test_blocked_readers_hold_no_gateway_thread(r, client, gateway):
    """More blocked XREADs than the gateway's worker threads: an XADD still runs at once
    and wakes every one of them."""
    readers = WORKERS + 4
    r.xadd("crowd", {"a": b"0"})
    before = _parked(client)
    started = [
        _read_in_thread(gateway, lambda o: o.xread({"crowd": "$"}, block=20000))
        for _ in range(readers)
    ]
    _wait_parked(client, "crowd", before + readers - 1)
    with redis.Redis(port=gateway, protocol=2, socket_timeout=5) as producer:
        assert producer.xadd("crowd", {"a": b"1"}) == b"1-1"  # within 5 s, not after 20
    for thread, got in started:
        thread.join(30)
        assert not thread.is_alive() and got[0][0][1] == [(b"1-1", {b"a": b"1"})]


@pytest.mark.parametrize("protocol", [3, None])  # None: redis-py's default
def test_a_resp3_client_reads_xread_and_xreadgroup(r, gateway, protocol):
    """After HELLO 3, XREAD/XREADGROUP answer a map, Redis's RESP3 form (redis-py 8 says
    HELLO 3 by default and cannot parse the RESP2 array there)."""
    r.xadd("r3", {"a": b"1"})
    r.xgroup_create("r3", "g", id="0")
    entries = [(b"0-1", {b"a": b"1"})]
    assert r.xread({"r3": "0"}) == [[b"r3", entries]]
    # redis-py's shape: RESP3's own with protocol=3, RESP2's (from the map) by default
    expected = {b"r3": [entries]} if protocol == 3 else [[b"r3", entries]]
    with redis.Redis(port=gateway, protocol=protocol, socket_timeout=10) as other:
        assert other.xread({"r3": "0"}) == expected
        assert other.xreadgroup("g", "c", {"r3": ">"}) == expected
        assert other.xrange("r3") == entries


def test_xreadgroup_block_times_out_with_nil(r):
    r.xgroup_create("quiet", "g", id="$", mkstream=True)
    assert r.xreadgroup("g", "c", {"quiet": ">"}, block=100) == []
    assert r.xread({"quiet": "$"}, block=100) == []


def test_xreadgroup_block_is_woken_by_an_xadd(r, client, gateway):
    r.xgroup_create("jobs", "g", id="$", mkstream=True)
    call = lambda o: o.xreadgroup("g", "c", {"jobs": ">"}, block=20000)  # noqa: E731
    before = _parked(client)
    thread, got = _read_in_thread(gateway, call)
    _wait_parked(client, "jobs", before)
    r.xadd("jobs", {"n": b"1"})
    thread.join(30)
    assert not thread.is_alive() and got[0][0][1] == [(b"0-1", {b"n": b"1"})]


def test_bad_input_gets_an_error_and_the_pipeline_goes_on(r, client):
    client.put_tensor("tensor", np.ones(2))
    r.xadd("ok", {"a": b"1"})
    pipe = r.pipeline(transaction=False)
    pipe.xadd("tensor", {"a": b"1"})
    pipe.xreadgroup("nope", "c", {"ok": ">"})
    pipe.xack("ok", "nope", "0-1")
    pipe.execute_command("XADD", "ok", "MAXLEN", "-3", "*", "a", "b")
    pipe.execute_command("XADD", "ok", "MAXLEN", "many", "*", "a", "b")
    pipe.execute_command("XADD", "ok", "5-1", "a", "b")
    pipe.execute_command("XADD", "ok", "*", "a", "b", "a", "c")
    pipe.execute_command("XRANGE", "ok", "zero", "+")
    pipe.xgroup_create("absent", "g", id="0")
    pipe.xgroup_create("ok", "g", id="0")
    pipe.xgroup_create("ok", "g", id="0")
    pipe.xlen("ok")
    pipe.execute_command("XTRIM", "ok", "MINID", "0")
    pipe.execute_command("XREADGROUP", "GROUP", "g", "c", "BLOCK", "10", "STREAMS", "ok", "s2",
                         ">", ">")  # fmt: skip
    replies = pipe.execute(raise_on_error=False)
    errors = [str(e) for e in replies[:9]] + [str(replies[10])]
    expected = ["WRONGTYPE.*'tensor'", "No such key 'ok' or consumer group 'nope'",
                "No such key 'ok' or consumer group 'nope'", "'ok'.*MAXLEN.*>= 0",
                "not an integer", "'ok'.*id '\\*' only", "'ok'.*field 'a' given twice",
                "Invalid stream ID.*'ok'", "requires the key to exist.*'absent'",
                "'g' already exists on 'ok'"]  # fmt: skip
    for message, pattern in zip(errors, expected, strict=True):
        assert re.search(pattern, message), (message, pattern)
    assert all(isinstance(e, redis.ResponseError) for e in replies[:9])
    assert replies[1].args[0].startswith("NOGROUP ") and replies[10].args[0].startswith("BUSYGROUP")
    assert replies[9] is True and replies[11] == 1
    assert re.search("'ok'.*MINID is not supported", str(replies[12]))
    assert "BLOCK waits on one stream" in str(replies[13])
    assert client.get_tensor("tensor").tolist() == [1.0, 1.0]
