"""``run_model`` throughput with dynamic batching off and on.

A small TorchScript MLP is stored with ``set_model`` twice: ``batch_size=0`` (each call
runs alone) and ``batch_size=B`` (concurrent calls are merged). Client processes keep a
window of ``run_model_async`` calls in flight, each on its own 1-row input key, for a fixed
time; the figure is aggregate calls per second. It runs only where the client has a model
API (``memstore.Client.run_model``) and torch is installed; otherwise it says why.
"""

from __future__ import annotations

import io
import time

import numpy as np

import memstore
from benchmarks import targets
from benchmarks.harness import Env, aggregate, rotated, sleep_until, start_time
from benchmarks.targets import Spec
from benchmarks.throughput import summarize_records

NAME = "inference"
OFF, ON = "batching off", "batching on"
ROUNDS = 2


def steps(preset) -> int:
    return ROUNDS


def unavailable() -> str | None:
    """Why this workload cannot run here, or None."""
    if not hasattr(memstore.Client, "run_model"):
        return "skipped: no model API (memstore.Client.run_model)"
    try:
        import torch  # noqa: F401
    except ImportError:
        return "skipped: torch is not installed (pip install memstore[torch])"
    return None


def model_bytes(features: int) -> bytes:
    """A TorchScript MLP, ``features`` → ``features``, as SmartRedis's ``set_model`` takes."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(features, 4 * features),
        torch.nn.ReLU(),
        torch.nn.Linear(4 * features, features),
    ).eval()
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(net), buffer)
    return buffer.getvalue()


def run(env: Env) -> dict:
    reason = unavailable()
    if reason:
        env.step(ROUNDS)
        return {"skipped": reason}
    p = env.preset
    spec = env.memstore(1)
    client = targets.cached(spec).client
    blob = model_bytes(p.inference_features)
    names = {OFF: "bench.mlp.unbatched", ON: "bench.mlp.batched"}
    for mode, name in names.items():
        client.set_model(
            name,
            blob,
            "TORCH",
            device=env.device,
            batch_size=p.inference_batch_size if mode == ON else 0,
            min_batch_size=0,
        )
    records = []
    for turn in range(ROUNDS):
        for mode in rotated([OFF, ON], turn):
            at = start_time()
            results = env.run_parallel(
                run_loop,
                [
                    (
                        spec,
                        names[mode],
                        c,
                        p.inference_features,
                        p.inference_window,
                        at,
                        p.inference_s,
                    )
                    for c in range(p.inference_clients)
                ],
            )
            records.append({"mode": mode, "round": turn, **aggregate(results)})
        env.step()
    return {
        "unit": "run_model calls per second (aggregate over all clients)",
        "params": {
            "clients": p.inference_clients,
            "window": p.inference_window,
            "batch_size": p.inference_batch_size,
            "features": p.inference_features,
            "seconds": p.inference_s,
            "device": env.device,
            "rounds": ROUNDS,
        },
        "summary": summarize_records(records, ("mode",)),
        "samples": records,
    }


def run_loop(
    spec: Spec, model: str, client_id: int, features: int, window: int, at: float, seconds: float
) -> dict:
    """Worker process: keep ``window`` run_model calls in flight until ``seconds`` pass."""
    client = targets.cached(spec).client
    inputs = [f"inf.{client_id}.{j}.in" for j in range(window)]
    outputs = [f"inf.{client_id}.{j}.out" for j in range(window)]
    rng = np.random.default_rng(client_id)
    client.put_tensors({k: rng.standard_normal((1, features), dtype=np.float32) for k in inputs})
    ops = 0
    sleep_until(at)
    t0 = time.monotonic()
    end = t0 + seconds
    while time.monotonic() < end:
        calls = [
            client.run_model_async(model, inputs=[i], outputs=[o])
            for i, o in zip(inputs, outputs, strict=True)
        ]
        memstore.wait(calls, timeout=spec.timeout)
        ops += window
    t1 = time.monotonic()
    shape = client.get_tensor(outputs[0]).shape
    if shape != (1, features):
        raise RuntimeError(f"run_model gave an output of shape {shape}, not (1, {features})")
    return {"ops": ops, "t0": t0, "t1": t1}
