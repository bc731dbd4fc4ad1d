"""A second consumer of the same data: PNG frames of the field as the run goes, then the
loss curve and the surrogate's prediction and error.

Frames are assembled from every producer rank's subdomain; each is waited for on the
server (``poll_dataset``), so the monitor keeps pace without polling loops.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from common import (
    CONSUMED,
    INFERENCE_ERRORS,
    INFERENCE_LATEST,
    LOSS_HISTORY,
    PRODUCER_DONE,
    RUN_INFO,
    SNAPSHOTS,
    TRAINER_DONE,
    connect,
    snapshot_name,
)  # fmt: skip
from tqdm import tqdm

import memstore


def frame(client: memstore.Client, ranks: int, step: int, timeout_s: float) -> np.ndarray:
    parts = []
    for rank in range(ranks):
        name = snapshot_name(rank, step)
        if not client.poll_dataset(name, 100, int(timeout_s * 10)):
            raise SystemExit(f"monitor: snapshot {name} never arrived")
        parts.append(client.get_dataset(name).get_tensor("input")[1:-1])
    return np.concatenate(parts)


def save_field(path: Path, field: np.ndarray, title: str) -> None:
    fig, ax = plt.subplots(figsize=(4, 4), dpi=80)
    ax.imshow(field, cmap="RdBu_r", vmin=-1, vmax=1, origin="lower")
    ax.set_title(title)
    ax.axis("off")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def save_loss(path: Path, losses: np.ndarray) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=80)
    ax.semilogy(np.arange(len(losses)), losses)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (MSE / persistence's)")
    ax.set_title("surrogate training, while the simulation runs")
    ax.grid(True, alpha=0.3)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def save_prediction(path: Path, latest: memstore.DataSet, errors: np.ndarray) -> None:
    target, prediction = latest.get_tensor("target"), latest.get_tensor("prediction")
    step = int(latest.get_meta_scalars("step")[0])
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.4), dpi=80)
    scale = max(float(np.abs(target).max()), 1e-12)
    for ax, field, title in (
        (axes[0], target, f"solver, step {step + 1}"),
        (axes[1], prediction, "surrogate (run in the store)"),
    ):
        ax.imshow(field, cmap="RdBu_r", vmin=-scale, vmax=scale, origin="lower")
        ax.set_title(title)
        ax.axis("off")
    err = prediction - target
    bound = max(float(np.abs(err).max()), 1e-12)
    axes[2].imshow(err, cmap="PuOr", vmin=-bound, vmax=bound, origin="lower")
    axes[2].set_title(f"error (max {bound:.1e})")
    axes[2].axis("off")
    runs = np.arange(1, len(errors) + 1)
    axes[3].semilogy(runs, errors[:, 1], label="surrogate")
    axes[3].semilogy(runs, errors[:, 2], label="persistence (no change)")
    axes[3].set_xlabel("in-store run (newest snapshot, newest model)")
    axes[3].set_title("rms error of the next state")
    axes[3].legend()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output", default="output")
    p.add_argument("--frames", type=int, default=6, help="field frames to draw")
    p.add_argument("--timeout", type=float, default=300)
    args = p.parse_args()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    client, _, finish = connect()
    ranks, _, _, steps, send_every = (
        int(v) for v in client.wait_tensor(RUN_INFO, timeout=args.timeout)
    )
    sends = math.ceil(steps / send_every)
    picks = sorted({round(i * (sends - 1) / max(args.frames - 1, 1)) for i in range(args.frames)})
    for i in tqdm(picks, desc="monitor frames", unit="frame", disable=None):  # bar on a tty
        step = i * send_every
        save_field(
            out / f"field_{step:06d}.png", frame(client, ranks, step, args.timeout), f"step {step}"
        )
    client.wait_tensor(TRAINER_DONE, timeout=args.timeout)
    save_loss(out / "loss.png", client.get_tensor(LOSS_HISTORY))
    errors = client.wait_tensor(INFERENCE_ERRORS, timeout=args.timeout)
    save_prediction(out / "prediction.png", client.get_dataset(INFERENCE_LATEST), errors)
    print(f"monitor: {len(picks)} frames, loss.png and prediction.png in {out}/", flush=True)
    summary = summarize(client, out, args.timeout)
    summary["wall_time_s"] = round(time.monotonic() - started, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    finish()


def summarize(client: memstore.Client, out: Path, timeout: float) -> dict:
    """What every program left in the store, and the run's checks."""
    ranks, ny, nx, steps, send_every = (int(v) for v in client.get_tensor(RUN_INFO))
    expected = ranks * math.ceil(steps / send_every)
    produced = [client.wait_tensor(f"{PRODUCER_DONE}.r{r}", timeout=timeout) for r in range(ranks)]
    epochs, first_loss, last_loss, trainers = client.get_tensor(TRAINER_DONE)
    consumed: set[int] = set()
    for r in range(int(trainers)):
        consumed.update(int(i) for i in client.wait_tensor(f"{CONSUMED}.r{r}", timeout=timeout))
    listed = client.get_list_length(SNAPSHOTS)
    missing = [
        snapshot_name(r, s)
        for r in range(ranks)
        for s in range(0, steps, send_every)
        if not client.dataset_exists(snapshot_name(r, s))
    ]
    errors = client.get_tensor(INFERENCE_ERRORS)
    pngs = sorted(p.name for p in out.glob("*.png"))
    summary = {
        "grid": [ny, nx], "producer_ranks": ranks, "trainer_ranks": int(trainers),
        "snapshots_produced": int(sum(p[0] for p in produced)), "snapshots_listed": listed,
        "snapshots_consumed": len(consumed), "bytes_moved": int(sum(p[1] for p in produced)),
        "producer_solve_s": round(float(sum(p[2] for p in produced)), 2),
        "producer_memstore_s": round(float(sum(p[3] for p in produced)), 2),
        "epochs": int(epochs), "first_loss": float(first_loss), "final_loss": float(last_loss),
        "in_store_model_runs": len(errors),
        "surrogate_rms_error": float(errors[-1, 1]),
        "persistence_rms_error": float(errors[-1, 2]), "pngs": pngs,
    }  # fmt: skip
    checks = {
        "loss fell": last_loss < first_loss,
        "every snapshot produced was consumed": consumed == set(range(expected)),
        "no key lost": not missing and listed == expected == summary["snapshots_produced"],
        "the in-store model ran": len(errors) > 0,
        "pictures written": {"loss.png", "prediction.png"} <= set(pngs),
    }
    summary["checks"] = {name: bool(ok) for name, ok in checks.items()}
    return summary


if __name__ == "__main__":
    main()
