"""numpy / torch arrays ⇄ (meta, buffer) without copies where the layout allows.

``meta`` is ``{"dtype": str, "shape": [int], "order": "C" | "F"}``; the buffer is the array's
own memory. C- and Fortran-contiguous arrays travel as they are and come back in the same
order; any other layout is copied once into C order. ``bfloat16`` (torch only) travels as
its raw 16-bit pattern under the dtype name ``"bfloat16"``.

Ownership: :func:`decode` returns an array that *wraps* the received buffer. It is writable
and private to the caller (the store keeps its own copy in the shard process).
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

from memstore.errors import ProtocolError, WrongType

#: numpy kinds that have a fixed size and a meaning in every language we serve.
_KINDS = "biufc"
BFLOAT16 = "bfloat16"
#: numpy's limit on dimensions (NPY_MAXDIMS); a longer shape could be stored but never read.
_MAX_DIMS = 64
#: Largest byte count numpy can index (its ``intp``).
_MAX_INTP = int(np.iinfo(np.intp).max)
#: Longest dtype name accepted from the wire ("bfloat16" and "<c16" are the longest we use).
_MAX_DTYPE_NAME = 16
#: Long double ('g', 'G') has a platform-dependent size and layout: not portable data.
_UNPORTABLE = "gG"


def check_dtype(dtype: np.dtype, name: str = "") -> None:
    """Refuse dtypes the store cannot hold (object, str, structured, datetime, void, and
    long double, whose size differs between platforms)."""
    if (
        dtype.kind not in _KINDS
        or dtype.char in _UNPORTABLE
        or dtype.fields is not None
        or dtype.subdtype is not None
    ):
        label = f" for {name!r}" if name else ""
        raise TypeError(
            f"dtype {dtype}{label} is not supported: use bool, int8-64, uint8-64, "
            "float16/32/64 or complex64/128"
        )


def encode(data: Any, name: str = "") -> tuple[dict, memoryview]:
    """Return ``(meta, buffer)`` for a numpy array or torch tensor; ``name`` is for errors."""
    if _is_torch(data):
        return _encode_torch(data, name)
    if not isinstance(data, np.ndarray):
        if isinstance(data, (list, tuple, int, float, complex, bool, np.generic)):
            data = np.asarray(data)
        else:
            raise TypeError(
                f"tensor {name!r}: expected a numpy array or torch tensor, "
                f"got {type(data).__name__}"
            )
    check_dtype(data.dtype, name)
    return _encode_numpy(data, data.dtype.str)


def _encode_numpy(array: np.ndarray, dtype: str) -> tuple[dict, memoryview]:
    if array.flags.c_contiguous:
        order = "C"
    elif array.flags.f_contiguous:
        order = "F"
    else:
        array = np.ascontiguousarray(array)  # the one copy: strided views have no flat buffer
        order = "C"
    flat = array.reshape(-1, order=order)  # a view, since the array is contiguous in `order`
    meta = {"dtype": dtype, "shape": list(array.shape), "order": order}
    return meta, memoryview(flat.view(np.uint8) if flat.size else b"")


def _is_torch(data: Any) -> bool:
    torch = sys.modules.get("torch")  # never import torch ourselves: it costs seconds
    return torch is not None and isinstance(data, torch.Tensor)


def _encode_torch(tensor: Any, name: str) -> tuple[dict, memoryview]:
    import torch

    # Copies that must happen: a GPU tensor has to reach host memory to be sent.
    tensor = tensor.detach()
    if tensor.device.type != "cpu":
        tensor = tensor.cpu()
    if tensor.dtype == torch.bfloat16:
        return _encode_numpy(tensor.view(torch.int16).numpy(), BFLOAT16)
    try:
        array = tensor.numpy()
    except TypeError as exc:
        raise TypeError(f"tensor {name!r}: torch dtype {tensor.dtype} is not supported") from exc
    check_dtype(array.dtype, name)
    return _encode_numpy(array, array.dtype.str)


def parse_meta(meta: Any, nbytes: int, name: str = "") -> tuple[np.dtype, tuple, str]:
    """Validate a tensor's meta against its payload size; the shard calls this on every put.

    Whatever ``meta`` holds, the only exception is :class:`ProtocolError`, naming the field;
    a meta that passes can always be decoded again (numpy can build its shape).
    """
    where = f"tensor {name!r}" if name else "tensor"
    if not isinstance(meta, dict):
        raise ProtocolError(f"{where}: meta must be a map, got {type(meta).__name__}")
    dtype = _parse_dtype(meta.get("dtype"), where, name)
    shape = _parse_shape(meta.get("shape"), dtype.itemsize, where)
    order = meta.get("order", "C")
    if order not in ("C", "F"):
        raise ProtocolError(f"{where}: field 'order' must be 'C' or 'F', got {order!r}")
    expected = math.prod(shape) * dtype.itemsize  # Python ints: np.prod wraps at 2**64
    if expected != nbytes:
        raise ProtocolError(
            f"{where}: dtype {meta['dtype']} shape {list(shape)} needs {expected} bytes, "
            f"got {nbytes}"
        )
    return dtype, shape, order


def meta_nbytes(meta: Any, name: str = "") -> int:
    """The payload size ``meta`` describes, checked as :func:`parse_meta` checks it (for a
    payload that arrives as a shared-memory file rather than a frame)."""
    where = f"tensor {name!r}" if name else "tensor"
    if not isinstance(meta, dict):
        raise ProtocolError(f"{where}: meta must be a map, got {type(meta).__name__}")
    dtype = _parse_dtype(meta.get("dtype"), where, name)
    shape = _parse_shape(meta.get("shape"), dtype.itemsize, where)
    nbytes = math.prod(shape) * dtype.itemsize
    parse_meta(meta, nbytes, name)
    return nbytes


#: dtype names already checked: every put and get parses one, and numpy's parser is slow.
#: Bounded: only names numpy accepts as a supported dtype, of at most 16 characters, get in.
_CHECKED_DTYPES: dict[str, np.dtype] = {}


def _parse_dtype(dtype_name: Any, where: str, name: str) -> np.dtype:
    checked = _CHECKED_DTYPES.get(dtype_name) if isinstance(dtype_name, str) else None
    if checked is not None:
        return checked
    if not isinstance(dtype_name, str):
        raise ProtocolError(f"{where}: field 'dtype' must be a string, got {dtype_name!r}")
    if len(dtype_name) > _MAX_DTYPE_NAME:  # numpy parses names like '(3,4)f8': keep it short
        raise ProtocolError(f"{where}: field 'dtype' is over {_MAX_DTYPE_NAME} characters")
    try:
        dtype = np.dtype("<i2" if dtype_name == BFLOAT16 else dtype_name)
        check_dtype(dtype, name)
    except TypeError as exc:  # numpy raises TypeError, ValueError and others for bad names
        raise ProtocolError(f"{where}: field 'dtype': {exc}") from None
    except Exception as exc:
        raise ProtocolError(f"{where}: field 'dtype' {dtype_name!r}: {exc}") from None
    _CHECKED_DTYPES[dtype_name] = dtype
    return dtype


def _parse_shape(shape: Any, itemsize: int, where: str) -> tuple:
    if not isinstance(shape, list):
        raise ProtocolError(f"{where}: field 'shape' must be a list of non-negative integers")
    if len(shape) > _MAX_DIMS:  # before looking at the elements: the list may be huge
        raise ProtocolError(
            f"{where}: field 'shape' has {len(shape)} dimensions, numpy holds at most {_MAX_DIMS}"
        )
    if not all(type(d) is int and d >= 0 for d in shape):  # bool is an int to Python
        raise ProtocolError(f"{where}: field 'shape' must be a list of non-negative integers")
    # numpy refuses any shape whose non-zero sides multiply past intp, even when one side is
    # 0 (then the payload is empty): such a tensor could be stored but never read back.
    if math.prod(max(d, 1) for d in shape) * itemsize > _MAX_INTP:
        raise ProtocolError(
            f"{where}: field 'shape' {shape} is larger than numpy can index ({_MAX_INTP} bytes)"
        )
    return tuple(shape)


def decode(meta: dict, buffer: Any, *, as_torch: bool = False, name: str = "") -> Any:
    """Wrap ``buffer`` as the array ``meta`` describes (no copy).

    Metas come from shards, which checked them on the way in: a dtype seen before and a
    shape numpy accepts for the buffer skip the full check; anything else gets it, and
    its :class:`ProtocolError`."""
    try:
        dtype, shape = _CHECKED_DTYPES[meta["dtype"]], meta["shape"]
        if min(shape, default=0) < 0:  # reshape would take -1 as "whatever fits"
            raise ValueError
        array = np.frombuffer(buffer, dtype=dtype).reshape(shape, order=meta.get("order", "C"))
    except Exception:
        dtype, shape, order = parse_meta(meta, memoryview(buffer).nbytes, name)
        array = np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)
    bfloat = meta["dtype"] == BFLOAT16
    if as_torch:
        import torch

        tensor = torch.from_numpy(array)
        return tensor.view(torch.bfloat16) if bfloat else tensor
    if bfloat:  # WrongType: a TypeError that a client tells from a malformed reply
        raise WrongType(
            f"tensor {name!r} is bfloat16, which numpy cannot hold: "
            f"use get_tensor({name!r}, as_torch=True)"
        )
    return array
