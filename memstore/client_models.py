"""Deprecated: import :mod:`memstore.client.models`."""

import warnings

from memstore.client.models import ModelCalls, pickle_code

warnings.warn(
    "memstore.client_models is deprecated: import memstore.client.models",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["ModelCalls", "pickle_code"]
