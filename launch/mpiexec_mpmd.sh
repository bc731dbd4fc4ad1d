#!/bin/bash
# MPMD: one mpiexec line; the store is a program of its own, next to the applications.
#
#     mpiexec -n SHARDS memstore-server --mpi : -n SIM python SIM_APP : -n TRAIN python TRAIN_APP
#
# Every rank of every application program calls memstore.mpi.connect() once, at the start
# (it is collective over all the programs, the memstore-server ranks included):
#
#     from memstore import mpi
#     with mpi.connect() as store:     # store.client, store.comm (this program's ranks),
#         ...                          # store.appnum (1 = SIM_APP, 2 = TRAIN_APP here)
#
# After connect(), a plain memstore.Client() in the same process finds the store too.
# The store ends when every application rank has left the `with` block (or called
# store.shutdown()); a rank that fails lets the others finish, or aborts the job.
#
# Usage:  launch/mpiexec_mpmd.sh [SHARDS] [SIM_RANKS] [TRAIN_RANKS]       (defaults: 1 2 1)
#         SIM_APP=sim.py TRAIN_APP=train.py launch/mpiexec_mpmd.sh 2 8 2
#
# Defaults run examples/mpi_hello.py as both programs. The online-learning programs join an
# MPMD line when MEMSTORE_MPMD=1 (examples/online_learning/run.py builds that line), or run
# as separate jobs: launch/mpiexec_jobs.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARDS="${1:-1}"
SIM_RANKS="${2:-2}"
TRAIN_RANKS="${3:-1}"
PYTHON="${PYTHON:-$( [ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python3 )}"
MPIEXEC="${MPIEXEC:-$( [ -x "$(dirname "$PYTHON")/mpiexec" ] && echo "$(dirname "$PYTHON")/mpiexec" || echo mpiexec )}"
SIM_APP="${SIM_APP:-$ROOT/examples/mpi_hello.py --connect}"
TRAIN_APP="${TRAIN_APP:-$ROOT/examples/mpi_hello.py --connect}"

# memstore-server options work here too: --max-memory 8GiB, --address-file store.addr
# (to let a separate job join), --host (an interface address, default: auto).
# shellcheck disable=SC2086  # the *_APP values are command lines on purpose
exec "$MPIEXEC" ${MPIEXEC_ARGS:-} \
    -n "$SHARDS" "$PYTHON" -m memstore.server --mpi --log-level WARNING : \
    -n "$SIM_RANKS" "$PYTHON" $SIM_APP : \
    -n "$TRAIN_RANKS" "$PYTHON" $TRAIN_APP
