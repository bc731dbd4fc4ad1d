"""Client-side transport: a synchronous fast path, and a pump thread for everything async.

Two ways a request travels, chosen per call (docs/design.md has the measurements):

* **Fast path** (:meth:`Transport.try_fast`: a blocking call's first request, with nothing
  of its client's in flight to that shard): the calling thread borrows one of a small, fixed
  pool of DEALER sockets for the shard, sends, and blocks in one receive with a deadline. No
  future, no lock, no other thread involved.
* **Pump path** (:meth:`Transport.submit`: every ``*_async`` call, and blocking calls that
  must queue behind one): the request goes on a queue; one pump thread per client owns one
  DEALER per shard, sends what is queued (several requests to one shard travel as one
  ``batch`` message), receives the replies and completes the futures. Futures therefore
  progress on their own: ``concurrent.futures.wait``, ``as_completed`` and
  ``asyncio.wrap_future`` all work.

Requests to a shard that a blocking call sends after its async ones are answered stay in
order because the fast path is only taken when the pump has nothing in flight to that shard.

Sockets are bounded (``pool_size + 1`` per shard, whatever the thread count), set
``ZMQ_IMMEDIATE`` so nothing is queued for a peer that is not connected (a write that raised
``ConnectionLost`` can never land later), and are closed by ``close()``, by a finalizer when
the client is garbage-collected, and at exit. Callbacks run on the pump thread with no lock
held.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from memstore import wire
from memstore.client import unix
from memstore.config import MAX_FRAMES, heartbeat_options, unix_enabled
from memstore.errors import (
    AuthError,
    ConnectionLost,
    MemstoreError,
    NoAnswer,
    ProtocolError,
    Timeout,
    from_wire,
)
from memstore.futures import Future, mark_pump_thread, pump_of_this_thread, this_process

log = logging.getLogger(__name__)

#: Longest single blocking receive, so a dropped connection is noticed while waiting.
_SLICE_S = 0.1
#: Most requests, and most payload bytes, coalesced into one ``batch`` message.
_BATCH_MAX = 256
_BATCH_BYTES = 1 << 20
#: Bytes a ``batch`` envelope adds to its parts, at most: its fields, and 5 per part count.
_ENVELOPE_BYTES, _ENVELOPE_PER_PART = 64, 5
_POLLIN = zmq.POLLIN
_EVENTS, _RCVTIMEO = int(zmq.EVENTS), int(zmq.RCVTIMEO)  # plain ints: no enum on hot paths
_SLICE_MS = int(_SLICE_S * 1000)
# Plain ints: the Unix path tests them per frame, and an enum flag's ``&`` is a Python call.
_NOBLOCK, _NOBLOCK_MORE = int(zmq.NOBLOCK), int(zmq.NOBLOCK | zmq.SNDMORE)
#: How soon the pump looks at the queue again after sending (it is not woken meanwhile).
_BURST_MS = 1

#: Turns ``(reply header, payload frames)`` into a future's result.
Decoder = Callable[[dict, list], Any]
#: What a request is about, for error messages: a string, or ``(op, key)`` formatted lazily.
What = Any

_monitor_ids = itertools.count()


#: What a failed CURVE/ZMTP handshake means, by monitor event, for the ``AuthError``.
_HANDSHAKE_FAILURES = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "its ZAP handler did not admit this client's key",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "one side uses CURVE and the other does not",
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "the handshake failed: no key, or the wrong server key?",
}
_MONITORED = (
    zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


#: What a decoder raises when a reply is not what the protocol says (a lying or broken
#: shard): made a ``ProtocolError`` naming the shard, never let out raw.
_MALFORMED = (LookupError, TypeError, ValueError, AttributeError, ArithmeticError, OSError)


def answer(header: dict, payload: list, decode: Decoder, source: str, what: What) -> Any:
    """The value of shard ``source``'s reply to ``what``, or the error it reports.

    Raises:
        ProtocolError: naming the shard, for a reply that is not what the protocol says
            (a field missing or of the wrong type, an error without a code).
    """
    if not header.get("ok"):
        code, message = header.get("code", ""), header.get("msg", "")
        if not (isinstance(code, str) and isinstance(message, str)):
            raise ProtocolError(
                f"shard {source} answered {describe(what)} with an error reply that has no "
                "code and message (not a memstore shard, or a broken one?)"
            )
        raise from_wire(code, message)
    try:
        return decode(header, payload)
    except ProtocolError as exc:
        if source in str(exc):
            raise
        raise ProtocolError(f"shard {source}, reply to {describe(what)}: {exc}") from None
    except MemstoreError:  # what a decoder means to raise (several are also OSErrors)
        raise
    except _MALFORMED as exc:
        raise ProtocolError(
            f"shard {source} sent a reply to {describe(what)} that does not follow the "
            f"protocol ({type(exc).__name__}: {exc}); is it a memstore shard of this version?"
        ) from None


def ignore_reply(header: dict, payload: list) -> None:
    """The decoder of a request whose answer carries nothing but success."""
    return None


def describe(what: What) -> str:
    """``what`` a request is about, for an error message."""
    return f"{what[0]} {what[1]!r}" if isinstance(what, tuple) else str(what)


# -- requests in flight ----------------------------------------------------------------------


class Reply(Future):
    """The transport's record of one request in flight to one shard, and its future.

    It lives here, not in :mod:`memstore.futures`, because it is the pump's bookkeeping
    (shard, request id, decoder, what it is about) as much as a future."""

    def __init__(self, shard: int, req_id: int, decode: Decoder, what: What):
        super().__init__()
        self.shard, self.req_id = shard, req_id
        self.decode, self.what = decode, what
        self.keepalive: Any = None  # what must live until the answer is in (the client)

    def cancel(self) -> bool:
        """Cancel if not yet answered: the answer is dropped when it comes. A write that was
        already sent may still be applied by the shard. The done-callbacks run on this
        thread once the lock is released: one may block on this very client."""
        with self._condition:  # re-entrant: the calls below take it too
            if self.cancelled():
                return True
            if self.done():
                return False
            # Taken now, run below: the base class would run them under our lock, and the
            # pump settling this reply (its answer came) would wait for them (issue 25).
            callbacks, self._done_callbacks = self._done_callbacks, []
            super(Future, self).cancel()
            self.set_running_or_notify_cancel()  # wakes concurrent.futures.wait and its kin
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                log.exception("a done-callback of %s raised", describe(self.what))
        return True

    def settle(self, value: Any = None, error: BaseException | None = None) -> None:
        super().settle(value, error)
        # Only now may the client go: dropping the last reference closes it (no lock held).
        self.keepalive = None

    def resolve(self, header: dict, payload: list, source: str) -> None:
        """Settle from the reply of shard ``source``: its decoded value, or the error it
        reports (:func:`answer`)."""
        try:
            value = answer(header, payload, self.decode, source, self.what)
        except Exception as exc:  # a reply we cannot decode is this request's error
            self.settle(error=exc)
        else:
            self.settle(value)


# -- sockets ---------------------------------------------------------------------------------


class _Connection:
    """One DEALER to one shard, with the monitor that reports its disconnects and failed
    handshakes (``refused``: why the shard refused this client's credentials, if it did;
    ``silent``: a handshake timed out, the shard's host accepts but nobody answers)."""

    __slots__ = (
        "batches", "fresh", "midway", "monitor", "rcvtimeo", "refused", "shard", "silent",
        "socket",
    )  # fmt: skip

    def __init__(
        self,
        context: zmq.Context,
        address: str,
        shard: int,
        curve: Any = None,
        options: list[tuple[int, int]] = (),
    ):
        socket = context.socket(zmq.DEALER)
        try:
            self._setup(socket, address, curve, options)
        except BaseException:  # a signal while it is made: close what exists, leak nothing
            if hasattr(self, "monitor"):
                socket.disable_monitor()
                self.monitor.close(linger=0)
            socket.close(linger=0)
            raise
        self.socket, self.shard, self.fresh, self.rcvtimeo = socket, shard, True, _SLICE_MS
        self.refused: str | None = None
        self.silent = False
        #: An exchange on the fast path is under way: an exception that interrupts it (a
        #: signal) may leave a half-sent or half-read message, so the socket is closed.
        self.midway = False
        #: The parts of each ``batch`` sent and not yet answered, oldest first (the shard
        #: answers a connection's messages in order; a batch's envelope reply has id 0).
        self.batches: deque[list[Reply]] = deque()

    def _setup(self, socket: zmq.Socket, address: str, curve: Any, options: list) -> None:
        if curve is not None:  # memstore.auth.ClientKeys: before connect, or it is ignored
            curve.apply(socket)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.SNDHWM, 0)
        socket.setsockopt(zmq.RCVHWM, 0)
        socket.setsockopt(zmq.IMMEDIATE, 1)  # queue nothing for a peer that is not there
        # Reconnect soon after a shard comes back (20 ms, backing off to 1 s while it stays
        # away): requests to it fail fast meanwhile, so recovery time is what users wait.
        socket.setsockopt(zmq.RECONNECT_IVL, 20)
        socket.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        for option, value in options:  # heartbeats: a silent shard is dropped, see config
            socket.setsockopt(option, value)
        self.monitor = socket.get_monitor_socket(
            _MONITORED,
            addr=f"inproc://memstore.monitor.{os.getpid()}.{next(_monitor_ids)}",
        )
        socket.setsockopt(_RCVTIMEO, _SLICE_MS)
        socket.connect(address)

    def dropped(self) -> bool:
        """Whether the connection dropped since the last look (drains the monitor)."""
        dropped = False
        while self.monitor.get(_EVENTS) & _POLLIN:
            message = recv_monitor_message(self.monitor)
            event = message["event"]
            if event == zmq.EVENT_DISCONNECTED:
                dropped = True
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.refused, self.silent = None, False
            elif event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL and message["value"] == errno.EAGAIN:
                self.silent = True  # HANDSHAKE_IVL passed: no answer, not a refusal
            else:
                self.refused = _HANDSHAKE_FAILURES.get(event, "the handshake failed")
        return dropped

    def close(self) -> None:
        self.socket.disable_monitor()  # before closing its PAIR, or libzmq can wedge
        self.monitor.close(linger=0)
        self.socket.close(linger=0)


class _Unavailable:
    """Marker: the fast path cannot take this call; send it through the pump."""


UNAVAILABLE = _Unavailable()
#: A shard not asked yet whether this client may use its Unix socket (``client/unix.py``).
UNASKED = _Unavailable()


class Transport:
    """The sockets of one client, its requests in flight, and the pump thread.

    Args:
        context: the ZeroMQ context sockets are made in.
        addresses: one per shard; ``inproc://`` shards get copies both ways, so that a put
            snapshots the caller's data and a got array is the caller's own, as over sockets.
        pool_size: fast-path sockets per shard (threads beyond it use the pump).
        max_inflight: most requests queued or unanswered on the pump at once (0: no cap). A
            submit beyond it waits for room until its own timeout, then raises ``Timeout``;
            callbacks on the pump thread are exempt (they are what makes room).
        curve: ``memstore.auth.ClientKeys`` for CURVE shards (None: plain sockets). A shard
            that refuses them raises ``AuthError`` instead of ``ConnectionLost``.
    """

    def __init__(
        self,
        context: zmq.Context,
        addresses: list[str],
        pool_size: int = 4,
        max_inflight: int = 0,
        curve: Any = None,
    ):
        self.addresses = list(addresses)
        self._curve = curve
        self._context = context
        self._pool_size = max(1, pool_size)
        n = len(self.addresses)
        self._copy = [a.startswith("inproc://") for a in self.addresses]
        self._free: list[list[_Connection]] = [[] for _ in range(n)]
        self._made = [0] * n
        self._busy = [0] * n  # requests queued or in flight on the pump, per shard
        self._down = [False] * n  # a send found the shard disconnected, or it dropped
        self._heartbeat = heartbeat_options()  # read once: a silent shard is dropped
        self._pump_conns: list[_Connection | None] = [None] * n
        # -- the same-node direct path (client/unix.py): per shard, its Unix socket's offer,
        # None (ZeroMQ only: inproc, CURVE, MEMSTORE_UNIX=0, another node) or UNASKED.
        wanted = curve is None and unix_enabled()
        self._unix: list[Any] = [UNASKED if wanted and not c else None for c in self._copy]
        self._open_locks = [threading.Lock() for _ in range(n)]
        self._lock = threading.Lock()  # counters, the pump's start and close; never held long
        self._max_inflight = max(0, max_inflight)
        self._room = threading.Condition(self._lock)  # a submit waiting under the cap
        self._room_waiters = 0
        self._ids = itertools.count(1)
        self._queue: deque = deque()
        self._pending: dict[int, Reply] = {}
        self._deadlines: list[tuple[float, int]] = []
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._sleeping = False
        self._thread: threading.Thread | None = None
        self._closed = False
        self._pid = this_process()  # sockets and the pump belong to this process only
        #: The shards' ``--max-message`` (``hello``; 0: none): no batch is built over it.
        self.max_message = 0
        #: Whether the shards take ``batch`` messages (their ``hello`` says so).
        self.batching = False

    def check_process(self) -> None:
        """Raise ``MemstoreError`` in a process forked from the one that made this client:
        its sockets and pump thread are the parent's (libzmq does not survive a fork)."""
        if self._pid != this_process():
            raise MemstoreError(
                f"this client was made in process {self._pid} before a fork: make a new "
                f"Client in the child (process {this_process()}); the parent's is unusable here"
            )

    # -- the fast path -----------------------------------------------------------------------

    def try_fast(
        self,
        shard: int,
        op: str,
        fields: dict,
        payload: list,
        decode: Decoder,
        timeout: float,
        what: What,
    ) -> Any:
        """The fast path: send and wait on the calling thread, and return the decoded answer;
        ``UNAVAILABLE`` (nothing sent) if the pump must take the request instead."""
        if self._pid != this_process():
            self.check_process()
        if self._busy[shard] or self._closed:
            return UNAVAILABLE
        if self._unix[shard] is UNASKED:
            self._ask_unix(shard, time.monotonic() + timeout, what)
        conn = self._checkout(shard)
        if conn is None:
            return UNAVAILABLE
        try:
            req_id = next(self._ids)
            frames = wire.request(req_id, op, fields, payload)  # may raise: nothing sent yet
            return self._exchange(conn, req_id, frames, decode, time.monotonic() + timeout, what)
        except MemstoreError:
            conn.midway = False  # ours, raised between whole messages: the socket is sound
            raise
        finally:
            self._checkin(conn)

    def _checkout(self, shard: int) -> _Connection | None:
        try:
            return self._free[shard].pop()
        except IndexError:
            pass
        with self._lock:
            if self._made[shard] >= self._pool_size:
                return None
            self._made[shard] += 1
        try:
            return self._connection(shard)
        except BaseException:
            with self._lock:
                self._made[shard] -= 1
            raise

    def _connection(self, shard: int) -> _Connection:
        offer = self._unix[shard]
        if offer is not None and offer is not UNASKED:
            try:
                return unix.UnixConnection(offer, shard, _SLICE_MS)
            except OSError as exc:  # the shard stopped or restarted: ask again, via ZeroMQ
                log.debug("no Unix socket to %s (%s)", self.addresses[shard], exc)
                self._unix[shard] = UNASKED
        address = self.addresses[shard]
        return _Connection(self._context, address, shard, self._curve, self._heartbeat)

    def _ask_unix(self, shard: int, deadline: float, what: What) -> None:
        """Ask ``shard`` (a ``hello`` over ZeroMQ) whether this client may use its Unix
        socket; a shard found down is asked once it is up again (ZeroMQ fails fast meanwhile).

        Raises:
            ConnectionLost, AuthError: as the request ``what`` would have.
        """
        if self._down[shard]:
            return
        conn = self._connection(shard)
        try:
            req_id = next(self._ids)
            hello = self._exchange(conn, req_id, wire.request(req_id, "hello"), _fields,
                                   deadline, what)  # fmt: skip
        finally:
            conn.close()
        self._unix[shard] = unix.usable(hello)

    def paths(self) -> list[str]:
        """How this client reaches each shard: ``unix`` (the same-node direct path),
        ``zmq``, or ``unasked`` (no request went to it yet)."""
        return ["unasked" if o is UNASKED else "zmq" if o is None else "unix" for o in self._unix]

    def _checkin(self, conn: _Connection) -> None:
        """Back to the pool, or closed if an exception (a signal: ``KeyboardInterrupt``)
        interrupted its exchange, which may have left half a message on it."""
        if conn.midway:
            conn.close()
            with self._lock:
                self._made[conn.shard] -= 1
        else:
            self._free[conn.shard].append(conn)
        if self._closed:  # close() may have emptied the pool while we held this one
            self._close_free()

    def _exchange(
        self,
        conn: _Connection,
        req_id: int,
        frames: list,
        decode: Decoder,
        deadline: float,
        what: What,
    ) -> Any:
        conn.midway = True  # until the whole reply is in (see _checkin)
        conn.dropped()  # forget disconnects from before this request
        self._send(conn, frames, deadline, what)
        socket = conn.socket
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._overdue(conn.shard, what)
            timeout_ms = _SLICE_MS if left > _SLICE_S else int(left * 1000) + 1
            if timeout_ms != conn.rcvtimeo:  # only for the last slice before the deadline
                socket.setsockopt(_RCVTIMEO, timeout_ms)
                conn.rcvtimeo = timeout_ms
            try:
                reply = socket.recv_multipart(copy=False)
            except zmq.Again:
                if conn.dropped():
                    self._down[conn.shard] = True  # fresh sockets fail at once, too
                    raise self._lost(conn.shard, what) from None
                if self._closed:
                    raise ConnectionLost(f"client closed before {describe(what)} was answered")
                continue
            header = _header(reply[0], self.addresses[conn.shard])
            if header is None or header["id"] != req_id:
                continue  # the late answer to an earlier request that timed out here
            conn.midway = False
            payload = self._own(conn.shard, reply[1:])
            return answer(header, payload, decode, self.addresses[conn.shard], what)

    def _send(self, conn: _Connection, frames: list, deadline: float, what: What) -> None:
        """Send now or raise ``ConnectionLost``: nothing waits in a queue for a dead peer."""
        copy = self._copy[conn.shard]
        try:
            _send_frames(conn.socket, frames, copy)
        except zmq.Again:
            # A new socket may still be connecting; an established one that cannot send is
            # disconnected, and so is a shard another socket already found down.
            if (
                not conn.fresh
                or self._down[conn.shard]
                or not self._await_connection(conn, deadline, what)
            ):
                self._down[conn.shard] = True
                raise self._not_connected(conn, what) from None
            _send_frames(conn.socket, frames, copy)
        conn.fresh = False
        self._down[conn.shard] = False

    def _await_connection(self, conn: _Connection, deadline: float, what: What) -> bool:
        """Wait for a new socket's first connection (in slices: ``deadline`` may be inf, and
        a ``close()`` meanwhile ends the wait).

        Raises:
            AuthError: the shard refused this client's credentials (a failed handshake).
            ConnectionLost: the client was closed meanwhile.
        """
        poller = zmq.Poller()
        poller.register(conn.socket, zmq.POLLOUT)
        poller.register(conn.monitor, _POLLIN)
        if conn.refused is not None:  # the refusal may already have been read off the monitor
            raise self._not_connected(conn, what)
        while (left := deadline - time.monotonic()) > 0:
            if self._closed:
                raise _closed(what)
            for socket, _ in poller.poll(int(min(left, _SLICE_S) * 1000) + 1):
                if socket is conn.socket:
                    return True
                conn.dropped()
                if conn.refused is not None:
                    raise self._not_connected(conn, what)
                if conn.silent:  # its host accepts, but the shard does not answer
                    return False
        return False

    def _not_connected(self, conn: _Connection, what: What) -> MemstoreError:
        """The error for a request that could not be sent: refused credentials or no shard."""
        address = self.addresses[conn.shard]
        if conn.refused is not None:
            return AuthError(
                f"shard {address} refused this client's credentials ({conn.refused}): "
                f"{describe(what)} was not sent. Give the cluster's keys (MEMSTORE_CURVE_DIR, "
                "or MEMSTORE_CURVE_SERVER_KEY and MEMSTORE_CURVE_CLIENT_KEY; docs/security.md)"
            )
        if conn.silent:
            return ConnectionLost(
                f"shard {address} does not answer (its host accepts the connection, the "
                f"shard is silent: stopped, or its node hung?): {describe(what)} was not "
                "sent; the client reconnects by itself"
            )
        return ConnectionLost(
            f"shard {address} is not connected: {describe(what)} was not sent (is it "
            "running? the client reconnects by itself)"
        )

    def _own(self, shard: int, payload: list) -> list:
        """Payload frames as the caller's own memory (``inproc://`` frames are the store's)."""
        return [bytearray(f.buffer) for f in payload] if self._copy[shard] else payload

    # -- the pump path -----------------------------------------------------------------------

    def submit(
        self,
        shard: int,
        op: str,
        fields: dict,
        payload: list,
        decode: Decoder,
        timeout: float,
        what: What,
    ) -> Reply:
        """Queue one request for the pump; its reply completes the returned future."""
        self.check_process()
        if self._closed:
            raise _closed(what)
        req_id = next(self._ids)
        frames = wire.request(req_id, op, fields, payload)  # may raise: nothing pending yet
        if self._unix[shard] is UNASKED:
            self._ask_unix(shard, time.monotonic() + timeout, what)
        if self._pump_conns[shard] is None:
            self._open_pump_connection(shard, time.monotonic() + timeout, what)
        reply = Reply(shard, req_id, decode, what)
        with self._lock:
            if self._max_inflight and len(self._pending) >= self._max_inflight:
                self._wait_for_room(time.monotonic() + timeout, what)
            self._busy[shard] += 1
            self._pending[reply.req_id] = reply
        self._queue.append((reply, frames, time.monotonic() + timeout))
        if self._closed and self._forget(reply.req_id) is not None:  # close() raced us
            reply.settle(error=_closed(what))
        if self._thread is None:
            self._start_pump()
        elif self._sleeping:
            self._sleeping = False  # one wake-up per sleep is enough
            self._wake_pump()
        return reply

    def _wait_for_room(self, deadline: float, what: What) -> None:
        """Under ``_lock``: wait until fewer than ``max_inflight`` requests are pending.

        The pump thread never waits here: only it makes room, so a callback submitting more
        work goes over the cap instead of deadlocking.
        """
        if pump_of_this_thread() is self:
            return
        while len(self._pending) >= self._max_inflight:
            if self._closed:
                raise _closed(what)
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout(
                    f"{describe(what)} was not sent: this client already has "
                    f"{len(self._pending)} requests in flight (MEMSTORE_CLIENT_MAX_INFLIGHT="
                    f"{self._max_inflight}) and none was answered in time; collect results "
                    "before submitting more, or raise the cap"
                )
            self._room_waiters += 1
            try:
                self._room.wait(min(left, _SLICE_S * 10))
            finally:
                self._room_waiters -= 1

    def _wake_pump(self) -> None:
        with self._lock:  # the descriptor is closed under this lock, never written after
            if self._wake is not None:
                os.eventfd_write(self._wake, 1)

    def _open_pump_connection(self, shard: int, deadline: float, what: What) -> None:
        """Connect the pump's socket for ``shard`` on the caller's thread (the pump never
        waits for a connection), then hand it over."""
        with self._open_locks[shard]:
            if self._pump_conns[shard] is not None:
                return
            conn = self._connection(shard)
            try:
                connected = conn.monitor is None or (  # a Unix socket is connected when made
                    not self._down[shard] and self._await_connection(conn, deadline, what)
                )
            except BaseException:
                conn.close()  # a refused key (or a signal): the next submit tries anew
                raise
            conn.fresh = False
            with self._lock:  # close() sets _closed under it, then closes _pump_conns
                closed = self._closed
                if not closed:
                    self._pump_conns[shard] = conn  # kept either way: it reconnects itself
            if closed:  # close() ran meanwhile and would never close this one
                conn.close()
                raise _closed(what)
        if not connected:
            self._down[shard] = True
            raise self._not_connected(conn, what)

    def _start_pump(self) -> None:
        with self._lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._pump, name="memstore-pump", daemon=True
                )
                self._thread.start()

    def _pump(self) -> None:
        mark_pump_thread(self)
        self._poller = zmq.Poller()
        self._poller.register(self._wake, _POLLIN)
        self._polled: dict[Any, _Connection] = {}
        try:
            while not self._closed:
                self._turn(_SLICE_S * 10)
        except Exception:  # a bug here must not leave futures waiting forever
            log.exception("memstore client pump failed")
        finally:
            self._shut_pump()

    def pump_until(self, future: Future, timeout: float | None) -> None:
        """Run the pump on its own thread until ``future`` is done (a callback blocking)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not future.done() and not self._closed:
            left = _SLICE_S if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return
            self._turn(min(left, _SLICE_S))

    def _turn(self, max_wait: float) -> None:
        """One round: send what is queued, wait for replies, dispatch them, expire."""
        self._register_new()
        wait_ms = self._wait_ms(max_wait)
        if self._send_queued():
            # A burst may be under way: look again within a millisecond rather than make
            # each following submit wake us (a syscall that hands over the GIL per request,
            # which would send the burst one request at a time).
            wait_ms = min(wait_ms, _BURST_MS)
        else:
            self._sleeping = True  # from here on, a submit wakes us
            if self._queue:
                wait_ms = 0
        events = self._poller.poll(wait_ms)
        self._sleeping = False
        for socket, _ in events:
            if socket == self._wake:
                try:
                    os.eventfd_read(socket)
                except BlockingIOError:
                    pass
                continue
            conn = self._polled[socket]
            if socket is conn.monitor:
                if conn.dropped():
                    self._fail_shard(conn.shard)
            else:
                self._receive(conn)
                if conn.monitor is None and conn.dropped():  # a Unix socket's shard closed it
                    self._retire(conn)
        self._expire(time.monotonic())

    def _register_new(self) -> None:
        for conn in self._pump_conns:
            if conn is not None and _pollable(conn) not in self._polled:
                self._polled[_pollable(conn)] = conn
                self._poller.register(_pollable(conn), _POLLIN)
                if conn.monitor is not None:  # a Unix connection has none
                    self._polled[conn.monitor] = conn
                    self._poller.register(conn.monitor, _POLLIN)

    def _retire(self, conn: Any) -> None:
        """A Unix connection the shard closed: fail what it had in flight and let the next
        submit connect anew (to a restarted shard's new socket, or by ZeroMQ)."""
        self._fail_shard(conn.shard)
        self._poller.unregister(_pollable(conn))
        del self._polled[_pollable(conn)]
        with self._open_locks[conn.shard]:
            if self._pump_conns[conn.shard] is conn:
                self._pump_conns[conn.shard] = None
        conn.close()

    def _wait_ms(self, max_wait: float) -> int:
        wait = max_wait
        if self._deadlines:
            wait = min(wait, self._deadlines[0][0] - time.monotonic())
        return max(0, int(wait * 1000) + 1)

    def _send_queued(self) -> int:
        """Send everything queued; back-to-back requests to one shard go as one message.
        Returns how many requests were taken off the queue."""
        groups: dict[int, list] = {}
        queue = self._queue
        taken = 0
        while queue:
            item = queue.popleft()
            taken += 1
            groups.setdefault(item[0].shard, []).append(item)
        for shard, items in groups.items():
            conn = self._pump_conns[shard]
            if conn is not None and conn.dropped():  # a drop not seen yet: fail, never send
                self._fail_shard(shard)  # to whoever listens there now (a ghost write)
            items = [item for item in items if self._sendable(item)]
            if self.batching:
                chunks = _chunks(items, self.max_message)
            else:
                chunks = ([item] for item in items)
            for chunk in chunks:
                self._send_group(shard, chunk)
        return taken

    def _sendable(self, item: tuple) -> bool:
        """Whether a queued request is still to be sent: not cancelled, nor already failed
        (its shard's connection dropped, the client closed); if so its deadline starts."""
        reply = item[0]
        if reply.done():
            self._forget(reply.req_id)  # a cancelled one is still in the books
            return False
        heapq.heappush(self._deadlines, (item[2], reply.req_id))
        return True

    def _send_group(self, shard: int, items: list) -> None:
        if len(items) == 1:
            frames = items[0][1]
        else:
            counts = [len(frames) for _, frames, _ in items]
            frames = [wire.pack({"v": wire.VERSION, "id": 0, "op": "batch", "n": counts})]
            for _, part, _ in items:
                frames.extend(part)
        conn = self._pump_conns[shard]
        try:
            if conn is None:  # a Unix connection retired since these were queued
                raise self._lost(shard, items[0][0].what)
            self._send(conn, frames, items[0][2], items[0][0].what)
        except ConnectionLost as exc:
            for reply, _, _ in items:
                if self._forget(reply.req_id) is not None:
                    reply.settle(error=ConnectionLost(str(exc)))
            return
        if len(items) > 1:
            conn.batches.append([reply for reply, _, _ in items])

    def _receive(self, conn: _Connection) -> None:
        socket = conn.socket
        while socket.get(_EVENTS) & _POLLIN:
            frames = socket.recv_multipart(copy=False)
            header = _header(frames[0], self.addresses[conn.shard])
            if header is None:
                continue
            if header["id"] == 0:
                self._receive_batch(conn, header, frames)
            else:
                self._dispatch(conn.shard, header, frames[1:])

    def _receive_batch(self, conn: _Connection, header: dict, frames: list) -> None:
        """The envelope reply to the oldest ``batch`` in flight on ``conn``: the replies of
        its parts answered now, or the shard's refusal of the whole, which fails every part
        of that batch at once with the shard's reason."""
        parts = conn.batches.popleft() if conn.batches else []
        address = self.addresses[conn.shard]
        counts = header.get("n")
        if header.get("ok") and not _counts_fit(counts, len(frames) - 1):
            header = {"ok": False, "code": ProtocolError.code, "msg": (
                f"shard {address} sent a batch reply whose frame counts {counts!r} do not "
                f"match its {len(frames) - 1} frames")}  # fmt: skip
        if not header.get("ok"):
            for reply in parts:
                if self._forget(reply.req_id) is not None:
                    try:
                        answer(header, [], ignore_reply, address, reply.what)
                    except MemstoreError as exc:
                        reply.settle(error=type(exc)(f"{describe(reply.what)}: {exc}"))
            return
        at = 1
        for count in counts:  # each part is one ordinary reply
            part = _header(frames[at], address)
            if part is not None:
                self._dispatch(conn.shard, part, frames[at + 1 : at + count])
            at += count

    def _dispatch(self, shard: int, header: dict, payload: list) -> None:
        reply = self._forget(header["id"])
        if reply is None:
            log.debug("late reply %s from %s dropped", header["id"], self.addresses[shard])
            return
        reply.resolve(header, self._own(shard, payload), self.addresses[shard])

    def _forget(self, req_id: int) -> Reply | None:
        """Take a request out of the books; whoever gets it answers it (no lock while
        answering)."""
        with self._lock:
            reply = self._pending.pop(req_id, None)
            if reply is not None:
                self._busy[reply.shard] -= 1
                if self._room_waiters:
                    self._room.notify()
        return reply

    def _fail_shard(self, shard: int) -> None:
        """Fail every request in flight to a shard whose connection dropped."""
        self._down[shard] = True  # until a send gets through again
        conn = self._pump_conns[shard]
        if conn is not None:
            conn.batches.clear()  # their envelope replies were lost with the connection
        for req_id in [i for i, r in list(self._pending.items()) if r.shard == shard]:
            reply = self._forget(req_id)
            if reply is not None:
                reply.settle(error=self._lost(shard, reply.what))

    def _expire(self, now: float) -> None:
        if len(self._deadlines) > 2 * len(self._pending) + 1024:
            # Answered requests leave their deadlines behind until they pass: drop those,
            # so a fast pipeline with a long timeout does not grow the heap without bound.
            self._deadlines = [d for d in self._deadlines if d[1] in self._pending]
            heapq.heapify(self._deadlines)
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, req_id = heapq.heappop(deadlines)
            reply = self._forget(req_id)
            if reply is not None:
                reply.settle(error=self._overdue(reply.shard, reply.what))

    def _lost(self, shard: int, what: What) -> ConnectionLost:
        return ConnectionLost(
            f"shard {self.addresses[shard]} closed the connection, or went silent past "
            f"MEMSTORE_HEARTBEAT, before answering {describe(what)}: did it stop or crash, "
            "or its node or network fail? (a write may or may not have happened)"
        )

    def _overdue(self, shard: int, what: What) -> NoAnswer:
        return NoAnswer(
            f"shard {self.addresses[shard]} did not answer {describe(what)} in time: is it "
            "running and reachable? (raise Client(timeout=...) for slow networks)"
        )

    # -- closing -----------------------------------------------------------------------------

    def close(self) -> None:
        """Fail what is pending, stop the pump, close every socket. Idempotent, any thread.
        In a forked child it only marks this client closed: the sockets are the parent's."""
        if self._pid != this_process():
            self._closed = True
            return
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            self._room.notify_all()  # submits waiting for room raise ConnectionLost
        if thread is None:
            self._shut_pump()
        else:
            self._wake_pump()
            if thread is not threading.current_thread():
                thread.join(timeout=5)
        self._close_free()

    def _close_free(self) -> None:
        for free in self._free:
            while True:
                try:
                    conn = free.pop()  # atomic: several threads may drain at once
                except IndexError:
                    break
                conn.close()

    def _shut_pump(self) -> None:
        """On the pump thread (or at close when it never ran): fail pending, close its
        sockets."""
        self._closed = True
        for req_id in list(self._pending):
            reply = self._forget(req_id)
            if reply is not None:
                reply.settle(
                    error=ConnectionLost(
                        f"client closed before {describe(reply.what)} was answered"
                    )
                )
        self._queue.clear()
        for i, conn in enumerate(self._pump_conns):
            if conn is not None:
                conn.close()
                self._pump_conns[i] = None
        with self._lock:
            os.close(self._wake)
            self._wake = None


def _closed(what: What) -> ConnectionLost:
    return ConnectionLost(f"the client is closed: {describe(what)} was not sent")


def _send_frames(socket: zmq.Socket, frames: list, copy: bool) -> None:
    """One message, without waiting: ``zmq.Again`` (nothing queued) if no peer is connected.

    The header is small bytes (copied); payload frames go without a copy unless ``copy``
    (pyzmq still copies small ones). Once the first part is queued the rest cannot fail:
    the high-water mark is unlimited."""
    last = len(frames) - 1
    socket.send(frames[0], _NOBLOCK_MORE if last else _NOBLOCK, copy=True)
    for i in range(1, last + 1):
        socket.send(frames[i], _NOBLOCK_MORE if i < last else _NOBLOCK, copy=copy)


def _pollable(conn: Any) -> Any:
    """What the pump's poller watches, and reports, for ``conn``: its ZeroMQ socket, or a
    Unix connection's descriptor (a poller reports descriptors, not the objects that had them)."""
    return conn.socket if conn.monitor is not None else conn.socket.fileno()


def _fields(header: dict, payload: list) -> dict:
    """The decoder of a reply whose header is its answer (the transport's own ``hello``)."""
    return header


def _header(frame: Any, source: str) -> dict | None:
    try:
        return wire.unpack_header(frame)
    except MemstoreError as exc:
        log.warning("dropped a malformed reply from %s: %s", source, exc)
        return None


def _counts_fit(counts: Any, frames: int) -> bool:
    """Whether a batch reply's ``n`` splits its ``frames`` payload frames into parts."""
    return (
        isinstance(counts, list)
        and all(type(c) is int and c >= 1 for c in counts)
        and sum(counts) == frames
    )


def _chunks(items: list, max_message: int = 0):
    """Split a shard's queued requests into batches of bounded count and size, none over
    the shard's ``max_message`` (headers and envelope included, as the shard counts) nor
    its frame cap. A request over them alone goes alone: the shard answers it alone."""
    limit = min(_BATCH_BYTES, max_message) if max_message else _BATCH_BYTES
    chunk, size, count = [], _ENVELOPE_BYTES, 1
    for item in items:
        nbytes = _ENVELOPE_PER_PART + sum(_nbytes(f) for f in item[1])
        nframes = len(item[1])
        if chunk and (
            len(chunk) >= _BATCH_MAX or size + nbytes > limit or count + nframes > MAX_FRAMES
        ):
            yield chunk
            chunk, size, count = [], _ENVELOPE_BYTES, 1
        chunk.append(item)
        size += nbytes
        count += nframes
    if chunk:
        yield chunk


def _nbytes(frame: Any) -> int:
    """A frame's size in bytes (``len`` of a many-dimensional memoryview is its first axis)."""
    return frame.nbytes if isinstance(frame, memoryview) else len(frame)
