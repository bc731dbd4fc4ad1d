"""A RESP2 gateway: Redis clients (SmartRedis's C, C++, Fortran cores) in front of memstore.

``memstore gateway --port 6379`` answers the commands SmartRedis issues (RedisAI's
``AI.*``, the hash/list/key commands of datasets and aggregation lists, ``INFO``,
``CLUSTER SLOTS``, ...) with :class:`memstore.Client` calls; see README.md.
"""

from __future__ import annotations

from memstore.gateway.commands import TABLE, Context, execute
from memstore.gateway.server import Gateway, serve

__all__ = ["TABLE", "Context", "Gateway", "execute", "serve"]
