"""The shard's admin operations (mixed into :class:`~memstore.server.shard.Shard`).

``hello`` and ``cluster`` (and :meth:`AdminOps.join`, which ``cluster`` and the programs
that start shards use) set up and describe a shard's place in its cluster; ``info``,
``flush``, ``keys`` and ``shutdown`` are about the whole shard rather than one key.
"""

from __future__ import annotations

import logging
import os
import time

from memstore import wire
from memstore.config import MAX_SHARDS
from memstore.errors import ProtocolError
from memstore.server.host import ShardHost
from memstore.server.rss import rss, rss_peak
from memstore.server.streams import DATA_PREFIX

log = logging.getLogger(__name__)


class AdminOps(ShardHost):
    """hello, cluster (:meth:`join`), info, flush, keys and shutdown."""

    def _op_hello(self, request, identity):
        return wire.reply(
            request.id,
            {
                "shards": self.cluster,
                "index": self.index,
                "address": self.address,
                "pid": os.getpid(),
                "max_message": self.max_message,
                # what a client may use beyond the version's basics
                "features": self._features(),
                "shm": self.shm.offer() if self.shm is not None else None,
                "unix": self.unix.offer() if self.unix is not None else None,
            },
        )

    def _features(self) -> list[str]:
        """What a client may use beyond the version's basics."""
        return ["batch", *(["shm"] if self.shm is not None else []),
                *(["unix"] if self.unix is not None else [])]  # fmt: skip

    def _op_cluster(self, request, identity):
        """Learn the shard list once, at startup; no client can rewrite it later."""
        header = request.header
        self.join(wire.field(header, "shards", list), wire.field(header, "index", int))
        return wire.reply(request.id)

    def join(self, shards: list, index: int) -> None:
        """Take ``shards`` as this shard's cluster, with this shard at ``index``: set once.

        Called by the ``cluster`` op (launchers, after every shard answers), by
        ``memstore-server --cluster`` (a shard restarted in place knows its cluster before it
        serves) and by :mod:`memstore.mpi` (on the shard's thread, before it serves). A
        repeat of the same list changes nothing. A snapshot given at start (``restore``) is
        loaded now, under this cluster's placement.

        Raises:
            ProtocolError: a malformed list, an index that does not name this shard, a
                different list than the one already set, or keys stored already (unless
                the list is this shard alone: it places every key here, as before).
        """
        if not shards or len(shards) > MAX_SHARDS:
            raise ProtocolError(f"cluster: field 'shards' must list 1 to {MAX_SHARDS} addresses")
        if not all(isinstance(s, str) and s for s in shards) or len(set(shards)) != len(shards):
            raise ProtocolError("cluster: field 'shards' must be distinct address strings")
        if not 0 <= index < len(shards) or shards[index] != self.address:
            raise ProtocolError(
                f"cluster: field 'index' {index} must name this shard ({self.address}) in 'shards'"
            )
        if self.cluster:
            if (shards, index) == (self.cluster, self.index):
                return  # a repeated startup call changes nothing
            raise ProtocolError(
                f"cluster: shard {self.address} already serves a cluster of "
                f"{len(self.cluster)}; its topology is fixed after start"
            )
        if len(self.store) and len(shards) > 1:
            # A list of this shard alone places every key here, as before: a client may
            # have stored some between the shard's start and this call (a restart)
            raise ProtocolError(
                f"cluster: shard {self.address} already holds {len(self.store)} keys placed "
                "for a single shard; the shard list must be set before any data is stored"
            )
        self.cluster, self.index = list(shards), index
        self._restore_if_pending()

    def _op_info(self, request, identity):
        store = self.store
        return wire.reply(request.id, {
            "address": self.address, "keys": len(store), "bytes": store.used,
            "max_memory": store.max_memory, "max_message": self.max_message,
            "rss": rss(), "rss_peak": rss_peak(), "ops": self.ops, "messages": self.messages,
            "clients": self.clients + (self.unix.clients if self.unix is not None else 0),
            "parked": store.parked, "parked_clients": store.parked_clients,
            "max_waiters": store.max_waiters, "max_client_waiters": store.max_client_waiters,
            "client_output_limit": self.output.limit,
            "clients_evicted": self.output.evicted + (self.unix.evicted if self.unix else 0),
            "unix": self.unix.path if self.unix is not None else None,
            "unix_clients": self.unix.clients if self.unix is not None else 0,
            "unix_refused": self.unix.refused if self.unix is not None else 0,
            "models": self.models, "uptime": time.time() - self.started,
            "pid": os.getpid(), "index": self.index, "shards": len(self.cluster) or 1,
            "shm_bytes": store.shm_used, "shm_dir": self.shm.path if self.shm else None,
            "shm_spare_bytes": self.shm.spare_bytes() if self.shm else 0,
            "shm_gets": self.shm_gets,
            "saves": self.saves, "last_save": self.last_save, "saving": self._saver is not None,
            **self._stream_totals(),
        })  # fmt: skip

    def _op_flush(self, request, identity):
        self._drop_all_staged()
        self.store.flush()
        for name in list(self.executor.models):
            self.executor.discard(name)
        return wire.reply(request.id)

    def _op_keys(self, request, identity):
        """Every key, but streams' step data (counted in ``bytes``, listed by no one)."""
        every = self.store.keys()
        return wire.reply(request.id, {"keys": [k for k in every if not k.startswith(DATA_PREFIX)]})

    def _op_shutdown(self, request, identity):
        log.info("shard %s: shutdown requested", self.address)
        self._running = False
        return wire.reply(request.id)
