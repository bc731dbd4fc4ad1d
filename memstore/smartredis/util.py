"""``Dtypes`` (SmartRedis's type-name mapping) and the argument checks of the compat module."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["Dtypes", "typecheck"]

_TENSOR_TYPES = {
    "float64": "DOUBLE",
    "float32": "FLOAT",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
}
_METADATA_TYPES = {
    "float64": "DOUBLE",
    "float32": "FLOAT",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int32": "INT32",
    "int64": "INT64",
}
_BY_NAME: dict[str, type] = {
    "DOUBLE": np.double,
    "FLOAT": np.float32,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "STRING": str,
}


class Dtypes:
    """SmartRedis's names for the tensor and metadata types it supports."""

    @staticmethod
    def tensor_from_numpy(array: np.ndarray) -> str:
        """The SmartRedis tensor type of ``array``; TypeError for unsupported dtypes."""
        dtype = str(array.dtype)
        if dtype in _TENSOR_TYPES:
            return _TENSOR_TYPES[dtype]
        raise TypeError(
            f"tensor type {dtype} is not a SmartRedis tensor type "
            f"({', '.join(_TENSOR_TYPES)}); memstore.Client stores it"
        )

    @staticmethod
    def metadata_from_numpy(array: np.ndarray) -> str:
        """The SmartRedis metadata type of ``array``; TypeError for unsupported dtypes."""
        dtype = str(array.dtype)
        if dtype in _METADATA_TYPES:
            return _METADATA_TYPES[dtype]
        raise TypeError(f"metadata type {dtype} is not one of {', '.join(_METADATA_TYPES)}")

    @staticmethod
    def from_string(type_name: str) -> type:
        """The numpy type (or ``str``) for a SmartRedis type name."""
        if type_name in _BY_NAME:
            return _BY_NAME[type_name]
        raise TypeError(f"unknown type name {type_name!r}: one of {', '.join(_BY_NAME)}")


def typecheck(arg: Any, name: str, types: type | tuple[type, ...]) -> None:
    """TypeError unless ``arg`` is an instance of ``types`` (SmartRedis's checks)."""
    if not isinstance(arg, types):
        names = (
            " or ".join(t.__name__ for t in types) if isinstance(types, tuple) else types.__name__
        )
        raise TypeError(f"argument {name} must be {names}, got {type(arg).__name__}: {arg!r}")
