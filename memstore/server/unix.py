"""The shard's same-node direct path: a Unix stream socket beside its ZeroMQ socket.

A ZeroMQ message crosses libzmq's I/O thread on both sides; a plain Unix socket does not,
which makes a small round trip about 3x cheaper on one node (issue 24). The shard listens
in a private directory of its own (``memstore-unix-...``, mode 0700, in the shared-memory
root, swept like the shared-memory areas when its process dies) and offers the path in its
``hello``; the same negotiation as shared memory decides whether a client uses it.

Who may connect: the kernel's peer credentials (``SO_PEERCRED``) of each accepted
connection must name this shard's own user, else it is closed at once (docs/security.md).
Messages are those of :mod:`memstore.wire`, framed by :mod:`memstore.framing`.

Each connection gets a routing id of its own, :data:`IDENTITY_BYTES` long: longer than any
ZeroMQ routing id (at most 255 bytes), so the shard tells by its length where a reply goes,
and parked waits, output limits and ``_client_left`` work on it as on a ZeroMQ peer's.
Replies are written without blocking; what the kernel does not take waits in the
connection's queue (sent as the socket drains), and a client whose queue would pass
``--client-output-limit`` is disconnected, as over ZeroMQ.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import socket
import struct
from collections.abc import Callable

import zmq

from memstore import framing, shm
from memstore.errors import ProtocolError

log = logging.getLogger(__name__)

#: Routing ids of Unix connections: longer than ZeroMQ's longest (255 bytes), never equal.
IDENTITY_BYTES = 256
SOCKET_NAME = "shard.sock"
_PEERCRED = struct.Struct("3i")  # pid, uid, gid
#: Reads of one connection per loop turn, so a client sending much cannot starve the rest.
_READS_PER_TURN = 64
_DONTWAIT = socket.MSG_DONTWAIT
# Plain ints: ``event & zmq.POLLIN`` would be an ``enum`` call per event, on every request.
_POLLIN, _POLLOUT, _POLLERR = int(zmq.POLLIN), int(zmq.POLLOUT), int(zmq.POLLERR)


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """The connected peer's (pid, uid, gid), as the kernel recorded them at connect."""
    return _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))


class _Connection:
    __slots__ = ("fd", "identity", "out", "queued", "reader", "sock")

    def __init__(self, sock: socket.socket, identity: bytes, reader: framing.Reader):
        self.sock, self.fd, self.identity, self.reader = sock, sock.fileno(), identity, reader
        self.out: list = []  # what the kernel did not take yet, in order
        self.queued = 0  # its bytes


class UnixListener:
    """The listening socket, its connections, and their reads and writes.

    Args:
        where: the shard's address, for log lines.
        handle: ``handle(identity, frames)``: answer one request (the shard's loop step).
        left: ``left(identity)``: a connection closed; forget its waits.
        max_frames, max_message: a message over them closes its connection (as libzmq does).
        output_limit: most reply bytes one connection may leave unread (0: no limit).
    """

    def __init__(
        self,
        where: str,
        handle: Callable[[bytes, list], None],
        left: Callable[[bytes], None],
        max_frames: int,
        max_message: int = 0,
        output_limit: int = 0,
    ):
        self.where, self._handle, self._left = where, handle, left
        self.max_frames, self.max_message, self.output_limit = max_frames, max_message, output_limit
        self.dir, dir_fd = shm.make_dir(shm.root(), "unix")
        os.close(dir_fd)
        self.path = os.path.join(self.dir, SOCKET_NAME)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            framing.on_path(self._sock.bind, self.path)
            os.chmod(self.path, 0o600)
            self._sock.listen(128)
            self._sock.setblocking(False)
        except OSError:
            self.close()
            raise
        self._conns: dict[int, _Connection] = {}
        self._by_identity: dict[bytes, _Connection] = {}
        self._ids = itertools.count(1)
        self._poller: zmq.Poller | None = None
        self.refused = 0  # connections of another user, closed at once
        self.evicted = 0  # connections closed for leaving too many replies unread
        self._offer = {"path": self.path, "boot_id": shm.boot_id(), "pidns": shm.pid_ns(),
                       "uid": os.geteuid(), "pid": os.getpid()}  # fmt: skip

    @property
    def clients(self) -> int:
        return len(self._conns)

    def offer(self) -> dict:
        """What a client needs to decide it may use this socket (``hello``'s ``unix``)."""
        return self._offer

    def attach(self, poller: zmq.Poller) -> None:
        """Serve from the shard's own poller (it takes raw descriptors beside sockets)."""
        self._poller = poller
        poller.register(self._sock.fileno(), _POLLIN)

    def serve(self, events: dict) -> None:
        """Handle this turn's events of the listening socket and the connections."""
        for fd, event in events.items():
            if type(fd) is not int:
                continue
            if fd == self._sock.fileno():
                self._accept()
                continue
            conn = self._conns.get(fd)
            if conn is None:
                continue
            if event & _POLLOUT:
                self._flush(conn)
            if event & (_POLLIN | _POLLERR) and fd in self._conns:
                self._read(conn)

    def owns(self, identity: bytes) -> bool:
        """Whether ``identity`` is a Unix connection's (open or closed since)."""
        return len(identity) == IDENTITY_BYTES

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors: the client's connect is refused
                log.warning("shard %s: cannot accept a Unix connection: %s", self.where, exc)
                return
            pid, uid, _ = peer_credentials(sock)
            if uid != os.geteuid():
                self.refused += 1
                log.warning("shard %s: refused a Unix connection of uid %d (pid %d): only "
                            "this shard's user may connect", self.where, uid, pid)  # fmt: skip
                sock.close()
                continue
            sock.setblocking(False)
            identity = b"unix:%d:" % next(self._ids)
            identity += b"\0" * (IDENTITY_BYTES - len(identity))
            conn = _Connection(sock, identity, framing.Reader(sock, self.max_frames,
                                                              self.max_message))  # fmt: skip
            self._conns[conn.fd] = conn
            self._by_identity[identity] = conn
            self._poller.register(conn.fd, _POLLIN)

    def _read(self, conn: _Connection) -> None:
        reader = conn.reader
        try:
            for _ in range(_READS_PER_TURN):
                if reader.fill(_DONTWAIT) == 0:
                    self._drop(conn)
                    return
                while (frames := reader.message()) is not None:
                    self._handle(conn.identity, frames)
                    if conn.fd not in self._conns:  # its reply passed the output limit
                        return
                if reader.drained:  # no read that can only fail: the poller says when more
                    return
        except (BlockingIOError, InterruptedError):
            return
        except ProtocolError as exc:
            log.warning("shard %s: closed a Unix connection that sent %s", self.where, exc)
            self._drop(conn)
        except OSError as exc:  # reset by the peer
            log.debug("shard %s: Unix connection lost: %s", self.where, exc)
            self._drop(conn)

    def send(self, identity: bytes, frames: list) -> None:
        """Send a reply to connection ``identity``; dropped if it has closed."""
        conn = self._by_identity.get(identity)
        if conn is None:
            return
        views = framing.views(frames)
        head = framing.prefix(views)
        buffers = [head, *views]
        size = len(head) + sum(v.nbytes for v in views)
        if conn.queued:
            if self.output_limit and conn.queued + size > self.output_limit:
                self._evict(conn, size)
                return
            conn.out.extend(buffers)
            conn.queued += size
            return
        try:
            sent = framing.send_all(conn.sock, buffers, _DONTWAIT)
        except OSError as exc:  # the peer went: its answer has nowhere to go
            log.debug("shard %s: reply to a closed Unix connection dropped: %s", self.where, exc)
            self._drop(conn)
            return
        if sent < size:
            at, offset = framing.advance(buffers, 0, 0, sent)
            conn.out = [memoryview(buffers[at])[offset:], *buffers[at + 1 :]]
            conn.queued = size - sent
            self._poller.register(conn.fd, _POLLIN | _POLLOUT)

    def _flush(self, conn: _Connection) -> None:
        try:
            sent = framing.send_all(conn.sock, conn.out, _DONTWAIT)
        except OSError:
            self._drop(conn)
            return
        at, offset = framing.advance(conn.out, 0, 0, sent)
        conn.out = conn.out[at:]
        if conn.out and offset:
            conn.out[0] = memoryview(conn.out[0])[offset:]
        conn.queued -= sent
        if not conn.out:
            conn.queued = 0
            self._poller.register(conn.fd, _POLLIN)

    def _evict(self, conn: _Connection, size: int) -> None:
        self.evicted += 1
        log.warning(
            "shard %s: disconnecting a Unix client: %d bytes of replies unread, and the next "
            "(%d bytes) would pass --client-output-limit %d (a client must read its replies)",
            self.where, conn.queued, size, self.output_limit,
        )  # fmt: skip
        self._drop(conn)

    def _drop(self, conn: _Connection) -> None:
        """Close a connection and forget it: its waits go, later replies are dropped."""
        if self._conns.pop(conn.fd, None) is None:
            return
        del self._by_identity[conn.identity]
        self._poller.unregister(conn.fd)
        conn.sock.close()
        conn.out, conn.queued = [], 0
        self._left(conn.identity)

    def close(self) -> None:
        """Close every connection and the listening socket; remove the directory."""
        for conn in list(getattr(self, "_conns", {}).values()):
            conn.sock.close()
        self._conns, self._by_identity = {}, {}
        self._sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)
