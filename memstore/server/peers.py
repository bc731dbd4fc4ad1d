"""Requests from a shard's model workers to the other shards of its cluster.

Model workers fetch inputs that live on other shards and stage outputs there. They do it
through this small channel rather than :class:`memstore.Client`, so the server never
depends on the client (see docs/design.md, "Layers"): one DEALER socket per worker thread
and peer, the wire format of :mod:`memstore.wire`, a deadline on every request.

Sockets belong to the thread that made them (ZeroMQ sockets are not thread-safe);
:meth:`Peers.close_thread` closes the calling thread's, and a worker calls it on its way out.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import zmq

from memstore import wire
from memstore.errors import ConnectionLost, MemstoreError, from_wire

#: Reply header and payload frames.
Reply = tuple[dict, list]


class Peers:
    """Blocking request/reply to peer shards by address, for worker threads.

    Args:
        timeout: seconds any one request may take before ``ConnectionLost``.
        curve: ``memstore.auth.ClientKeys`` for a secure cluster (None: plain sockets).
    """

    def __init__(self, timeout: float, curve: Any = None):
        self.timeout = timeout
        self._curve = curve  # memstore.auth.ClientKeys of a secure cluster
        self._context = zmq.Context.instance()
        self._local = threading.local()
        self._ids = itertools.count(1)

    def request_all(self, requests: list[tuple[str, str, dict, list]]) -> list[Reply]:
        """Send ``(address, op, fields, payload)`` requests together; their replies in order.

        Raises:
            MemstoreError: the first error a peer answered (after every reply is in, so
                the caller knows what each peer did), or ``ConnectionLost`` at the deadline.
        """
        pending: dict[int, int] = {}
        for position, (address, op, fields, payload) in enumerate(requests):
            req_id = next(self._ids)
            socket = self._socket(address)
            socket.send_multipart(wire.request(req_id, op, fields, payload), copy=False)
            pending[req_id] = position
        replies: list[Reply | None] = [None] * len(requests)
        deadline = time.monotonic() + self.timeout
        poller = zmq.Poller()
        for address in {address for address, *_ in requests}:
            poller.register(self._socket(address), zmq.POLLIN)
        while pending:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                waiting = sorted({requests[p][0] for p in pending.values()})
                raise ConnectionLost(
                    f"shard(s) {', '.join(waiting)} did not answer a model worker within "
                    f"{self.timeout}s"
                )
            for socket, _ in poller.poll(left_ms):
                while True:
                    try:
                        frames = socket.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    header = wire.unpack_header(frames[0])
                    position = pending.pop(header["id"], None)
                    if position is not None:  # else: the answer to an abandoned request
                        replies[position] = (header, frames[1:])
        for header, _ in replies:  # type: ignore[misc]
            if not header.get("ok"):
                raise from_wire(str(header.get("code")), str(header.get("msg")))
        return replies  # type: ignore[return-value]

    def close_thread(self) -> None:
        """Close the calling thread's sockets."""
        sockets = getattr(self._local, "sockets", {})
        self._local.sockets = {}
        for socket in sockets.values():
            socket.close(linger=0)

    def _socket(self, address: str) -> zmq.Socket:
        sockets = getattr(self._local, "sockets", None)
        if sockets is None:
            sockets = self._local.sockets = {}
        socket = sockets.get(address)
        if socket is None:
            socket = self._context.socket(zmq.DEALER)
            socket.setsockopt(zmq.LINGER, 0)
            if self._curve is not None:
                self._curve.apply(socket)
            try:
                socket.connect(address)
            except zmq.ZMQError as exc:
                socket.close()
                raise MemstoreError(f"model worker cannot reach shard {address}: {exc}") from None
            sockets[address] = socket
        return socket
