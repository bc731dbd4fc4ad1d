"""Whether the other ranks of an MPI job can still reach its shutdown: their shards answer.

The shutdown collective completes only when every rank has joined it, and MPI says nothing
about a rank whose node went silent (links cut, powered off: no FIN, no RST) — the wait
would last forever. In a job with application ranks every shard serves until they all
reached shutdown, so a shard of another rank that stops answering means that rank is gone
or cut off: :class:`PeerWatch` asks them (at most every :data:`PROBE_S`), and the rank's
wait ends after the grace (``MPI_Abort``). A silent node is noticed within
``MEMSTORE_HEARTBEAT`` (default 3 s); without heartbeats within :data:`PROBE_TIMEOUT`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from memstore.errors import ConnectionLost, MemstoreError

if TYPE_CHECKING:
    from memstore.client import Client

#: Seconds between two probes of the peers' shards (the first after one of waiting).
PROBE_S = 1.0
#: A probe's own timeout: a shard that does not answer within it counts as lost.
PROBE_TIMEOUT = 10.0


class PeerWatch:
    """Probes ``addresses`` (the other ranks' shards) while this rank waits for them."""

    def __init__(self, new_client: Callable[..., Client], addresses: list[str]):
        self._new_client = new_client
        self._addresses = addresses
        self._client: Client | None = None
        self._next = time.monotonic() + PROBE_S

    def lost(self) -> str | None:
        """Why a peer's shard is lost (the ``ConnectionLost`` naming it), else None."""
        if not self._addresses or time.monotonic() < self._next:
            return None
        try:
            if self._client is None:  # made only for a wait that lasts: most are short
                self._client = self._new_client(timeout=PROBE_TIMEOUT)
            self._client.get_db_node_info(self._addresses)
        except ConnectionLost as exc:
            return str(exc)
        except MemstoreError:  # a slow or busy shard answers later: not a lost one
            return None
        finally:
            self._next = time.monotonic() + PROBE_S
        return None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
