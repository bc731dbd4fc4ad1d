"""In-store inference: the newest snapshot goes through the surrogate *inside* the store.

Waits for the trainer's first model, then repeatedly reads the newest step of the
``snapshots`` stream, runs ``run_model`` on it in the store and compares the prediction
with the solver's next state, against the persistence baseline (predicting no change).
Stops after scoring the trainer's final model.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import (
    INFERENCE_ERRORS,
    INFERENCE_LATEST,
    MODEL,
    RUN_INFO,
    SNAPSHOTS,
    TRAINER_DONE,
    connect,
    with_x_halo,
)  # fmt: skip

import memstore


def rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a))))


def evaluate(client: memstore.Client, snapshot: dict) -> list[float]:
    """Run the stored model on ``snapshot`` in the store; [step, surrogate error,
    persistence error]. The inputs and the prediction are kept for the monitor."""
    field, target = snapshot["input"], snapshot["target"]
    client.put_tensor("inference/in", with_x_halo(field)[None, None])
    client.run_model(MODEL, inputs="inference/in", outputs="inference/out")
    prediction = client.get_tensor("inference/out")[0, 0]
    step = int(snapshot["where"][0])
    latest = memstore.DataSet(INFERENCE_LATEST)
    for name, value in (("input", field), ("prediction", prediction), ("target", target)):
        latest.add_tensor(name, value)
    latest.add_meta_scalar("step", step)
    client.put_dataset(latest)
    return [step, rms(prediction - target), rms(field[1:-1] - target)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-seconds", type=float, default=600)
    args = p.parse_args()
    client, _, finish = connect()
    client.wait_tensor(RUN_INFO, timeout=300)
    if not client.poll_model(MODEL, 100, int(args.max_seconds * 10)):
        raise SystemExit("inference: the trainer never pushed a model")
    stream = client.stream(SNAPSHOTS)
    errors = []
    started = time.monotonic()
    while time.monotonic() - started < args.max_seconds:
        # Once the trainer is done its last model is in the store: score it once more, stop.
        final_model = client.tensor_exists(TRAINER_DONE)
        try:
            step, snapshot = stream.latest()
        except memstore.StepDropped:  # dropped while it was read: the producer is ahead
            continue
        errors.append(evaluate(client, snapshot))
        if final_model:
            break
        # Wake on the next snapshot (the shard answers the moment it is appended), or after
        # half a second, to score the trainer's newer model on the same data.
        stream.wait(step + 1, timeout=0.5)
    if not errors:
        raise SystemExit("inference: no snapshot was run through the model")
    client.put_tensor(INFERENCE_ERRORS, np.array(errors))
    last = errors[-1]
    print(
        f"inference: {len(errors)} in-store runs; last step {last[0]:.0f}: surrogate rms "
        f"error {last[1]:.2e} vs persistence {last[2]:.2e}",
        flush=True,
    )
    finish()


if __name__ == "__main__":
    main()
