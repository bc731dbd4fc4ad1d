"""``run_model`` throughput with dynamic batching off and on, and the model in-process.

A TorchScript MLP (3 layers, ``features`` wide) is stored with ``set_model`` twice:
``batch_size=0`` (each call runs alone) and ``batch_size=B`` (concurrent calls are merged).
Client processes keep a window of ``run_model_async`` calls continuously in flight (clients
x window = concurrent callers), each on its own 1-row input key, for a fixed time; the
figure is aggregate calls per second. ``in-process`` is the same clients calling the same
model themselves, one row at a time, with no store: what an application gets without one.
It runs only where the client has a model API and torch is installed; otherwise it says why.
"""

from __future__ import annotations

import collections
import io
import time

import numpy as np

import memstore
from benchmarks import targets
from benchmarks.harness import Env, aggregate, rotated, sleep_until, start_time
from benchmarks.targets import Spec
from benchmarks.throughput import summarize_records

NAME = "inference"
OFF, ON, LOCAL = "batching off", "batching on", "in-process"
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
    """A TorchScript MLP, 3 layers ``features`` wide, as SmartRedis's ``set_model`` takes."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(features, features),
        torch.nn.ReLU(),
        torch.nn.Linear(features, features),
        torch.nn.ReLU(),
        torch.nn.Linear(features, features),
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
        for mode in rotated([OFF, ON, LOCAL], turn):
            at = start_time()
            loop, model = (run_local, blob) if mode == LOCAL else (run_loop, names[mode])
            results = env.run_parallel(
                loop,
                [
                    (spec, model, c, p.inference_features, p.inference_window, at, p.inference_s)
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
    # A continuous window: as soon as the oldest call is answered, the next one goes out.
    window_calls = collections.deque(
        (j, client.run_model_async(model, inputs=[inputs[j]], outputs=[outputs[j]]))
        for j in range(window)
    )
    while time.monotonic() < end:
        j, call = window_calls.popleft()
        call.result(timeout=spec.timeout)
        ops += 1
        window_calls.append(
            (j, client.run_model_async(model, inputs=[inputs[j]], outputs=[outputs[j]]))
        )
    memstore.wait([call for _, call in window_calls], timeout=spec.timeout)
    t1 = time.monotonic()
    shape = client.get_tensor(outputs[0]).shape
    if shape != (1, features):
        raise RuntimeError(f"run_model gave an output of shape {shape}, not (1, {features})")
    return {"ops": ops, "t0": t0, "t1": t1}


def run_local(
    spec: Spec,
    blob: bytes,
    client_id: int,
    features: int,
    window: int,
    at: float,
    seconds: float,
) -> dict:
    """Worker process: call the same model in-process, one row at a time, no store."""
    import torch

    model = torch.jit.load(io.BytesIO(blob))
    row = torch.from_numpy(
        np.random.default_rng(client_id).standard_normal((1, features), dtype=np.float32)
    )
    ops = 0
    sleep_until(at)
    t0 = time.monotonic()
    end = t0 + seconds
    with torch.no_grad():
        while time.monotonic() < end:
            model(row)
            ops += 1
    return {"ops": ops, "t0": t0, "t1": time.monotonic()}
