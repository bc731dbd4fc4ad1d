"""``Dataset``: memstore's :class:`~memstore.DataSet` with SmartRedis's argument checks,
copy-on-add and logging."""

from __future__ import annotations

from typing import Any

import numpy as np

from memstore.dataset import DataSet
from memstore.smartredis.error import RedisKeyError
from memstore.smartredis.logger import LogContext
from memstore.smartredis.util import Dtypes, typecheck

__all__ = ["Dataset"]


class Dataset(DataSet, LogContext):
    """A named group of tensors and metadata, as SmartRedis's ``Dataset``.

    Unlike memstore's ``DataSet``, ``add_tensor`` copies the array (SmartRedis does), so the
    caller may change it afterwards; only numpy arrays of SmartRedis's tensor types are taken.
    """

    def __init__(self, name: str):
        typecheck(name, "name", str)
        DataSet.__init__(self, name)
        LogContext.__init__(self, name)

    def __str__(self) -> str:
        return (
            f"Dataset {self.name}: tensors {self.get_tensor_names()}, "
            f"metadata {self.get_metadata_field_names()}"
        )

    def _tensor(self, name: str) -> tuple[dict, Any]:
        try:
            return super()._tensor(name)
        except KeyError as exc:
            raise RedisKeyError(str(exc.args[0]), "Dataset.get_tensor", name) from None

    def _field(self, name: str) -> dict:
        try:
            return super()._field(name)
        except KeyError as exc:
            raise RedisKeyError(str(exc.args[0]), "Dataset.get_meta", name) from None

    @staticmethod
    def from_pybind(dataset: Any) -> Dataset:
        """A ``Dataset`` holding the contents of memstore ``DataSet`` ``dataset``."""
        if not isinstance(dataset, DataSet) or isinstance(dataset, Dataset):
            raise TypeError(f"from_pybind takes a memstore.DataSet, got {type(dataset).__name__}")
        wrapped = Dataset(dataset.name)
        wrapped.set_data(dataset)
        return wrapped

    def get_data(self) -> Dataset:
        """This dataset (SmartRedis returns its wrapped C++ object)."""
        return self

    def set_data(self, dataset: Any) -> None:
        """Take over the tensors and metadata of memstore ``DataSet`` ``dataset``."""
        if not isinstance(dataset, DataSet) or isinstance(dataset, Dataset):
            raise TypeError(f"set_data takes a memstore.DataSet, got {type(dataset).__name__}")
        layout, frames = dataset.to_wire()  # its public form: no reach into its attributes
        self._tensors = {
            spec["name"]: (spec["meta"], frame)
            for spec, frame in zip(layout["tensors"], frames, strict=True)
        }
        self._meta = {k: {**v, "values": list(v["values"])} for k, v in layout["meta"].items()}

    def add_tensor(self, name: str, data: np.ndarray) -> None:
        """Add a copy of numpy array ``data`` as tensor ``name``."""
        typecheck(name, "name", str)
        typecheck(data, "data", np.ndarray)
        Dtypes.tensor_from_numpy(data)
        # SmartRedis copies on add; memstore's DataSet keeps a reference (zero-copy).
        DataSet.add_tensor(self, name, np.array(data, copy=True, order="C"))

    def get_tensor(self, name: str) -> np.ndarray:
        """Tensor ``name`` as a numpy array."""
        typecheck(name, "name", str)
        return DataSet.get_tensor(self, name)

    def get_tensor_type(self, name: str) -> Any:
        typecheck(name, "name", str)
        return DataSet.get_tensor_type(self, name)

    def get_tensor_dims(self, name: str) -> list[int]:
        typecheck(name, "name", str)
        return DataSet.get_tensor_dims(self, name)

    def add_meta_scalar(self, name: str, data: int | float | np.number) -> None:
        typecheck(name, "name", str)
        DataSet.add_meta_scalar(self, name, data)

    def add_meta_string(self, name: str, data: str) -> None:
        typecheck(name, "name", str)
        typecheck(data, "data", str)
        DataSet.add_meta_string(self, name, data)

    def get_meta_scalars(self, name: str) -> np.ndarray:
        typecheck(name, "name", str)
        return DataSet.get_meta_scalars(self, name)

    def get_meta_strings(self, name: str) -> list[str]:
        typecheck(name, "name", str)
        return DataSet.get_meta_strings(self, name)

    def get_metadata_field_type(self, name: str) -> Any:
        typecheck(name, "name", str)
        return DataSet.get_metadata_field_type(self, name)
