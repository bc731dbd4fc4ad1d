"""What every workload shares: the running systems, worker processes, timing and statistics.

:class:`Env` starts what a workload asks for (memstore clusters, floor servers, one Redis)
and stops all of it on exit, also on Ctrl-C. Client processes come from one ``spawn`` pool
so their start-up is never inside a timed window; concurrent clients are lined up on a
shared start time (:func:`start_time`) and a result covers the span from the first start
to the last finish.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

import memstore
from benchmarks import floor, targets
from benchmarks.presets import Preset
from benchmarks.redis_baseline import RedisServer, client_info
from benchmarks.targets import (
    FLOOR,
    MEMSTORE,
    MEMSTORE_IPC,
    MEMSTORE_SHM,
    MEMSTORE_TCP,
    REDIS,
    UNIX_FLOOR,
    Spec,
)

#: Seconds between handing tasks to worker processes and their common start.
START_LEAD_S = 0.3


def summarize(samples: Sequence[float]) -> dict:
    """p50 / p99 / mean / min / max / n of ``samples`` (any unit, kept as given)."""
    if not samples:
        return {"n": 0}
    ordered = np.sort(np.asarray(samples, dtype=float))
    return {
        "n": len(ordered),
        "p50": float(np.percentile(ordered, 50)),
        "p99": float(np.percentile(ordered, 99)),
        "mean": float(ordered.mean()),
        "min": float(ordered[0]),
        "max": float(ordered[-1]),
    }


def per_series(tree: dict, fn: Callable[[str, list], Any]) -> dict:
    """``fn(size, values)`` on every leaf of a ``{system: {op: {size: values}}}`` tree."""
    return {
        kind: {op: {size: fn(size, v) for size, v in sizes.items()} for op, sizes in ops.items()}
        for kind, ops in tree.items()
    }


def timed_calls(fn: Callable[[], Any], iters: int, budget_s: float) -> list[float]:
    """Seconds taken by each of up to ``iters`` calls of ``fn``, stopping after ``budget_s``
    (always at least one call)."""
    samples: list[float] = []
    end = time.perf_counter() + budget_s
    clock = time.perf_counter
    for _ in range(iters):
        t0 = clock()
        fn()
        t1 = clock()
        samples.append(t1 - t0)
        if t1 > end:
            break
    return samples


def rotated(items: Sequence, turn: int) -> list:
    """``items`` starting at position ``turn``: each round measures the systems in another
    order, so drift on the machine does not always fall on the same one."""
    k = turn % len(items) if items else 0
    return list(items[k:]) + list(items[:k])


def start_time(lead: float = START_LEAD_S) -> float:
    """A ``time.monotonic()`` instant shortly ahead, for concurrent clients to start at.

    CLOCK_MONOTONIC is one clock for every process on a machine, so it also times
    producer → consumer lags across processes."""
    return time.monotonic() + lead


def sleep_until(instant: float) -> None:
    delay = instant - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def aggregate(results: list[dict]) -> dict:
    """Combine concurrent clients' ``{ops, bytes, t0, t1}`` into aggregate rates."""
    span = max(r["t1"] for r in results) - min(r["t0"] for r in results)
    ops = sum(r["ops"] for r in results)
    nbytes = sum(r.get("bytes", 0) for r in results)
    return {
        "ops": ops,
        "seconds": span,
        "ops_per_s": ops / span if span > 0 else 0.0,
        "gb_per_s": nbytes / span / 1e9 if span > 0 else 0.0,
        "per_client_ops": [r["ops"] for r in results],
    }


def _worker_init() -> None:
    # Ctrl-C goes to the whole process group; the main process alone decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Env:
    """The systems and worker processes of one run; ``close()`` stops every one of them."""

    def __init__(
        self,
        preset: Preset,
        *,
        redis: bool = True,
        redis_server: str | None = None,
        device: str = "CPU",
        progress: Any = None,
        log: Callable[[str], None] = print,
    ):
        self.preset = preset
        self.device = device
        self.log = log
        self.progress = progress
        self._stack = contextlib.ExitStack()
        self._floors: dict[tuple[str, int], Spec] = {}  # (kind, servers)
        self._clusters: dict[tuple[int, bool], Spec] = {}
        self._shm_spec: Spec | None = None
        self._pool: Any = None
        self._pool_size = 0
        self._connected: set[Spec] = set()
        self.interrupted = False
        self.redis: Spec | None = None
        self.redis_note = "Redis baseline disabled (--no-redis)"
        self.redis_version = ""
        if redis:
            try:
                server = RedisServer(redis_server)
            except RuntimeError as exc:
                self.redis_note = f"Redis baseline skipped: {exc}"
                log(self.redis_note)
            else:
                self._stack.callback(server.close)
                self.redis = Spec(REDIS, port=server.port, timeout=preset.timeout_s)
                self.redis_version = server.version
                self.redis_note = f"redis-server {server.version} ({server.binary})"

    # -- systems ---------------------------------------------------------------------------

    def memstore(self, shards: int = 1, *, ipc: bool = False) -> Spec:
        """A memstore cluster of ``shards`` on loopback TCP, or on ``ipc://`` sockets in a
        temporary folder (started once, reused)."""
        if (shards, ipc) not in self._clusters:
            cluster = memstore.LocalCluster(shards=shards, ipc=ipc)
            self._stack.callback(cluster.close)
            self._clusters[shards, ipc] = Spec(
                MEMSTORE_IPC if ipc else MEMSTORE,
                tuple(cluster.addresses),
                timeout=self.preset.timeout_s,
            )
        return self._clusters[shards, ipc]

    def memstore_shm(self) -> Spec:
        """One shard that offers the same-node shared-memory path, which the suite's
        environment (``MEMSTORE_SHM=0``) turns off for every other shard."""
        if self._shm_spec is None:
            before = os.environ.pop("MEMSTORE_SHM", None)
            try:
                cluster = memstore.LocalCluster(shards=1)
            finally:
                if before is not None:
                    os.environ["MEMSTORE_SHM"] = before
            self._stack.callback(cluster.close)
            self._shm_spec = Spec(
                MEMSTORE_SHM, tuple(cluster.addresses), timeout=self.preset.timeout_s
            )
        return self._shm_spec

    def memstore_tcp(self, shards: int = 1) -> Spec:
        """The TCP cluster of :meth:`memstore`, reached over ZeroMQ (``memstore-tcp``): the
        path of a client on another node, beside the same-node client's Unix socket."""
        return Spec(MEMSTORE_TCP, self.memstore(shards).addresses, timeout=self.preset.timeout_s)

    def release_memstore(self, shards: int) -> None:
        """Flush a cluster's data (its processes stay until the end of the run)."""
        for (size, _), spec in self._clusters.items():
            if size == shards:
                targets.cached(spec).flush()

    def floor(self, servers: int = 1) -> Spec:
        """``servers`` floor server processes (started once, reused)."""
        if (FLOOR, servers) not in self._floors:
            addresses = []
            for _ in range(servers):
                process, address = floor.start()
                self._stack.callback(floor.stop, process)
                addresses.append(address)
            self._floors[FLOOR, servers] = Spec(
                FLOOR, tuple(addresses), timeout=self.preset.timeout_s
            )
        return self._floors[FLOOR, servers]

    def unix_floor(self, servers: int = 1) -> Spec:
        """``servers`` plain Unix-socket floor servers (started once, reused)."""
        if (UNIX_FLOOR, servers) not in self._floors:
            folder = tempfile.mkdtemp(prefix="memstore-bench-")
            self._stack.callback(shutil.rmtree, folder, True)
            addresses = []
            for i in range(servers):
                process, address = floor.start(f"unix://{folder}/floor{i}.sock")
                self._stack.callback(floor.stop, process)
                addresses.append(address)
            self._floors[UNIX_FLOOR, servers] = Spec(
                UNIX_FLOOR, tuple(addresses), timeout=self.preset.timeout_s
            )
        return self._floors[UNIX_FLOOR, servers]

    def systems(self, shards: int = 1) -> list[Spec]:
        """memstore on its same-node path and over tcp://, each path's floor and (if
        running) Redis, for a comparison."""
        specs = [self.memstore(shards), self.memstore_tcp(shards), self.floor(shards),
                 self.unix_floor(shards)]  # fmt: skip
        if self.redis is not None:
            specs.append(self.redis)
        return specs

    # -- worker processes ------------------------------------------------------------------

    def run_parallel(self, fn: Callable, argument_lists: Iterable[tuple]) -> list:
        """Run ``fn(*args)`` for each argument tuple, each in its own worker process, and
        return the results in order. Every worker connects to a system (the first
        argument, when it is a :class:`Spec`) before its first timed use."""
        calls = list(argument_lists)
        pool = self._workers(len(calls))
        for spec in {args[0] for args in calls if args and isinstance(args[0], Spec)}:
            self.connect_workers(spec)
        pending = [pool.apply_async(fn, args) for args in calls]
        return [p.get(self.preset.timeout_s * 4) for p in pending]

    def connect_workers(self, spec: Spec) -> None:
        """Have every worker process connect to ``spec`` now, outside any timed window."""
        pool = self._workers(1)
        if spec not in self._connected:
            self._connected.add(spec)
            pending = [pool.apply_async(_connect, (spec,)) for _ in range(self._pool_size)]
            for p in pending:
                p.get(self.preset.timeout_s)

    def submit(self, fn: Callable, args: tuple = ()) -> Any:
        """Start ``fn(*args)`` in a worker process; ``.get(timeout)`` on the result waits."""
        return self._workers(1).apply_async(fn, args)

    def _workers(self, n: int):
        if self._pool is None or self._pool_size < n:
            if self._pool is not None:
                self._pool.terminate()
                self._pool.join()
            size = max(n, self._pool_size, _pool_size(self.preset))
            context = multiprocessing.get_context("spawn")
            self._pool = context.Pool(size, initializer=_worker_init)
            if not self._pool_size:
                self._stack.callback(self._stop_pool)
            self._pool_size = size
            self._connected = set()
            # Import everything once in every worker before anything is timed.
            self.run_parallel(_warm, [() for _ in range(size)])
        return self._pool

    def _stop_pool(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def step(self, n: int = 1) -> None:
        if self.interrupted:
            raise KeyboardInterrupt
        if self.progress is not None:
            self.progress.update(n)

    def close(self) -> None:
        targets.close_cached()
        self._stack.close()

    def __enter__(self) -> Env:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pool_size(preset: Preset) -> int:
    """Workers for the largest group of concurrent clients the preset asks for."""
    return max(
        *preset.throughput_clients,
        *preset.scaling_clients,
        preset.inference_clients,
        preset.online_producers + preset.online_consumers,
        1 + max(preset.streams_consumers),  # one producer and its consumers
    )


def _connect(spec: Spec) -> int:
    targets.cached(spec)
    time.sleep(0.2)  # hold this worker so that every worker connects once
    return os.getpid()


def _warm() -> int:
    time.sleep(0.2)  # hold this worker so that every worker gets one warm-up
    return os.getpid()


#: distributions whose versions a run records, when installed
_DISTRIBUTIONS = (
    "numpy",
    "pyzmq",
    "msgpack",
    "redis",
    "hiredis",
    "matplotlib",
    "tqdm",
    "torch",
    "mpi4py",
)


def versions() -> dict:
    from importlib import metadata

    import zmq

    info = {
        "python": sys.version.split()[0],
        "memstore": memstore.__version__,
        "libzmq": zmq.zmq_version(),
        **client_info(),
    }
    for name in _DISTRIBUTIONS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            info[name] = metadata.version(name)
    return info


def machine() -> dict:
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = 0
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as f:
        memory = int(f.readline().split()[1]) * 1024
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_bytes": memory,
        "load_average_at_start": list(os.getloadavg()),
    }


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else 0.0
