"""Hello, memstore under MPI: every application rank puts a tensor and reads its neighbours'.

    mpiexec -n 4 python examples/mpi_hello.py                       # SPMD: memstore.mpi.init
    mpiexec -n 1 memstore-server --mpi : -n 3 python examples/mpi_hello.py --connect   # MPMD

(``launch/mpiexec_spmd.sh`` and ``launch/mpiexec_mpmd.sh`` run exactly these.) A rank does
not wait for its neighbours with a barrier: ``wait_tensor`` parks the request on the shard,
which answers the moment the neighbour's tensor lands.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from memstore import mpi


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--connect",
        action="store_true",
        help="MPMD: join the memstore-server --mpi ranks instead of starting shards",
    )
    p.add_argument("--shards-per-node", type=int, default=1, help="SPMD: server ranks per node")
    p.add_argument("--elements", type=int, default=1 << 16, help="float32 values per tensor")
    args = p.parse_args()

    store = mpi.connect() if args.connect else mpi.init(shards_per_node=args.shards_per_node)
    with store:  # leaving it is the collective shutdown, also after an exception
        if store.is_server:
            store.serve()  # returns once every application rank is done
            return 0
        comm, client = store.comm, store.client
        rank, size = comm.Get_rank(), comm.Get_size()
        prefix = f"hello.program{store.appnum}"
        client.put_tensor(f"{prefix}.{rank}", np.full(args.elements, rank, dtype=np.float32))
        left, right = (rank - 1) % size, (rank + 1) % size
        for neighbour in sorted({left, right}):
            got = client.wait_tensor(f"{prefix}.{neighbour}", timeout=60)
            assert got.shape == (args.elements,) and got[0] == neighbour, (neighbour, got[:4])
        local = sum(not a.startswith("tcp://") for a in store.client_addresses)
        line = (
            f"rank {rank}/{size} of program {store.appnum} on node {store.node}: read ranks "
            f"{left} and {right}; {len(store.addresses)} shards, {local} node-local"
        )
        os.write(1, (line + "\n").encode())  # one write: mpiexec interleaves at write boundaries
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
