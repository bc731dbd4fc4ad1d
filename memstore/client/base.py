"""What the parts of :class:`memstore.Client` share, written down as one base class.

The client is one class made of parts (``core``, ``datasets``, ``models``); the call
mixins may use of it exactly what :class:`ClientBase` declares and defines, nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from memstore.client.keys import RawKeys
from memstore.client.requests import Requests
from memstore.client.shm import SharedMemoryPath
from memstore.futures import Future, InlineResult


def _found(header: dict, payload: list) -> bool:
    return bool(header.get("found"))


class ClientBase:
    """The state and plumbing every part of the client uses; ``Client.__init__`` sets the
    attributes."""

    #: The shards' addresses, in placement order.
    addresses: list[str]
    #: Seconds to wait for any one answer.
    timeout: float
    #: Calls on stored keys, no prefix applied (:class:`memstore.client.keys.RawKeys`).
    keys: RawKeys
    #: How requests reach the shards (:class:`memstore.client.requests.Requests`).
    _requests: Requests
    #: The shared-memory path (:class:`memstore.client.shm.SharedMemoryPath`).
    _shm: SharedMemoryPath
    #: Ensemble prefixes (SmartRedis's ``SSKEYIN``/``SSKEYOUT``) and where they apply.
    _get_prefix: str
    _put_prefix: str
    _use_prefix: dict[str, bool]

    def _sync(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``method`` (an ``*_async`` method) and wait for its result; its first request
        may take the transport's fast path (no future, no other thread)."""
        return self._requests.inline.run(method, *args, **kwargs)

    def _shard(self, key: str) -> int:
        return self._requests.shard_of(key)

    def _key(self, name: str, kind: str, read: bool) -> str:
        """The stored key for ``name``: SmartRedis's ensemble prefix rules."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"a {kind} name must be a non-empty string, got {name!r}")
        prefix = self._get_prefix if read else self._put_prefix
        return f"{prefix}.{name}" if prefix and self._use_prefix[kind] else name

    def _poll(
        self,
        key: str,
        kind: str | None,
        poll_frequency_ms: int,
        num_tries: int,
        cond: str = "exists",
        n: int = 0,
    ) -> Future | InlineResult:
        """Park a wait on ``key``'s shard for ``poll_frequency_ms * num_tries`` ms (SmartRedis's
        polling budget, spent waiting on the server instead of polling)."""
        if poll_frequency_ms < 0 or num_tries < 0:
            raise ValueError("poll_frequency_ms and num_tries must be non-negative")
        seconds = poll_frequency_ms * num_tries / 1000.0
        return self._requests.to_key(
            "wait",
            key,
            {"kind": kind, "cond": cond, "n": n, "timeout": seconds},
            decode=_found,
            wait=seconds,
        )
