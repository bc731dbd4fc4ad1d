#!/bin/bash
# SPMD: one mpiexec, one program. memstore.mpi.init() inside the program makes the last
# SHARDS_PER_NODE ranks of every node shard servers and gives every other rank a client
# (node-local shards over ipc://) and a communicator of application ranks only:
#
#     from memstore import mpi
#     with mpi.init(shards_per_node=1) as store:
#         if store.is_server:
#             store.serve()
#         else:
#             store.client.put_tensor(...); store.comm.Barrier(); ...
#
# Usage:  launch/mpiexec_spmd.sh [RANKS] [SHARDS_PER_NODE]          (defaults: 4 1)
#         APP=path/to/your_program.py launch/mpiexec_spmd.sh 16 2
#
# RANKS counts the server ranks too: 4 ranks on one node with 1 shard per node = 1 shard
# server + 3 application ranks. On several nodes, give mpiexec a host list the usual way
# (e.g. MPIEXEC_ARGS="-hosts n1,n2 -ppn 8"); the shards then bind the nodes' addresses.
#
# The online-learning programs in examples/online_learning/ are separate programs that
# find the store through MEMSTORE_ADDRESS: run them with launch/mpiexec_jobs.sh (one
# machine), launch/slurm.sbatch or launch/pbs.qsub.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RANKS="${1:-4}"
SHARDS_PER_NODE="${2:-1}"
PYTHON="${PYTHON:-$( [ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python3 )}"
# The venv's mpiexec (PyPI mpich wheel) if there is one: it must match mpi4py's MPI.
MPIEXEC="${MPIEXEC:-$( [ -x "$(dirname "$PYTHON")/mpiexec" ] && echo "$(dirname "$PYTHON")/mpiexec" || echo mpiexec )}"
APP="${APP:-$ROOT/examples/mpi_hello.py}"

# MEMSTORE_MPI_TIMEOUT: seconds every rank has to reach mpi.init (default 120);
# MEMSTORE_MPI_GRACE: seconds a failed rank waits for the others before MPI_Abort (10).
# shellcheck disable=SC2086  # MPIEXEC_ARGS is a list of words on purpose
exec "$MPIEXEC" ${MPIEXEC_ARGS:-} -n "$RANKS" \
    "$PYTHON" "$APP" --shards-per-node "$SHARDS_PER_NODE"
