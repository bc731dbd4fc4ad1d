"""``DatasetConverter``: xarray metadata conventions for a ``Dataset``, as SmartRedis writes
them (the same ``_xarray_*`` metadata fields, so either library reads the other's datasets).

``transform_to_xarray`` needs the optional ``xarray`` package (``pip install
memstore[xarray]``); adding the metadata does not.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from memstore.smartredis.dataset import Dataset
from memstore.smartredis.error import RedisRuntimeError
from memstore.smartredis.util import typecheck

__all__ = ["DatasetConverter"]

T = TypeVar("T")
xr: Any = None  # xarray, imported on first use (it is optional)

_FIELDS = ("dim_names", "coord_names", "attr_names")


def _requires_xarray(function: Callable[..., T]) -> Callable[..., T]:
    """Import xarray (into this module's ``xr``) before ``function`` runs, or explain."""

    @functools.wraps(function)
    def with_xarray(*args: Any, **kwargs: Any) -> T:
        global xr
        try:
            import xarray as xr
        except ImportError as exc:
            raise RedisRuntimeError(
                "the optional package xarray is needed: pip install 'memstore[xarray]' "
                "(SmartRedis's smartredis[xarray])"
            ) from exc
        return function(*args, **kwargs)

    return with_xarray


def _names(value: Any, what: str, optional: bool = False) -> list[str] | None:
    if value is None and optional:
        return None
    names = [value] if isinstance(value, str) else value
    typecheck(names, what, list)
    for name in names:
        typecheck(name, what, str)
    return names


def _listed(dataset: Dataset, variable: str, field: str) -> list[str]:
    text = dataset.get_meta_strings(f"_xarray_{variable}_{field}")[0]
    return [] if text == "null" else text.split(",")


def _first(dataset: Dataset, field: str) -> str:
    return dataset.get_meta_strings(field)[0]


class DatasetConverter:
    """Converts between ``Dataset`` metadata conventions and xarray ``DataArray``s."""

    @staticmethod
    def add_metadata_for_xarray(
        dataset: Dataset,
        data_names: list[str] | str,
        dim_names: list[str] | str,
        coord_names: list[str] | str | None = None,
        attr_names: list[str] | str | None = None,
    ) -> None:
        """Record which tensors of ``dataset`` are data and coordinates of an xarray
        variable, and which metadata fields hold its dimension names and attributes."""
        typecheck(dataset, "dataset", Dataset)
        data = _names(data_names, "data_names")
        fields = (
            _names(dim_names, "dim_names"),
            _names(coord_names, "coord_names", optional=True),
            _names(attr_names, "attr_names", optional=True),
        )
        for name in data:
            dataset.add_meta_string("_xarray_data_names", name)
            for field, values in zip(_FIELDS, fields, strict=True):
                dataset.add_meta_string(f"_xarray_{name}_{field}", ",".join(values or ["null"]))

    @staticmethod
    @_requires_xarray
    def transform_to_xarray(dataset: Dataset) -> dict[str, Any]:
        """``{variable name: xarray.DataArray}`` for the variables recorded in ``dataset``;
        variables named as another's coordinates become its coords."""
        typecheck(dataset, "dataset", Dataset)
        names = dataset.get_meta_strings("_xarray_data_names")
        coordinates = {c for n in names for c in _listed(dataset, n, "coord_names")}
        result = {}
        for name in names:
            if name in coordinates:
                continue
            coords = {
                coord: (
                    [_first(dataset, f) for f in _listed(dataset, coord, "dim_names")],
                    dataset.get_tensor(coord),
                    {f: _first(dataset, f) for f in _listed(dataset, coord, "attr_names")},
                )
                for coord in _listed(dataset, name, "coord_names")
            }
            result[name] = xr.DataArray(
                name=name,
                data=dataset.get_tensor(name),
                coords=coords or None,
                dims=[_first(dataset, f) for f in _listed(dataset, name, "dim_names")],
                attrs={f: _first(dataset, f) for f in _listed(dataset, name, "attr_names")},
            )
        return result
