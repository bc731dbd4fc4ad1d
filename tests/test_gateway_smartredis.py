"""Cross-client: the real SmartRedis client (through ``memstore gateway``) and
``memstore.Client`` (straight to the shards) read what the other wrote.

Needs the real ``smartredis`` package (numpy<2: ``.venv-smartredis``, see
tests/test_smartredis_gateway.py, which runs this file there); skips without it.
"""

from __future__ import annotations

import numpy as np
import pytest

import memstore

smartredis = pytest.importorskip("smartredis")
if smartredis.__name__ != "smartredis":  # tests/smartredis_suite aliased memstore.smartredis
    pytest.skip("the real smartredis package is not installed", allow_module_level=True)


@pytest.fixture(scope="module", params=[1, 2], ids=["standalone", "cluster"])
def store(request):
    with memstore.LocalCluster(2, resp_port=0, gateways=request.param) as running:
        yield running


@pytest.fixture
def clients(store):
    with store.client(timeout=10) as native:
        native.flush_db()
        cluster = store.smartredis_env["SR_DB_TYPE"] == "Clustered"
        yield native, smartredis.Client(address=store.smartredis_env["SSDB"], cluster=cluster)


def test_smartredis_put_memstore_get(clients):
    native, sr = clients
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    sr.put_tensor("from_sr", array)
    got = native.get_tensor("from_sr")
    assert got.dtype == np.float32 and got.shape == (3, 4)
    np.testing.assert_array_equal(got, array)


def test_memstore_put_smartredis_get(clients):
    native, sr = clients
    array = np.arange(10, dtype=np.int64)
    native.put_tensor("from_native", array)
    assert sr.tensor_exists("from_native")
    np.testing.assert_array_equal(sr.get_tensor("from_native"), array)
    sr.delete_tensor("from_native")
    assert not native.tensor_exists("from_native")


def test_dataset_and_list_across_the_two(clients):
    native, sr = clients
    dataset = smartredis.Dataset("ds")
    dataset.add_tensor("x", np.arange(4, dtype=np.float64))
    dataset.add_meta_string("note", "from smartredis")
    sr.put_dataset(dataset)
    sr.append_to_list("agg", dataset)
    assert native.get_list_length("agg") == 1 and sr.get_list_length("agg") == 1
    (got,) = sr.get_datasets_from_list("agg")
    np.testing.assert_array_equal(got.get_tensor("x"), np.arange(4, dtype=np.float64))
    assert got.get_meta_strings("note") == ["from smartredis"]
    # SmartRedis's layout, not a memstore DataSet: each tensor under "{name}.field", the
    # metadata in a hash "{name}.meta" (a memstore dataset of uint8 fields here)
    np.testing.assert_array_equal(native.get_tensor("{ds}.x"), np.arange(4, dtype=np.float64))
    assert native.dataset_exists("{ds}.meta") and not native.dataset_exists("ds")
    # a tensor memstore writes under that layout is part of the SmartRedis dataset
    native.put_tensor("{ds}.x", np.full(4, 7.0))
    (again,) = sr.get_datasets_from_list("agg")
    np.testing.assert_array_equal(again.get_tensor("x"), np.full(4, 7.0))
