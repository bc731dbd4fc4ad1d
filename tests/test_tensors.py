"""numpy / torch ⇄ (meta, buffer): every supported dtype, shape and order, no needless copies."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from memstore import tensors
from memstore.errors import ProtocolError

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
    ">i4",  # non-native byte order travels under its own dtype string
    ">f8",
]

shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)


@st.composite
def arrays(draw):
    """Any supported array: C, Fortran or strided (sliced, reversed or transposed)."""
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    array = draw(hnp.arrays(dtype, draw(shapes)))
    layout = draw(st.sampled_from(["C", "F", "strided", "transposed"]))
    if layout == "F":
        array = np.asfortranarray(array)
    elif layout == "strided" and array.ndim:
        steps = tuple(draw(st.sampled_from([1, 2, -1])) for _ in range(array.ndim))
        array = array[tuple(slice(None, None, s) for s in steps)]
    elif layout == "transposed":
        array = array.T
    return array


def _bits(array: np.ndarray) -> bytes:
    """Bytes in C order: equal bits, so NaN payloads and -0.0 count too."""
    return np.ascontiguousarray(array).tobytes()


def _round_trip(array, **kwargs):
    meta, buffer = tensors.encode(array, "k")
    wire_bytes = bytearray(buffer)  # as it would arrive: a fresh, writable buffer
    return meta, buffer, tensors.decode(meta, wire_bytes, name="k", **kwargs)


@given(arrays())
def test_round_trip_every_dtype_shape_and_layout(array):
    """decode(encode(x)) has x's dtype, shape and bits."""
    meta, buffer, back = _round_trip(array)
    assert back.dtype == array.dtype
    assert back.shape == array.shape
    assert _bits(back) == _bits(array)
    assert memoryview(buffer).nbytes == array.nbytes
    assert meta["shape"] == list(array.shape)


@given(arrays())
def test_order_is_kept(array):
    """Fortran-only arrays come back Fortran; C arrays and copied strided views come back C."""
    meta, _, back = _round_trip(array)
    if array.flags.c_contiguous:
        assert meta["order"] == "C"
        assert back.flags.c_contiguous
    elif array.flags.f_contiguous:
        assert meta["order"] == "F"
        assert back.flags.f_contiguous
    else:
        assert meta["order"] == "C"
        assert back.flags.c_contiguous


@given(arrays())
def test_contiguous_arrays_are_not_copied(array):
    """A C- or F-contiguous array is sent from its own memory; other layouts are copied."""
    _, buffer = tensors.encode(array)
    if array.size == 0:
        return
    sent = np.frombuffer(buffer, dtype=np.uint8)
    contiguous = array.flags.c_contiguous or array.flags.f_contiguous
    assert np.shares_memory(sent, array) == contiguous


def test_strided_view_is_copied_once_with_equal_values():
    """A non-contiguous view is encoded from a copy whose values equal the view's."""
    base = np.arange(60, dtype=np.float64).reshape(6, 10)
    view = base[::2, 1::3]
    assert not (view.flags.c_contiguous or view.flags.f_contiguous)
    meta, buffer = tensors.encode(view)
    sent = np.frombuffer(buffer, dtype=np.float64).reshape(meta["shape"])
    assert not np.shares_memory(sent, base)
    np.testing.assert_array_equal(sent, view)


def test_decoded_array_wraps_buffer_and_is_writable():
    """decode wraps the buffer it is given (no copy), and the array is writable."""
    buffer = bytearray(np.arange(6, dtype=np.int32).tobytes())
    array = tensors.decode({"dtype": "<i4", "shape": [2, 3], "order": "C"}, buffer)
    assert array.flags.writeable
    array[0, 0] = 99
    assert np.frombuffer(buffer, dtype=np.int32)[0] == 99


@pytest.mark.parametrize(
    "value", [0, 1.5, True, 2 + 3j, [1, 2, 3], [[1.0, 2.0]], np.float32(2.5), np.int8(-3)]
)
def test_python_scalars_and_lists_encode(value):
    """Python numbers, lists and numpy scalars are accepted like np.asarray of them."""
    expected = np.asarray(value)
    _, _, back = _round_trip(value)
    np.testing.assert_array_equal(back, expected)
    assert back.dtype == expected.dtype


@pytest.mark.parametrize(
    "value",
    [
        np.array(["a", "bc"]),
        np.array([b"a"]),
        np.array([object(), 1], dtype=object),
        np.zeros(2, dtype=[("x", "<f4"), ("y", "<i4")]),
        np.array(["2024-01-01"], dtype="datetime64[D]"),
        np.array([1], dtype="timedelta64[s]"),
        np.zeros(2, dtype="V8"),
        ["mixed", 1],
    ],
    ids=["str", "bytes", "object", "structured", "datetime", "timedelta", "void", "strlist"],
)
def test_unsupported_dtypes_are_type_errors_naming_the_dtype(value):
    """Object, str, structured, datetime and void dtypes are refused, naming dtype and key."""
    dtype = np.asarray(value).dtype
    with pytest.raises(TypeError) as info:
        tensors.encode(value, "snap")
    assert str(dtype) in str(info.value)
    assert "snap" in str(info.value)


@pytest.mark.parametrize("value", [{"a": 1}, "text", None, object(), b"bytes"])
def test_non_array_objects_are_type_errors(value):
    """Things that are not arrays, tensors or numbers are refused, naming the key."""
    with pytest.raises(TypeError, match="snap"):
        tensors.encode(value, "snap")


# -- parse_meta ------------------------------------------------------------------------------


def test_parse_meta_accepts_consistent_meta():
    """A meta that matches its payload size gives (dtype, shape, order)."""
    assert tensors.parse_meta({"dtype": "<f4", "shape": [2, 3], "order": "F"}, 24) == (
        np.dtype("<f4"),
        (2, 3),
        "F",
    )
    assert tensors.parse_meta({"dtype": "bfloat16", "shape": [], "order": "C"}, 2)[1] == ()


@pytest.mark.parametrize(
    ("meta", "nbytes", "match"),
    [
        ({"dtype": "<f4", "shape": [4], "order": "C"}, 15, "16 bytes"),
        ({"dtype": "<f4", "shape": [4], "order": "C"}, 17, "16 bytes"),
        ({"dtype": "<f4", "shape": [0], "order": "C"}, 4, "0 bytes"),
        ({"dtype": "<f4", "shape": [], "order": "C"}, 0, "4 bytes"),
        ({"dtype": "<f4", "shape": [-1], "order": "C"}, 4, "shape"),
        ({"dtype": "<f4", "shape": [1.0], "order": "C"}, 4, "shape"),
        ({"dtype": "<f4", "shape": [True], "order": "C"}, 4, "shape"),
        ({"dtype": "<f4", "shape": "4", "order": "C"}, 4, "shape"),
        ({"dtype": "<f4", "shape": None, "order": "C"}, 4, "shape"),
        ({"dtype": "<f4", "order": "C"}, 4, "shape"),
        ({"dtype": "<f4", "shape": [1], "order": "A"}, 4, "order"),
        ({"dtype": "<f4", "shape": [1], "order": None}, 4, "order"),
        ({"dtype": "<f4", "shape": [1], "order": "c"}, 4, "order"),
        ({"shape": [1], "order": "C"}, 4, "dtype"),
        ({"dtype": 7, "shape": [1], "order": "C"}, 4, "dtype"),
        ({"dtype": "|O", "shape": [1], "order": "C"}, 8, "object"),
        ({"dtype": "<U4", "shape": [1], "order": "C"}, 16, "U"),
        ({"dtype": "no-such-type", "shape": [1], "order": "C"}, 4, "no-such-type"),
        ({"dtype": "<M8[s]", "shape": [1], "order": "C"}, 8, "datetime"),
        ("not a map", 4, "map"),
    ],
)
def test_parse_meta_rejects_bad_meta(meta, nbytes, match):
    """Size mismatches, bad shapes, bad orders and bad dtypes are ProtocolErrors."""
    with pytest.raises(ProtocolError, match=match):
        tensors.parse_meta(meta, nbytes, "k")


@pytest.mark.parametrize(
    "shape", [[2**32, 2**32], [2**62, 4], [2**63], [2**64 - 1], [2**40, 2**40]]
)
def test_parse_meta_rejects_shapes_whose_size_overflows(shape):
    """A shape whose byte count overflows 64 bits never matches a small payload."""
    with pytest.raises(ProtocolError):
        tensors.parse_meta({"dtype": "<f8", "shape": shape, "order": "C"}, 0, "k")


def test_parse_meta_rejects_more_dimensions_than_numpy_holds():
    """A shape numpy cannot build (over 64 dimensions) is refused when stored, not when read."""
    with pytest.raises(ProtocolError, match="dimensions"):
        tensors.parse_meta({"dtype": "<f8", "shape": [1] * 65, "order": "C"}, 8, "k")
    assert tensors.parse_meta({"dtype": "<f8", "shape": [1] * 64, "order": "C"}, 8, "k")


def test_zero_size_with_huge_other_dimension_is_fine():
    """A zero in the shape makes the size 0 whatever the other sides are."""
    meta = {"dtype": "<f8", "shape": [0, 2**40], "order": "C"}
    assert tensors.parse_meta(meta, 0, "k")[1] == (0, 2**40)


@pytest.mark.parametrize("dtype", ["g", "G", "<f16", "<c32", "longdouble", "clongdouble"])
def test_long_double_is_refused_on_both_sides(dtype):
    """Long double has a platform-dependent size: refused when stored and when encoded."""
    with pytest.raises(ProtocolError, match="dtype"):
        tensors.parse_meta({"dtype": dtype, "shape": [1], "order": "C"}, np.dtype(dtype).itemsize)
    with pytest.raises(TypeError):
        tensors.encode(np.zeros(1, dtype=dtype), "k")


@pytest.mark.parametrize(
    "dtype", ["(4611686018427387904,)f8", "(2,)f4", "f4,f4", "x" * 1000, "M8[nope]", "<f4["]
)
def test_any_bad_dtype_name_is_a_protocol_error_naming_the_field(dtype):
    """numpy raises ValueError (not TypeError) for some names: still a ProtocolError."""
    with pytest.raises(ProtocolError, match="'dtype'"):
        tensors.parse_meta({"dtype": dtype, "shape": [1], "order": "C"}, 8, "k")


def test_dimensions_are_counted_before_the_elements_are_looked_at():
    """A shape of a million junk elements is refused for its length, naming the field."""
    shape = [None] * 1_000_000
    with pytest.raises(ProtocolError, match="'shape' has 1000000 dimensions"):
        tensors.parse_meta({"dtype": "<f4", "shape": shape, "order": "C"}, 0, "k")


@pytest.mark.parametrize(
    "shape", [[0, 2**62, 2**62], [0, 2**63], [2**61, 0], [0, 2**31, 2**31], [0] + [2**8] * 8]
)
def test_empty_shapes_numpy_cannot_build_are_refused(shape):
    """An empty tensor whose other sides overflow numpy's index could be stored, never read."""
    with pytest.raises(ProtocolError, match="'shape'"):
        tensors.parse_meta({"dtype": "<f4", "shape": shape, "order": "C"}, 0, "k")


wire_dtypes = st.sampled_from(
    [*DTYPES, "bfloat16", "g", "G", "|O", "<U2", "|S3", "|V4", "<M8[s]", "(2,)<f4", "f4,i4"]
)
huge_sides = st.sampled_from([0, 1, 2, 3, 2**31, 2**32, 2**61, 2**62, 2**63, 2**64 - 1])
wire_shapes = st.lists(huge_sides | st.integers(0, 5), max_size=6)
wire_junk = (
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.lists(st.integers(-3, 3) | st.booleans() | st.floats(), max_size=4)
)
wire_metas = (
    st.fixed_dictionaries(
        {},
        optional={
            "dtype": wire_dtypes | wire_junk,
            "shape": wire_shapes | wire_junk,
            "order": st.sampled_from(["C", "F", "K"]) | wire_junk,
            "extra": wire_junk,
        },
    )
    | wire_junk
)


@given(meta=wire_metas, nbytes=st.sampled_from([0, 1, 2, 4, 8, 16, 24, 2**62]))
def test_parse_meta_raises_only_protocol_errors(meta, nbytes):
    """Whatever a client sends as meta, parse_meta accepts it or raises ProtocolError."""
    try:
        tensors.parse_meta(meta, nbytes, "k")
    except ProtocolError as exc:
        assert "'k'" in str(exc)


@given(dtype=wire_dtypes, shape=wire_shapes, order=st.sampled_from(["C", "F"]))
def test_every_meta_the_shard_accepts_can_be_read_back(dtype, shape, order):
    """Storable implies readable: a meta that parse_meta accepts always decodes."""
    meta = {"dtype": dtype, "shape": shape, "order": order}
    try:
        itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
    except TypeError:
        itemsize = 1
    nbytes = math.prod(shape) * itemsize
    if nbytes > 1 << 20:
        return  # fine to accept, too big to allocate in a test
    try:
        tensors.parse_meta(meta, nbytes, "k")
    except ProtocolError:
        return
    if dtype == "bfloat16":  # numpy cannot hold it; its bit pattern has the same shape
        meta["dtype"] = "<i2"
    decoded = tensors.decode(meta, bytearray(nbytes), name="k")
    assert tuple(decoded.shape) == tuple(shape)


# -- torch -----------------------------------------------------------------------------------

torch = pytest.importorskip("torch")

TORCH_DTYPES = [
    torch.bool,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.uint8,
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.complex64,
    torch.complex128,
]


@given(
    dtype=st.sampled_from(TORCH_DTYPES),
    shape=shapes,
    layout=st.sampled_from(["contiguous", "transposed", "strided"]),
    seed=st.integers(0, 2**16),
)
def test_torch_round_trip(dtype, shape, layout, seed):
    """Torch CPU tensors of every dtype (bfloat16 too) come back equal with as_torch=True."""
    generator = torch.Generator().manual_seed(seed)
    tensor = (torch.randn(shape, generator=generator, dtype=torch.float64) * 100).to(dtype)
    if layout == "transposed":
        tensor = tensor.permute(*reversed(range(tensor.ndim))) if tensor.ndim else tensor
    elif layout == "strided" and tensor.ndim:
        tensor = tensor.flip(0)[..., ::2] if tensor.shape[-1] else tensor
    _, _, back = _round_trip(tensor, as_torch=True)
    assert isinstance(back, torch.Tensor)
    assert back.dtype == tensor.dtype
    assert back.shape == tensor.shape
    assert torch.equal(back, tensor)


def test_torch_tensor_needing_grad_encodes():
    """A tensor that requires grad is sent detached, with its values."""
    tensor = torch.arange(6, dtype=torch.float32).reshape(2, 3).requires_grad_()
    _, _, back = _round_trip(tensor, as_torch=True)
    assert torch.equal(back, tensor.detach())


def test_torch_transpose_keeps_fortran_order():
    """A transposed 2-D torch tensor travels in Fortran order without a copy."""
    tensor = torch.arange(12, dtype=torch.float32).reshape(3, 4).T
    meta, buffer = tensors.encode(tensor)
    assert meta["order"] == "F"
    assert np.shares_memory(np.frombuffer(buffer, dtype=np.uint8), tensor.numpy())


def test_bfloat16_to_numpy_is_type_error_naming_key():
    """A bfloat16 tensor cannot become a numpy array: TypeError naming the key and as_torch."""
    meta, buffer = tensors.encode(torch.ones(3, dtype=torch.bfloat16), "weights")
    assert meta["dtype"] == tensors.BFLOAT16
    with pytest.raises(TypeError, match="weights") as info:
        tensors.decode(meta, bytearray(buffer), name="weights")
    assert "as_torch=True" in str(info.value)


def test_numpy_arrays_decode_as_torch():
    """A numpy-encoded array decodes as a torch tensor with the same values."""
    array = np.arange(6, dtype=np.int16).reshape(2, 3)
    _, _, back = _round_trip(array, as_torch=True)
    assert torch.equal(back, torch.from_numpy(array))


@pytest.mark.parametrize("dtype", ["complex32", "float8_e4m3fn", "uint16"])
@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
def test_unsupported_torch_dtypes_are_type_errors(dtype):
    """Torch dtypes numpy cannot hold (e.g. complex32) are refused with a TypeError."""
    torch_dtype = getattr(torch, dtype, None)
    if torch_dtype is None:
        pytest.skip(f"this torch has no {dtype}")
    tensor = torch.zeros(2, dtype=torch.float32).to(torch_dtype)
    try:
        expected_ok = tensor.numpy().dtype.kind in "biufc"
    except TypeError:
        expected_ok = False
    if expected_ok:
        _, _, back = _round_trip(tensor, as_torch=True)
        assert torch.equal(back, tensor)
    else:
        with pytest.raises(TypeError, match="snap"):
            tensors.encode(tensor, "snap")
