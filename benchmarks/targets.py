"""The three systems under test behind one small interface, usable from any process.

A :class:`Spec` names a running system (picklable, so worker processes get it); ``connect()``
gives a :class:`Target` with the operations the workloads time:

- ``put(key, array)`` / ``get(key)``: one blocking call, returning when the store has the
  data / when the caller holds a numpy array of it.
- ``put_many(keys, array)``: all of them in flight at once (memstore ``put_tensor_async``
  for every key, then every future's ``result()``; a raw DEALER sending them all; a redis-py
  pipeline).

memstore runs on each path a client takes, measured separately: ``memstore`` is a
same-node client on its default path, the shard's Unix socket (issue 24);
``memstore-tcp`` is the same shards over ZeroMQ ``tcp://`` (what a client on another node
uses) and ``memstore-ipc`` shards on ZeroMQ ``ipc://`` (both with ``MEMSTORE_UNIX=0``);
``memstore-shm`` a shard offering, and a client using, the same-node shared-memory path.
Each path has its floor: raw pyzmq over ``tcp://`` (``floor``), and a Python echo over a
plain Unix socket (``floor-unix``, :mod:`benchmarks.unix_floor`).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

import memstore
from benchmarks import floor, unix_floor
from memstore import config

MEMSTORE, MEMSTORE_IPC, FLOOR, REDIS = "memstore", "memstore-ipc", "floor", "redis"
MEMSTORE_SHM = "memstore-shm"  # same node, shared-memory path (issue 12)
MEMSTORE_TCP = "memstore-tcp"  # ZeroMQ over tcp://, as from another node (issue 24)
UNIX_FLOOR = "floor-unix"  # the plain Unix-socket floor (issue 24)
#: memstore's systems whose clients stay on ZeroMQ
ZMQ_ONLY = (MEMSTORE_TCP, MEMSTORE_IPC)
#: how each system appears in tables and plots
LABELS = {
    MEMSTORE: "memstore unix",
    MEMSTORE_TCP: "memstore tcp://",
    MEMSTORE_IPC: "memstore ipc://",
    MEMSTORE_SHM: "memstore shm",
    FLOOR: "raw pyzmq tcp (floor)",
    UNIX_FLOOR: "Unix socket (floor)",
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
        if self.kind in (MEMSTORE, MEMSTORE_IPC, MEMSTORE_SHM, MEMSTORE_TCP):
            return MemstoreTarget(self)
        if self.kind == FLOOR:
            return FloorTarget(self)
        if self.kind == UNIX_FLOOR:
            return UnixFloorTarget(self)
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

    def put_bulk(self, keys: list[str], array: np.ndarray) -> None:
        """Many puts in one call: the system's own bulk form (memstore and Redis only)."""
        raise NotImplementedError

    def get_bulk(self, keys: list[str]) -> list:
        raise NotImplementedError

    def flush(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class MemstoreTarget(Target):
    kind = MEMSTORE

    def __init__(self, spec: Spec):
        with _unix_path(spec.kind not in ZMQ_ONLY):
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

    def put_bulk(self, keys: list[str], array: np.ndarray) -> None:
        self.client.put_tensors(dict.fromkeys(keys, array))

    def get_bulk(self, keys: list[str]) -> list:
        return self.client.get_tensors(keys)

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


class UnixFloorTarget(FloorTarget):
    kind = UNIX_FLOOR

    def __init__(self, spec: Spec):
        self.client = unix_floor.UnixFloorClient(list(spec.addresses), timeout=spec.timeout)


@contextlib.contextmanager
def _unix_path(wanted: bool):
    """``MEMSTORE_UNIX`` as ``wanted`` while a client is made (it reads it then)."""
    before = os.environ.get(config.ENV_UNIX)
    os.environ[config.ENV_UNIX] = "1" if wanted else "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(config.ENV_UNIX, None)
        else:
            os.environ[config.ENV_UNIX] = before


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

    put_bulk = put_many  # a pipeline of SETs is Redis's bulk form too

    def get_bulk(self, keys: list[str]) -> list:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
        return [np.frombuffer(v, dtype=DTYPE) for v in pipe.execute()]

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
