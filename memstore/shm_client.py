"""Deprecated: import :mod:`memstore.client.shm`."""

import warnings

from memstore.client.shm import STALE, UNASKED, Allocation, Link, claim

warnings.warn(
    "memstore.shm_client is deprecated: import memstore.client.shm",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["STALE", "UNASKED", "Allocation", "Link", "claim"]
