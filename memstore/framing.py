"""memstore messages on a byte stream: the same frames as over ZeroMQ, length-prefixed.

The same-node direct path (a shard's Unix stream socket, ``memstore/server/unix.py`` and
``memstore/client/unix.py``) carries the messages of :mod:`memstore.wire` unchanged; a
stream has no message boundaries, so each message is preceded by its frame count and the
length of each frame::

    <u32 count> <u64 length> * count  <frame bytes> * count      (little-endian)

Writing sends the prefix and the frames in one ``sendmsg`` (no copy of the frames).
Reading fills one preallocated buffer with ``recv_into``; frames of :data:`OWN_BUFFER`
bytes or more are received straight into a buffer of their own (kept by a shard as the
stored value, wrapped by a client as the array), smaller ones are copied out as ``bytes``.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable
from typing import Any

from memstore.errors import ProtocolError

_COUNT = struct.Struct("<I")
_LENGTH = 8
#: Frames this large are received into a buffer of their own, never copied (a stored value
#: below it is copied anyway: ``memstore.server.store.COPY_BELOW``).
OWN_BUFFER = 16 * 1024
#: The reading buffer's size: a reply to a batch of small requests arrives in one read.
BUFFER_BYTES = 256 * 1024
#: ``sendmsg`` takes at most this many buffers at once (Linux's ``IOV_MAX``).
_IOV_MAX = 1024


#: The longest path a Unix socket address holds (Linux's ``sun_path``, less its NUL).
SUN_PATH_MAX = 107


def on_path(action: Callable[[str], None], path: str) -> None:
    """``action(path)`` (a socket's ``bind`` or ``connect``), also where ``path`` is longer
    than a socket address holds (a deep ``MEMSTORE_SHM_DIR``): then through the directory's
    descriptor, ``/proc/self/fd/<n>/<name>``, which the kernel resolves to the same file."""
    if len(os.fsencode(path)) <= SUN_PATH_MAX:
        action(path)
        return
    directory, name = os.path.split(path)
    fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        action(f"/proc/self/fd/{fd}/{name}")
    finally:
        os.close(fd)


def views(frames: list) -> list[memoryview]:
    """Frames as flat byte views: what ``sendmsg`` takes and what the prefix counts."""
    out = []
    for frame in frames:
        view = memoryview(frame)
        out.append(view if view.ndim == 1 and view.itemsize == 1 else view.cast("B"))
    return out


def prefix(views: list[memoryview]) -> bytes:
    """The prefix of one message made of ``views``."""
    return struct.pack(f"<I{len(views)}Q", len(views), *[v.nbytes for v in views])


def send_all(sock: socket.socket, buffers: list, flags: int = 0) -> int:
    """Send ``buffers`` with as few ``sendmsg`` calls as the kernel allows; return the bytes
    sent. With ``MSG_DONTWAIT`` it may stop early (``BlockingIOError`` is not raised: the
    count says how far it got); otherwise a timeout raises ``TimeoutError``."""
    sent_total, at, offset = 0, 0, 0
    while at < len(buffers):
        batch = buffers[at : at + _IOV_MAX]
        if offset:
            batch[0] = batch[0][offset:]
        try:
            sent = sock.sendmsg(batch, (), flags)
        except BlockingIOError:
            if flags & socket.MSG_DONTWAIT:
                return sent_total
            raise TimeoutError("the peer does not read") from None
        sent_total += sent
        at, offset = advance(buffers, at, offset, sent)
    return sent_total


def advance(buffers: list, at: int, offset: int, sent: int) -> tuple[int, int]:
    """Where sending stands after ``sent`` more bytes: (buffer index, offset in it)."""
    while sent:
        left = memoryview(buffers[at]).nbytes - offset
        if sent < left:
            return at, offset + sent
        sent -= left
        at, offset = at + 1, 0
    while at < len(buffers) and memoryview(buffers[at]).nbytes == offset:  # empty frames
        at, offset = at + 1, 0
    return at, offset


class Reader:
    """Messages reassembled from one stream socket.

    Args:
        sock: the socket read from.
        max_frames: most frames a message may have (more: ``ProtocolError``).
        max_bytes: most bytes one frame may hold (0: no limit; more: ``ProtocolError``), as
            libzmq's ``MAXMSGSIZE``: a whole message over a shard's ``--max-message`` is
            refused by the shard, with an answer.
        writable: small frames as ``bytearray`` (a client's arrays are its own to write),
            else ``bytes`` (what a shard stores without another copy).
    """

    def __init__(
        self, sock: socket.socket, max_frames: int, max_bytes: int = 0, writable: bool = False
    ):
        self.sock = sock
        self._small = bytearray if writable else bytes
        self.max_frames, self.max_bytes = max_frames, max_bytes
        self.buf = bytearray(BUFFER_BYTES)
        self.view = memoryview(self.buf)
        self.start = self.end = 0
        self.lengths: list[int] | None = None  # the message being read, once its prefix is in
        self.frames: list = []
        self.own: Any = None  # a large frame being received into its own buffer
        self.filled = 0
        self.drained = False  # the last fill read less than it had room for

    def fill(self, flags: int = 0) -> int:
        """One ``recv_into`` (blocking unless ``flags`` say otherwise): the bytes read, 0 at
        the end of the stream. ``BlockingIOError`` when nothing is there to read.
        ``drained`` says whether it read less than it had room for: the socket held no more
        then, so a poller, not another read, should say when more comes."""
        if self.own is not None and self.filled < len(self.own):
            room = memoryview(self.own)[self.filled :]
            n = self.sock.recv_into(room, 0, flags)
            self.filled += n
        else:
            if self.start == self.end:
                self.start = self.end = 0
            elif self.end == len(self.buf):
                self._compact()
            room = self.view[self.end :]
            n = self.sock.recv_into(room, 0, flags)
            self.end += n
        self.drained = n < len(room)
        return n

    def message(self) -> list | None:
        """The next whole message read so far (its frames), or None until more is read.

        Raises:
            ProtocolError: a message over the frame or byte limits (the stream is unusable).
        """
        while True:
            if self.own is not None:
                if self.filled < len(self.own):
                    return None
                self.frames.append(self.own)
                self.own = None
            if self.lengths is None and not self._read_prefix():
                return None
            if len(self.frames) == len(self.lengths):
                frames, self.frames, self.lengths = self.frames, [], None
                return frames
            if not self._take_frame(self.lengths[len(self.frames)]):
                return None

    def _read_prefix(self) -> bool:
        available = self.end - self.start
        if available < _COUNT.size:
            return False
        (count,) = _COUNT.unpack_from(self.buf, self.start)
        if not 0 < count <= self.max_frames:
            raise ProtocolError(f"a message of {count} frames (at most {self.max_frames})")
        size = _COUNT.size + _LENGTH * count
        if available < size:
            if size > len(self.buf):  # a long prefix (many frames): the buffer grows for it
                self._grow(size)
            return False
        lengths = list(struct.unpack_from(f"<{count}Q", self.buf, self.start + _COUNT.size))
        largest = max(lengths)
        if self.max_bytes and largest > self.max_bytes:
            raise ProtocolError(f"a frame of {largest} bytes (at most {self.max_bytes})")
        self.start += size
        self.lengths = lengths
        return True

    def _take_frame(self, length: int) -> bool:
        """Take the next frame out of the buffer if it is all there (a large one starts its
        own buffer with what is there: the rest is received into it)."""
        available = self.end - self.start
        if length >= OWN_BUFFER:
            own = bytearray(length)
            taken = min(available, length)
            own[:taken] = self.view[self.start : self.start + taken]
            self.start += taken
            self.own, self.filled = own, taken
            return True
        if available < length:
            if self.start + length > len(self.buf):
                self._compact()
            return False
        self.frames.append(self._small(self.view[self.start : self.start + length]))
        self.start += length
        return True

    def _compact(self) -> None:
        """Move the unread bytes to the buffer's start, making room behind them."""
        unread = self.end - self.start
        self.view[:unread] = self.view[self.start : self.end]  # memmove: they may overlap
        self.start, self.end = 0, unread

    def _grow(self, size: int) -> None:
        self._compact()
        self.view.release()
        self.buf.extend(bytes(size - len(self.buf)))
        self.view = memoryview(self.buf)
