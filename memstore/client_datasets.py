"""Deprecated: import :mod:`memstore.client.datasets`."""

import warnings

from memstore.client.datasets import DatasetCalls

warnings.warn(
    "memstore.client_datasets is deprecated: import memstore.client.datasets",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["DatasetCalls"]
