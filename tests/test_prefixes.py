"""Ensemble key prefixes (SSKEYIN / SSKEYOUT, as SmartRedis applies them) and {hash tags}."""

from __future__ import annotations

import numpy as np
import pytest

import memstore
from memstore.placement import key_shard


@pytest.fixture
def ensemble(cluster, monkeypatch):
    """Make clients with given SSKEYIN / SSKEYOUT (set before construction); closes them."""
    made = []

    def make(keyin: str | None = None, keyout: str | None = None) -> memstore.Client:
        for name, value in (("SSKEYIN", keyin), ("SSKEYOUT", keyout)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        client = cluster.client(timeout=10)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def test_sskeyout_prefixes_writes(client, ensemble):
    """With SSKEYOUT=sim0 a tensor put as "u" is stored as "sim0.u"."""
    producer = ensemble(keyout="sim0")
    producer.put_tensor("u", np.arange(3))
    assert client.key_exists("sim0.u")
    assert not client.key_exists("u")
    np.testing.assert_array_equal(client.get_tensor("sim0.u"), np.arange(3))


def test_without_sskeyin_reads_are_unprefixed(client, ensemble):
    """SSKEYOUT alone prefixes writes only: reading back "u" looks for "u"."""
    producer = ensemble(keyout="sim0")
    producer.put_tensor("u", np.ones(1))
    assert not producer.tensor_exists("u")
    client.put_tensor("u", np.zeros(1))
    np.testing.assert_array_equal(producer.get_tensor("u"), np.zeros(1))


def test_sskeyin_reads_from_the_first_source(ensemble):
    """SSKEYIN=sim0,sim1 reads from sim0 until set_data_source picks another."""
    ensemble(keyout="sim0").put_tensor("u", np.full(2, 0))
    ensemble(keyout="sim1").put_tensor("u", np.full(2, 1))
    consumer = ensemble(keyin="sim0,sim1")
    np.testing.assert_array_equal(consumer.get_tensor("u"), [0, 0])
    consumer.set_data_source("sim1")
    np.testing.assert_array_equal(consumer.get_tensor("u"), [1, 1])
    assert consumer.tensor_exists("u")
    assert consumer.poll_tensor("u", 10, 1) is True


def test_set_data_source_accepts_sskeyin_and_sskeyout_only(ensemble):
    """set_data_source takes a prefix from SSKEYIN or SSKEYOUT; anything else is ValueError."""
    client = ensemble(keyin="a,b", keyout="c")
    for good in ("a", "b", "c"):
        client.set_data_source(good)
    for bad in ("d", "", "a,b", "A"):
        with pytest.raises(ValueError, match="SSKEYIN"):
            client.set_data_source(bad)


def test_set_data_source_after_a_refusal_keeps_the_old_source(ensemble):
    """A refused set_data_source leaves reads on the previous source."""
    ensemble(keyout="b").put_tensor("u", np.ones(1))
    client = ensemble(keyin="a,b")
    client.set_data_source("b")
    with pytest.raises(ValueError):
        client.set_data_source("zzz")
    assert client.tensor_exists("u")


def test_use_tensor_ensemble_prefix_off(client, ensemble):
    """use_tensor_ensemble_prefix(False) stores and reads tensor names as given."""
    producer = ensemble(keyin="sim0", keyout="sim0")
    producer.use_tensor_ensemble_prefix(False)
    producer.put_tensor("raw", np.ones(1))
    assert client.key_exists("raw") and not client.key_exists("sim0.raw")
    assert producer.tensor_exists("raw")
    producer.use_tensor_ensemble_prefix(True)
    assert not producer.tensor_exists("raw")


def test_dataset_prefixes(client, ensemble):
    """Datasets take the prefixes too, and use_dataset_ensemble_prefix turns them off."""
    producer = ensemble(keyin="sim0", keyout="sim0")
    producer.put_dataset(memstore.DataSet("ds"))
    assert client.key_exists("sim0.ds") and producer.dataset_exists("ds")
    assert producer.get_dataset("ds").get_name() == "ds"
    producer.use_dataset_ensemble_prefix(False)
    producer.put_dataset(memstore.DataSet("plain"))
    assert client.key_exists("plain") and not client.key_exists("sim0.plain")


def test_list_prefixes(client, ensemble):
    """Lists and the datasets appended to them are stored under the write prefix; a reader
    of that source gets the datasets back under their own names."""
    producer = ensemble(keyout="sim0")
    producer.append_to_list("agg", memstore.DataSet("d0"))
    assert client.key_exists("sim0.agg") and client.key_exists("sim0.d0")
    consumer = ensemble(keyin="sim0")
    assert consumer.get_list_length("agg") == 1
    assert [d.get_name() for d in consumer.get_datasets_from_list("agg")] == ["d0"]
    assert consumer.poll_list_length("agg", 1, 10, 1) is True
    consumer.use_list_ensemble_prefix(False)
    assert consumer.get_list_length("agg") == 0
    assert consumer.get_list_length("sim0.agg") == 1


def test_copy_reads_source_prefix_and_writes_destination_prefix(client, ensemble):
    """copy_tensor reads its source under SSKEYIN and writes under SSKEYOUT."""
    ensemble(keyout="in").put_tensor("x", np.arange(2))
    worker = ensemble(keyin="in", keyout="out")
    worker.copy_tensor("x", "y")
    assert client.key_exists("out.y") and client.key_exists("in.x")
    worker.rename_tensor("x", "z")
    assert client.key_exists("out.z") and not client.key_exists("in.x")


def test_key_exists_and_poll_key_take_keys_as_is(client, ensemble):
    """key_exists and poll_key never add a prefix."""
    prefixed = ensemble(keyin="sim0", keyout="sim0")
    client.put_tensor("bare", np.ones(1))
    assert prefixed.key_exists("bare")
    assert prefixed.poll_key("bare", 10, 1) is True
    assert not prefixed.tensor_exists("bare")
    prefixed.put_tensor("mine", np.ones(1))
    assert prefixed.key_exists("sim0.mine") and not prefixed.key_exists("mine")


def test_model_prefix_switch_exists(ensemble):
    """use_model_ensemble_prefix is there, as in SmartRedis."""
    ensemble(keyin="a", keyout="a").use_model_ensemble_prefix(True)


# -- hash tags -------------------------------------------------------------------------------


def _keys_per_shard(client) -> list[int]:
    return [info["keys"] for info in client.get_db_node_info()]


def test_hash_tags_colocate(client):
    """Every key with the same {tag} is stored on one shard, as placement says."""
    client.put_tensors({f"{{snap7}}.field{i}": np.ones(1) for i in range(20)})
    counts = _keys_per_shard(client)
    shard = key_shard("snap7", len(client.addresses))
    assert counts[shard] == 20 and sum(counts) == 20


def test_untagged_keys_spread(client):
    """The same keys without a tag land on more than one shard."""
    client.put_tensors({f"snap7.field{i}": np.ones(1) for i in range(20)})
    assert sum(1 for count in _keys_per_shard(client) if count) > 1


def test_hash_tags_survive_prefixes(client, ensemble):
    """A prefixed key keeps its tag, so ensemble members' tagged keys stay together."""
    producer = ensemble(keyout="sim0")
    producer.put_tensor("{grp}.a", np.ones(1))
    client.put_tensor("{grp}.b", np.ones(1))
    dataset = memstore.DataSet("{grp}.ds")
    producer.put_dataset(dataset)
    counts = _keys_per_shard(client)
    assert counts[key_shard("grp", len(client.addresses))] == 3 and sum(counts) == 3
