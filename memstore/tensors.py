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

from memstore.errors import ProtocolError

#: numpy kinds that have a fixed size and a meaning in every language we serve.
_KINDS = "biufc"
BFLOAT16 = "bfloat16"
#: numpy's limit on dimensions (NPY_MAXDIMS); a longer shape could be stored but never read.
_MAX_DIMS = 64


def check_dtype(dtype: np.dtype, name: str = "") -> None:
    """Refuse dtypes the store cannot hold (object, str, structured, datetime, void)."""
    if dtype.kind not in _KINDS or dtype.fields is not None or dtype.subdtype is not None:
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


def parse_meta(meta: dict, nbytes: int, name: str = "") -> tuple[np.dtype, tuple, str]:
    """Validate a tensor's meta against its payload size; the shard calls this on every put."""
    where = f"tensor {name!r}" if name else "tensor"
    if not isinstance(meta, dict):
        raise ProtocolError(f"{where}: meta must be a map")
    dtype_name, shape, order = meta.get("dtype"), meta.get("shape"), meta.get("order", "C")
    if not isinstance(dtype_name, str):
        raise ProtocolError(f"{where}: missing dtype")
    try:
        dtype = np.dtype("<i2" if dtype_name == BFLOAT16 else dtype_name)
        check_dtype(dtype, name)
    except TypeError as exc:
        raise ProtocolError(f"{where}: {exc}") from None
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise ProtocolError(f"{where}: shape must be a list of non-negative integers")
    if len(shape) > _MAX_DIMS:
        raise ProtocolError(f"{where}: {len(shape)} dimensions, numpy holds at most {_MAX_DIMS}")
    if order not in ("C", "F"):
        raise ProtocolError(f"{where}: order must be 'C' or 'F', got {order!r}")
    expected = math.prod(shape) * dtype.itemsize  # Python ints: np.prod wraps at 2**64
    if expected != nbytes:
        raise ProtocolError(
            f"{where}: dtype {dtype_name} shape {shape} needs {expected} bytes, got {nbytes}"
        )
    return dtype, tuple(shape), order


def decode(meta: dict, buffer: Any, *, as_torch: bool = False, name: str = "") -> Any:
    """Wrap ``buffer`` as the array ``meta`` describes (no copy)."""
    dtype, shape, order = parse_meta(meta, memoryview(buffer).nbytes, name)
    array = np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)
    bfloat = meta["dtype"] == BFLOAT16
    if as_torch:
        import torch

        tensor = torch.from_numpy(array)
        return tensor.view(torch.bfloat16) if bfloat else tensor
    if bfloat:
        raise TypeError(
            f"tensor {name!r} is bfloat16, which numpy cannot hold: "
            f"use get_tensor({name!r}, as_torch=True)"
        )
    return array
