"""How many bytes of received commands a gateway holds: per connection and in all.

Redis's ``client-query-buffer-limit`` caps one connection (default 1 GiB, as Redis's):
:class:`memstore.gateway.resp.Parser` enforces it. :class:`Budget` caps all connections
together (``--query-buffer-total``): a connection whose bytes would pass it gets an error
and is closed, and the others keep their room. A connection holds its unfinished command,
the command it is running and its ``MULTI`` queue; docs/security.md has the resulting
bound on the gateway's RSS.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from memstore.gateway.resp import DEFAULT_QUERY_LIMIT, LimitExceeded

GiB = 1024**3
#: The total's default: 4 GiB, or a quarter of this machine's memory if that is less.
DEFAULT_TOTAL_CAP = 4 * GiB


def default_total() -> int:
    """``--query-buffer-total``'s default: min(4 GiB, physical memory / 4)."""
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return DEFAULT_TOTAL_CAP
    return min(DEFAULT_TOTAL_CAP, max(physical // 4, 64 * 1024 * 1024))


@dataclass(frozen=True)
class QueryLimits:
    """``per_connection``: one connection's cap; ``total``: every connection's together."""

    per_connection: int = DEFAULT_QUERY_LIMIT
    total: int = field(default_factory=default_total)

    def __post_init__(self) -> None:
        if self.per_connection <= 0 or self.total <= 0:
            raise ValueError(
                f"query buffer limits must be positive, got {self.per_connection} per "
                f"connection and {self.total} in all"
            )


class Budget:
    """The bytes every connection of one gateway holds, against ``total``.

    Used from the gateway's event loop only (one thread), so it takes no lock.
    """

    def __init__(self, total: int):
        self.total = total
        self.used = 0

    def holding(self) -> Holding:
        """A connection's share, 0 bytes to start with."""
        return Holding(self)


class Holding:
    """One connection's bytes in its gateway's :class:`Budget`."""

    def __init__(self, budget: Budget):
        self._budget = budget
        self.size = 0

    def set(self, size: int) -> None:
        """Hold ``size`` bytes now; raises :class:`LimitExceeded` (nothing changed) when a
        growth would take every connection together past the total."""
        budget = self._budget
        if size > self.size and budget.used - self.size + size > budget.total:
            raise LimitExceeded(
                f"gateway query buffers full: every connection together would hold "
                f"{budget.used - self.size + size} bytes, over the gateway's "
                f"--query-buffer-total of {budget.total}; closing this connection"
            )
        budget.used += size - self.size
        self.size = size

    def release(self) -> None:
        """The connection is gone: give its bytes back."""
        self._budget.used -= self.size
        self.size = 0
