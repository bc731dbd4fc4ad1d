"""Requests from a shard's model workers to the other shards of its cluster.

Model workers fetch inputs that live on other shards and stage outputs there. They do it
through this small channel rather than :class:`memstore.Client`, so the server never
depends on the client (see docs/design.md, "Layers"): one DEALER socket per worker thread
and peer, the wire format of :mod:`memstore.wire`, a deadline on every request.

Sockets belong to the thread that made them (ZeroMQ sockets are not thread-safe);
:meth:`Peers.close_thread` closes the calling thread's, and a worker calls it on its way out.

A peer that stops answering fails the request naming it within ``MEMSTORE_HEARTBEAT``
rather than at the deadline: heartbeats drop a silent connection (its monitor says so), and
``ZMQ_IMMEDIATE`` with a send timeout of the same length refuses to queue a request for a
peer that is not connected, so nothing is delivered to it later (no late commit).
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from memstore import wire
from memstore.config import heartbeat, heartbeat_options
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
        self._heartbeat = heartbeat_options()
        # How long a send waits for a connection: a live peer connects in milliseconds.
        self._connect_ms = round(1000 * min(timeout, heartbeat() or timeout))

    def request_all(self, requests: list[tuple[str, str, dict, list]]) -> list[Reply]:
        """Send ``(address, op, fields, payload)`` requests together; their replies in order.

        Raises:
            MemstoreError: the first error a peer answered (after every reply is in, so
                the caller knows what each peer did), or ``ConnectionLost`` at the deadline.
        """
        pending: dict[int, int] = {}
        for address in {address for address, *_ in requests}:
            _dropped(self._link(address)[1])  # drops before these requests do not count
        for position, (address, op, fields, payload) in enumerate(requests):
            req_id = next(self._ids)
            socket = self._link(address)[0]
            try:
                socket.send_multipart(wire.request(req_id, op, fields, payload), copy=False)
            except zmq.Again:
                raise ConnectionLost(
                    f"shard {address} is not connected to this shard (not within "
                    f"{self._connect_ms / 1000:g}s: stopped, or its node or network down?)"
                ) from None
            pending[req_id] = position
        replies: list[Reply | None] = [None] * len(requests)
        deadline = time.monotonic() + self.timeout
        poller, monitors = zmq.Poller(), {}
        for address in {address for address, *_ in requests}:
            socket, monitor = self._link(address)
            poller.register(socket, zmq.POLLIN)
            poller.register(monitor, zmq.POLLIN)
            monitors[monitor] = address
        while pending:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                waiting = sorted(_waiting(requests, pending))
                raise ConnectionLost(
                    f"shard(s) {', '.join(waiting)} did not answer a model worker within "
                    f"{self.timeout}s"
                )
            for socket, _ in poller.poll(left_ms):
                if socket in monitors:
                    if _dropped(socket) and monitors[socket] in _waiting(requests, pending):
                        raise ConnectionLost(
                            f"shard {monitors[socket]} dropped its connection to this shard "
                            "before answering (it stopped, or was silent past "
                            "MEMSTORE_HEARTBEAT: its node or network down?)"
                        )
                    continue
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
        for socket, monitor in sockets.values():
            socket.disable_monitor()  # before closing its PAIR, or libzmq can wedge
            monitor.close(linger=0)
            socket.close(linger=0)

    def _link(self, address: str) -> tuple[zmq.Socket, zmq.Socket]:
        """This thread's socket to ``address`` and the monitor that reports its drops."""
        sockets = getattr(self._local, "sockets", None)
        if sockets is None:
            sockets = self._local.sockets = {}
        link = sockets.get(address)
        if link is None:
            socket = self._context.socket(zmq.DEALER)
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.IMMEDIATE, 1)  # nothing queued for a peer not connected
            socket.setsockopt(zmq.SNDTIMEO, self._connect_ms)
            for option, value in self._heartbeat:
                socket.setsockopt(option, value)
            if self._curve is not None:
                self._curve.apply(socket)
            monitor = socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)
            try:
                socket.connect(address)
            except zmq.ZMQError as exc:
                socket.disable_monitor()
                monitor.close(linger=0)
                socket.close(linger=0)
                raise MemstoreError(f"model worker cannot reach shard {address}: {exc}") from None
            link = sockets[address] = (socket, monitor)
        return link


def _dropped(monitor: zmq.Socket) -> bool:
    """Whether the monitored connection dropped since the last look (drains the monitor)."""
    dropped = False
    while monitor.poll(0):
        dropped |= recv_monitor_message(monitor)["event"] == zmq.EVENT_DISCONNECTED
    return dropped


def _waiting(requests: list, pending: dict[int, int]) -> set[str]:
    """The addresses that still owe a reply."""
    return {requests[position][0] for position in pending.values()}
