"""Online learning on one machine, in one command: store, simulation, training, in-store
inference and monitoring, all at once.

    python examples/online_learning/run.py            # ~2 minutes on 2 cores (make demo)
    python examples/online_learning/run.py --size tiny  # seconds: what the tests run

A 2-shard store starts first; the programs find it through MEMSTORE_ADDRESS. The producer
and the trainer run under ``mpiexec`` when it is installed (the PyPI ``mpich`` wheel in
``.venv`` is enough), as plain processes otherwise. The summary is printed and written to
``output/summary.json``; the exit status is 0 only if every check holds, the first being
that the training loss fell.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


from common import (  # noqa: E402
    CONSUMED,
    INFERENCE_ERRORS,
    PRODUCER_DONE,
    RUN_INFO,
    SNAPSHOTS,
    TRAINER_DONE,
    snapshot_name,
)  # fmt: skip

import memstore  # noqa: E402

SIZES = {
    "demo": {"ny": 256, "nx": 256, "steps": 10000, "send_every": 25, "min_epochs": 100,
             "producers": 2, "trainers": 2, "frames": 6},
    "tiny": {"ny": 32, "nx": 32, "steps": 60, "send_every": 3, "min_epochs": 12,
             "producers": 2, "trainers": 2, "frames": 3},
}  # fmt: skip


def free_port() -> int:
    """A free loopback port for the trainers' torch.distributed rendezvous."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def find_mpiexec() -> str | None:
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def launch(program: str, args: list[str], ranks: int, env: dict, mpiexec: str | None) -> list:
    """Start ``program`` on ``ranks`` ranks: one mpiexec job, or (no MPI) plain processes."""
    script = [sys.executable, str(HERE / program), *args]
    if mpiexec and ranks > 1:
        return [subprocess.Popen([mpiexec, "-n", str(ranks), *script], env=env)]
    if program == "producer.py" and ranks > 1:
        print("run: no mpiexec; the producer runs on 1 rank", file=sys.stderr)
        ranks = 1
    return [
        subprocess.Popen(script, env={**env, "RANK": str(r), "WORLD_SIZE": str(ranks)})
        for r in range(ranks)
    ]


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


def summarize(client: memstore.Client, out: Path, elapsed: float, trainer_ranks: int) -> dict:
    """Read what every program left in the store and check the run's outcomes."""
    ranks, ny, nx, steps, send_every = (int(v) for v in client.get_tensor(RUN_INFO))
    expected = ranks * math.ceil(steps / send_every)
    produced = [client.get_tensor(f"{PRODUCER_DONE}.r{r}") for r in range(ranks)]
    consumed = set()
    for key in client.get_tensors([f"{CONSUMED}.r{r}" for r in range(trainer_ranks)]):
        consumed.update(int(i) for i in key)
    listed = client.get_list_length(SNAPSHOTS)
    missing = [
        snapshot_name(r, s)
        for r in range(ranks)
        for s in range(0, steps, send_every)
        if not client.dataset_exists(snapshot_name(r, s))
    ]
    epochs, first_loss, last_loss = client.get_tensor(TRAINER_DONE)
    errors = client.get_tensor(INFERENCE_ERRORS)
    model_runs = len(errors)  # the model's own stats restart with every push
    pngs = sorted(p.name for p in out.glob("*.png"))
    summary = {
        "grid": [ny, nx], "producer_ranks": ranks, "trainer_ranks": trainer_ranks,
        "snapshots_produced": int(sum(p[0] for p in produced)), "snapshots_listed": listed,
        "snapshots_consumed": len(consumed), "bytes_moved": int(sum(p[1] for p in produced)),
        "producer_solve_s": float(sum(p[2] for p in produced)),
        "producer_memstore_s": float(sum(p[3] for p in produced)),
        "epochs": int(epochs), "first_loss": float(first_loss), "final_loss": float(last_loss),
        "in_store_model_runs": int(model_runs),
        "surrogate_rms_error": float(errors[-1, 1]),
        "persistence_rms_error": float(errors[-1, 2]), "pngs": pngs,
        "wall_time_s": round(elapsed, 1),
    }  # fmt: skip
    checks = {
        "loss fell": last_loss < first_loss,
        "every snapshot produced was consumed": consumed == set(range(expected)),
        "no key lost": not missing and listed == expected == summary["snapshots_produced"],
        "the in-store model ran": model_runs > 0,
        "pictures written": {"loss.png", "prediction.png"} <= set(pngs),
    }
    summary["checks"] = {name: bool(ok) for name, ok in checks.items()}
    return summary


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=sorted(SIZES), default="demo")
    p.add_argument("--output", default=str(HERE / "output"))
    p.add_argument("--timeout", type=float, default=900)
    args = p.parse_args()
    size = SIZES[args.size]
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    mpiexec = find_mpiexec()
    started = time.monotonic()
    with memstore.LocalCluster(shards=2) as cluster:
        print(f"run: store at {cluster.address}; output in {out}", flush=True)
        env = {
            **os.environ,
            "MEMSTORE_ADDRESS": cluster.address,
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": "1",
        }
        env.pop("SSKEYIN", None)
        env.pop("SSKEYOUT", None)
        shape = [
            "--ny",
            str(size["ny"]),
            "--nx",
            str(size["nx"]),
            "--steps",
            str(size["steps"]),
            "--send-every",
            str(size["send_every"]),
        ]
        processes = {
            "producer": launch("producer.py", shape, size["producers"], env, mpiexec),
            "trainer": launch(
                "trainer.py",
                ["--min-epochs", str(size["min_epochs"]), "--dist-port", str(free_port())],
                size["trainers"],
                env,
                mpiexec,
            ),
            "inference": launch("inference.py", [], 1, env, None),
            "monitor": launch(
                "monitor.py", ["--output", str(out), "--frames", str(size["frames"])], 1, env, None
            ),
        }
        try:
            failed = wait_all(processes, args.timeout)
        except BaseException:  # Ctrl-C or a kill: take the programs down with us
            stop_all(processes)
            raise
        if failed:
            print(f"run: failed: {', '.join(failed)}", file=sys.stderr)
            return 1
        with cluster.client(timeout=30) as client:
            summary = summarize(client, out, time.monotonic() - started, size["trainers"])
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("\nsummary\n-------")
    for key, value in summary.items():
        if key != "checks":
            print(f"  {key:<24} {value}")
    for check, ok in summary["checks"].items():
        print(f"  [{'ok' if ok else 'FAILED'}] {check}")
    return 0 if all(summary["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
