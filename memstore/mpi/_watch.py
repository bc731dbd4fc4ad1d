"""Whether the other ranks of an MPI job can still reach its shutdown: their shards answer.

The shutdown collective completes only when every rank has joined it, and MPI says nothing
about a rank whose node went silent (links cut, powered off: no FIN, no RST) — the wait
would last forever. In a job with application ranks every shard serves until they all
reached shutdown, so a shard of another rank that stops answering means that rank is gone
or cut off: :class:`PeerWatch` asks them (at most every :data:`PROBE_S`), and the rank's
wait ends after the grace (``MPI_Abort``). A silent node's shard fails a probe within
:func:`probe_timeout` (twice ``MEMSTORE_HEARTBEAT``, default 3 s; :data:`PROBE_TIMEOUT`
without heartbeats).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from memstore.config import heartbeat
from memstore.errors import ConnectionLost, MemstoreError

if TYPE_CHECKING:
    from memstore.client import Client

#: Seconds between two probes of the peers' shards (the first after one of waiting).
PROBE_S = 1.0
#: A probe's timeout when heartbeats are off (``MEMSTORE_HEARTBEAT=0``).
PROBE_TIMEOUT = 10.0


def probe_timeout() -> float:
    """A probe's own timeout: twice the heartbeat, the time a silent shard takes to be
    noticed on a connection that was never made (a new client's)."""
    return 2 * heartbeat() if heartbeat() else PROBE_TIMEOUT


class PeerWatch:
    """Probes ``addresses`` (the other ranks' shards) while this rank waits for them."""

    def __init__(self, new_client: Callable[..., Client], addresses: list[str]):
        self._new_client = new_client
        self._addresses = addresses
        self._client: Client | None = None
        self._next: float | None = None  # when to probe next; set when a wait begins
        self._failed = False  # the last probe failed

    def lost(self) -> str | None:
        """Why a peer's shard is lost (the ``ConnectionLost`` naming it), else None.

        Only a shard that failed two probes in a row, :data:`PROBE_S` apart, counts: at a
        normal end a rank that saw the collective complete stops its shards while another
        may not have seen it yet, and that one's next probe must not take it for a loss.
        """
        now = time.monotonic()
        if self._next is None:
            self._next = now + PROBE_S
        if not self._addresses or now < self._next:
            return None
        try:
            if self._client is None:  # made only for a wait that lasts: most are short
                self._client = self._new_client(timeout=probe_timeout())
            self._client.get_db_node_info(self._addresses)
        except ConnectionLost as exc:
            again, self._failed = self._failed, True
            return str(exc) if again else None
        except MemstoreError:  # a slow or busy shard answers later: not a lost one
            pass
        finally:
            self._next = time.monotonic() + PROBE_S
        self._failed = False
        return None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
