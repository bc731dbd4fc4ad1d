"""The shard server: :class:`Shard` (the ZeroMQ loop) over a :class:`Store` (the data)."""

from memstore.server.shard import Shard
from memstore.server.store import Store

__all__ = ["Shard", "Store"]
