"""memstore: a distributed in-memory tensor store for online learning on HPC clusters.

Shard servers connected by ZeroMQ hold tensors, datasets and lists; ``Client`` puts, waits
for and gets them without blocking. See README.md and docs/.
"""

from memstore.client import Client
from memstore.client.streams import Stream, StreamWriter
from memstore.dataset import DataSet
from memstore.deploy.local import LocalCluster
from memstore.errors import (
    AuthError,
    ConnectionLost,
    KeyNotFound,
    MemstoreError,
    ModelError,
    NoAnswer,
    ProtocolError,
    RemoteError,
    SnapshotError,
    StepDropped,
    StoreFull,
    StreamClosed,
    Timeout,
    WrongType,
)
from memstore.futures import Future, wait

__version__ = "0.1.0"

Dataset = DataSet  # SmartRedis spells it this way

__all__ = [
    "AuthError",
    "Client",
    "ConnectionLost",
    "DataSet",
    "Dataset",
    "Future",
    "KeyNotFound",
    "LocalCluster",
    "MemstoreError",
    "ModelError",
    "NoAnswer",
    "ProtocolError",
    "RemoteError",
    "SnapshotError",
    "StepDropped",
    "StoreFull",
    "Stream",
    "StreamClosed",
    "StreamWriter",
    "Timeout",
    "WrongType",
    "wait",
]
