"""``DataSet``: named tensors plus metadata, stored whole on one shard in one message.

Same methods as SmartRedis's ``Dataset``. Tensors are encoded when added (no copy for
contiguous arrays), so an added array must not change until the dataset has been put.
Metadata fields hold lists: scalars of one numeric type, or strings.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from memstore import tensors

_STRING = "string"


class DataSet:
    """A named group of tensors and metadata, put and got in one round trip."""

    def __init__(self, name: str):
        if not isinstance(name, str) or not name:
            raise TypeError(f"a dataset name must be a non-empty string, got {name!r}")
        self.name = name
        self._tensors: dict[str, tuple[dict, Any]] = {}
        self._meta: dict[str, dict] = {}

    def __repr__(self) -> str:
        return (
            f"DataSet({self.name!r}, tensors={self.get_tensor_names()}, "
            f"metadata={self.get_metadata_field_names()})"
        )

    def get_name(self) -> str:
        return self.name

    # -- tensors ---------------------------------------------------------------------------

    def add_tensor(self, name: str, data: Any) -> None:
        """Add (or replace) tensor ``name``; numpy arrays and torch tensors as in put_tensor."""
        _check_name(name, "tensor")
        self._tensors[name] = tensors.encode(data, f"{self.name}.{name}")

    def get_tensor(self, name: str, as_torch: bool = False) -> Any:
        meta, buffer = self._tensor(name)
        return tensors.decode(meta, buffer, as_torch=as_torch, name=f"{self.name}.{name}")

    def get_tensor_names(self) -> list[str]:
        return list(self._tensors)

    def get_tensor_type(self, name: str) -> np.dtype | str:
        """The tensor's numpy dtype (``"bfloat16"`` for torch bfloat16 tensors)."""
        dtype = self._tensor(name)[0]["dtype"]
        return dtype if dtype == tensors.BFLOAT16 else np.dtype(dtype)

    def get_tensor_dims(self, name: str) -> list[int]:
        return list(self._tensor(name)[0]["shape"])

    def _tensor(self, name: str) -> tuple[dict, Any]:
        try:
            return self._tensors[name]
        except KeyError:
            raise KeyError(
                f"dataset {self.name!r} has no tensor {name!r} (it has {self.get_tensor_names()})"
            ) from None

    # -- metadata --------------------------------------------------------------------------

    def add_meta_scalar(self, name: str, data: int | float | np.number) -> None:
        """Append a number to metadata field ``name``; a field keeps one numeric type."""
        _check_name(name, "metadata field")
        numeric = (int, float, np.integer, np.floating)  # complex has no metadata type
        if isinstance(data, (bool, np.bool_)) or not isinstance(data, numeric):
            raise TypeError(
                f"metadata {name!r}: a scalar must be an int or float, got {type(data).__name__}"
            )
        if isinstance(data, int) and not -(2**63) <= data < 2**63:
            raise OverflowError(
                f"metadata {name!r}: {data} does not fit an int64 (use np.uint64 for unsigned)"
            )
        dtype = (
            np.asarray(data).dtype.str
            if isinstance(data, np.number)
            else ("<i8" if isinstance(data, int) else "<f8")
        )
        field = self._meta.setdefault(name, {"type": dtype, "values": []})
        if field["type"] != dtype:
            raise TypeError(
                f"metadata {name!r} holds {_type_name(field['type'])} values; "
                f"cannot add a {_type_name(dtype)}"
            )
        field["values"].append(data.item() if isinstance(data, np.number) else data)

    def add_meta_string(self, name: str, data: str) -> None:
        """Append a string to metadata field ``name``."""
        _check_name(name, "metadata field")
        if not isinstance(data, str):
            raise TypeError(f"metadata {name!r}: expected a str, got {type(data).__name__}")
        field = self._meta.setdefault(name, {"type": _STRING, "values": []})
        if field["type"] != _STRING:
            raise TypeError(f"metadata {name!r} holds numbers; cannot add a string")
        field["values"].append(data)

    def get_meta_scalars(self, name: str) -> np.ndarray:
        field = self._field(name)
        if field["type"] == _STRING:
            raise TypeError(f"metadata {name!r} holds strings: use get_meta_strings")
        return np.array(field["values"], dtype=field["type"])

    def get_meta_strings(self, name: str) -> list[str]:
        field = self._field(name)
        if field["type"] != _STRING:
            raise TypeError(f"metadata {name!r} holds numbers: use get_meta_scalars")
        return list(field["values"])

    def get_metadata_field_names(self) -> list[str]:
        return list(self._meta)

    def get_metadata_field_type(self, name: str) -> type | np.dtype:
        """``str`` for string fields, else the numpy dtype of the scalars."""
        kind = self._field(name)["type"]
        return str if kind == _STRING else np.dtype(kind)

    def _field(self, name: str) -> dict:
        try:
            return self._meta[name]
        except KeyError:
            raise KeyError(
                f"dataset {self.name!r} has no metadata field {name!r} "
                f"(it has {self.get_metadata_field_names()})"
            ) from None

    # -- wire ------------------------------------------------------------------------------

    def to_wire(self) -> tuple[dict, list]:
        """``(layout, buffers)``: the layout travels in the header, buffers as frames."""
        layout = {
            "tensors": [{"name": n, "meta": m} for n, (m, _) in self._tensors.items()],
            "meta": self._meta,
        }
        return layout, [buffer for _, buffer in self._tensors.values()]

    @classmethod
    def from_wire(cls, name: str, layout: dict, frames: list) -> DataSet:
        dataset = cls(name)
        for spec, frame in zip(layout.get("tensors", []), frames, strict=False):
            dataset._tensors[spec["name"]] = (spec["meta"], frame)
        dataset._meta = layout.get("meta", {})
        return dataset


def _check_name(name: Any, what: str) -> None:
    if not isinstance(name, str) or not name:
        raise TypeError(f"a {what} name must be a non-empty string, got {name!r}")


def _type_name(dtype: str) -> str:
    return str(np.dtype(dtype))
