#!/bin/bash
# Separate jobs on one machine: the store is one mpiexec job, every application another.
# This is the layout of launch/slurm.sbatch and launch/pbs.qsub, without a scheduler, and
# it runs the online-learning example (examples/online_learning/):
#
#     store      mpiexec -n SHARDS memstore-server --mpi --address-file FILE
#     producer   mpiexec -n PRODUCERS python producer.py     (the PDE simulation)
#     trainer    mpiexec -n TRAINERS python trainer.py       (data-parallel training)
#     inference  python inference.py                         (runs the model in the store)
#     monitor    python monitor.py                           (PNG frames, loss curve)
#
# The applications find the store through MEMSTORE_ADDRESS (read from the address file the
# store writes once every shard serves); the store is stopped when they have all ended.
# examples/online_learning/run.py does the same with a summary and checks.
#
# Usage:  launch/mpiexec_jobs.sh            (SHARDS=2 PRODUCERS=2 TRAINERS=2 by default)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$( [ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python3 )}"
MPIEXEC="${MPIEXEC:-$( [ -x "$(dirname "$PYTHON")/mpiexec" ] && echo "$(dirname "$PYTHON")/mpiexec" || echo mpiexec )}"
SHARDS="${SHARDS:-2}"
PRODUCERS="${PRODUCERS:-2}"
TRAINERS="${TRAINERS:-2}"
EXAMPLE="$ROOT/examples/online_learning"
OUTPUT="${OUTPUT:-$EXAMPLE/output}"
# The sizes of run.py's "demo" run; PRODUCER_ARGS="--ny 32 --nx 32 --steps 60
# --send-every 3" TRAINER_ARGS="--min-epochs 12" FRAMES=3 is its "tiny" one (seconds).
PRODUCER_ARGS="${PRODUCER_ARGS:---ny 256 --nx 256 --steps 10000 --send-every 25}"
TRAINER_ARGS="${TRAINER_ARGS:---min-epochs 100}"
FRAMES="${FRAMES:-6}"
WORK="$(mktemp -d)"
export MEMSTORE_ADDRESS_FILE="$WORK/memstore.addr"

PIDS=() STORE_PID=""
cleanup() {  # on any exit: stop what is still running, drop the address file
    for p in ${PIDS[@]+"${PIDS[@]}"} $STORE_PID; do kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 143' TERM  # scancel / qdel / timeout: still clean up
trap 'exit 130' INT

# 1. The store. --host 127.0.0.1: everything runs on this machine (on a cluster, leave it
#    out: with --address-file the shards bind their node's address).
"$MPIEXEC" -n "$SHARDS" "$PYTHON" -m memstore.server --mpi --host 127.0.0.1 \
    --address-file "$MEMSTORE_ADDRESS_FILE" --log-level WARNING &
STORE_PID=$!
for _ in $(seq 120); do  # the file appears once every shard serves; at most 2 minutes
    [ -s "$MEMSTORE_ADDRESS_FILE" ] && break
    kill -0 "$STORE_PID" 2>/dev/null || { echo "the store failed to start" >&2; exit 1; }
    sleep 1
done
[ -s "$MEMSTORE_ADDRESS_FILE" ] || { echo "the store did not start in time" >&2; exit 1; }
export MEMSTORE_ADDRESS="$(head -n 1 "$MEMSTORE_ADDRESS_FILE")"
echo "store at $MEMSTORE_ADDRESS"

# 2. The applications, side by side.
# shellcheck disable=SC2086  # the *_ARGS are lists of words on purpose
"$MPIEXEC" -n "$PRODUCERS" "$PYTHON" "$EXAMPLE/producer.py" $PRODUCER_ARGS &
PIDS+=($!)
# shellcheck disable=SC2086
"$MPIEXEC" -n "$TRAINERS" "$PYTHON" "$EXAMPLE/trainer.py" $TRAINER_ARGS &
PIDS+=($!)
"$PYTHON" "$EXAMPLE/inference.py" &
PIDS+=($!)
"$PYTHON" "$EXAMPLE/monitor.py" --output "$OUTPUT" --frames "$FRAMES" &
PIDS+=($!)

# 3. Wait for them, then stop the store (memstore stop tells every shard to shut down).
status=0
for p in ${PIDS[@]+"${PIDS[@]}"}; do wait "$p" || status=1; done
PIDS=()
"$PYTHON" -m memstore.cli stop --address-file "$MEMSTORE_ADDRESS_FILE" >/dev/null || true
wait "$STORE_PID" || true
STORE_PID=""
echo "pictures in $OUTPUT"
exit "$status"
