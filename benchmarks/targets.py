"""The three systems under test behind one small interface, usable from any process.

A :class:`Spec` names a running system (picklable, so worker processes get it); ``connect()``
gives a :class:`Target` with the operations the workloads time:

- ``put(key, array)`` / ``get(key)``: one blocking call, returning when the store has the
  data / when the caller holds a numpy array of it.
- ``put_many(keys, array)``: all of them in flight at once (memstore ``put_tensor_async``
  for every key, then every future's ``result()``; a raw DEALER sending them all; a redis-py
  pipeline).

memstore runs twice where a workload asks: over ``tcp://`` (``memstore``) and over
``ipc://`` (``memstore-ipc``, same node), both with the same client and sockets only; the
bandwidth workload adds ``memstore-shm``: a shard offering, and a client using, the
same-node shared-memory path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

import memstore
from benchmarks import floor

MEMSTORE, MEMSTORE_IPC, FLOOR, REDIS = "memstore", "memstore-ipc", "floor", "redis"
MEMSTORE_SHM = "memstore-shm"  # same node, shared-memory path (issue 12)
#: how each system appears in tables and plots
LABELS = {
    MEMSTORE: "memstore",
    MEMSTORE_IPC: "memstore ipc://",
    MEMSTORE_SHM: "memstore shm",
    FLOOR: "raw pyzmq (floor)",
    REDIS: "Redis + redis-py",
}
DTYPE = np.dtype(np.float32)


@dataclass(frozen=True)
class Spec:
    """A running system: ``kind`` and where it listens (addresses, or Redis's port)."""

    kind: str
    addresses: tuple[str, ...] = ()
    port: int = 0
    timeout: float = 60.0

    def connect(self) -> Target:
        if self.kind in (MEMSTORE, MEMSTORE_IPC, MEMSTORE_SHM):
            return MemstoreTarget(self)
        if self.kind == FLOOR:
            return FloorTarget(self)
        return RedisTarget(self)


class Target:
    """One client connection to a system."""

    kind: str

    def put(self, key: str, array: np.ndarray) -> None:
        raise NotImplementedError

    def get(self, key: str) -> np.ndarray:
        raise NotImplementedError

    def put_many(self, keys: list[str], array: np.ndarray) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class MemstoreTarget(Target):
    kind = MEMSTORE

    def __init__(self, spec: Spec):
        self.client = memstore.Client(
            ",".join(spec.addresses), timeout=spec.timeout, shm=spec.kind == MEMSTORE_SHM
        )
        self.timeout = spec.timeout

    def put(self, key: str, array: np.ndarray) -> None:
        self.client.put_tensor(key, array)

    def get(self, key: str) -> np.ndarray:
        return self.client.get_tensor(key)

    def put_many(self, keys: list[str], array: np.ndarray) -> None:
        futures = [self.client.put_tensor_async(k, array) for k in keys]
        for future in futures:
            future.result(self.timeout)

    def flush(self) -> None:
        self.client.flush_db()

    def close(self) -> None:
        self.client.close()


class FloorTarget(Target):
    kind = FLOOR

    def __init__(self, spec: Spec):
        self.client = floor.FloorClient(list(spec.addresses), timeout=spec.timeout)

    def put(self, key: str, array: np.ndarray) -> None:
        self.client.put(key, array)

    def get(self, key: str) -> np.ndarray:
        return self.client.get(key, DTYPE)

    def put_many(self, keys: list[str], array: np.ndarray) -> None:
        self.client.put_many(keys, array)

    def flush(self) -> None:
        """The floor keeps one frame per key; overwriting is all the cleanup it needs."""

    def close(self) -> None:
        self.client.close()


class RedisTarget(Target):
    kind = REDIS

    def __init__(self, spec: Spec):
        import redis

        self.client: Any = redis.Redis(
            host="127.0.0.1", port=spec.port, socket_timeout=spec.timeout
        )

    def put(self, key: str, array: np.ndarray) -> None:
        self.client.set(key, memoryview(array).cast("B"))

    def get(self, key: str) -> np.ndarray:
        return np.frombuffer(self.client.get(key), dtype=DTYPE)

    def put_many(self, keys: list[str], array: np.ndarray) -> None:
        view = memoryview(array).cast("B")
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.set(key, view)
        pipe.execute()

    def flush(self) -> None:
        self.client.flushall()

    def close(self) -> None:
        self.client.close()


def payload(size: int, seed: int = 0) -> np.ndarray:
    """``size`` bytes of float32 data (``size`` a multiple of 4)."""
    return np.random.default_rng(seed).standard_normal(size // DTYPE.itemsize, dtype=np.float32)


_connections: dict[Spec, Target] = {}


def cached(spec: Spec) -> Target:
    """A connection kept for the life of this (worker) process, one per system."""
    target = _connections.get(spec)
    if target is None:
        target = _connections[spec] = spec.connect()
    return target


def close_cached() -> None:
    while _connections:
        _connections.popitem()[1].close()
