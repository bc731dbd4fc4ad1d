"""The client's same-node direct path: a shard's Unix stream socket instead of ZeroMQ.

A shard on this node offers its socket in its ``hello`` (``memstore/server/unix.py``); the
transport asks each shard once, and uses the socket when :func:`usable` accepts the offer:
the same boot id and pid namespace (as for shared memory), the same user, ``MEMSTORE_UNIX``
not 0. Connecting also checks the kernel's peer credentials: the process listening must be
this user's and the very shard that answered the ``hello`` (its pid).

:class:`UnixConnection` stands in for the transport's ZeroMQ connection, and its
:class:`UnixSocket` for the part of a DEALER socket the transport uses (``send`` with
``SNDMORE``, ``recv_multipart``, ``get(EVENTS)``, ``RCVTIMEO``, ``fileno`` for the poller):
the fast path, the pump, batching and request ids work on it unchanged. What differs:

* it is connected when made (``fresh`` is False), or it is not made (``OSError``);
* a closed peer is seen at once, as the end of the stream: the socket is *lost* for good
  (``dropped()`` says so, sends raise ``zmq.Again``), a connection that was lost is closed,
  never pooled, and the transport asks the shard again (a restarted shard has a new path);
* it has no monitor and no handshake (``monitor`` is None).
"""

from __future__ import annotations

import os
import socket
import struct
from collections import deque
from typing import Any

import zmq

from memstore import framing, shm
from memstore.config import DEFAULT_TIMEOUT, MAX_FRAMES, unix_enabled
from memstore.errors import ProtocolError

_TIMEVAL = struct.Struct("ll")
_PEERCRED = struct.Struct("3i")
# Plain ints: an enum flag costs an ``enum.__and__`` call per test, on every request.
_EVENTS, _RCVTIMEO = int(zmq.EVENTS), int(zmq.RCVTIMEO)
_SNDMORE, _POLLIN = int(zmq.SNDMORE), int(zmq.POLLIN)
_DONTWAIT = socket.MSG_DONTWAIT
#: Reads the pump does for one socket per wake-up (a large reply takes many).
_READS_PER_LOOK = 64


def usable(hello: Any, wanted: bool | None = None) -> dict | None:
    """The offer in a shard's ``hello`` if this process may use it, else None."""
    if not (unix_enabled() if wanted is None else wanted) or not isinstance(hello, dict):
        return None
    offer, features = hello.get("unix"), hello.get("features")
    if not isinstance(features, list) or "unix" not in features or not isinstance(offer, dict):
        return None  # (a malformed hello is refused, naming the shard, by the client's own)
    if (
        not isinstance(offer.get("path"), str)
        or not offer.get("boot_id")
        or offer.get("boot_id") != shm.boot_id()
        or offer.get("pidns") != shm.pid_ns()
        or offer.get("uid") != os.geteuid()
        or type(offer.get("pid")) is not int
    ):
        return None
    return offer


class UnixSocket:
    """The part of a ZeroMQ DEALER the transport uses, over one Unix stream socket."""

    __slots__ = ("_next", "_parts", "lost", "reader", "sock")

    def __init__(self, offer: dict):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            framing.on_path(sock.connect, offer["path"])
            pid, uid, _ = _PEERCRED.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
            )
            if uid != os.geteuid() or pid != offer["pid"]:
                raise ConnectionRefusedError(
                    f"{offer['path']} is served by pid {pid} of uid {uid}, not the shard"
                )
            # A shard that stops reading cannot hold a send forever.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _TIMEVAL.pack(
                int(DEFAULT_TIMEOUT), 0))  # fmt: skip
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.reader = framing.Reader(sock, MAX_FRAMES + 1, writable=True)
        self.lost = False  # the peer closed, or the stream broke: never usable again
        self._parts: list = []  # the frames of a message being sent (``SNDMORE``)
        self._next: list | None = None  # a message read by ``get(EVENTS)``, not yet taken

    def fileno(self) -> int:
        return self.sock.fileno()

    def setsockopt(self, option: int, value: int) -> None:
        if option == _RCVTIMEO:  # milliseconds, as ZeroMQ's
            seconds, ms = divmod(max(1, value), 1000)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                                 _TIMEVAL.pack(seconds, ms * 1000))  # fmt: skip

    def send(self, frame: Any, flags: int = 0, copy: bool = True) -> None:
        """Collect frames until the last (no ``SNDMORE``), then send the message in one
        ``sendmsg``; ``zmq.Again`` if the connection is lost (then nothing more is sent)."""
        self._parts.append(frame)
        if flags & _SNDMORE:
            return
        parts, self._parts = self._parts, []
        if self.lost:
            raise zmq.Again()
        views = framing.views(parts)
        try:
            framing.send_all(self.sock, [framing.prefix(views), *views])
        except OSError:  # the shard went (EPIPE), or stopped reading: half a message, maybe
            self.lost = True
            raise zmq.Again() from None

    def recv_multipart(self, flags: int = 0, copy: bool = False) -> list:
        """The next message; ``zmq.Again`` once ``RCVTIMEO`` passes or the peer closed."""
        if self._next is not None:
            frames, self._next = self._next, None
            return frames
        reader = self.reader
        while (frames := self._message()) is None:
            try:
                n = 0 if self.lost else reader.fill()
            except BlockingIOError:  # SO_RCVTIMEO passed
                raise zmq.Again() from None
            except OSError:
                n = 0
            if n == 0:
                self.lost = True
                raise zmq.Again()
        return frames

    def get(self, option: int) -> int:
        """``EVENTS``: ``POLLIN`` once a whole message is in (read without blocking)."""
        if self._next is None and not self.lost:
            self._next = self._read_ready()
        return _POLLIN if self._next is not None else 0

    def _read_ready(self) -> list | None:
        for _ in range(_READS_PER_LOOK):
            frames = self._message()
            if frames is not None:
                return frames
            try:
                n = self.reader.fill(_DONTWAIT)
            except BlockingIOError:
                return None
            except OSError:
                n = 0
            if n == 0:
                self.lost = True
                return None
        return None

    def _message(self) -> list | None:
        try:
            return self.reader.message()
        except ProtocolError:  # not a memstore shard's stream: nothing more makes sense
            self.lost = True
            return None

    def close(self, linger: int = 0) -> None:
        self.sock.close()


class UnixConnection:
    """One Unix socket to one shard, shaped as the transport's ZeroMQ connection."""

    __slots__ = ("_midway", "batches", "fresh", "monitor", "rcvtimeo", "refused", "shard",
                 "silent", "socket")  # fmt: skip

    def __init__(self, offer: dict, shard: int, rcvtimeo: int):
        self.socket = UnixSocket(offer)
        self.shard = shard
        self.socket.setsockopt(_RCVTIMEO, rcvtimeo)
        self.rcvtimeo = rcvtimeo
        self._midway = False
        self.batches: deque = deque()
        # What the transport reads of a ZeroMQ connection: connected already, no monitor,
        # no handshake that could be refused or time out.
        self.fresh, self.monitor, self.refused, self.silent = False, None, None, False

    @property
    def midway(self) -> bool:
        """An exchange was interrupted, or the connection is lost: not to be pooled."""
        return self._midway or self.socket.lost

    @midway.setter
    def midway(self, value: bool) -> None:
        self._midway = value

    def dropped(self) -> bool:
        """Whether the shard closed the connection (for good: a lost socket stays lost)."""
        return self.socket.lost

    def close(self) -> None:
        self.socket.close()
