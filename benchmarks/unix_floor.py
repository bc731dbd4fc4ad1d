"""The plain-socket floor: the least a Python store on a Unix stream socket can cost.

The same-node direct path (issue 24) replaced ZeroMQ by a plain Unix socket on one node, so
its floor is a plain socket too: a Python server, one thread per connection, that keeps a
put's bytes under its key and sends them back on a get. Requests are length-prefixed
(``<op:1><key length:4><data length:8>``, then key and data), replies too (``<length:8>``,
then data); both sides read with ``recv_into`` into a buffer of the right size and write
with one ``sendmsg``. No framing of several frames, no header encoding, no validation:
what memstore's Unix path does on top of this is its own cost.

``python -m benchmarks.floor --bind unix:///path/to/socket`` serves one.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import zlib
from collections.abc import Callable

import numpy as np

SCHEME = "unix://"
PUT, GET = b"p", b"g"
_REQUEST = struct.Struct("<cIQ")
_REPLY = struct.Struct("<Q")


def _recv_exactly(sock: socket.socket, size: int) -> bytearray:
    """``size`` bytes read with ``recv_into`` (no copy after the kernel's)."""
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            raise ConnectionError("the peer closed the connection")
        got += n
    return buffer


def _send_all(sock: socket.socket, buffers: list) -> None:
    """One ``sendmsg`` for the whole message, more only where the kernel took part of it."""
    views = [memoryview(b).cast("B") for b in buffers]
    while views:
        sent = sock.sendmsg(views)
        while views and sent >= views[0].nbytes:
            sent -= views.pop(0).nbytes
        if sent:
            views[0] = views[0][sent:]


def _serve_connection(sock: socket.socket, store: dict) -> None:
    with sock:
        try:
            while True:
                op, key_length, data_length = _REQUEST.unpack(_recv_exactly(sock, _REQUEST.size))
                key = bytes(_recv_exactly(sock, key_length))
                if op == PUT:
                    store[key] = _recv_exactly(sock, data_length)
                    sock.sendall(_REPLY.pack(0))
                else:
                    data = store.get(key, b"")
                    _send_all(sock, [_REPLY.pack(len(data)), data])
        except (ConnectionError, struct.error):
            return


def serve(path: str, ready: Callable[[str], None]) -> None:
    """Listen at ``path``; a thread per connection; ``ready(address)`` once listening."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if os.path.exists(path):
        os.unlink(path)
    listener.bind(path)
    listener.listen(64)
    ready(SCHEME + path)
    store: dict[bytes, bytearray] = {}
    while True:
        sock, _ = listener.accept()
        threading.Thread(target=_serve_connection, args=(sock, store), daemon=True).start()


class UnixFloorClient:
    """One connection per floor server; keys pick a server by hash, as the pyzmq floor's."""

    def __init__(self, addresses: list[str], timeout: float = 60.0):
        self._sockets = []
        for address in addresses:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(address[len(SCHEME) :])
            self._sockets.append(sock)

    def _socket(self, key: bytes) -> socket.socket:
        return self._sockets[zlib.crc32(key) % len(self._sockets)]

    @staticmethod
    def _send(sock: socket.socket, op: bytes, key: bytes, data=b"") -> None:
        view = memoryview(data).cast("B")
        _send_all(sock, [_REQUEST.pack(op, len(key), view.nbytes), key, view])

    @staticmethod
    def _reply(sock: socket.socket) -> bytearray:
        (length,) = _REPLY.unpack(_recv_exactly(sock, _REPLY.size))
        return _recv_exactly(sock, length)

    def put(self, key: str, array: np.ndarray) -> None:
        k = key.encode()
        sock = self._socket(k)
        self._send(sock, PUT, k, array)
        self._reply(sock)

    def get(self, key: str, dtype: np.dtype) -> np.ndarray:
        k = key.encode()
        sock = self._socket(k)
        self._send(sock, GET, k)
        return np.frombuffer(self._reply(sock), dtype=dtype)

    def put_many(self, keys: list[str], array: np.ndarray) -> None:
        """Pipelined puts: send them all, then read every answer (8 bytes each)."""
        counts = [0] * len(self._sockets)
        for key in keys:
            k = key.encode()
            sock = self._socket(k)
            self._send(sock, PUT, k, array)
            counts[self._sockets.index(sock)] += 1
        for sock, count in zip(self._sockets, counts, strict=True):
            for _ in range(count):
                self._reply(sock)

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets = []
