"""The RESP gateways of an MPI store: one per node, on the node's first rank with shards.

Collective like the rest of the bootstrap: the gateway ranks listen first (port ``P`` of
the node's shard address, 0: a free one), then one ``allgather`` gives every rank the full
list, in node order, which each gateway answers ``CLUSTER SLOTS`` with, so SmartRedis
clients in cluster mode spread over the nodes. A rank that cannot listen sends its error
instead and every rank raises it, as with the shards.
"""

from __future__ import annotations

from typing import Any

from memstore.errors import MemstoreError
from memstore.mpi._plan import Member, Role


def runs_gateway(members: list[Member], roles: list[Role], rank: int) -> bool:
    """Whether ``rank`` is the first rank of its node that runs shards."""
    node = members[rank].node
    first = next((m.rank for m, r in zip(members, roles, strict=True)
                  if m.node == node and r.shards), None)  # fmt: skip
    return first == rank


def start_gateways(
    comm: Any,
    members: list[Member],
    roles: list[Role],
    port: int | None,
    own_shard: str | None,
    shard_list: list[str],
    aliases: dict[str, str],
    secure: bool,
) -> tuple[Any, list[str]]:
    """This rank's gateway thread (None if it runs none) and every gateway's ``host:port``.

    Collective over ``comm``; call it only when some rank asked for a gateway (``port`` not
    None there), since every rank must take part. ``own_shard``: this rank's first shard's
    TCP address, whose host the gateway binds too.
    """
    from memstore.gateway.commands import parse_peer
    from memstore.gateway.server import GatewayThread, connect

    rank = comm.Get_rank()
    thread = None
    mine: tuple[str, str] | None = None
    if port is not None and runs_gateway(members, roles, rank):
        try:
            if secure:
                raise MemstoreError(
                    "the RESP gateways of an MPI job take no password, so they cannot "
                    "front a CURVE store: leave out --resp-port / resp_port, or the CURVE "
                    "options (a standalone `memstore gateway --requirepass-file` can)"
                )
            ip = own_shard.removeprefix("tcp://").rpartition(":")[0]
            thread = GatewayThread(lambda: connect(shard_list, aliases=aliases), ip, port)
            mine = ("ok", f"{ip}:{thread.listen()}")
        except Exception as exc:
            thread = None
            mine = ("error", f"{type(exc).__name__}: {exc}")
    found = comm.allgather(mine)
    failed = [(r, f[1]) for r, f in enumerate(found) if f and f[0] == "error"]
    if failed:
        if thread is not None:
            thread.stop()
        detail = "; ".join(f"rank {r}: {why}" for r, why in failed)
        raise MemstoreError(f"memstore.mpi could not start the RESP gateways: {detail}")
    gateways = [f[1] for f in found if f]
    if thread is not None:
        thread.ctx.peers = [parse_peer(g) for g in gateways]
    return thread, gateways
