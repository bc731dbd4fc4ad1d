"""The RESP gateway: a real ``memstore gateway`` process in front of real shards, driven by
redis-py (a RESP client), read back by ``memstore.Client``, and fed garbage."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import memstore
from memstore.config import GATEWAY_READY_LINE, READY_LINE
from memstore.gateway.resp import MAX_INLINE, Parser, RespError, encode

redis = pytest.importorskip("redis")


@pytest.fixture(scope="module")
def cluster():
    with memstore.LocalCluster(2) as running:
        yield running


@pytest.fixture(scope="module")
def gateway(cluster):
    """The gateway's port; the process is stopped (and waited for) at the end."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "memstore.cli",
            "gateway",
            "--port",
            "0",
            "--address",
            cluster.address,
            "--timeout",
            "10",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()  # bounded: the process prints it or exits
        assert line.startswith(GATEWAY_READY_LINE), line
        yield int(line.rsplit(":", 1)[1])
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    assert process.returncode is not None


@pytest.fixture
def r(gateway, client):
    client.flush_db()
    with redis.Redis(port=gateway, protocol=2, socket_timeout=10) as connection:
        yield connection


@pytest.fixture(scope="module")
def client(cluster):
    with cluster.client(timeout=10) as connected:
        yield connected


DTYPES = {
    "FLOAT": np.float32,
    "DOUBLE": np.float64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
}


@pytest.mark.parametrize("name", DTYPES)
def test_tensor_set_through_gateway_is_read_by_memstore(r, client, name):
    array = (np.arange(24) % 100).astype(DTYPES[name]).reshape(2, 3, 4)
    assert r.execute_command("AI.TENSORSET", "t", name, 2, 3, 4, "BLOB", array.tobytes())
    got = client.get_tensor("t")
    assert got.dtype == array.dtype and got.shape == (2, 3, 4)
    np.testing.assert_array_equal(got, array)


@pytest.mark.parametrize("name", DTYPES)
def test_tensor_put_by_memstore_is_read_through_gateway(r, client, name):
    array = (np.arange(6) % 100).astype(DTYPES[name]).reshape(3, 2)
    client.put_tensor("m", array)
    reply = r.execute_command("AI.TENSORGET", "m", "META", "BLOB")
    assert reply[:4] == [b"dtype", name.encode(), b"shape", [3, 2]] and reply[4] == b"blob"
    np.testing.assert_array_equal(np.frombuffer(reply[5], DTYPES[name]).reshape(3, 2), array)
    assert r.execute_command("AI.TENSORGET", "m", "BLOB") == array.tobytes()
    assert r.execute_command("AI.TENSORGET", "m", "META") == reply[:4]


def test_tensor_values_and_errors(r):
    assert r.execute_command("AI.TENSORSET", "v", "INT32", 3, "VALUES", 1, 2, 3)
    assert r.execute_command("AI.TENSORGET", "v", "VALUES") == [b"values", [1, 2, 3]]
    with pytest.raises(redis.ResponseError, match="does not match"):
        r.execute_command("AI.TENSORSET", "v", "FLOAT", 4, "BLOB", b"abc")
    with pytest.raises(redis.ResponseError, match="invalid data type"):
        r.execute_command("AI.TENSORSET", "v", "NOPE", 1, "BLOB", b"a")
    with pytest.raises(redis.ResponseError, match="empty"):
        r.execute_command("AI.TENSORGET", "missing", "META", "BLOB")


def test_keys(r, client):
    r.execute_command("AI.TENSORSET", "a", "FLOAT", 1, "BLOB", b"\0\0\0\0")
    assert r.exists("a", "b") == 1
    assert r.rename("a", "b") and client.tensor_exists("b") and not client.tensor_exists("a")
    assert r.copy("b", "c") and client.tensor_exists("c")
    assert r.delete("b", "nothing") == 1 and r.unlink("c") == 1 and r.exists("b", "c") == 0
    assert r.ping() and r.echo("hi") == b"hi"
    assert r.dbsize() == 0 and "db0" in r.info() and r.flushdb()


def test_del_and_exists_of_many_keys_ask_each_shard_once(r, client):
    """DEL / EXISTS of many keys are bulk requests: one per shard, whatever the count;
    duplicates count as in Redis (EXISTS twice, DEL once)."""
    names = [f"many{i}" for i in range(50)]
    client.put_tensors({name: np.zeros(1) for name in names})

    def ops() -> list[int]:
        return [info["ops"] for info in client.get_db_node_info()]

    for command, answer in ((r.exists, 51), (r.delete, 50), (r.exists, 0)):
        before = ops()
        assert command(*names, names[0], "absent") == answer
        # Per shard: the bulk request, and the info request that counted it.
        assert [a - b for a, b in zip(ops(), before, strict=True)] == [2, 2]


def test_hashes_and_lists(r, client):
    assert r.hset("{ds}.meta", mapping={"f": b"\x00\xffbin", "g": "1"}) == 2
    assert r.hgetall("{ds}.meta") == {b"f": b"\x00\xffbin", b"g": b"1"}
    assert r.hexists("{ds}.meta", "g") and not r.hexists("{ds}.meta", "x")
    assert r.hget("{ds}.meta", "f") == b"\x00\xffbin" and r.hlen("{ds}.meta") == 2
    assert r.hdel("{ds}.meta", "g") == 1 and r.hkeys("{ds}.meta") == [b"f"]
    assert r.rpush("agg", "{ds}", "{ds2}") == 2 and r.llen("agg") == 2
    assert r.lrange("agg", 0, -1) == [b"{ds}", b"{ds2}"] and r.lrange("agg", 1, 1) == [b"{ds2}"]
    assert client.get_list_length("agg") == 2
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        r.rpush("{ds}.meta", "x")


def test_server_commands(r, gateway):
    node_id = hashlib.sha1(b"127.0.0.1:%d" % gateway).hexdigest().encode()
    assert r.execute_command("CLUSTER", "SLOTS") == [[0, 16383, [b"127.0.0.1", gateway, node_id]]]
    assert b"cluster_state:ok" in r.execute_command("CLUSTER", "INFO")
    assert r.config_set("maxmemory-policy", "allkeys-lru")
    assert r.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}
    with pytest.raises(redis.ResponseError, match="Unknown option"):
        r.config_set("no-such-parameter", "1")
    assert r.config_get("no-such-parameter") == {}
    assert r.execute_command("AI.CONFIG", "GET", "MODEL_CHUNK_SIZE") > 0
    with pytest.raises(redis.ResponseError, match="unknown command 'NOSUCH'"):
        r.execute_command("NOSUCH", "x")
    assert redis.Redis(port=gateway, socket_timeout=10).ping()  # RESP3: HELLO 3


def test_gateways_split_the_slots_between_them():
    """Three gateways of one store (LocalCluster(resp_port=0, gateways=3)) answer CLUSTER
    SLOTS alike, covering 0-16383 once; each serves every key."""
    with memstore.LocalCluster(2, resp_port=0, gateways=3) as store:
        ports = [int(a.rsplit(":", 1)[1]) for a in store.resp_addresses]
        replies = []
        for port in ports:
            with redis.Redis(port=port, protocol=2, socket_timeout=10) as each:
                replies.append(each.execute_command("CLUSTER", "SLOTS"))
                assert b"cluster_known_nodes:3" in each.execute_command("CLUSTER", "INFO")
                each.rpush(f"l{port}", "x")
        assert replies[0] == replies[1] == replies[2]
        assert [(first, last, node[1]) for first, last, node in replies[0]] == [
            (0, 5460, ports[0]), (5461, 10921, ports[1]), (10922, 16383, ports[2])
        ]  # fmt: skip
        assert store.smartredis_env["SR_DB_TYPE"] == "Clustered"
        with store.client(timeout=10) as native:
            assert all(native.get_list_length(f"l{port}") == 1 for port in ports)
    assert not any(g.alive() for g in store.gateways)


def test_server_resp_port_serves_the_shard_and_the_redis_protocol():
    """memstore-server --resp-port 0: one process, a shard and a gateway in front of it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "memstore.server", "--port", "0", "--resp-port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        gateway_line = process.stdout.readline()  # bounded: printed before the shard's line
        shard_line = process.stdout.readline()
        assert gateway_line.startswith(GATEWAY_READY_LINE), gateway_line
        assert shard_line.startswith(READY_LINE), shard_line
        port = int(gateway_line.rsplit(":", 1)[1])
        with redis.Redis(port=port, protocol=2, socket_timeout=10) as r:
            assert r.execute_command("AI.TENSORSET", "t", "INT32", 2, "VALUES", 4, 5)
        with memstore.Client(shard_line[len(READY_LINE) :].strip(), timeout=10) as native:
            np.testing.assert_array_equal(native.get_tensor("t"), [4, 5])
    finally:
        process.terminate()
        process.wait(10)
    assert process.returncode is not None


def test_multi_exec(r):
    with r.pipeline(transaction=True) as pipe:
        pipe.rpush("l", "a").rpush("l", "b").llen("l")
        assert pipe.execute() == [1, 2, 2]


def test_script_through_gateway(r, client):
    pytest.importorskip("torch")
    source = "def twice(x):\n    return x + x\n"
    assert r.execute_command("AI.SCRIPTSET", "s", "CPU", "SOURCE", source)
    assert r.execute_command("AI.SCRIPTGET", "s", "SOURCE") == source.encode()
    x = np.arange(4, dtype=np.float32)
    r.execute_command("AI.TENSORSET", "x", "FLOAT", 4, "BLOB", x.tobytes())
    assert r.execute_command("AI.SCRIPTEXECUTE", "s", "twice", "INPUTS", 1, "x", "OUTPUTS", 1, "y")
    np.testing.assert_array_equal(client.get_tensor("y"), 2 * x)
    assert r.execute_command("AI.SCRIPTRUN", "s", "twice", "INPUTS", "y", "OUTPUTS", "z")
    np.testing.assert_array_equal(client.get_tensor("z"), 4 * x)
    assert r.execute_command("AI.SCRIPTDEL", "s") and not client.model_exists("s")


# -- bad input -------------------------------------------------------------------------------


def _raw(port: int, data: bytes) -> bytes:
    """Send ``data``, half-close, read what comes back (bounded by the socket timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            for _ in range(1000):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except (ConnectionError, TimeoutError):
            return b""
        return b"".join(chunks)


def test_protocol_errors_close_only_that_connection(gateway, r):
    assert _raw(gateway, b"*1\r\n$x\r\n").startswith(b"-ERR Protocol error")
    assert _raw(gateway, b"*2\r\n$4\r\nPING\r\n:1\r\n").startswith(b"-ERR Protocol error")
    assert _raw(gateway, b"*9999999999\r\n").startswith(b"-ERR Protocol error")
    assert _raw(gateway, b"x" * (MAX_INLINE + 10)).startswith(b"-ERR Protocol error")
    assert _raw(gateway, b"PING\r\n") == b"+PONG\r\n"  # inline commands, as redis-cli sends
    assert r.ping()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.one_of(
        st.binary(max_size=512),
        st.lists(
            st.sampled_from(
                [
                    b"*",
                    b"$",
                    b"\r\n",
                    b"1",
                    b"3",
                    b"-1",
                    b"PING",
                    b"AI.TENSORSET",
                    b"FLOAT",
                    b"BLOB",
                    b"HSET",
                    b"x",
                    b":",
                    b"+",
                    b"999999999999",
                ]
            ),
            max_size=40,
        ).map(b"".join),
    )
)
def test_fuzz_gateway_survives_garbage(gateway, data):
    _raw(gateway, data)
    with redis.Redis(port=gateway, protocol=2, socket_timeout=10) as again:
        assert again.ping()


@given(
    st.lists(st.lists(st.binary(max_size=64), min_size=1, max_size=5), max_size=5),
    st.integers(1, 7),
)
def test_parser_round_trips_any_split(commands, step):
    wire = b"".join(b"".join(bytes(c) for c in encode(list(cmd))) for cmd in commands)
    parser, got = Parser(), []
    for i in range(0, len(wire), step):
        parser.feed(wire[i : i + step])
        got += list(parser.commands())
    assert got == commands and parser.pending() == 0


@given(st.binary(max_size=256))
def test_parser_raises_only_resp_error(data):
    parser = Parser()
    parser.feed(data)
    try:
        list(parser.commands())
    except RespError:
        pass


def test_a_malformed_command_is_answered_and_the_pipeline_goes_on(gateway):
    """Issue 25 item 16: AI.SCRIPTRUN without OUTPUTS raised KeyError in its handler; the
    connection was dropped without a reply and the pipelined commands behind it were lost."""
    pipeline = b"".join(
        b"".join(bytes(chunk) for chunk in encode(command))
        for command in (
            [b"AI.SCRIPTRUN", b"s", b"f", b"INPUTS", b"x"],
            [b"PING"],
            [b"AI.TENSORSET", b"t", b"INT8", b"1", b"VALUES"],
            [b"ECHO", b"still here"],
        )
    )
    reply = _raw(gateway, pipeline)
    lines = reply.split(b"\r\n")
    assert lines[0].startswith(b"-ERR") and b"OUTPUTS" in lines[0], reply
    assert lines[1] == b"+PONG", reply
    assert lines[2].startswith(b"-ERR"), reply
    assert lines[3:5] == [b"$10", b"still here"], reply


def _unescape(stored: str) -> bytes:
    """The inverse of ``text`` for keys: it exists, so ``text`` cannot map two keys to one."""
    if "\\" not in stored:
        return stored.encode()
    out, i = bytearray(), 0
    while i < len(stored):
        if stored[i] != "\\":
            out += stored[i].encode()
            i += 1
        elif stored[i + 1] == "\\":
            out += b"\\"
            i += 2
        else:
            assert stored[i + 1] == "x", stored
            out.append(int(stored[i + 2 : i + 4], 16))
            i += 4
    return bytes(out)


#: keys made of the pieces that could collide: backslashes, "x", hex digits, bytes that are
#: not UTF-8, and UTF-8 that is
_KEYS = st.one_of(
    st.binary(max_size=24),
    st.lists(
        st.sampled_from([b"\\", b"x", b"9", b"a", b"\x9a", b"\xff", b"\xc3", b"\xc3\xa9", b"{"]),
        max_size=12,
    ).map(b"".join),
)


@given(_KEYS)
def test_every_key_reads_back_from_its_stored_name(key):
    from memstore.gateway.commands import text

    stored = text(key)
    stored.encode()  # memstore's keys are UTF-8 on the wire
    assert _unescape(stored) == key
    if b"\\" not in key and stored == key.decode("utf-8", "replace"):
        assert stored == key.decode()  # plain keys keep their spelling for every client


@given(_KEYS, _KEYS)
def test_distinct_keys_are_stored_under_distinct_names(a, b):
    from memstore.gateway.commands import text

    assert (text(a) == text(b)) == (a == b)


@given(_KEYS)
def test_a_key_and_its_escaped_spelling_are_distinct(key):
    """The collision of issue 25 item 16: a key and the bytes of its ``\\xNN`` spelling."""
    from memstore.gateway.commands import text

    look_alike = key.decode("utf-8", "backslashreplace").encode()
    assert (text(key) == text(look_alike)) == (key == look_alike)


def test_binary_keys_that_look_alike_stay_apart(r, client):
    """Issue 25 item 16: b"a\\x9a" (a backslash) and b"a\x9a" (one byte) were one key."""
    r.execute_command("AI.TENSORSET", b"a\\x9a", "INT8", 1, "VALUES", 1)
    r.execute_command("AI.TENSORSET", b"a\x9a", "INT8", 1, "VALUES", 2)
    assert r.execute_command("AI.TENSORGET", b"a\\x9a", "VALUES") == [b"values", [1]]
    assert r.execute_command("AI.TENSORGET", b"a\x9a", "VALUES") == [b"values", [2]]
    assert r.delete(b"a\x9a") == 1 and r.exists(b"a\\x9a", b"a\x9a") == 1
    assert r.execute_command("CLUSTER", "KEYSLOT", "foo") == 12182  # Redis's own answer


def _names_on_two_shards(shards: int) -> tuple[str, str]:
    from memstore.placement import key_shard

    names = [f"list{i}" for i in range(64)]
    first = names[0]
    other = next(n for n in names if key_shard(n, shards) != key_shard(first, shards))
    return first, other


@pytest.mark.parametrize("verb", ["COPY", "RENAME"])
def test_a_list_is_renamed_or_copied_across_shards(r, client, cluster, verb):
    src, dst = _names_on_two_shards(len(cluster.addresses))
    assert r.rpush(src, "{a}", "{b}") == 2
    assert r.execute_command(verb, src, dst)
    assert r.lrange(dst, 0, -1) == [b"{a}", b"{b}"]
    assert r.exists(src) == (verb == "COPY")
