"""Online learning on one machine, in one command: store, simulation, training, in-store
inference and monitoring, all at once.

    python examples/online_learning/run.py            # ~2 minutes on 2 cores (make demo)
    python examples/online_learning/run.py --size tiny  # seconds: what the tests run
    python examples/online_learning/run.py --size long  # 16x more than the store holds

With ``mpiexec`` (the PyPI ``mpich`` wheel in ``.venv`` is enough) everything is one MPMD
job: ``memstore-server --mpi`` ranks serve the store and every program joins it with
``memstore.mpi.connect()``. Without MPI, a ``LocalCluster`` store and plain processes. The
monitor writes ``output/summary.json``; run.py prints it and exits 0 only if every check
holds, the first being that the training loss fell.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


import memstore  # noqa: E402

SIZES = {
    "demo": {"ny": 256, "nx": 256, "steps": 10000, "send_every": 25, "min_epochs": 100,
             "producers": 2, "trainers": 2, "frames": 6, "window": 128, "max_memory": "48MiB"},
    "tiny": {"ny": 32, "nx": 32, "steps": 60, "send_every": 3, "min_epochs": 12,
             "producers": 2, "trainers": 2, "frames": 3, "window": 16, "max_memory": "8MiB"},
    # 8,000 snapshots, 16x what the store may hold: the window keeps it flat, never full
    "long": {"ny": 128, "nx": 128, "steps": 8000, "send_every": 2, "min_epochs": 30,
             "producers": 2, "trainers": 2, "frames": 4, "window": 64, "max_memory": "16MiB"},
}  # fmt: skip


def free_port() -> int:
    """A free loopback port for the trainers' torch.distributed rendezvous."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def find_mpiexec() -> str | None:
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def run_mpmd(mpiexec: str, programs: list, env: dict, timeout: float, max_memory: str) -> list[str]:
    """Everything in one MPMD mpiexec line: 2 shard ranks, then each program."""
    line = [mpiexec, "-n", "2", sys.executable, "-m", "memstore.server", "--mpi",
            "--max-memory", max_memory]  # fmt: skip
    for program, ranks, args in programs:
        line += [":", "-n", str(ranks), sys.executable, str(HERE / program), *args]
    print(f"run: one MPMD job: {len(programs)} programs next to 2 store ranks", flush=True)
    job = subprocess.Popen(line, env={**env, "MEMSTORE_MPMD": "1"})
    return wait_all({"mpiexec job": [job]}, timeout)


def run_local(programs: list, env: dict, timeout: float, max_memory: str) -> list[str]:
    """No MPI: a LocalCluster store and each program as plain processes (the producer on
    one rank; trainer ranks meet through torch.distributed's RANK / WORLD_SIZE)."""
    with memstore.LocalCluster(shards=2, max_memory=max_memory) as cluster:
        print(f"run: store at {cluster.address} (no mpiexec: local processes)", flush=True)
        env = {**env, "MEMSTORE_ADDRESS": cluster.address}
        processes = {}
        for program, ranks, args in programs:
            ranks = 1 if program == "producer.py" else ranks
            script = [sys.executable, str(HERE / program), *args]
            processes[program] = [
                subprocess.Popen(script, env={**env, "RANK": str(r), "WORLD_SIZE": str(ranks)})
                for r in range(ranks)
            ]
        try:
            return wait_all(processes, timeout)
        except BaseException:  # Ctrl-C or a kill: take the programs down with us
            stop_all(processes)
            raise


def wait_all(processes: dict, timeout: float) -> list[str]:
    """Wait for every program; the names of those that failed. The first failure (or the
    deadline) stops all the others, so a crash never leaves the rest waiting."""
    deadline = time.monotonic() + timeout
    running = [(name, proc) for name, procs in processes.items() for proc in procs]
    failed = []
    while running and not failed:
        if time.monotonic() > deadline:
            failed = [f"{name} (timed out)" for name, _ in running]
            break
        name, proc = running[0]
        try:
            code = proc.wait(timeout=0.25)  # supervision tick, bounded by the deadline
        except subprocess.TimeoutExpired:
            running.append(running.pop(0))
            continue
        running.pop(0)
        if code != 0:
            failed.append(f"{name} (exit {code})")
    stop_all({"rest": [proc for _, proc in running]})
    return failed


def stop_all(processes: dict) -> None:
    """Terminate every program still running (mpiexec passes it on to its ranks)."""
    procs = [proc for group in processes.values() for proc in group]
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=sorted(SIZES), default="demo")
    p.add_argument("--output", default=str(HERE / "output"))
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument(
        "--no-mpi",
        action="store_true",
        help="local processes and a LocalCluster even where mpiexec exists",
    )
    args = p.parse_args()
    size = SIZES[args.size]
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    mpiexec = None if args.no_mpi else find_mpiexec()
    (out / "summary.json").unlink(missing_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    for name in ("SSKEYIN", "SSKEYOUT", "MEMSTORE_ADDRESS", "SSDB", "MEMSTORE_ADDRESS_FILE"):
        env.pop(name, None)
    programs = [
        (
            "producer.py",
            size["producers"],
            [
                "--ny",
                str(size["ny"]),
                "--nx",
                str(size["nx"]),
                "--steps",
                str(size["steps"]),
                "--send-every",
                str(size["send_every"]),
                "--window",
                str(size["window"]),
            ],
        ),
        (
            "trainer.py",
            size["trainers"],
            ["--min-epochs", str(size["min_epochs"]), "--dist-port", str(free_port())],
        ),
        ("inference.py", 1, []),
        ("monitor.py", 1, ["--output", str(out), "--frames", str(size["frames"])]),
    ]
    if mpiexec:
        failed = run_mpmd(mpiexec, programs, env, args.timeout, size["max_memory"])
    else:
        failed = run_local(programs, env, args.timeout, size["max_memory"])
    if failed:
        print(f"run: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    summary = json.loads((out / "summary.json").read_text())
    print("\nsummary\n-------")
    for key, value in summary.items():
        if key != "checks":
            print(f"  {key:<24} {value}")
    for check, ok in summary["checks"].items():
        print(f"  [{'ok' if ok else 'FAILED'}] {check}")
    return 0 if all(summary["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
