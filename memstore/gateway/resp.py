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
#: Redis's ``client-query-buffer-limit`` default: most bytes one connection's unfinished
#: commands may hold.
DEFAULT_QUERY_LIMIT = 1024 * 1024 * 1024
#: A bulk this large is read into a buffer of its own and handed out without a copy.
BIG_BULK = 1024 * 1024


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
    RESP3 client reads as well, except :class:`Pairs`."""


class Pairs(list):
    """``[[key, value], ...]``: an array of pairs in RESP2 and a map in RESP3, as Redis
    answers ``XREAD`` (a RESP3 client such as redis-py 8 parses that reply as a map)."""


OK = Status("OK")


class LimitExceeded(RespError):
    """A connection's unfinished commands would hold more than its query buffer limit."""


class Parser:
    """Feed bytes in, take complete commands (lists of ``bytes``) out.

    ``limit`` caps the bytes one connection's unfinished commands may hold, with ``extra``
    held elsewhere (Redis's ``client-query-buffer-limit``): :class:`LimitExceeded` is raised
    as soon as a bulk header announces more, or more arrives. ``max_args``/``max_bulk``
    may be lowered (the server does before ``AUTH``). A bulk of :data:`BIG_BULK` bytes or
    more is read into its own buffer and handed out as that ``bytearray``: never copied,
    so the parser holds about what it received, once.
    """

    def __init__(self, limit: int = DEFAULT_QUERY_LIMIT) -> None:
        self.limit = limit
        self.extra = 0  # bytes the connection holds elsewhere (a MULTI queue), counted too
        self.max_args, self.max_bulk = MAX_ARGS, MAX_BULK
        self._buf = bytearray()
        self._pos = 0
        self._args: list[bytes] | None = None  # the array being read
        self._count = 0
        self._args_bytes = 0  # held by self._args
        self._bulk: bytearray | None = None  # a big bulk being read, with its CRLF
        self._bulk_size = 0

    def feed(self, data: bytes) -> None:
        """Take ``data``; raises :class:`LimitExceeded` when the command grows past limit."""
        view = memoryview(data)
        if self._bulk is not None:
            take = self._bulk_size + 2 - len(self._bulk)
            self._bulk += view[:take]
            view = view[take:]
        if self._pos:
            del self._buf[: self._pos]  # consumed bytes: free them before taking more
            self._pos = 0
        self._buf += view
        self._check(self.held())

    def held(self) -> int:
        """Bytes this parser holds: received, not yet handed out as a command."""
        big = 0 if self._bulk is None else len(self._bulk)
        return len(self._buf) - self._pos + self._args_bytes + big

    def pending(self) -> int:
        """Bytes received but not yet part of a complete command."""
        return self.held()

    def _check(self, size: int) -> None:
        if size + self.extra > self.limit:
            raise LimitExceeded(
                f"query buffer limit: this connection's unfinished commands would hold "
                f"{size + self.extra} bytes, over the gateway's --query-buffer-limit of "
                f"{self.limit}; closing it"
            )

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
            count = self._array_header()
            if count is None:
                return None
            if count <= 0:
                return []
        while len(self._args) < self._count:
            arg = self._bulk_arg()
            if arg is None:
                return None
            self._args.append(arg)
            self._args_bytes += len(arg)
        args, self._args, self._args_bytes = self._args, None, 0
        return args

    def _array_header(self) -> int | None:
        """Read ``*N``: N (an array of N > 0 items begins), or None until the line is here."""
        mark = self._pos
        line = self._line(32)
        if line is None:
            return None
        count = _int(line[1:], "multibulk length")
        if count > self.max_args:
            self._pos = mark
            unauthenticated = self.max_args < MAX_ARGS
            raise RespError(
                f"{'unauthenticated' if unauthenticated else 'invalid'} multibulk length"
            )
        if count > 0:
            self._args, self._count = [], count
        return count

    def _bulk_arg(self) -> bytes | bytearray | None:
        """The next bulk string of the array, or None until it has all arrived."""
        if self._bulk is not None:
            return self._big_done()
        mark = self._pos
        if self._pos >= len(self._buf):
            return None
        if self._buf[self._pos] != ord("$"):
            raise RespError(f"expected '$', got '{chr(self._buf[self._pos])}'")
        line = self._line(32)
        if line is None:
            return None
        size = _int(line[1:], "bulk length")
        if not 0 <= size <= self.max_bulk:
            unauthenticated = self.max_bulk < MAX_BULK
            raise RespError(f"{'unauthenticated' if unauthenticated else 'invalid'} bulk length")
        self._check(self._args_bytes + size + 2)
        if len(self._buf) - self._pos >= size + 2:
            end = self._pos + size
            if self._buf[end : end + 2] != b"\r\n":
                raise RespError("bulk string not followed by CRLF")
            arg = _copy(self._buf, self._pos, end)
            self._pos = end + 2
            return arg
        if size < BIG_BULK:
            self._pos = mark  # read the header again once the whole bulk is here
            return None
        self._bulk, self._bulk_size = _copy_out(self._buf, self._pos), size
        self._pos = len(self._buf)
        return None

    def _big_done(self) -> bytearray | None:
        """The big bulk being read, once it and its CRLF are all here."""
        big, size = self._bulk, self._bulk_size
        if len(big) < size + 2:
            return None
        if big[size:] != b"\r\n":
            raise RespError("bulk string not followed by CRLF")
        del big[size:]
        self._bulk = None
        return big


def _copy(buf: bytearray, start: int, end: int) -> bytes:
    """``buf[start:end]`` as bytes, copied once (slicing a bytearray would copy twice)."""
    with memoryview(buf) as view, view[start:end] as part:
        return bytes(part)


def _copy_out(buf: bytearray, start: int) -> bytearray:
    """``buf[start:]`` as a new bytearray (the start of a big bulk)."""
    with memoryview(buf) as view, view[start:] as part:
        return bytearray(part)


def _int(text: bytes, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise RespError(f"invalid {what}") from None


def encode(value: Any, resp3: bool = False) -> list[bytes | memoryview]:
    """The RESP2 encoding of ``value`` as chunks to write in order (with ``resp3``, for a
    connection that said ``HELLO 3``, :class:`Pairs` as a map)."""
    out: list[bytes | memoryview] = []
    _encode(value, out, resp3)
    return out


def _encode(value: Any, out: list, resp3: bool = False) -> None:
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
    elif isinstance(value, Pairs) and resp3:
        _encode(Map(value), out, resp3)
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
            _encode(key, out, resp3)
            _encode(item, out, resp3)
    elif isinstance(value, (list, tuple)):
        out.append(b"*%d\r\n" % len(value))
        for item in value:
            _encode(item, out, resp3)
    else:
        raise TypeError(f"no RESP encoding for {type(value).__name__}")
