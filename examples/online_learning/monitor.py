"""A second consumer of the same data: PNG frames of the field as the run goes, the
store's bytes next to the loss curve, then the surrogate's prediction and error.

The monitor is a consumer group of its own on the ``snapshots`` stream (the trainers
sample it independently): it takes every step as it is appended, waiting on the shard,
and assembles frames from every producer rank's strips. Between steps it reads the
shards' ``info``, so the summary can show that the store's memory stays flat once the
stream's window is full.
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
)  # fmt: skip

import memstore


class Watch:
    """What the monitor sees: picked frames as their strips arrive, and the store's bytes."""

    def __init__(self, client: memstore.Client, ranks: int, picks: set[int], window: int):
        self.client, self.ranks, self.picks, self.window = client, ranks, picks, window
        self.parts: dict[int, dict[int, np.ndarray]] = {}
        self.frames: dict[int, np.ndarray] = {}
        self.taken = 0
        self.memory: list[tuple[float, int, int]] = []  # (seconds, store bytes, steps appended)
        self.started = time.monotonic()

    def step(self, snapshot: dict) -> None:
        self.taken += 1
        step, rank = (int(v) for v in snapshot["where"][:2])
        if step in self.picks:
            self.parts.setdefault(step, {})[rank] = np.asarray(snapshot["input"])[1:-1]
            if len(self.parts[step]) == self.ranks:
                strips = self.parts.pop(step)
                self.frames[step] = np.concatenate([strips[r] for r in range(self.ranks)])

    def sample_memory(self, appended: int) -> None:
        used = sum(info["bytes"] for info in self.client.get_db_node_info())
        self.memory.append((time.monotonic() - self.started, used, appended))

    def after_fill(self) -> list[int]:
        """The store's bytes sampled once the window was full."""
        return [used for _, used, appended in self.memory if appended >= self.window]


def follow(client: memstore.Client, watch: Watch, timeout: float) -> None:
    """Take every step of the stream (group ``monitor``) until it ends, sampling the store's
    bytes between steps (at least every 0.2 s)."""
    stream = client.stream(SNAPSHOTS)
    group = stream.group("monitor", visibility=timeout)
    last_sample = 0.0
    while True:
        try:
            got = group.take(timeout=0.2)
        except memstore.Timeout:
            got = ()  # nothing new yet: a memory sample
        except memstore.StepDropped:  # the window moved past it before it was read
            continue
        if time.monotonic() - last_sample > 0.2 or got is None:
            watch.sample_memory(stream.info()["next"])
            last_sample = time.monotonic()
        if got is None:  # closed, and every step taken
            return
        if got:
            watch.step(got[1])
            group.ack(got[0])
        if time.monotonic() - watch.started > timeout:
            raise SystemExit("monitor: the stream did not end in time")


def save_field(path: Path, field: np.ndarray, title: str) -> None:
    fig, ax = plt.subplots(figsize=(4, 4), dpi=80)
    ax.imshow(field, cmap="RdBu_r", vmin=-1, vmax=1, origin="lower")
    ax.set_title(title)
    ax.axis("off")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def save_loss(path: Path, losses: np.ndarray, memory: list, window_bytes: float) -> None:
    """The loss by epoch, and beside it the store's bytes over the run: flat once the
    stream's window is full."""
    fig, (ax, mem) = plt.subplots(1, 2, figsize=(10, 3.2), dpi=80)
    ax.semilogy(np.arange(len(losses)), losses)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (MSE / persistence's)")
    ax.set_title("surrogate training, while the simulation runs")
    ax.grid(True, alpha=0.3)
    seconds, used, _ = (np.array(column) for column in zip(*memory))
    mem.plot(seconds, used / 2**20)
    mem.axhline(window_bytes / 2**20, color="gray", linestyle="--", label="window of snapshots")
    mem.set_xlabel("seconds")
    mem.set_ylabel("MiB in the store")
    mem.set_title("the store's bytes (info)")
    mem.legend()
    mem.grid(True, alpha=0.3)
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
    client, _, finish = connect()
    ranks, _, _, steps, send_every, window, _ = (
        int(v) for v in client.wait_tensor(RUN_INFO, timeout=args.timeout)
    )
    sends = math.ceil(steps / send_every)
    picks = {
        send_every * round(i * (sends - 1) / max(args.frames - 1, 1)) for i in range(args.frames)
    }
    watch = Watch(client, ranks, picks, window)
    follow(client, watch, args.timeout)
    for step, field in sorted(watch.frames.items()):
        save_field(out / f"field_{step:06d}.png", field, f"step {step}")
    client.wait_tensor(TRAINER_DONE, timeout=args.timeout)
    held = client.stream(SNAPSHOTS).info()["bytes"]  # the full window's data, at the end
    save_loss(out / "loss.png", client.get_tensor(LOSS_HISTORY), watch.memory, held)
    errors = client.wait_tensor(INFERENCE_ERRORS, timeout=args.timeout)
    save_prediction(out / "prediction.png", client.get_dataset(INFERENCE_LATEST), errors)
    print(f"monitor: {len(watch.frames)} frames, loss.png and prediction.png in {out}/", flush=True)
    summary = summarize(client, watch, held, out, args.timeout)
    summary["wall_time_s"] = round(time.monotonic() - watch.started, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    finish()


def summarize(client: memstore.Client, watch: Watch, held: int, out: Path, timeout: float) -> dict:
    """What every program left in the store, and the run's checks."""
    ranks, ny, nx, steps, send_every, window, in_flight = (
        int(v) for v in client.get_tensor(RUN_INFO)
    )
    expected = ranks * math.ceil(steps / send_every)
    produced = [client.wait_tensor(f"{PRODUCER_DONE}.r{r}", timeout=timeout) for r in range(ranks)]
    epochs, first_loss, last_loss, trainers = client.get_tensor(TRAINER_DONE)
    consumed: set[int] = set()
    for r in range(int(trainers)):
        consumed.update(int(i) for i in client.wait_tensor(f"{CONSUMED}.r{r}", timeout=timeout))
    appended = client.stream(SNAPSHOTS).info()["next"]
    full = watch.after_fill()
    errors = client.get_tensor(INFERENCE_ERRORS)
    pngs = sorted(p.name for p in out.glob("*.png"))
    cap = sum(info["max_memory"] for info in client.get_db_node_info())
    flat_bound = 1.25 * held * (window + ranks * in_flight) / window + 2**20
    summary = {
        "grid": [ny, nx], "producer_ranks": ranks, "trainer_ranks": int(trainers),
        "snapshots_produced": int(sum(p[0] for p in produced)), "snapshots_appended": appended,
        "stream_window": window, "snapshots_trained_on": len(consumed),
        "snapshots_seen_by_monitor": watch.taken,
        "bytes_moved": int(sum(p[1] for p in produced)), "store_max_memory": cap,
        "streamed_x_store_max_memory": round(sum(p[1] for p in produced) / max(cap, 1), 1),
        "window_bytes": held, "appends_in_flight_max": ranks * in_flight,
        "store_bytes_after_fill_min_max": [min(full, default=0), max(full, default=0)],
        "store_bytes_flat_bound": int(flat_bound),
        "producer_solve_s": round(float(sum(p[2] for p in produced)), 2),
        "producer_memstore_s": round(float(sum(p[3] for p in produced)), 2),
        "epochs": int(epochs), "first_loss": float(first_loss), "final_loss": float(last_loss),
        "in_store_model_runs": len(errors),
        "surrogate_rms_error": float(errors[-1, 1]),
        "persistence_rms_error": float(errors[-1, 2]), "pngs": pngs,
    }  # fmt: skip
    checks = {
        "loss fell": last_loss < first_loss,
        "every snapshot appended once": appended == expected == summary["snapshots_produced"],
        "trained on the newest window": max(consumed, default=-1) >= expected - window,
        # Flat: once the window is full, the store holds that window and the steps in flight
        # (an append's data is stored before its step drops the oldest), the models and the
        # inference tensors, however much more streams through.
        "store bytes flat after the window filled": bool(full) and max(full) <= flat_bound,
        "the in-store model ran": len(errors) > 0,
        "pictures written": {"loss.png", "prediction.png"} <= set(pngs),
    }
    summary["checks"] = {name: bool(ok) for name, ok in checks.items()}
    return summary


if __name__ == "__main__":
    main()
