"""Run memstore inside an MPI job: the store comes up with the job and ends with it.

SPMD — one program, some of its ranks serve (collective over the communicator)::

    from memstore import mpi

    with mpi.init(shards_per_node=1) as store:   # the last rank(s) of each node serve
        if store.is_server:
            store.serve()                        # returns once the app ranks are done
        else:
            client, comm = store.client, store.comm   # comm: application ranks only
            ...

MPMD — a server program next to the application programs::

    mpiexec -n 2 memstore-server --mpi : -n 8 python sim.py : -n 2 python train.py

    with mpi.connect() as store:                 # in sim.py and train.py, every rank
        store.client, store.comm, store.appnum   # appnum: 1 in sim.py, 2 in train.py

Both calls are collective over ``COMM_WORLD`` (MPMD: over every program), and leaving the
``with`` block (or ``store.shutdown()``) is collective too. Afterwards a plain
``memstore.Client()`` in the same process also finds the store (``MEMSTORE_ADDRESS`` is
set for it). A store job for *other* jobs: ``mpiexec -n 4 memstore-server --mpi
--address-file store.addr``; they connect with ``MEMSTORE_ADDRESS_FILE=store.addr``.
See docs/cluster.md.

Needs mpi4py and an MPI library: ``pip install 'memstore[mpi]'``.
"""

from __future__ import annotations

try:
    import mpi4py  # noqa: F401  (the package only: MPI itself starts on first use)
except ImportError as _exc:
    raise ImportError(
        "memstore.mpi needs mpi4py and an MPI library: pip install 'memstore[mpi]'"
    ) from _exc

import os
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from memstore.config import parse_size
from memstore.mpi._bootstrap import bootstrap
from memstore.mpi._plan import CONNECT, INIT
from memstore.mpi._store import MPIStore

if TYPE_CHECKING:
    from memstore.server.shard import Shard

__all__ = ["MPIStore", "connect", "init"]


def init(
    shards_per_node: int = 1,
    comm: Any = None,
    address_file: str | os.PathLike | None = None,
    max_memory: str | int = 0,
    *,
    host: str | None = None,
    port: int = 0,
    ipc: bool = True,
    timeout: float | None = None,
    grace: float | None = None,
    client_timeout: float | None = None,
    secure: bool = False,
    resp_port: int | None = None,
    **shard_options: Any,
) -> MPIStore:
    """Start a store on some ranks of ``comm`` and connect the others (collective).

    On every node the last ``shards_per_node`` ranks serve one shard each (a node keeps at
    least one application rank; a rank alone on its node runs the shards in threads).

    Args:
        shards_per_node: shard servers per node.
        comm: the communicator to bootstrap on (default ``MPI.COMM_WORLD``).
        address_file: write the shard list here, for jobs that connect from outside
            (``MEMSTORE_ADDRESS_FILE``); removed at shutdown.
        max_memory: per-shard cap, e.g. ``"4GiB"`` (0: unlimited).
        host: IP address or host name the shards bind (default: loopback in a job on one
            node without ``address_file``, else each node's address).
        port: first TCP port of each node's shards (0: free ports).
        ipc: also listen on ``ipc://`` sockets, which clients on the same node use.
        timeout: seconds every rank has to get here (default ``MEMSTORE_MPI_TIMEOUT``).
        grace: seconds a failed rank waits for the others at shutdown before
            ``MPI_Abort`` (default ``MEMSTORE_MPI_GRACE``).
        client_timeout: the clients' ``timeout``.
        secure: speak CURVE with a cluster key that rank 0 makes and broadcasts over MPI
            (never written to a file); this job's clients get it, no one else can connect.
        resp_port: also start a RESP gateway (for SmartRedis's compiled clients) on this
            port of each node's first rank with shards (0: a free port); every gateway
            answers ``CLUSTER SLOTS`` with them all (``store.gateways``).
        shard_options: more :class:`~memstore.server.shard.Shard` options (``max_message``, ...).

    Raises:
        MemstoreError: on every rank alike, when any rank could not start its shard.
    """
    return bootstrap(
        comm,
        INIT,
        shards_per_node=shards_per_node,
        make_shard=_shard_factory(shards_per_node, max_memory, shard_options),
        host=host,
        port=_check_port(port),
        ipc=ipc,
        address_file=address_file,
        timeout=timeout,
        grace=grace,
        client_timeout=client_timeout,
        secure=secure,
        resp_port=None if resp_port is None else _check_port(resp_port),
    )


def connect(
    *,
    ipc: bool = True,
    timeout: float | None = None,
    grace: float | None = None,
    client_timeout: float | None = None,
    secure: bool = False,
) -> MPIStore:
    """Join the store of an MPMD job (``memstore-server --mpi`` ranks); collective.

    Every rank of every program of the job calls it once. Without server ranks in the job
    the client uses ``MEMSTORE_ADDRESS`` / ``SSDB`` / ``MEMSTORE_ADDRESS_FILE``, so the same
    program also runs against a store started by another job.
    ``secure=True`` on any rank makes the job's store CURVE (as :func:`init`).

    Returns:
        an :class:`MPIStore` whose ``client``, ``comm`` (this program's ranks) and
        ``appnum`` (this program's place on the command line) are set.
    """
    return bootstrap(
        None,
        CONNECT,
        ipc=ipc,
        timeout=timeout,
        grace=grace,
        client_timeout=client_timeout,
        secure=secure,
    )


def _shard_factory(
    shards_per_node: int, max_memory: str | int, options: dict[str, Any]
) -> Callable[[str], Shard]:
    """``Shard(address)`` with :func:`init`'s options, checked before any rank starts one."""
    if not isinstance(shards_per_node, int) or shards_per_node < 1:
        raise ValueError(f"shards_per_node must be a positive integer, got {shards_per_node!r}")
    from memstore.server.shard import Shard

    return partial(Shard, max_memory=parse_size(max_memory), **options)


def _check_port(port: int) -> int:
    if not isinstance(port, int) or not 0 <= port < 65536:
        raise ValueError(f"port must be 0 (free ports) or a TCP port, got {port!r}")
    return port
