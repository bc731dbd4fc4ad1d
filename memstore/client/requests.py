"""How one client's requests reach its shards: deadline, size limit, and which may go inline.

:class:`Requests` is the client's request plumbing, apart from what the requests are about:
the client, its shared-memory path and its raw-key calls all send through one, and it holds
the transport, so that it (not the client) is what an unanswered request keeps alive.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import zmq

from memstore.client.transport import UNAVAILABLE, Transport, describe, ignore_reply
from memstore.config import client_max_inflight, client_sockets
from memstore.errors import ProtocolError
from memstore.futures import Future, Gathered, InlineResult, chain
from memstore.placement import key_shard


def hello_reply(header: dict, payload: list) -> dict:
    """The decoder of a ``hello``: its header, the fields the client reads checked
    (``ProtocolError`` otherwise; the transport names the shard)."""
    shards = header.get("shards") or []
    if not isinstance(shards, list) or not all(isinstance(a, str) and a for a in shards):
        raise ProtocolError(f"hello: 'shards' must be a list of addresses, got {shards!r:.80}")
    index, max_message = header.get("index", 0), header.get("max_message") or 0
    if type(index) is not int or (shards and not 0 <= index < len(shards)):
        raise ProtocolError(f"hello: 'index' {index!r:.40} is not a place in 'shards'")
    if type(max_message) is not int or max_message < 0:
        raise ProtocolError(f"hello: 'max_message' {max_message!r:.40} is not a byte count")
    features = header.get("features") or []
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise ProtocolError(f"hello: 'features' must be a list of names, got {features!r:.80}")
    return header


class InlineTurn(threading.local):
    """Per thread: whether the next request may go inline, on the transport's fast path.

    A blocking call grants the turn while it runs (:meth:`run`); the first request it sends
    takes it (:meth:`take`), so only that one goes inline and the call's later steps
    (chained requests, a retry) go through the pump, which keeps requests to a shard in
    order. Requests that must be in flight together (a fan-out), and a put the pump must
    send while this thread seals its files, take the turn without using it. A blocking call
    made inside another (the ``hello`` that opens a shared-memory link) has its own turn and
    hands the caller's back when it ends.

    A per-thread flag rather than an argument: the async methods a blocking call runs are
    the very ones users call, and none of their signatures should carry it.
    """

    granted = False

    def run(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``method(*args, **kwargs).result()``, its first request allowed inline."""
        before, self.granted = self.granted, True
        try:
            return method(*args, **kwargs).result()
        finally:
            self.granted = before

    def take(self) -> bool:
        """Whether the turn was there to take; either way it is used up."""
        granted, self.granted = self.granted, False
        return granted


class Requests:
    """A client's requests to its shards, and the transport they travel by.

    Args:
        context: the ZeroMQ context the sockets are made in.
        addresses: one per shard.
        timeout: seconds to wait for an answer (plus what a request may wait on the shard).
        curve: ``memstore.auth.ClientKeys`` for CURVE shards, or None.

    An unanswered request keeps this object alive, and the transport closes when it goes:
    a dropped client stays connected until what it sent is answered.
    """

    def __init__(self, context: zmq.Context, addresses: list[str], timeout: float, curve: Any):
        self.timeout = timeout
        self.inline = InlineTurn()
        self.transport = Transport(
            context, addresses, client_sockets(), client_max_inflight(), curve
        )
        self._finalizer = weakref.finalize(self, self.transport.close)

    @property
    def max_message(self) -> int:
        """The cluster's ``--max-message`` once ``hello`` told it (0: not known, no check);
        the transport builds no batch over it."""
        return self.transport.max_message

    @max_message.setter
    def max_message(self, value: int) -> None:
        self.transport.max_message = value

    @property
    def shards(self) -> int:
        return len(self.transport.addresses)

    def close(self) -> None:
        """Close the transport; pending futures fail with ``ConnectionLost``. Idempotent."""
        self._finalizer()

    def sync(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``method`` (an ``*_async`` method) and wait for its result; its first request
        may take the transport's fast path (no future, no other thread)."""
        return self.inline.run(method, *args, **kwargs)

    def to_shard(
        self,
        shard: int,
        op: str,
        fields: dict,
        payload: Iterable = (),
        decode: Callable = ignore_reply,
        wait: float = 0.0,
        what: Any = "",
    ) -> Future | InlineResult:
        """Request ``op`` of ``shard``: inline if this thread holds the turn and the fast path
        is free, else a future. ``wait``: seconds the shard may hold the request on top of
        the timeout (a parked wait, a model load)."""
        timeout = self.timeout + (wait if wait > 0 else 0.0)  # NaN: the shard refuses it
        payload = list(payload)
        what = what or op
        if self.max_message and payload:
            self.check_size(payload, what)
        transport = self.transport
        if self.inline.take():
            value = transport.try_fast(shard, op, fields, payload, decode, timeout, what)
            if value is not UNAVAILABLE:
                return InlineResult(value)
        reply = transport.submit(shard, op, fields, payload, decode, timeout, what)
        reply.keepalive = self  # a dropped client stays open until its replies are in
        return reply

    def shard_of(self, key: str) -> int:
        """The shard that owns ``key``."""
        return key_shard(key, len(self.transport.addresses))

    def to_key(
        self,
        op: str,
        key: str,
        fields: dict | None = None,
        payload: Iterable = (),
        decode: Callable = ignore_reply,
        wait: float = 0.0,
    ) -> Future | InlineResult:
        """One request about ``key``, sent to the shard that owns it."""
        return self.to_shard(
            self.shard_of(key), op, {"key": key, **(fields or {})}, payload, decode, wait, (op, key)
        )

    def by_shard(self, keys: list[str]) -> dict[int, list[int]]:
        """The positions in ``keys`` of each shard's keys (a bulk call's one request each)."""
        positions: dict[int, list[int]] = {}
        for i, key in enumerate(keys):
            positions.setdefault(self.shard_of(key), []).append(i)
        return positions

    def check_size(self, payload: list, what: Any) -> None:
        """Refuse here what the shard's ``--max-message`` would cut off (it drops the
        connection of a peer sending an oversized frame, failing everything in flight)."""
        size = sum(memoryview(frame).nbytes for frame in payload)
        if size > self.max_message:
            raise ProtocolError(
                f"{describe(what)}: {size} bytes exceed the shard's --max-message "
                f"{self.max_message}: split the data or raise the limit (nothing was sent)"
            )

    def fan_out(self, calls: list[Callable[[], Any]], combine: Callable[[list], Any]) -> Any:
        """Each of ``calls`` (each sends one request), all in flight at once; the results
        combined. A single call may still take the fast path."""
        if len(calls) == 1:
            return chain(calls[0](), lambda result: combine([result]))
        self.inline.take()  # in flight together, not one fast call after another
        return Gathered([call() for call in calls], combine)
