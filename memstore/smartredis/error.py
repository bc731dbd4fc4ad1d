"""SmartRedis's error classes, each also the matching memstore error.

::

    RuntimeError
    ├── RedisConnectionError   (also memstore.ConnectionLost)  no shard answered at the address
    └── RedisReplyError        (also memstore.MemstoreError)   a call failed
        ├── RedisRuntimeError                                   a bad argument or setting
        ├── RedisBadAllocError (also memstore.StoreFull)        --max-memory would be exceeded
        ├── RedisDatabaseError (also memstore.RemoteError)      a failure inside a shard
        │   └── RedisModelError (also memstore.ModelError)      a model or script failed
        ├── RedisInternalError (also memstore.ProtocolError)    a malformed request
        ├── RedisTimeoutError  (also memstore.Timeout)          a deadline passed
        ├── RedisKeyError      (also memstore.KeyNotFound)      the key is not in the store
        └── RedisWrongTypeError (also memstore.WrongType)       the key holds another kind

So ``except RedisReplyError`` (SmartRedis code) and ``except memstore.KeyNotFound``
(memstore code) both catch a missing key. ``translate`` turns a memstore error raised by
:class:`memstore.Client` into its SmartRedis class at the compat module's boundary.
"""

from __future__ import annotations

from memstore import errors

__all__ = [
    "RedisBadAllocError",
    "RedisConnectionError",
    "RedisDatabaseError",
    "RedisInternalError",
    "RedisKeyError",
    "RedisReplyError",
    "RedisRuntimeError",
    "RedisTimeoutError",
]


class RedisConnectionError(errors.ConnectionLost, RuntimeError):
    """No memstore shard could be reached (bad, missing or unreachable ``SSDB``)."""

    def __init__(self, cpp_error: str = "") -> None:
        super().__init__(cpp_error or "could not connect to memstore: check SSDB")


class RedisReplyError(errors.MemstoreError, RuntimeError):
    """A call failed; the message names the method and what went wrong."""

    def __init__(self, cpp_error: str = "", method: str = "", key: str = "") -> None:
        prefix = f"{method} execution failed\n" if method else ""
        super().__init__(prefix + cpp_error)
        self.method = method
        self.key = key

    def __str__(self) -> str:  # KeyError (via RedisKeyError) would quote the message
        return str(self.args[0]) if self.args else ""


class RedisRuntimeError(RedisReplyError):
    """A bad argument combination or setting, found before anything was sent."""


class RedisBadAllocError(RedisReplyError, errors.StoreFull):
    """The shard refused the write: it would exceed its --max-memory."""


class RedisDatabaseError(RedisReplyError, errors.RemoteError):
    """An unexpected failure inside a shard."""


class RedisModelError(RedisDatabaseError, errors.ModelError):
    """A model or script could not be stored, loaded or run (memstore's ModelError)."""


class RedisInternalError(RedisReplyError, errors.ProtocolError):
    """A request the shard could not parse."""


class RedisTimeoutError(RedisReplyError, errors.Timeout):
    """A wait reached its deadline."""


class RedisKeyError(RedisReplyError, errors.KeyNotFound):
    """The key is not in the store."""


class RedisWrongTypeError(RedisReplyError, errors.WrongType):
    """The key holds another kind of value (e.g. a script, not a tensor)."""


# Most specific first: ModelError is a RemoteError.
_BY_MEMSTORE: list[tuple[type[errors.MemstoreError], type[Exception]]] = [
    (errors.ModelError, RedisModelError),
    (errors.RemoteError, RedisDatabaseError),
    (errors.KeyNotFound, RedisKeyError),
    (errors.Timeout, RedisTimeoutError),
    (errors.StoreFull, RedisBadAllocError),
    (errors.ProtocolError, RedisInternalError),
    (errors.WrongType, RedisWrongTypeError),
    (errors.ConnectionLost, RedisConnectionError),
    (errors.AuthError, RedisConnectionError),
]


def translate(exc: errors.MemstoreError, method: str = "") -> Exception:
    """The SmartRedis error for memstore error ``exc`` (itself if it already is one)."""
    if isinstance(exc, (RedisReplyError, RedisConnectionError)):
        return exc
    for memstore_cls, redis_cls in _BY_MEMSTORE:
        if isinstance(exc, memstore_cls):
            if redis_cls is RedisConnectionError:
                return RedisConnectionError(f"{method}: {exc}" if method else str(exc))
            return redis_cls(str(exc), method)
    return RedisReplyError(str(exc), method)
