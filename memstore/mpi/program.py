"""``memstore-server --mpi``: every rank of this program serves one shard.

Started next to the application programs (``mpiexec -n 2 memstore-server --mpi : -n 8
python app.py``, where the apps call :func:`memstore.mpi.connect`) or alone as a store for
other jobs (``--address-file``; stopped by ``memstore stop``). The lowest server rank
prints the ready line with the whole shard list, which launchers read. With
``--resp-port P`` the node's first server rank also runs a RESP gateway on port P (0: a free
one); the gateway list comes in a line of its own just before the ready line.

Called by :mod:`memstore.cli.server` with its parsed options.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from typing import TYPE_CHECKING

from memstore.config import GATEWAY_READY_LINE, READY_LINE
from memstore.errors import MemstoreError
from memstore.mpi._bootstrap import bootstrap
from memstore.mpi._plan import SERVER

if TYPE_CHECKING:
    from memstore.auth import ServerKeys


def main(args: argparse.Namespace, curve: ServerKeys | None = None) -> int:
    """Bootstrap with the application ranks, serve, take part in the shutdown.

    ``curve``: the keys of ``--curve-secret-key`` / ``--curve-authorized-keys`` /
    ``--admin-key`` (:func:`memstore.auth.load_server`): every shard of the job speaks CURVE
    with them, and the job's application ranks get the cluster key over MPI.
    """
    from memstore.server.options import shard_options
    from memstore.server.shard import Shard
    from memstore.server.signals import stop_on_signals

    stop_on_signals()
    try:
        store = bootstrap(
            None,
            SERVER,
            make_shard=partial(Shard, **shard_options(args)),
            host=args.host,  # None: auto (see memstore.mpi.init)
            port=args.port or 0,  # None: free ports
            address_file=args.address_file,
            timeout=args.mpi_timeout,
            curve=curve,
            resp_port=args.resp_port,
        )
    except MemstoreError as exc:
        print(f"memstore-server --mpi: {exc}", file=sys.stderr)
        return 1
    if store.servers and store.rank == store.servers[0]:
        # one write; the gateways first: a launcher may stop reading at the ready line
        gateways = f"{GATEWAY_READY_LINE}{','.join(store.gateways)}\n" if store.gateways else ""
        sys.stdout.write(f"{gateways}{READY_LINE}{','.join(store.addresses)}\n")
        sys.stdout.flush()
    sys.stdout = sys.stderr  # a launcher may close our stdout once it has the ready line
    try:
        store.serve()
    except BaseException as exc:  # a crashed shard or a signal: fail, don't hang others
        store.shutdown(error=exc)
        return 130 if isinstance(exc, KeyboardInterrupt) else 1
    return 1 if store.shutdown() else 0
