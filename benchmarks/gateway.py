"""The RESP gateway: the real SmartRedis client through ``memstore gateway``, the native
``memstore.Client``, and ``redis-server`` in the same run.

A plain ``redis-server`` has no RedisAI module, so SmartRedis's ``put_tensor``
(``AI.TENSORSET``) fails there ("unknown command"); its row is redis-py (hiredis) ``SET`` /
``GET`` of the same bytes instead, the cost of the RESP round trip without tensors.

The SmartRedis client needs numpy<2, so its timings run in ``.venv-smartredis``
(``make test-smartredis`` builds it; ``MEMSTORE_SR_PYTHON`` names another interpreter);
the native client runs here. Every system stores into one shard / one server on loopback;
each (size, op) is the median of ``reps`` timed calls after one warm-up.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

import memstore
from benchmarks.presets import KiB, MiB, size_label
from benchmarks.redis_baseline import RedisServer

NAME = "gateway"
SIZES = (KiB, 64 * MiB)
PYTHON = Path(
    os.environ.get(
        "MEMSTORE_SR_PYTHON",
        Path(__file__).resolve().parent.parent / ".venv-smartredis" / "bin" / "python",
    )
)
#: the SmartRedis side, run in the other interpreter: JSON in on argv, JSON out on stdout
_SR_SCRIPT = """
import json, sys, time, statistics
import numpy as np
from smartredis import Client
spec = json.loads(sys.argv[1])
client = Client(address=spec["address"], cluster=False)
out = {}
for size in spec["sizes"]:
    array = np.ones(size // 4, np.float32)
    reps = spec["reps"] if size <= 1 << 20 else spec["large_reps"]
    for op in ("put", "get"):
        times = []
        for i in range(reps + 1):
            t0 = time.perf_counter()
            client.put_tensor("bench", array) if op == "put" else client.get_tensor("bench")
            times.append(time.perf_counter() - t0)
        out[f"{size}/{op}"] = statistics.median(times[1:])
print(json.dumps(out))
"""


def steps(preset) -> int:
    return 3


def _smartredis(address: str, reps: int, large_reps: int) -> dict:
    spec = json.dumps(
        {"address": address, "sizes": list(SIZES), "reps": reps, "large_reps": large_reps}
    )
    done = subprocess.run(
        [str(PYTHON), "-c", _SR_SCRIPT, spec], capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        raise RuntimeError(f"the SmartRedis client failed: {done.stderr[-1500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _medians(put, get, make, reps: int, large_reps: int) -> dict:
    """``{"size/op": median seconds}`` of ``put(make(size))`` and ``get()`` calls."""
    out = {}
    for size in SIZES:
        value, count = make(size), reps if size <= MiB else large_reps
        for op, call in (("put", lambda v=value: put(v)), ("get", get)):
            times = []
            for _ in range(count + 1):
                t0 = time.perf_counter()
                call()
                times.append(time.perf_counter() - t0)
            out[f"{size}/{op}"] = statistics.median(times[1:])
    return out


def _native(client, reps: int, large_reps: int) -> dict:
    return _medians(
        lambda array: client.put_tensor("bench", array),
        lambda: client.get_tensor("bench"),
        lambda size: np.ones(size // 4, np.float32),
        reps,
        large_reps,
    )


def _redis_py(port: int, reps: int, large_reps: int) -> dict:
    import redis

    with redis.Redis(port=port, socket_timeout=60) as client:
        return _medians(
            lambda data: client.set("bench", data),
            lambda: client.get("bench"),
            lambda size: np.ones(size // 4, np.float32).tobytes(),
            reps,
            large_reps,
        )


def run(env, reps: int = 2000, large_reps: int = 10) -> dict:
    if not PYTHON.exists():
        raise RuntimeError(f"no SmartRedis interpreter at {PYTHON} (make test-smartredis)")
    progress = getattr(env, "progress", None)
    systems: dict[str, dict] = {}
    with memstore.LocalCluster(1, resp_port=0) as store:
        systems["smartredis -> gateway"] = _smartredis(store.resp_addresses[0], reps, large_reps)
        if progress:
            progress.update()
        with store.client(timeout=30) as client:
            systems["memstore.Client"] = _native(client, reps, large_reps)
        if progress:
            progress.update()
    with RedisServer(getattr(env, "redis_server", None)) as server:
        systems["redis-py SET/GET -> redis-server"] = _redis_py(server.port, reps, large_reps)
        version = server.version
    if progress:
        progress.update()
    return {"systems": systems, "redis_version": version, "reps": reps, "large_reps": large_reps}


def table(result: dict) -> str:
    """Median seconds per call, each system's row per size and op."""
    systems = result["systems"]
    names = list(systems)
    lines = [
        "gateway: median per call (SmartRedis client unless noted)",
        f"{'size/op':<12}" + "".join(f"{n:>34}" for n in names),
    ]
    for size in SIZES:
        for op in ("put", "get"):
            key = f"{size}/{op}"
            cells = []
            for n in names:
                seconds = systems[n][key]
                cells.append(
                    f"{seconds * 1e6:>31.0f} us" if size <= MiB else f"{seconds * 1e3:>31.1f} ms"
                )
            lines.append(f"{size_label(size) + ' ' + op:<12}" + "".join(cells))
    return "\n".join(lines)
