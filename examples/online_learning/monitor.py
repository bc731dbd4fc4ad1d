"""A second consumer of the same data: PNG frames of the field as the run goes, then the
loss curve and the surrogate's prediction and error.

Frames are assembled from every producer rank's subdomain; each is waited for on the
server (``poll_dataset``), so the monitor keeps pace without polling loops.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from common import (
    INFERENCE_ERRORS,
    INFERENCE_LATEST,
    LOSS_HISTORY,
    RUN_INFO,
    TRAINER_DONE,
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
    client = memstore.Client()
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
    if client.poll_tensor(INFERENCE_ERRORS, 100, int(args.timeout * 10)):
        save_prediction(
            out / "prediction.png",
            client.get_dataset(INFERENCE_LATEST),
            client.get_tensor(INFERENCE_ERRORS),
        )
    print(f"monitor: {len(picks)} frames, loss.png and prediction.png in {out}/", flush=True)
    client.close()


if __name__ == "__main__":
    main()
