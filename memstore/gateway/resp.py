"""RESP2: an incremental request parser and reply encoders, bounded against bad input.

Requests are arrays of bulk strings (what every Redis client sends) or inline commands
(``PING\\r\\n``, what a person types). Replies are lists of ``bytes``/``memoryview`` chunks,
so a large blob goes out as it came from the store, without being joined into one buffer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

#: Redis's own limits: ``proto-max-bulk-len`` and the longest inline request.
MAX_BULK = 512 * 1024 * 1024
MAX_ARGS = 1024 * 1024
MAX_INLINE = 64 * 1024


class RespError(ValueError):
    """The client sent bytes that are not RESP; the connection must be closed."""


class Null:
    """The RESP2 null bulk string (``$-1``)."""


NULL = Null()


class Status(str):
    """A simple-string reply (``+OK``)."""


class Error(str):
    """An error reply; the text starts with its code (``ERR``, ``WRONGTYPE``)."""


class Map(dict):
    """A RESP3 map (``%``): only ``HELLO 3``'s reply; every other reply is RESP2, which a
    RESP3 client reads as well."""


OK = Status("OK")


class Parser:
    """Feed bytes in, take complete commands (lists of ``bytes``) out."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._args: list[bytes] | None = None  # the array being read
        self._count = 0

    def feed(self, data: bytes) -> None:
        if self._pos > 65536 and self._pos * 2 > len(self._buf):
            del self._buf[: self._pos]  # consumed bytes: drop them now and then, not per read
            self._pos = 0
        self._buf += data

    def commands(self) -> Iterator[list[bytes]]:
        """Every command complete so far; raises :class:`RespError` on malformed input."""
        while True:
            command = self._next()
            if command is None:
                return
            if command:
                yield command

    def _line(self, limit: int) -> bytes | None:
        end = self._buf.find(b"\r\n", self._pos, self._pos + limit + 2)
        if end < 0:
            if len(self._buf) - self._pos > limit + 1:
                raise RespError("too big inline request" if limit == MAX_INLINE else "bad header")
            return None
        line = bytes(self._buf[self._pos : end])
        self._pos = end + 2
        return line

    def _next(self) -> list[bytes] | None:
        if self._args is None:
            if self._pos >= len(self._buf):
                return None
            if self._buf[self._pos] != ord("*"):
                line = self._line(MAX_INLINE)
                return None if line is None else line.split()
            mark = self._pos
            line = self._line(32)
            if line is None:
                return None
            count = _int(line[1:], "multibulk length")
            if count > MAX_ARGS:
                self._pos = mark
                raise RespError("invalid multibulk length")
            if count <= 0:
                return []
            self._args, self._count = [], count
        while len(self._args) < self._count:
            mark = self._pos
            if self._pos >= len(self._buf):
                return None
            if self._buf[self._pos] != ord("$"):
                raise RespError(f"expected '$', got '{chr(self._buf[self._pos])}'")
            line = self._line(32)
            if line is None:
                return None
            size = _int(line[1:], "bulk length")
            if not 0 <= size <= MAX_BULK:
                raise RespError("invalid bulk length")
            if len(self._buf) - self._pos < size + 2:
                self._pos = mark  # read the header again once the whole bulk is here
                return None
            end = self._pos + size
            if self._buf[end : end + 2] != b"\r\n":
                raise RespError("bulk string not followed by CRLF")
            self._args.append(bytes(self._buf[self._pos : end]))
            self._pos = end + 2
        args, self._args = self._args, None
        return args

    def pending(self) -> int:
        """Bytes received but not yet part of a complete command."""
        return len(self._buf) - self._pos


def _int(text: bytes, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise RespError(f"invalid {what}") from None


def encode(value: Any) -> list[bytes | memoryview]:
    """The RESP2 encoding of ``value`` as chunks to write in order."""
    out: list[bytes | memoryview] = []
    _encode(value, out)
    return out


def _encode(value: Any, out: list) -> None:
    if isinstance(value, Status):
        out.append(b"+" + value.encode() + b"\r\n")
    elif isinstance(value, Error):
        out.append(b"-" + value.replace("\r", " ").replace("\n", " ").encode() + b"\r\n")
    elif value is None or isinstance(value, Null):
        out.append(b"$-1\r\n")
    elif isinstance(value, bool):
        out.append(b":1\r\n" if value else b":0\r\n")
    elif isinstance(value, int):
        out.append(b":%d\r\n" % value)
    elif isinstance(value, str):
        _encode(value.encode(), out)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        size = memoryview(value).nbytes
        out.append(b"$%d\r\n" % size)
        out.append(value)
        out.append(b"\r\n")
    elif isinstance(value, float):
        _encode(repr(value), out)
    elif isinstance(value, Map):
        out.append(b"%%%d\r\n" % len(value))
        for key, item in value.items():
            _encode(key, out)
            _encode(item, out)
    elif isinstance(value, (list, tuple)):
        out.append(b"*%d\r\n" % len(value))
        for item in value:
            _encode(item, out)
    else:
        raise TypeError(f"no RESP encoding for {type(value).__name__}")
