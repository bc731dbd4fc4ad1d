"""Every error memstore raises, with one root.

::

    MemstoreError
    ├── KeyNotFound          (also KeyError)      the key is not in the store
    │   └── StepDropped                           a stream step was dropped (names the oldest held)
    ├── Timeout              (also TimeoutError)  a deadline passed
    │   └── NoAnswer         (also ConnectionLost) a shard did not answer in time
    ├── StoreFull            (also MemoryError)   --max-memory would be exceeded; nothing evicted
    ├── ProtocolError        (also ValueError)    a malformed, oversized or unknown request
    ├── WrongType            (also TypeError)     the key holds another kind of value
    ├── ConnectionLost       (also ConnectionError) a shard went away, or the client closed
    │   └── NoAnswer         (also Timeout)       (the same class as above)
    ├── AuthError                                 a shard refused the client's credentials
    ├── StreamClosed                              an append to (or replay of an empty) closed stream
    ├── SnapshotError                             a snapshot could not be saved or restored
    └── RemoteError                               an unexpected failure inside a shard
        └── ModelError                            a model or script failed to load or run

Errors cross the wire as ``(code, message)``; :func:`from_wire` rebuilds the same class on
the client, so ``except memstore.KeyNotFound`` works whichever shard raised it.
"""

from __future__ import annotations

import ast
import re


class MemstoreError(Exception):
    """Root of all memstore errors."""

    code = "error"


class KeyNotFound(MemstoreError, KeyError):
    """The key (tensor, dataset, list, model) is not in the store."""

    code = "not_found"

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class StepDropped(KeyNotFound):
    """A stream step is no longer held: ``maxlen`` dropped it (or a trim or delete did).

    Attributes ``stream`` (its name), ``step`` and ``oldest`` (the oldest step still held,
    where reading may go on) are parsed from the message, so they survive the wire.
    """

    code = "step_dropped"
    _FORM = re.compile(r"step (-?\d+) of stream (.*) was dropped; the oldest step held is (\d+)")

    def __init__(self, *args: object):
        super().__init__(*args)
        found = self._FORM.search(str(args[0])) if args else None
        self.stream: str | None = _literal(found[2]) if found else None
        self.step: int | None = int(found[1]) if found else None
        self.oldest: int | None = int(found[3]) if found else None

    @classmethod
    def of(cls, stream: str, step: int, oldest: int) -> StepDropped:
        """The error for ``step`` of ``stream``, whose oldest held step is ``oldest``."""
        return cls(
            f"step {step} of stream {stream!r} was dropped; the oldest step held is {oldest}"
        )


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


class StreamClosed(MemstoreError):
    """An append to a stream that was closed (readers finish after its last step), or a
    replay of a closed stream that holds no step."""

    code = "stream_closed"


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
        StepDropped,
        Timeout,
        StoreFull,
        ProtocolError,
        WrongType,
        ConnectionLost,
        NoAnswer,
        AuthError,
        StreamClosed,
        SnapshotError,
        RemoteError,
        ModelError,
    )
}


def _literal(text: str) -> str | None:
    """A stream name as an error message quotes it (its ``repr``)."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    return value if isinstance(value, str) else None


def from_wire(code: str, message: str) -> MemstoreError:
    """Rebuild the exception a shard reported; unknown codes become :class:`RemoteError`."""
    return _BY_CODE.get(code, RemoteError)(message)
