"""The client against real shards (tcp and ipc): tensors of every kind round-trip, sync and
async, single and batched, across shards."""

from __future__ import annotations

import concurrent.futures
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import memstore
from memstore.placement import key_shard

DTYPES = [
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "complex64",
    "complex128",
]

server_settings = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@st.composite
def arrays(draw):
    """Any supported array, C or Fortran ordered, or a strided view."""
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6))
    array = draw(hnp.arrays(dtype, shape))
    layout = draw(st.sampled_from(["C", "F", "strided"]))
    if layout == "F":
        array = np.asfortranarray(array)
    elif layout == "strided" and array.ndim:
        array = array[(slice(None, None, -1),) + (slice(None, None, 2),) * (array.ndim - 1)]
    return array


def on_shard(client, shard: int, prefix: str = "k", skip: int = 0) -> str:
    """A key that the client places on ``shard`` (the ``skip``-th such key)."""
    count = len(client.addresses)
    found = (f"{prefix}{i}" for i in range(10_000) if key_shard(f"{prefix}{i}", count) == shard)
    for _ in range(skip):
        next(found)
    return next(found)


def two_shards(client) -> tuple[str, str]:
    """Two keys on different shards."""
    return on_shard(client, 0, "src"), on_shard(client, 1, "dst")


def same_shard(client) -> tuple[str, str]:
    """Two keys on the same shard."""
    return on_shard(client, 2, "src"), on_shard(client, 2, "dst")


# -- round trips -----------------------------------------------------------------------------


@pytest.mark.every_path
@server_settings
@given(array=arrays())
def test_round_trip_every_dtype_shape_and_order(client, array):
    """Every dtype, shape (0-d and zero-size too) and order comes back through a shard with
    the same dtype, shape, bits and order."""
    client.put_tensor("prop", array)
    back = client.get_tensor("prop")
    assert back.dtype == array.dtype and back.shape == array.shape
    assert np.ascontiguousarray(back).tobytes() == np.ascontiguousarray(array).tobytes()
    if array.flags.f_contiguous and not array.flags.c_contiguous:
        assert back.flags.f_contiguous
    else:
        assert back.flags.c_contiguous


def test_cluster_has_three_shards_and_one_address_is_enough(cluster):
    """A client given one shard's address learns the whole shard list."""
    with memstore.Client(cluster.addresses[1], timeout=10) as client:
        assert client.addresses == cluster.addresses
        client.put_tensor("x", np.ones(3))
        assert client.tensor_exists("x")


def test_as_torch(client):
    """get_tensor(as_torch=True) gives a torch tensor; bfloat16 survives the store."""
    torch = pytest.importorskip("torch")
    for dtype in (torch.float32, torch.bfloat16, torch.int64, torch.bool):
        tensor = (torch.arange(12, dtype=torch.float32) - 3).reshape(3, 4).to(dtype)
        client.put_tensor("t", tensor)
        back = client.get_tensor("t", as_torch=True)
        assert isinstance(back, torch.Tensor) and back.dtype == dtype
        assert torch.equal(back, tensor)
    client.put_tensor("np", np.arange(5, dtype=np.int32))
    assert torch.equal(client.get_tensor("np", as_torch=True), torch.arange(5, dtype=torch.int32))


def test_bfloat16_as_numpy_is_type_error_naming_key(client):
    """Getting a bfloat16 tensor as numpy raises TypeError naming the key."""
    torch = pytest.importorskip("torch")
    client.put_tensor("bf", torch.ones(2, dtype=torch.bfloat16))
    with pytest.raises(TypeError, match="bf"):
        client.get_tensor("bf")


def test_unsupported_dtype_is_type_error_and_nothing_is_sent(client):
    """Putting a str array raises TypeError naming the dtype; the key is not created."""
    with pytest.raises(TypeError, match="<U"):
        client.put_tensor("s", np.array(["a", "b"]))
    assert not client.key_exists("s")


def test_returned_arrays_are_writable_and_independent(client):
    """A got array is writable; writing to it changes neither the store nor another get,
    and changing the source array after a put does not change the store."""
    source = np.arange(10, dtype=np.float64)
    client.put_tensor("w", source)
    source[:] = -1
    first = client.get_tensor("w")
    assert first.flags.writeable
    first[:] = 42
    second, third = client.get_tensors(["w", "w"])
    np.testing.assert_array_equal(second, np.arange(10, dtype=np.float64))
    second[0] = 7
    assert third[0] == 0
    assert not np.shares_memory(second, third)


def test_missing_key_is_key_not_found_naming_it(client):
    """get/delete of a missing tensor is KeyNotFound (a KeyError) naming the key."""
    with pytest.raises(memstore.KeyNotFound, match="nothing-here"):
        client.get_tensor("nothing-here")
    with pytest.raises(KeyError, match="nothing-here"):
        client.delete_tensor("nothing-here")


# -- tensor operations -----------------------------------------------------------------------


def test_put_get_delete_exists(client):
    """The tensor lifecycle: exists after put, gone after delete."""
    assert not client.tensor_exists("life")
    client.put_tensor("life", np.arange(3))
    assert client.tensor_exists("life") and client.key_exists("life")
    client.delete_tensor("life")
    assert not client.tensor_exists("life") and not client.key_exists("life")
    with pytest.raises(memstore.KeyNotFound):
        client.get_tensor("life")


def test_put_replaces(client):
    """A second put of the same name replaces the value (dtype and shape too)."""
    client.put_tensor("r", np.zeros((2, 2)))
    client.put_tensor("r", np.arange(5, dtype=np.int8))
    np.testing.assert_array_equal(client.get_tensor("r"), np.arange(5, dtype=np.int8))


@pytest.mark.parametrize("placement", [two_shards, same_shard], ids=["across", "same"])
def test_copy_tensor(client, placement):
    """copy_tensor leaves the source and makes an equal, independent destination."""
    src, dst = placement(client)
    data = np.arange(24, dtype=np.complex64).reshape(2, 3, 4, order="F")
    client.put_tensor(src, data)
    client.copy_tensor(src, dst)
    back = client.get_tensor(dst)
    np.testing.assert_array_equal(back, data)
    assert back.flags.f_contiguous
    client.delete_tensor(src)
    np.testing.assert_array_equal(client.get_tensor(dst), data)


def test_copy_bfloat16_across_shards(client):
    """A cross-shard copy moves raw bytes, so a bfloat16 tensor survives it."""
    torch = pytest.importorskip("torch")
    src, dst = two_shards(client)
    tensor = torch.linspace(-2, 2, 9).to(torch.bfloat16)
    client.put_tensor(src, tensor)
    client.copy_tensor(src, dst)
    assert torch.equal(client.get_tensor(dst, as_torch=True), tensor)


@pytest.mark.parametrize("placement", [two_shards, same_shard], ids=["across", "same"])
def test_rename_tensor(client, placement):
    """rename_tensor moves the value: the old name is gone, the new one holds it."""
    src, dst = placement(client)
    client.put_tensor(src, np.arange(4))
    client.rename_tensor(src, dst)
    assert not client.tensor_exists(src)
    np.testing.assert_array_equal(client.get_tensor(dst), np.arange(4))


def test_rename_onto_itself_keeps_the_tensor(client):
    """rename_tensor(x, x) leaves x in place."""
    client.put_tensor("same", np.arange(3))
    client.rename_tensor("same", "same")
    np.testing.assert_array_equal(client.get_tensor("same"), np.arange(3))


@pytest.mark.parametrize("placement", [two_shards, same_shard], ids=["across", "same"])
def test_copy_and_rename_of_missing_tensor_are_key_not_found(client, placement):
    """copy/rename of a missing source is KeyNotFound naming it; nothing is created."""
    src, dst = placement(client)
    with pytest.raises(memstore.KeyNotFound, match=src):
        client.copy_tensor(src, dst)
    with pytest.raises(memstore.KeyNotFound, match=src):
        client.rename_tensor(src, dst)
    assert not client.key_exists(dst)


def test_unpack_tensor(client):
    """unpack_tensor fills the given array and returns it; a shape mismatch is TypeError."""
    client.put_tensor("u", np.arange(6, dtype=np.float32).reshape(2, 3))
    out = np.empty((2, 3), dtype=np.float32)
    assert client.unpack_tensor("u", out) is out
    np.testing.assert_array_equal(out, np.arange(6).reshape(2, 3))
    with pytest.raises(TypeError, match="u"):
        client.unpack_tensor("u", np.empty(6, dtype=np.float32))
    with pytest.raises(TypeError):
        client.unpack_tensor("u", np.empty((2, 3), dtype=np.float64))


@pytest.mark.every_path
def test_put_tensors_get_tensors_keep_order(client):
    """get_tensors returns arrays in the order asked, whatever shard each lives on."""
    data = {f"b{i}": np.full(i + 1, i, dtype=np.int32) for i in range(30)}
    assert client.put_tensors(data) is None
    names = [*reversed(data), "b3"]
    got = client.get_tensors(names)
    assert len(got) == len(names)
    for name, array in zip(names, got, strict=True):
        np.testing.assert_array_equal(array, data[name])
    assert client.get_tensors([]) == []
    client.put_tensors({})


def test_get_tensors_with_a_missing_name_is_key_not_found(client):
    """One missing name fails the whole batch with KeyNotFound naming it."""
    client.put_tensors({"p": np.ones(1), "q": np.ones(1)})
    with pytest.raises(memstore.KeyNotFound, match="absent"):
        client.get_tensors(["p", "absent", "q"])


def test_key_exists_versus_tensor_exists(client):
    """tensor_exists is about tensors only; key_exists about any value."""
    dataset = memstore.DataSet("ds")
    dataset.add_tensor("x", np.ones(2))
    client.put_dataset(dataset)
    assert client.key_exists("ds")
    assert not client.tensor_exists("ds")
    assert client.dataset_exists("ds")
    client.put_tensor("t", np.ones(1))
    assert client.key_exists("t") and client.tensor_exists("t") and not client.dataset_exists("t")


def test_tensor_ops_on_a_dataset_are_wrong_type(client):
    """get/delete of a tensor at a key holding a dataset raise WrongType; the dataset stays."""
    dataset = memstore.DataSet("ds")
    dataset.add_meta_scalar("step", 1)
    client.put_dataset(dataset)
    with pytest.raises(memstore.WrongType, match="ds"):
        client.get_tensor("ds")
    with pytest.raises(TypeError):
        client.delete_tensor("ds")
    with pytest.raises(memstore.WrongType):
        client.get_tensors(["ds"])
    assert client.dataset_exists("ds")


def test_bad_names_are_type_errors(client):
    """Empty or non-string names are refused before anything is sent."""
    for name in ("", None, 3):
        with pytest.raises(TypeError):
            client.put_tensor(name, np.ones(1))


# -- async -----------------------------------------------------------------------------------


def test_async_calls_return_futures_and_sync_is_result(client):
    """Every _async call returns a concurrent.futures.Future whose result the sync call gives."""
    put = client.put_tensor_async("f", np.arange(3))
    assert isinstance(put, concurrent.futures.Future) and isinstance(put, memstore.Future)
    assert put.result(timeout=10) is None
    get = client.get_tensor_async("f")
    np.testing.assert_array_equal(get.result(timeout=10), np.arange(3))
    assert client.tensor_exists_async("f").result(timeout=10) is True
    failing = client.get_tensor_async("missing")
    assert isinstance(failing.exception(timeout=10), memstore.KeyNotFound)


def test_many_requests_in_flight_resolve_to_their_own_keys(client):
    """2,000 puts then 2,000 gets in flight at once: each future gets its own key's value."""
    n = 2000
    puts = [client.put_tensor_async(f"a{i}", np.array([i, -i], dtype=np.int64)) for i in range(n)]
    gets = [client.get_tensor_async(f"a{i}") for i in reversed(range(n))]
    memstore.wait(puts + gets, timeout=60)
    assert all(p.result(0) is None for p in puts)
    for i, get in zip(reversed(range(n)), gets, strict=True):
        np.testing.assert_array_equal(get.result(0), [i, -i])


@pytest.mark.every_path
def test_requests_to_one_shard_are_answered_in_order(client):
    """Interleaved puts and gets of one key in flight together see each put in turn."""
    futures = []
    for i in range(200):
        futures.append(client.put_tensor_async("seq", np.array([i])))
        futures.append(client.get_tensor_async("seq"))
    memstore.wait(futures, timeout=30)
    assert [f.result(0)[0] for f in futures[1::2]] == list(range(200))


def test_a_future_can_be_awaited_from_another_thread(client):
    """A future made in one thread completes when another thread asks for its result."""
    future = client.put_tensor_async("x", np.ones(4))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert pool.submit(future.result, 10).result(timeout=20) is None
    np.testing.assert_array_equal(client.get_tensor("x"), np.ones(4))


def test_threads_share_a_client(client):
    """Four threads using one client at once each read back exactly what they wrote."""
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(100):
                client.put_tensor(f"t{t}.{i}", np.array([t, i]))
                np.testing.assert_array_equal(client.get_tensor(f"t{t}.{i}"), [t, i])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert sum(info["keys"] for info in client.get_db_node_info()) == 400


# -- admin -----------------------------------------------------------------------------------


def test_db_node_info_and_flush(client, cluster):
    """get_db_node_info reports every shard; flush_db empties them all."""
    client.put_tensors({f"n{i}": np.ones(8, dtype=np.uint8) for i in range(20)})
    infos = client.get_db_node_info()
    assert [info["address"] for info in infos] == cluster.addresses
    assert sum(info["keys"] for info in infos) == 20
    assert all(info["bytes"] >= 8 * info["keys"] for info in infos)
    assert all({"ops", "clients", "uptime"} <= set(info) for info in infos)
    client.flush_db()
    assert all(info["keys"] == 0 and info["bytes"] == 0 for info in client.get_db_node_info())


@pytest.mark.every_path
def test_closed_client_raises_connection_lost(cluster):
    """After close() (or leaving the with-block) every call raises ConnectionLost."""
    with cluster.client(timeout=10) as client:
        client.put_tensor("c", np.ones(1))
    with pytest.raises(memstore.ConnectionLost):
        client.get_tensor("c")


@pytest.mark.every_path
def test_pending_futures_fail_when_the_client_closes(cluster):
    """A future still pending when its client closes fails with ConnectionLost, not a hang."""
    client = cluster.client(timeout=10)
    future = client.poll_tensor_async("never", 100, 100)
    client.close()
    assert isinstance(future.exception(timeout=5), memstore.ConnectionLost)


# -- the "done when" on a 4-shard cluster --------------------------------------------


@pytest.fixture(scope="module")
def four():
    """A 4-shard LocalCluster, as in the issue's acceptance criteria."""
    with memstore.LocalCluster(shards=4) as running:
        yield running


@pytest.fixture
def four_client(four):
    with four.client(timeout=60) as client:
        client.flush_db()
        yield client


def test_64_mib_float32_round_trip(four_client):
    """A 64 MiB float32 tensor round-trips through a 4-shard cluster unchanged."""
    data = np.arange(16 * 2**20, dtype=np.float32).reshape(4096, 4096)
    assert data.nbytes == 64 * 2**20
    four_client.put_tensor("big", data)
    back = four_client.get_tensor("big")
    assert back.dtype == np.float32 and back.shape == data.shape
    assert np.array_equal(back, data)


def test_10000_small_keys_batched(four_client):
    """10,000 small keys via put_tensors / get_tensors, spread over all four shards."""
    data = {f"small{i}": np.array([i, i * 2], dtype=np.int32) for i in range(10_000)}
    four_client.put_tensors(data)
    infos = four_client.get_db_node_info()
    assert sum(info["keys"] for info in infos) == 10_000
    assert all(info["keys"] > 2000 for info in infos)
    got = four_client.get_tensors(list(data))
    assert all(np.array_equal(a, data[name]) for name, a in zip(data, got, strict=True))


def test_10000_small_keys_pipelined(four_client):
    """10,000 put_tensor_async calls in flight, then read back."""
    futures = [
        four_client.put_tensor_async(f"pipe{i}", np.array([i], dtype=np.int64))
        for i in range(10_000)
    ]
    memstore.wait(futures, timeout=120)
    assert all(f.exception(0) is None for f in futures)
    got = four_client.get_tensors([f"pipe{i}" for i in range(10_000)])
    assert [int(a[0]) for a in got] == list(range(10_000))


def test_infinite_client_timeout(cluster):
    """Client(timeout=inf) means "never give up"; every call still works."""
    with cluster.client(timeout=float("inf")) as client:
        client.put_tensor("inf", np.arange(3))
        np.testing.assert_array_equal(client.get_tensor("inf"), np.arange(3))
        assert client.poll_tensor("inf", 10, 1) is True


def test_shard_memory_returns_to_zero(client):
    """Whatever is stored, copied, renamed, listed and deleted, the shards' byte counts
    return to 0 once everything is deleted."""
    src, dst = two_shards(client)
    client.put_tensor(src, np.ones(1000))
    client.copy_tensor(src, dst)
    client.rename_tensor(dst, "moved")
    client.put_tensors({f"m{i}": np.ones(i + 1) for i in range(20)})
    client.append_to_list("agg", memstore.DataSet("d"))
    client.copy_list("agg", "agg2")
    client.rename_dataset("d", "d2")
    assert sum(info["bytes"] for info in client.get_db_node_info()) > 8000
    for name in (src, "moved", *(f"m{i}" for i in range(20))):
        client.delete_tensor(name)
    client.delete_dataset("d2")
    client.delete_list("agg")
    client.delete_list("agg2")
    infos = client.get_db_node_info()
    assert [(info["keys"], info["bytes"]) for info in infos] == [(0, 0)] * len(infos)


@pytest.mark.every_path
def test_got_arrays_wrap_the_received_frame(cluster, monkeypatch):
    """Over the sockets a got array is a view of the received ZeroMQ frame, or of the buffer
    the Unix path received it into, not a copy of it (the shared-memory path maps a file
    instead: tests/test_shm.py)."""
    zmq = pytest.importorskip("zmq")
    monkeypatch.setenv("MEMSTORE_SHM", "0")
    monkeypatch.setenv("MEMSTORE_UNIX", "1" if cluster.path == "unix" else "0")
    with cluster.client(timeout=10) as client:
        client.put_tensor("big", np.ones(1 << 18))
        array = client.get_tensor("big")
    owner = array
    while isinstance(owner, np.ndarray):
        owner = owner.base
    if cluster.path == "unix":
        assert isinstance(owner, memoryview) and isinstance(owner.obj, bytearray)
        assert owner.obj.__len__() == array.nbytes  # its own buffer, the whole frame
    else:
        assert isinstance(owner, zmq.Frame)


def test_smartredis_argument_order(cluster):
    """SmartRedis's older Client(cluster, address) order is accepted too."""
    for flag in (False, True):
        with memstore.Client(flag, cluster.address, timeout=10) as client:
            assert client.addresses == cluster.addresses


def test_many_chained_requests_resolve_without_recursion(client):
    """Chained futures submit from reply callbacks; thousands at once must not nest pumps."""
    import memstore as ms

    dataset = ms.DataSet("chain_ds")
    dataset.add_tensor("t", np.arange(3))
    for _ in range(1500):
        client.append_to_list_async("chain_list", dataset)
    assert client.poll_list_length("chain_list", 1500, 100, 300)
    futures = [client.get_dataset_list_range_async("chain_list", i, i) for i in range(1500)]
    ms.wait(futures, timeout=120)
    assert all(f.result()[0].get_tensor("t").tolist() == [0, 1, 2] for f in futures)


def test_a_request_that_cannot_be_encoded_leaves_nothing_pending(client):
    """The caller gets the encoding error at once; no future waits for a reply that cannot come."""
    transport = client._requests.transport
    with pytest.raises(TypeError):
        transport.submit(0, "exists", {"key": object()}, [], lambda h, p: h, 5.0, "bad")
    with pytest.raises(TypeError):
        transport.try_fast(0, "exists", {"key": object()}, [], lambda h, p: h, 5.0, "bad")
    assert transport._pending == {} and transport._busy == [0, 0, 0]
    assert client.tensor_exists("anything") is False  # the transport still works


# -- blocking methods are made from their async twins ----------------------------------------


def _async_methods(cls) -> list[str]:
    return sorted(n for n in dir(cls) if n.endswith("_async") and not n.startswith("_"))


@pytest.mark.parametrize("cls", [memstore.Client, memstore.client.keys.RawKeys])
def test_every_async_method_has_a_blocking_twin_with_its_parameters_and_docstring(cls):
    """``x`` for every public ``x_async``: the same parameters (return type not a Future),
    the same docstring plus the line saying it blocks, named ``x``, shown by help()."""
    import inspect
    import pydoc

    names = _async_methods(cls)
    assert len(names) >= (57 if cls is memstore.Client else 9)
    for async_name in names:
        name = async_name.removesuffix("_async")
        method, twin = getattr(cls, name), getattr(cls, async_name)
        assert method.__name__ == name and method.__qualname__.endswith(f".{name}")
        made, source = inspect.signature(method), inspect.signature(twin)
        assert list(made.parameters.values()) == list(source.parameters.values()), name
        assert "Future" not in str(made.return_annotation), name
        doc = inspect.getdoc(method)
        assert doc.startswith(inspect.getdoc(twin)), name
        assert f"Blocks: waits for :meth:`{async_name}`" in doc, name
        assert not doc.split("\n\n")[0].rstrip().endswith((",", "(", "or", "the")), name
        assert f"{name}(self, " in pydoc.render_doc(method, renderer=pydoc.plaintext), name


def test_a_blocking_method_is_its_futures_result(client):
    """A made blocking method returns what its async twin's future gives, and raises its
    error; its first request may go inline (an InlineResult, never a Future, is hidden)."""
    client.put_tensor("twin", np.arange(3.0))
    np.testing.assert_array_equal(
        client.get_tensor("twin"), client.get_tensor_async("twin").result()
    )
    with pytest.raises(memstore.KeyNotFound):
        client.get_tensor("no such twin")


# -- client.keys: stored keys, no prefixes ---------------------------------------------------


def test_raw_keys_take_stored_keys_as_they_are(client, monkeypatch):
    """client.keys works on the keys a prefixed client would write, by their stored names."""
    monkeypatch.setenv("SSKEYOUT", "ens")
    monkeypatch.setenv("SSKEYIN", "ens")
    with memstore.Client(client.addresses[0], timeout=10) as prefixed:
        prefixed.put_tensor("t", np.arange(4.0))
        ds = memstore.DataSet("d")
        ds.add_tensor("x", np.ones(2))
        prefixed.append_to_list("l", ds)
    keys = client.keys
    assert keys.exists("ens.t") and keys.exists("ens.t", "tensor") and not keys.exists("t")
    assert not keys.exists("ens.t", "dataset")
    keys.copy("ens.t", "copied", "tensor")
    np.testing.assert_array_equal(client.get_tensor("copied"), np.arange(4.0))
    for i in range(8):  # some of these land on another shard than the source
        keys.rename("copied" if i == 0 else f"moved{i - 1}", f"moved{i}", "tensor")
    assert not keys.exists("copied") and keys.exists("moved7")
    assert keys.list_range("ens.l", 0, -1) == ["ens.d"] and keys.list_length("ens.l") == 1
    assert keys.list_push("ens.l", ["other"]) == 2
    got = keys.get_dataset("ens.d")
    assert got.name == "ens.d" and got.get_tensor("x").tolist() == [1.0, 1.0]
    keys.put_dataset("raw.d", got)
    assert client.dataset_exists("raw.d")
    keys.delete("moved7")
    with pytest.raises(memstore.KeyNotFound):
        keys.delete("moved7")
    assert isinstance(keys.exists_async("ens.t"), memstore.Future)


# -- old import paths ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "name"),
    [
        ("memstore.transport", "Transport"),
        ("memstore.client_models", "ModelCalls"),
        ("memstore.client_datasets", "DatasetCalls"),
        ("memstore.shm_client", "Link"),
    ],
)
def test_old_module_paths_work_with_a_deprecation_warning(old, name):
    import importlib
    import sys

    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} is deprecated"):
        module = importlib.import_module(old)
    assert getattr(module, name) is not None
