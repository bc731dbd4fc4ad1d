"""Bulk calls (issue 24 item 2): ``delete_tensors`` and ``tensors_exist`` send one request per
shard, whatever the number of names, and answer as the one-key calls would, on every path
(the ``cluster`` fixture: tcp, ipc and the same-node Unix socket)."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import memstore
from memstore.placement import key_shard

bulk_settings = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
#: A key of the first of three shards.
MINE = next(f"m{i}" for i in range(1000) if key_shard(f"m{i}", 3) == 0)
NAMES = st.lists(st.sampled_from([f"k{i}" for i in range(40)]), max_size=30)


def ops_per_shard(client) -> list[int]:
    return [info["ops"] for info in client.get_db_node_info()]


def shards_of(client, names: list[str]) -> set[int]:
    return {key_shard(name, len(client.addresses)) for name in names}


@bulk_settings
@given(stored=NAMES, asked=NAMES)
def test_tensors_exist_and_delete_tensors_agree_with_the_one_key_calls(client, stored, asked):
    client.flush_db()
    client.put_tensors({name: np.arange(3) for name in stored})
    assert client.tensors_exist(asked) == [name in stored for name in asked]
    assert client.delete_tensors(asked) == len(set(asked) & set(stored))
    assert client.tensors_exist(stored) == [name not in asked for name in stored]
    assert all(not client.tensor_exists(name) for name in asked)


@pytest.mark.every_path
def test_one_request_per_shard_whatever_the_number_of_names(client):
    names = [f"n{i}" for i in range(300)]
    client.put_tensors({name: np.zeros(2) for name in names})
    assert len(shards_of(client, names)) == len(client.addresses)  # every shard is asked
    for call, answer in [
        (client.tensors_exist, [True] * 300),
        (client.delete_tensors, 300),
        (client.tensors_exist, [False] * 300),
    ]:
        before = ops_per_shard(client)
        assert call(names) == answer
        after = ops_per_shard(client)
        # Per shard: the bulk request, and the first info request that counted it.
        assert [a - b for a, b in zip(after, before, strict=True)] == [2] * len(before)


def test_no_names_is_no_request(client):
    assert client.tensors_exist([]) == []
    assert client.delete_tensors([]) == 0
    assert client.tensors_exist_async([]).result(5) == []


def test_a_dataset_among_the_names_is_wrong_type_and_its_shard_deletes_nothing(client):
    dataset = memstore.DataSet("ds")
    dataset.add_tensor("x", np.ones(2))
    client.put_dataset(dataset)
    home = key_shard("ds", len(client.addresses))
    same_shard = next(f"t{i}" for i in range(1000) if key_shard(f"t{i}", 3) == home)
    client.put_tensor(same_shard, np.ones(2))
    with pytest.raises(memstore.errors.WrongType, match=r"'ds'.*dataset"):
        client.delete_tensors([same_shard, "ds"])
    assert client.tensors_exist([same_shard, "ds"]) == [True, False]  # 'ds' is no tensor
    assert client.dataset_exists("ds")


@pytest.mark.parametrize("names", ["abc", None, {"a": 1}])
def test_names_that_are_not_a_list_are_refused_before_sending(client, names):
    for call in (client.delete_tensors, client.tensors_exist, client.get_tensors):
        with pytest.raises(TypeError, match="names must be a list of strings"):
            call(names)


def test_a_name_that_is_not_a_string_is_refused(client):
    with pytest.raises(TypeError, match="tensor name must be a non-empty string, got 3"):
        client.tensors_exist(["a", 3])
    with pytest.raises(TypeError, match="got ''"):
        client.delete_tensors([""])


def ask_raw(address: str, fields: dict) -> dict:
    """One request by hand on a DEALER: the shard's own checks, not the client's."""
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    try:
        socket.connect(address)
        socket.send(msgpack.packb({"v": 1, "id": 7, **fields}))
        assert socket.poll(10_000), "no reply within 10 s"
        return msgpack.unpackb(socket.recv_multipart()[0])
    finally:
        socket.close()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"keys": "abc"}, "field 'keys' must be list"),
        ({"keys": [MINE, 5]}, "key 5 must be a string"),
        ({"keys": [MINE], "kind": "spoon"}, "unknown kind 'spoon'"),
    ],
)
@pytest.mark.parametrize("op", ["delete_keys", "exists_keys"])
def test_the_shard_refuses_a_bad_key_list_naming_what_is_wrong(cluster, op, fields, message):
    reply = ask_raw(cluster.addresses[0], {"op": op, **fields})
    assert (reply["ok"], reply["code"]) == (False, "protocol")
    assert message in reply["msg"] and op in reply["msg"]


def test_the_shard_refuses_a_key_of_another_shard(cluster):
    elsewhere = next(f"x{i}" for i in range(1000) if key_shard(f"x{i}", 3) != 0)
    reply = ask_raw(cluster.addresses[0], {"op": "exists_keys", "keys": [elsewhere]})
    assert reply["ok"] is False and f"key {elsewhere!r} belongs to shard" in reply["msg"]
