"""Deprecated: the transport is :mod:`memstore.client.transport`, the futures are
:mod:`memstore.futures` (``Settled`` is ``InlineResult``, ``Resolved`` is ``DoneFuture``)."""

import warnings

from memstore.client.transport import UNAVAILABLE, Reply, Transport
from memstore.futures import Chained, Future, Gathered, chain, wait
from memstore.futures import DoneFuture as Resolved
from memstore.futures import InlineResult as Settled

warnings.warn(
    "memstore.transport is deprecated: import memstore.client.transport (and memstore.futures)",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "UNAVAILABLE",
    "Chained",
    "Future",
    "Gathered",
    "Reply",
    "Resolved",
    "Settled",
    "Transport",
    "chain",
    "wait",
]
