"""memstore.smartredis: SmartRedis's semantics where they differ, without changing
memstore.Client's own (SmartRedis's whole suite runs in tests/smartredis_suite)."""

from __future__ import annotations

import numpy as np
import pytest

import memstore
import memstore.smartredis as smartredis
from memstore.smartredis.error import (
    RedisConnectionError,
    RedisKeyError,
    RedisReplyError,
    RedisRuntimeError,
)


@pytest.fixture(scope="module")
def store():
    with memstore.LocalCluster(shards=3) as running:
        yield running


@pytest.fixture
def clients(store):
    """A memstore client and a SmartRedis-style one of the same (emptied) store."""
    with store.client(timeout=10) as native:
        native.flush_db()
        compat = smartredis.Client(False, store.address, "compat")
        yield native, compat
        compat.close()


def test_public_surface():
    assert set(smartredis.__all__) == {
        "Client",
        "ConfigOptions",
        "Dataset",
        "DatasetConverter",
        "LLDebug",
        "LLDeveloper",
        "LLInfo",
        "LLQuiet",
        "LogContext",
        "log_data",
        "log_error",
        "log_warning",
    }


def test_errors_are_both_smartredis_and_memstore_classes(clients):
    _, compat = clients
    with pytest.raises(RedisKeyError) as caught:
        compat.get_tensor("missing")
    assert isinstance(caught.value, memstore.KeyNotFound)
    assert isinstance(caught.value, RedisReplyError) and isinstance(caught.value, RuntimeError)
    assert "missing" in str(caught.value)
    assert issubclass(RedisConnectionError, memstore.ConnectionLost)


def test_delete_of_missing_keys_differs_between_the_two(clients):
    native, compat = clients
    compat.delete_tensor("missing")  # SmartRedis: silent
    compat.delete_list("missing")
    with pytest.raises(memstore.KeyNotFound):  # memstore keeps its own behaviour
        native.delete_tensor("missing")


def test_append_to_list_only_references_the_dataset(clients):
    native, compat = clients
    dataset = smartredis.Dataset("d")
    dataset.add_tensor("x", np.arange(3))
    compat.append_to_list("l", dataset)
    assert not compat.dataset_exists("d")  # SmartRedis: put it yourself
    compat.put_dataset(dataset)
    (got,) = compat.get_datasets_from_list("l")
    assert isinstance(got, smartredis.Dataset)
    np.testing.assert_array_equal(got.get_tensor("x"), np.arange(3))
    native.append_to_list("l2", memstore.DataSet("e"))  # memstore stores it as well
    assert native.dataset_exists("e")


def test_wrong_argument_types_raise_type_error(clients):
    _, compat = clients
    with pytest.raises(TypeError):
        compat.put_tensor("x", [1, 2])
    with pytest.raises(TypeError):
        compat.put_tensor("x", np.zeros(2, np.uint64))  # not a SmartRedis tensor type
    with pytest.raises(TypeError):
        compat.poll_tensor("x", "often", 3)


def test_dataset_add_tensor_copies():
    array = np.arange(4)
    dataset = smartredis.Dataset("d")
    dataset.add_tensor("x", array)
    array[0] = 99
    assert dataset.get_tensor("x")[0] == 0


def test_missing_address_is_a_connection_error(monkeypatch):
    monkeypatch.delenv("SSDB", raising=False)
    with pytest.raises(RedisConnectionError):
        smartredis.Client(None)
    with pytest.raises(RedisRuntimeError):
        smartredis.ConfigOptions().get_string_option("SSDB")


def test_save_snapshots_the_named_shards_into_their_save_dir(tmp_path, monkeypatch):
    """SmartRedis's save(addresses) is memstore's snapshot of those shards (their
    --save-dir); without one it is RedisReplyError, also a memstore error."""
    args = ["--save-dir", str(tmp_path)]
    with memstore.LocalCluster(shards=2, extra_args=args) as saving:
        monkeypatch.setenv("SSDB", saving.address)
        client = smartredis.Client(cluster=True)
        client.put_tensor("kept", np.arange(3))
        client.save(saving.addresses[:1])
        assert list(tmp_path.glob("shard-0-*.msnap"))  # each save writes a file of its own
        assert not list(tmp_path.glob("shard-1-*.msnap"))
    with memstore.LocalCluster(shards=1) as plain:
        monkeypatch.setenv("SSDB", plain.address)
        client = smartredis.Client(cluster=False)
        with pytest.raises(smartredis.error.RedisReplyError, match="save-dir"):
            client.save(plain.addresses)


def test_argument_checks_come_from_the_signatures(clients):
    """Each SmartRedis method is written with SmartRedis's signature and checked from its
    annotations (memstore.smartredis.checks); the messages are typecheck's."""
    from memstore.smartredis.checks import argument_types

    _, compat = clients
    with pytest.raises(TypeError, match=r"^argument num_tries must be int, got str: 'x'$"):
        compat.poll_tensor("t", 10, "x")
    with pytest.raises(TypeError, match=r"^argument inputs must be list or str or NoneType"):
        compat.run_model("m", inputs=3)
    assert argument_types(smartredis.Client.run_script.__wrapped__) == {
        "name": (str,),
        "fn_name": (str,),
        "inputs": (list, str),
        "outputs": (list, str),
    }
    checked = [m for m in vars(smartredis.Client).values() if hasattr(m, "__wrapped__")]
    assert checked and all(m.__doc__ for m in checked)  # memstore's docstring when none
