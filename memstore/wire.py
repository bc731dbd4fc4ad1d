"""The message format shared by clients and shards.

A message is a list of ZeroMQ frames: one *header* frame (a msgpack map) followed by zero or
more raw *payload* frames (tensor bytes, never re-encoded). Requests carry
``{"v": VERSION, "id": int, "op": str, ...}``; replies carry ``{"v", "id", "ok": True, ...}``
or ``{"v", "id", "ok": False, "code": str, "msg": str}``. A ROUTER prepends the peer's
routing id on receipt; this module never sees it. See docs/protocol.md.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgpack

from memstore.errors import MemstoreError, ProtocolError

VERSION = 1

_pack = msgpack.Packer(use_bin_type=True).pack


class Request(NamedTuple):
    """A decoded request: its id, operation, header fields and payload frames."""

    id: int
    op: str
    header: dict
    payload: list


def pack(header: dict) -> bytes:
    """Encode a header map."""
    return _pack(header)


def request(req_id: int, op: str, fields: dict | None = None, payload: list = ()) -> list:
    """Frames of one request."""
    header = {"v": VERSION, "id": req_id, "op": op}
    if fields:
        header.update(fields)
    return [_pack(header), *payload]


def reply(req_id: int, fields: dict | None = None, payload: list = ()) -> list:
    """Frames of a successful reply."""
    header = {"v": VERSION, "id": req_id, "ok": True}
    if fields:
        header.update(fields)
    return [_pack(header), *payload]


def error_reply(req_id: int, exc: MemstoreError) -> list:
    """Frames of an error reply: the error's code and message travel, the class is rebuilt."""
    return [_pack({"v": VERSION, "id": req_id, "ok": False, "code": exc.code, "msg": str(exc)})]


def unpack_header(frame: Any) -> dict:
    """Decode and check a header frame; anything malformed is a :class:`ProtocolError`."""
    try:
        header = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except Exception as exc:
        raise ProtocolError(f"header frame is not valid msgpack: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError(f"header must be a msgpack map, got {type(header).__name__}")
    version = header.get("v")
    if type(version) is not int or version != VERSION:  # True == 1 and 1.0 == 1: not a version
        raise ProtocolError(
            f"protocol version {header.get('v')!r} is not supported (this side speaks {VERSION})"
        )
    if type(header.get("id")) is not int:  # bool is an int to Python, not to msgpack
        raise ProtocolError("header has no integer request id")
    return header


def parse_request(frames: list) -> Request:
    """Split received frames into a :class:`Request`, validating the header."""
    if not frames:
        raise ProtocolError("empty message")
    header = unpack_header(frames[0])
    op = header.get("op")
    if not isinstance(op, str):
        raise ProtocolError(f"request {header['id']} has no operation name")
    return Request(header["id"], op, header, list(frames[1:]))


def field(header: dict, name: str, kind: type | tuple, default: Any = ...) -> Any:
    """One header field, type-checked; a missing or mistyped field is a :class:`ProtocolError`.

    ``bool`` is not accepted where a number is asked for, since msgpack keeps them apart.
    """
    value = header.get(name, default)
    if value is ...:
        raise ProtocolError(f"{_where(header)}: missing field {name!r}")
    if value is default and default is not ...:
        return value
    kinds = kind if isinstance(kind, tuple) else (kind,)
    wants_number = bool({int, float} & set(kinds)) and bool not in kinds
    if not isinstance(value, kind) or (wants_number and isinstance(value, bool)):
        expected = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ProtocolError(
            f"{_where(header)}: field {name!r} must be {expected}, got {type(value).__name__}"
        )
    return value


def _where(header: dict) -> str:
    key = header.get("key")
    op = header.get("op", "?")
    return f"{op} {key!r}" if isinstance(key, str) else f"{op}"
