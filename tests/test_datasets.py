"""DataSet (SmartRedis's API), datasets in the store, and aggregation lists."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import memstore
from memstore.placement import key_shard


def make(name: str, step: int = 0) -> memstore.DataSet:
    ds = memstore.DataSet(name)
    ds.add_tensor("u", np.full((2, 3), step, dtype=np.float32))
    ds.add_meta_scalar("step", step)
    ds.add_meta_string("origin", f"rank{step}")
    return ds


def on_shard(client, shard: int, prefix: str) -> str:
    count = len(client.addresses)
    return next(f"{prefix}{i}" for i in range(10_000) if key_shard(f"{prefix}{i}", count) == shard)


# -- the DataSet object ----------------------------------------------------------------------


def test_dataset_name():
    """A dataset has a name; an empty or non-string name is a TypeError."""
    assert memstore.DataSet("ds").get_name() == "ds"
    assert memstore.Dataset is memstore.DataSet
    for bad in ("", None, 3):
        with pytest.raises(TypeError):
            memstore.DataSet(bad)


def test_tensors_in_a_dataset():
    """add_tensor / get_tensor / get_tensor_names / get_tensor_type / get_tensor_dims."""
    ds = memstore.DataSet("ds")
    ds.add_tensor("a", np.arange(6, dtype=np.int16).reshape(2, 3))
    ds.add_tensor("b", np.asfortranarray(np.ones((4, 5), dtype=np.float64)))
    ds.add_tensor("s", np.float32(2.5))
    assert ds.get_tensor_names() == ["a", "b", "s"]
    assert ds.get_tensor_type("a") == np.dtype(np.int16)
    assert ds.get_tensor_dims("b") == [4, 5]
    assert ds.get_tensor_dims("s") == []
    np.testing.assert_array_equal(ds.get_tensor("a"), np.arange(6).reshape(2, 3))
    assert ds.get_tensor("b").flags.f_contiguous
    ds.add_tensor("a", np.zeros(1, dtype=np.uint8))  # replaces
    assert ds.get_tensor_names() == ["a", "b", "s"] and ds.get_tensor_type("a") == np.uint8


def test_missing_tensor_is_key_error_naming_it():
    """Asking a dataset for a tensor it lacks is a KeyError naming tensor and dataset."""
    ds = memstore.DataSet("ds")
    with pytest.raises(KeyError, match="nope"):
        ds.get_tensor("nope")
    with pytest.raises(KeyError, match="ds"):
        ds.get_tensor_dims("nope")


def test_unsupported_tensor_dtype_is_type_error():
    """A dataset refuses a str array like put_tensor does."""
    with pytest.raises(TypeError, match="<U"):
        memstore.DataSet("ds").add_tensor("s", np.array(["x"]))
    with pytest.raises(TypeError):
        memstore.DataSet("ds").add_tensor("", np.ones(1))


def test_metadata_scalars():
    """add_meta_scalar appends; get_meta_scalars gives a numpy array of the field's type."""
    ds = memstore.DataSet("ds")
    for value in (1, 2, 3):
        ds.add_meta_scalar("ints", value)
    ds.add_meta_scalar("floats", 0.5)
    ds.add_meta_scalar("f32", np.float32(1.5))
    ds.add_meta_scalar("u64", np.uint64(2**64 - 1))
    np.testing.assert_array_equal(ds.get_meta_scalars("ints"), [1, 2, 3])
    assert ds.get_meta_scalars("ints").dtype == np.int64
    assert ds.get_meta_scalars("floats").dtype == np.float64
    assert ds.get_meta_scalars("f32").dtype == np.float32
    assert ds.get_meta_scalars("u64")[0] == 2**64 - 1
    assert ds.get_metadata_field_type("f32") == np.float32
    assert ds.get_metadata_field_names() == ["ints", "floats", "f32", "u64"]


def test_metadata_strings():
    """add_meta_string appends; get_meta_strings gives the list; the field type is str."""
    ds = memstore.DataSet("ds")
    ds.add_meta_string("tags", "a")
    ds.add_meta_string("tags", "ünïcode")
    assert ds.get_meta_strings("tags") == ["a", "ünïcode"]
    assert ds.get_metadata_field_type("tags") is str


@pytest.mark.parametrize(
    ("first", "second"),
    [(1, 1.5), (1.5, 1), (np.float32(1), 1.0), (1, np.int32(1)), (np.int8(1), np.int16(1))],
)
def test_a_metadata_field_keeps_one_numeric_type(first, second):
    """Adding a scalar of another type to a field is a TypeError; the field is unchanged."""
    ds = memstore.DataSet("ds")
    ds.add_meta_scalar("f", first)
    with pytest.raises(TypeError, match="'f'"):
        ds.add_meta_scalar("f", second)
    assert len(ds.get_meta_scalars("f")) == 1


@pytest.mark.parametrize(
    "value", [True, np.bool_(False), "1", None, [1], 1 + 2j, np.complex64(1), np.array([1])]
)
def test_meta_scalar_refuses_non_numbers(value):
    """bool, str, complex, lists and arrays are not metadata scalars."""
    with pytest.raises(TypeError):
        memstore.DataSet("ds").add_meta_scalar("f", value)


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 2**64])
def test_meta_scalar_refuses_python_ints_beyond_int64(value):
    """A Python int that int64 cannot hold is refused when added, not when read back."""
    ds = memstore.DataSet("ds")
    with pytest.raises((OverflowError, TypeError, ValueError)):
        ds.add_meta_scalar("f", value)
    assert ds.get_metadata_field_names() == []


def test_strings_and_scalars_do_not_mix():
    """A string field refuses scalars and vice versa; each getter refuses the other kind."""
    ds = memstore.DataSet("ds")
    ds.add_meta_string("s", "x")
    ds.add_meta_scalar("n", 1)
    with pytest.raises(TypeError):
        ds.add_meta_scalar("s", 1)
    with pytest.raises(TypeError):
        ds.add_meta_string("n", "x")
    with pytest.raises(TypeError):
        ds.get_meta_scalars("s")
    with pytest.raises(TypeError):
        ds.get_meta_strings("n")
    with pytest.raises(TypeError):
        ds.add_meta_string("t", 5)
    with pytest.raises(KeyError, match="missing"):
        ds.get_meta_strings("missing")


# -- datasets in the store -------------------------------------------------------------------


def test_dataset_round_trip(client):
    """Every tensor (dtypes, orders, 0-d, empty) and every metadata field survives the store."""
    ds = memstore.DataSet("full")
    ds.add_tensor("c", np.arange(12, dtype=np.complex128).reshape(3, 4))
    ds.add_tensor("f", np.asfortranarray(np.arange(6, dtype=np.int8).reshape(2, 3)))
    ds.add_tensor("zero_d", np.array(7, dtype=np.uint32))
    ds.add_tensor("empty", np.zeros((0, 4), dtype=np.float16))
    ds.add_tensor("strided", np.arange(20.0)[::3])
    ds.add_meta_scalar("i", 3)
    ds.add_meta_scalar("i", -4)
    ds.add_meta_scalar("f32", np.float32(0.25))
    ds.add_meta_string("s", "hello")
    client.put_dataset(ds)
    back = client.get_dataset("full")
    assert back.get_name() == "full"
    assert back.get_tensor_names() == ds.get_tensor_names()
    for name in ds.get_tensor_names():
        expected, got = ds.get_tensor(name), back.get_tensor(name)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)
        assert back.get_tensor_dims(name) == ds.get_tensor_dims(name)
    assert back.get_tensor("f").flags.f_contiguous
    np.testing.assert_array_equal(back.get_meta_scalars("i"), [3, -4])
    assert back.get_meta_scalars("f32").dtype == np.float32
    assert back.get_meta_strings("s") == ["hello"]
    assert back.get_metadata_field_names() == ["i", "f32", "s"]
    assert back.get_metadata_field_type("s") is str


def test_dataset_torch_tensors(client):
    """A dataset carries torch tensors, bfloat16 included, back as torch."""
    torch = pytest.importorskip("torch")
    ds = memstore.DataSet("t")
    ds.add_tensor("bf", torch.linspace(0, 1, 5).to(torch.bfloat16))
    client.put_dataset(ds)
    back = client.get_dataset("t")
    assert back.get_tensor_type("bf") == "bfloat16"
    assert torch.equal(back.get_tensor("bf", as_torch=True), ds.get_tensor("bf", as_torch=True))
    with pytest.raises(TypeError, match="bf"):
        back.get_tensor("bf")


def test_empty_dataset_round_trip(client):
    """A dataset with nothing in it can be stored and read."""
    client.put_dataset(memstore.DataSet("nothing"))
    back = client.get_dataset("nothing")
    assert back.get_tensor_names() == [] and back.get_metadata_field_names() == []


def test_dataset_exists_delete(client):
    """dataset_exists follows put_dataset and delete_dataset; missing is KeyNotFound."""
    assert not client.dataset_exists("ds")
    client.put_dataset(make("ds"))
    assert client.dataset_exists("ds")
    client.delete_dataset("ds")
    assert not client.dataset_exists("ds")
    with pytest.raises(memstore.KeyNotFound, match="ds"):
        client.get_dataset("ds")
    with pytest.raises(memstore.KeyNotFound):
        client.delete_dataset("ds")


@pytest.mark.parametrize("across", [True, False], ids=["across", "same"])
def test_copy_and_rename_dataset(client, across):
    """copy_dataset and rename_dataset work within and across shards."""
    src = on_shard(client, 0, "src")
    dst = on_shard(client, 1 if across else 0, "dst")
    client.put_dataset(make(src, 5))
    client.copy_dataset(src, dst)
    assert client.dataset_exists(src)
    copied = client.get_dataset(dst)
    assert copied.get_name() == dst
    np.testing.assert_array_equal(copied.get_tensor("u"), np.full((2, 3), 5))
    assert copied.get_meta_strings("origin") == ["rank5"]
    renamed = on_shard(client, 2 if across else 0, "ren")
    client.rename_dataset(src, renamed)
    assert not client.dataset_exists(src)
    assert client.get_dataset(renamed).get_meta_scalars("step")[0] == 5


def test_put_dataset_refuses_other_objects(client):
    """put_dataset takes a DataSet, nothing else."""
    with pytest.raises(TypeError):
        client.put_dataset({"u": np.ones(1)})


def test_dataset_ops_on_a_tensor_are_wrong_type(client):
    """get_dataset of a key that holds a tensor is WrongType."""
    client.put_tensor("tensor", np.ones(1))
    with pytest.raises(memstore.WrongType):
        client.get_dataset("tensor")
    assert not client.dataset_exists("tensor")


# -- aggregation lists -----------------------------------------------------------------------


def test_append_to_list_and_get_datasets(client):
    """append_to_list stores each dataset and lists it; get_datasets_from_list returns them in
    order with their contents."""
    for i in range(4):
        assert client.append_to_list("agg", make(f"d{i}", i)) == i + 1
    assert client.get_list_length("agg") == 4
    assert client.dataset_exists("d2")
    got = client.get_datasets_from_list("agg")
    assert [d.get_name() for d in got] == ["d0", "d1", "d2", "d3"]
    assert [int(d.get_meta_scalars("step")[0]) for d in got] == [0, 1, 2, 3]
    np.testing.assert_array_equal(got[3].get_tensor("u"), np.full((2, 3), 3))


def test_missing_list_is_empty(client):
    """A list that does not exist has length 0 and no datasets (as Redis LLEN / LRANGE)."""
    assert client.get_list_length("nolist") == 0
    assert client.get_datasets_from_list("nolist") == []
    assert client.get_dataset_list_range("nolist", 0, -1) == []


def test_list_ops_on_a_tensor_are_wrong_type(client):
    """List operations on a key holding a tensor are WrongType."""
    client.put_tensor("t", np.ones(1))
    with pytest.raises(memstore.WrongType):
        client.get_list_length("t")
    with pytest.raises(memstore.WrongType):
        client.append_to_list("t", make("d"))
    with pytest.raises(memstore.WrongType):
        client.get_datasets_from_list("t")


LENGTHS = range(7)


@pytest.fixture
def lists(client):
    """Lists ``L0`` .. ``L6`` of lengths 0..6 (L0 missing), datasets ``L{n}.{i}``."""
    for n in LENGTHS:
        for i in range(n):
            client.append_to_list(f"L{n}", memstore.DataSet(f"L{n}.{i}"))
    return client


def lrange(items: list, start: int, end: int) -> list:
    """Redis LRANGE as Python slicing: the end is inclusive and -1 means the last item."""
    return items[start : end + 1 if end != -1 else None]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(n=st.sampled_from(LENGTHS), start=st.integers(-9, 9), end=st.integers(-9, 9))
def test_get_dataset_list_range_is_lrange(lists, n, start, end):
    """get_dataset_list_range(start, end) returns exactly LRANGE's items: inclusive end,
    negative indices from the back, out-of-range indices clamped."""
    items = [f"L{n}.{i}" for i in range(n)]
    got = lists.get_dataset_list_range(f"L{n}", start, end)
    assert [d.get_name() for d in got] == lrange(items, start, end)


def test_lrange_reference_matches_redis_examples():
    """The slicing reference agrees with the examples in Redis's LRANGE documentation."""
    items = ["one", "two", "three"]
    assert lrange(items, 0, 0) == ["one"]
    assert lrange(items, -3, 2) == ["one", "two", "three"]
    assert lrange(items, -100, 100) == ["one", "two", "three"]
    assert lrange(items, 5, 10) == []


def test_list_range_indices_must_be_ints(client):
    """Non-integer indices are a TypeError."""
    with pytest.raises(TypeError):
        client.get_dataset_list_range("agg", 0.0, 1)


def test_copy_list(client):
    """copy_list copies the references (not the datasets); the copy is independent."""
    for i in range(3):
        client.append_to_list("agg", make(f"d{i}", i))
    client.copy_list("agg", "agg2")
    client.append_to_list("agg2", make("d9", 9))
    assert client.get_list_length("agg") == 3
    assert [d.get_name() for d in client.get_datasets_from_list("agg2")] == [
        "d0",
        "d1",
        "d2",
        "d9",
    ]


def test_copy_list_replaces_the_destination(client):
    """copy_list onto an existing list replaces it rather than appending."""
    client.append_to_list("a", make("x"))
    client.append_to_list("b", make("y"))
    client.append_to_list("b", make("z"))
    client.copy_list("a", "b")
    assert [d.get_name() for d in client.get_datasets_from_list("b")] == ["x"]


def test_copy_or_rename_of_a_missing_list_is_key_not_found(client):
    """Copying or renaming a list that does not exist fails and creates nothing."""
    with pytest.raises(memstore.KeyNotFound, match="nolist"):
        client.copy_list("nolist", "dst")
    with pytest.raises(memstore.KeyNotFound, match="nolist"):
        client.rename_list("nolist", "dst")
    assert not client.key_exists("dst")


def test_rename_list(client):
    """rename_list moves the list: the old name is gone, the datasets stay."""
    src, dst = on_shard(client, 0, "la"), on_shard(client, 1, "lb")
    client.append_to_list(src, make("d0"))
    client.append_to_list(src, make("d1"))
    client.rename_list(src, dst)
    assert client.get_list_length(src) == 0 and not client.key_exists(src)
    assert [d.get_name() for d in client.get_datasets_from_list(dst)] == ["d0", "d1"]


def test_rename_list_onto_itself_keeps_it(client):
    """rename_list(x, x) leaves the list alone (as SmartRedis does)."""
    client.append_to_list("agg", make("d0"))
    client.rename_list("agg", "agg")
    assert client.get_list_length("agg") == 1


def test_delete_list_keeps_the_datasets(client):
    """delete_list removes the list only; missing list is KeyNotFound."""
    client.append_to_list("agg", make("d0"))
    client.delete_list("agg")
    assert client.get_list_length("agg") == 0
    assert client.dataset_exists("d0")
    with pytest.raises(memstore.KeyNotFound):
        client.delete_list("agg")


def test_a_listed_dataset_that_was_deleted_is_key_not_found(client):
    """Getting a list whose dataset was deleted names the missing dataset."""
    client.append_to_list("agg", make("gone"))
    client.delete_dataset("gone")
    with pytest.raises(memstore.KeyNotFound, match="gone"):
        client.get_datasets_from_list("agg")


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ints=st.lists(st.integers(-(2**63), 2**63 - 1), max_size=5),
    floats=st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=5),
    f32=st.lists(st.floats(width=32), max_size=5),
    strings=st.lists(st.text(max_size=20), max_size=5),
)
def test_metadata_round_trip_property(client, ints, floats, f32, strings):
    """Any int64, float64 (NaN and inf too), float32 and str metadata survives the store."""
    ds = memstore.DataSet("meta")
    for value in ints:
        ds.add_meta_scalar("ints", value)
    for value in floats:
        ds.add_meta_scalar("floats", value)
    for value in f32:
        ds.add_meta_scalar("f32", np.float32(value))
    for value in strings:
        ds.add_meta_string("strings", value)
    client.put_dataset(ds)
    back = client.get_dataset("meta")
    assert back.get_metadata_field_names() == ds.get_metadata_field_names()
    for name in ("ints", "floats", "f32"):
        if name in ds.get_metadata_field_names():
            got, expected = back.get_meta_scalars(name), ds.get_meta_scalars(name)
            assert got.dtype == expected.dtype
            np.testing.assert_array_equal(got, expected)
    if strings:
        assert back.get_meta_strings("strings") == strings
