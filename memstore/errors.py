"""Every error memstore raises, with one root.

::

    MemstoreError
    ├── KeyNotFound          (also KeyError)      the key is not in the store
    ├── Timeout              (also TimeoutError)  a deadline passed
    │   └── NoAnswer         (also ConnectionLost) a shard did not answer in time
    ├── StoreFull            (also MemoryError)   --max-memory would be exceeded; nothing evicted
    ├── ProtocolError        (also ValueError)    a malformed, oversized or unknown request
    ├── WrongType            (also TypeError)     the key holds another kind of value
    ├── ConnectionLost       (also ConnectionError) a shard went away, or the client closed
    │   └── NoAnswer         (also Timeout)       (the same class as above)
    ├── AuthError                                 a shard refused the client's credentials
    ├── SnapshotError                             a snapshot could not be saved or restored
    └── RemoteError                               an unexpected failure inside a shard
        └── ModelError                            a model or script failed to load or run

Errors cross the wire as ``(code, message)``; :func:`from_wire` rebuilds the same class on
the client, so ``except memstore.KeyNotFound`` works whichever shard raised it.
"""

from __future__ import annotations


class MemstoreError(Exception):
    """Root of all memstore errors."""

    code = "error"


class KeyNotFound(MemstoreError, KeyError):
    """The key (tensor, dataset, list, model) is not in the store."""

    code = "not_found"

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Timeout(MemstoreError, TimeoutError):
    """A wait reached its deadline."""

    code = "timeout"


class StoreFull(MemstoreError, MemoryError):
    """The shard would exceed ``--max-memory``; the write was refused and nothing evicted."""

    code = "store_full"


class ProtocolError(MemstoreError, ValueError):
    """A request was malformed, too large, or named an unknown operation."""

    code = "protocol"


class WrongType(MemstoreError, TypeError):
    """The key exists but holds another kind of value (e.g. a dataset, not a tensor)."""

    code = "wrong_type"


class ConnectionLost(MemstoreError, ConnectionError):
    """A shard did not answer within the client's timeout, or the client was closed."""

    code = "connection_lost"


class NoAnswer(ConnectionLost, Timeout):
    """A shard did not answer a request before its deadline.

    Both a :class:`ConnectionLost` (what it was raised as before it had its own class, so
    code catching that keeps working) and a :class:`Timeout` (a deadline passed), as
    pyzmq's errors are both theirs and a builtin's."""

    code = "no_answer"


class AuthError(MemstoreError):
    """A shard refused the client's credentials."""

    code = "auth"


class SnapshotError(MemstoreError):
    """A snapshot could not be written, or a snapshot file is missing, torn or altered
    (the message names the file)."""

    code = "snapshot"


class RemoteError(MemstoreError):
    """An unexpected failure inside a shard; the message carries the shard's traceback."""

    code = "remote"


class ModelError(RemoteError):
    """A model or script could not be stored, loaded or run."""

    code = "model"


_BY_CODE = {
    cls.code: cls
    for cls in (
        MemstoreError,
        KeyNotFound,
        Timeout,
        StoreFull,
        ProtocolError,
        WrongType,
        ConnectionLost,
        NoAnswer,
        AuthError,
        SnapshotError,
        RemoteError,
        ModelError,
    )
}


def from_wire(code: str, message: str) -> MemstoreError:
    """Rebuild the exception a shard reported; unknown codes become :class:`RemoteError`."""
    return _BY_CODE.get(code, RemoteError)(message)
