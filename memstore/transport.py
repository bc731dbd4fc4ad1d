"""Client-side transport: per-thread DEALER sockets, request ids and driven futures.

Why no background I/O thread: a ZeroMQ socket must not be touched by two threads at once,
so a background thread would force every call through a thread hand-off, which costs more
than the round trip itself on small tensors. Instead the thread that waits drives: each
thread owns a :class:`Channel` (one DEALER per shard); ``Future.result()`` (and ``done()``)
poll that channel's sockets and resolve whichever replies arrive, matched by request id.
Any thread may wait on any future: a channel is guarded by a re-entrant lock, and a thread
that finds it held waits on its future, which the holder resolves.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from memstore import wire
from memstore.config import PUMP_SLICE
from memstore.errors import ConnectionLost, MemstoreError, Timeout, from_wire

log = logging.getLogger(__name__)

#: Longest single poll while pumping, so overdue requests of other threads fail on time.
_POLL_SLICE_MS = 50

#: Sends between opportunistic collections of replies (a poll per send costs ~5% of a
#: pipelined put; collecting every few sends still keeps the backlog small).
_COLLECT_EVERY = 16

#: Turns ``(reply header, payload frames)`` into a future's result.
Decoder = Callable[[dict, list], Any]


def _ignore(header: dict, payload: list) -> None:
    return None


class Future(concurrent.futures.Future):
    """A ``concurrent.futures.Future`` whose ``result()`` and ``done()`` drive the sockets.

    Futures progress whenever the client that made them is used, or when anyone calls
    ``result()``, ``exception()`` or ``done()`` on them. ``concurrent.futures.wait`` alone
    does not drive them: use :func:`memstore.wait` instead.
    """

    def result(self, timeout: float | None = None) -> Any:
        self._drive_until(timeout)
        return super().result(0)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._drive_until(timeout)
        return super().exception(0)

    def done(self) -> bool:
        if not super().done():
            self._poke()
        return super().done()

    def done_now(self) -> bool:
        """State check that never drives the sockets."""
        return super().done()

    def _drive_until(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done_now():
            self._drive(deadline)
            if self.done_now():
                return
            if deadline is not None and time.monotonic() >= deadline:
                raise Timeout(f"no result within {timeout}s (the request is still pending)")
            # Our parts are done but the callback finishing us runs in another thread.
            concurrent.futures.wait([self], timeout=PUMP_SLICE)

    def _drive(self, deadline: float | None) -> None:
        """Make progress until this future is done or ``deadline`` (monotonic) passes."""
        raise NotImplementedError

    def _poke(self) -> None:
        """Make whatever progress is possible without blocking."""


class Reply(Future):
    """The answer to one request on one shard."""

    def __init__(self, channel: Channel, shard: int, what: str, decode: Decoder, deadline: float):
        super().__init__()
        self.channel, self.shard, self.what = channel, shard, what
        self.decode, self.deadline = decode, deadline

    def _drive(self, deadline: float | None) -> None:
        self.channel.drive(self, deadline)

    def _poke(self) -> None:
        self.channel.poke()

    def _resolve(self, header: dict, payload: list) -> None:
        if header.get("ok"):
            try:
                self.set_result(self.decode(header, payload))
            except Exception as exc:  # a reply we cannot decode is this request's error
                self.set_exception(exc)
        else:
            self.set_exception(from_wire(header.get("code", ""), header.get("msg", "")))


class Gathered(Future):
    """Done when all ``parts`` are; its result is ``combine([part results])``."""

    def __init__(self, parts: list[Future], combine: Callable[[list], Any] = list):
        super().__init__()
        self.parts, self.combine = parts, combine
        self._left = len(parts)
        self._lock = threading.Lock()
        if not parts:
            self.set_result(combine([]))
        for part in parts:
            part.add_done_callback(self._part_done)

    def _part_done(self, part: Future) -> None:
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last and not super().done():
            errors = [p.exception(0) for p in self.parts if p.exception(0) is not None]
            if errors:
                self.set_exception(errors[0])
            else:
                try:
                    self.set_result(self.combine([p.result(0) for p in self.parts]))
                except Exception as exc:
                    self.set_exception(exc)

    def _drive(self, deadline: float | None) -> None:
        for part in self.parts:
            part._drive(deadline)

    def _poke(self) -> None:
        for part in self.parts:
            part._poke()


class Chained(Future):
    """``first``, then ``step(first's result)``, which returns a value or another future."""

    def __init__(self, first: Future, step: Callable[[Any], Any]):
        super().__init__()
        self._current = first
        self._step = step
        first.add_done_callback(self._first_done)

    def _first_done(self, first: Future) -> None:
        if first.exception(0) is not None:
            self.set_exception(first.exception(0))
            return
        try:
            nxt = self._step(first.result(0))
        except Exception as exc:
            self.set_exception(exc)
            return
        if isinstance(nxt, Future):
            self._current = nxt
            nxt.add_done_callback(self._copy_from)
        else:
            self.set_result(nxt)

    def _copy_from(self, source: Future) -> None:
        if source.exception(0) is not None:
            self.set_exception(source.exception(0))
        else:
            self.set_result(source.result(0))

    def _drive(self, deadline: float | None) -> None:
        while not self.done_now():
            if deadline is not None and time.monotonic() >= deadline:
                return
            current = self._current
            if current.done_now():  # its callback, running elsewhere, is moving us on
                concurrent.futures.wait([self], timeout=PUMP_SLICE)
            else:
                current._drive(deadline)

    def _poke(self) -> None:
        self._current._poke()


class Resolved(Future):
    """A future that is already done, for calls answered without a round trip."""

    def __init__(self, value: Any = None):
        super().__init__()
        self.set_result(value)

    def _drive(self, deadline: float | None) -> None:
        return None


def wait(futures: list[Future], timeout: float | None = None) -> None:
    """Drive ``futures`` until all are done; ``Timeout`` if ``timeout`` seconds pass first."""
    Gathered(list(futures)).result(timeout)


class Channel:
    """One thread's DEALER sockets, one per shard, and the requests in flight on them."""

    def __init__(self, context: zmq.Context, addresses: list[str]):
        self.addresses = addresses
        self.lock = threading.RLock()
        self.pending: dict[int, Reply] = {}
        self._ids = itertools.count(1)
        self._sockets = []
        self._index: dict[zmq.Socket, int] = {}
        self._monitors: dict[zmq.Socket, int] = {}
        self._poller = zmq.Poller()
        self._next_expiry = 0.0
        self._pumping = 0  # depth of pumps running on the thread holding the lock
        self._sent = 0
        for i, address in enumerate(addresses):
            socket = context.socket(zmq.DEALER)
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.SNDHWM, 0)
            socket.setsockopt(zmq.RCVHWM, 0)
            # A dropped connection loses the answers to everything in flight on it (the shard
            # sees a new peer on reconnect), so those requests fail as soon as it drops.
            monitor = socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)
            socket.connect(address)
            self._sockets.append(socket)
            self._index[socket] = i
            self._monitors[monitor] = i
            self._poller.register(socket, zmq.POLLIN)
            self._poller.register(monitor, zmq.POLLIN)

    def submit(
        self,
        shard: int,
        op: str,
        fields: dict,
        payload: list,
        decode: Decoder,
        timeout: float,
        what: str,
    ) -> Reply:
        """Send one request to ``shard``; the reply resolves the returned future."""
        with self.lock:
            if not self._sockets:
                raise ConnectionLost("the client is closed")
            req_id = next(self._ids)
            frames = wire.request(req_id, op, fields, payload)  # may raise: nothing pending yet
            future = Reply(self, shard, what, decode, time.monotonic() + timeout)
            self.pending[req_id] = future
            try:
                self._sockets[shard].send_multipart(frames, copy=len(frames) == 1)
            except BaseException:
                del self.pending[req_id]
                raise
            self._sent += 1
            if self._sent % _COLLECT_EVERY == 0:
                self._pump(0.0)  # collect answers already here, so replies never pile up
        return future

    def drive(self, future: Reply, deadline: float | None) -> None:
        """Pump until ``future`` is done, ``deadline`` passes, or its own deadline fails it."""
        while not future.done_now():
            now = time.monotonic()
            limit = future.deadline if deadline is None else min(deadline, future.deadline)
            if limit <= now < future.deadline:
                return  # the caller's deadline, not the request's
            if self.lock.acquire(blocking=False):
                try:
                    if now >= future.deadline:
                        self._fail_overdue(now)
                    else:
                        self._pump(limit - now, until=future)
                finally:
                    self.lock.release()
            else:  # another thread is pumping this channel and will resolve our future
                concurrent.futures.wait([future], timeout=min(limit - now, PUMP_SLICE))

    def poke(self) -> None:
        if self.lock.acquire(blocking=False):
            try:
                self._pump(0.0)
            finally:
                self.lock.release()

    def _pump(self, timeout: float, until: Reply | None = None) -> None:
        """Receive and dispatch replies for up to ``timeout`` seconds (or until ``until`` is
        done); the lock must be held. Polls in slices so overdue requests fail on time."""
        if until is None and self._pumping:
            # An opportunistic pump from a callback (a chained request being sent while a
            # reply is dispatched): the pump already running will receive its reply.
            # Nesting here would recurse once per waiting reply.
            return
        self._pumping += 1
        try:
            self._pump_loop(timeout, until)
        finally:
            self._pumping -= 1

    def _pump_loop(self, timeout: float, until: Reply | None) -> None:
        deadline = time.monotonic() + timeout
        while True:
            left = min(max(0.0, deadline - time.monotonic()), 1.0)  # clamped: may be infinite
            slice_ms = min(_POLL_SLICE_MS, int(left * 1000) + 1)
            ready = self._poller.poll(slice_ms if timeout > 0 else 0)
            for socket, _ in ready:
                if socket in self._monitors:
                    self._connection_dropped(socket)
                else:
                    self._receive_all(socket)
            now = time.monotonic()
            if now >= self._next_expiry:
                self._fail_overdue(now)
            if until is None or until.done_now() or now >= deadline:
                return

    def _connection_dropped(self, monitor: zmq.Socket) -> None:
        """Fail every request in flight to a shard whose connection dropped."""
        shard = self._monitors[monitor]
        dropped = False
        while True:
            try:
                dropped |= recv_monitor_message(monitor, zmq.NOBLOCK)["event"] == (
                    zmq.EVENT_DISCONNECTED
                )
            except zmq.Again:
                break
        if not dropped:
            return
        for req_id, future in list(self.pending.items()):
            if future.shard == shard:
                del self.pending[req_id]
                future.set_exception(
                    ConnectionLost(
                        f"shard {self.addresses[shard]} closed the connection before answering "
                        f"{future.what}: did it stop or crash?"
                    )
                )

    def _receive_all(self, socket: zmq.Socket) -> None:
        while True:
            try:
                frames = socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                header = wire.unpack_header(frames[0])
            except MemstoreError as exc:
                log.warning(
                    "dropped a malformed reply from %s: %s",
                    self.addresses[self._index[socket]],
                    exc,
                )
                continue
            future = self.pending.pop(header["id"], None)
            if future is None:
                log.debug(
                    "late reply %s from %s dropped",
                    header["id"],
                    self.addresses[self._index[socket]],
                )
                continue
            future._resolve(header, frames[1:])

    def _fail_overdue(self, now: float) -> None:
        """Fail requests whose shard has not answered in time (it is down or stuck); the lock
        must be held."""
        self._next_expiry = now + _POLL_SLICE_MS / 1000
        for req_id, future in list(self.pending.items()):
            if now >= future.deadline:
                del self.pending[req_id]
                future.set_exception(
                    ConnectionLost(
                        f"shard {self.addresses[future.shard]} did not answer {future.what} "
                        "in time: is it running and reachable? (raise Client(timeout=...) "
                        "for slow networks)"
                    )
                )

    def close(self) -> None:
        with self.lock:
            for future in self.pending.values():
                if not future.done_now():
                    future.set_exception(
                        ConnectionLost(f"client closed before {future.what} was answered")
                    )
            self.pending.clear()
            for socket in self._sockets:
                socket.disable_monitor()  # before closing its PAIR, or libzmq can wedge
            for monitor in self._monitors:
                monitor.close(linger=0)
            for socket in self._sockets:
                socket.close(linger=0)
            self._sockets = []
            self._monitors = {}
