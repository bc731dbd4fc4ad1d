"""Per-client output accounting: the bytes of replies a client has not taken yet.

The shard's ROUTER queues replies without a high-water mark (a slow reader must never lose
one), so a client that sends requests and never reads the answers would otherwise make the
shard hold every reply. Each peer's replies leave libzmq's queue in order, so one
:class:`zmq.MessageTracker` now and then tells how far a peer has read: a tracked reply
that libzmq has released means every earlier reply to that peer is gone too. Large replies
are always tracked, small ones once per :data:`TRACK_EVERY` bytes, so the estimate is high
by less than that and costs nothing on the small-reply path.

A peer whose unread replies would pass the limit is disconnected: pyzmq offers no
``disconnect_peer`` on a ROUTER, so the connection's socket is shut down (``shutdown(2)``
on a duplicate of its descriptor, read from the request's ``SRCFD``); libzmq sees the
connection end, drops its queue (freeing the replies) and reports it to the monitor.
"""

from __future__ import annotations

import collections
import logging
import os
import socket

import zmq

log = logging.getLogger(__name__)

#: Replies at least this large carry their own tracker (they go without a copy anyway).
TRACK_LARGE = 64 * 1024
#: A small reply is tracked once this many untracked bytes went to its peer since the last.
TRACK_EVERY = 64 * 1024
#: libzmq's bookkeeping per queued frame (a ``zmq_msg_t`` plus its allocation), counted too.
FRAME_COST = 64
#: Identities disconnected recently, whose further replies are dropped (bounded).
_EVICTED_MAX = 4096


class _Peer:
    __slots__ = ("acked", "fd", "sent", "trackers")

    def __init__(self, fd: int):
        self.fd = fd
        self.sent = 0  # bytes queued to this peer, ever
        self.acked = 0  # of those, bytes libzmq is known to have released
        self.trackers: collections.deque = collections.deque()  # (tracker, sent mark)

    def pending(self) -> int:
        trackers = self.trackers
        while trackers and trackers[0][0].done:
            self.acked = trackers.popleft()[1]
        return self.sent - self.acked


class OutputLimits:
    """The unread-reply bytes of each connected client, against ``limit`` (0: no limit).

    Args:
        limit: most bytes of replies one client may leave unread; one reply always goes
            (a single get larger than the limit is not an offence), the next is refused.
        where: the shard's address, for log lines.
    """

    def __init__(self, limit: int, where: str):
        self.limit = limit
        self.where = where
        self.evicted = 0
        self._peers: dict[bytes, _Peer] = {}
        self._by_fd: dict[int, set[bytes]] = {}
        self._gone: collections.OrderedDict[bytes, None] = collections.OrderedDict()

    def admit(self, identity: bytes, frames: list, source: object) -> list | None:
        """The frames to send to ``identity`` (one tracked if it must be), or None when the
        client is, or has just been, disconnected for leaving too much unread.

        ``source`` tells which connection the client is on: a frame it sent, or a descriptor.
        """
        if not self.limit:
            return frames
        if identity in self._gone:
            return None
        size = sum(len(f) for f in frames) + FRAME_COST * (len(frames) + 1)
        peer = self._peers.get(identity)
        if peer is None:
            fd = source if isinstance(source, int) else source_fd(source)
            peer = self._peers[identity] = _Peer(fd)
            if peer.fd >= 0:
                self._by_fd.setdefault(peer.fd, set()).add(identity)
        pending = peer.pending()
        if pending and pending + size > self.limit:
            self._evict(identity, peer, pending, size)
            return None
        untracked = peer.sent - (peer.trackers[-1][1] if peer.trackers else peer.acked)
        peer.sent += size
        if size >= TRACK_LARGE or untracked + size >= TRACK_EVERY:
            last = zmq.Frame(frames[-1], track=True, copy=False)
            peer.trackers.append((last.tracker, peer.sent))
            frames = [*frames[:-1], last]
        elif not peer.trackers and peer.fd < 0 and pending == 0:
            del self._peers[identity]  # inproc: no disconnect event will clear it
        return frames

    def closed(self, fd: int) -> None:
        """A connection ended (the monitor said so): forget its clients."""
        for identity in self._by_fd.pop(fd, ()):
            self._peers.pop(identity, None)

    def _evict(self, identity: bytes, peer: _Peer, pending: int, size: int) -> None:
        self.evicted += 1
        log.warning(
            "shard %s: disconnecting client %s: %d bytes of replies unread, and the next "
            "(%d bytes) would pass --client-output-limit %d (a client must read its replies)",
            self.where, identity.hex(), pending, size, self.limit,
        )  # fmt: skip
        self._gone[identity] = None
        while len(self._gone) > _EVICTED_MAX:
            self._gone.popitem(last=False)
        self._peers.pop(identity, None)
        if peer.fd >= 0:
            self._by_fd.get(peer.fd, set()).discard(identity)
            _shutdown(peer.fd)


def _shutdown(fd: int) -> None:
    """End the connection on ``fd`` under libzmq: it notices, and closes it itself."""
    try:
        dup = socket.socket(fileno=os.dup(fd))
    except OSError as exc:
        log.warning("cannot disconnect descriptor %d: %s", fd, exc)
        return
    try:
        dup.shutdown(socket.SHUT_RDWR)
    except OSError as exc:  # already gone
        log.debug("shutdown of descriptor %d: %s", fd, exc)
    finally:
        dup.close()


def source_fd(frame: object) -> int:
    """The descriptor of the connection ``frame`` came on; -1 over inproc (no descriptor,
    no monitor events) or for frames that did not come from a socket."""
    if not isinstance(frame, zmq.Frame):
        return -1
    try:
        return frame.get(zmq.SRCFD)
    except zmq.ZMQError:  # inproc messages have none
        return -1
