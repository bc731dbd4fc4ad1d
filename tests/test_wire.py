"""The wire format: header frames round-trip, and every malformed header is a ProtocolError."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from memstore import wire
from memstore.errors import ProtocolError, StoreFull

# Values msgpack carries (and gives back equal): what a header field may hold.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
headers = st.dictionaries(st.text(max_size=12), values, max_size=8)
request_ids = st.integers(min_value=0, max_value=2**63 - 1)


def _frame(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


# -- round trips -----------------------------------------------------------------------------


@given(req_id=request_ids, op=st.text(min_size=1, max_size=20), fields=headers)
def test_request_round_trip(req_id, op, fields):
    """A request's id, op, extra fields and payload frames come back as they were sent."""
    fields = {k: v for k, v in fields.items() if k not in ("v", "id", "op")}
    frames = wire.request(req_id, op, fields, [b"payload", b""])
    parsed = wire.parse_request(frames)
    assert parsed.id == req_id
    assert parsed.op == op
    assert parsed.payload == [b"payload", b""]
    for key, value in fields.items():
        assert parsed.header[key] == value


@given(req_id=request_ids, fields=headers)
def test_reply_round_trip(req_id, fields):
    """A reply's header decodes with ok=True, the id and every field."""
    fields = {k: v for k, v in fields.items() if k not in ("v", "id", "ok")}
    header_frame, *payload = wire.reply(req_id, fields, [b"x"])
    header = wire.unpack_header(header_frame)
    assert header["ok"] is True
    assert header["id"] == req_id
    assert payload == [b"x"]
    assert {k: header[k] for k in fields} == fields


def test_error_reply_carries_code_and_message():
    """An error reply has ok=False, the error's code and its message."""
    (frame,) = wire.error_reply(7, StoreFull("no room for 'k'"))
    header = wire.unpack_header(frame)
    assert header == {"v": wire.VERSION, "id": 7, "ok": False, "code": "store_full",
                      "msg": "no room for 'k'"}  # fmt: skip


# -- malformed headers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\xc1",  # the one byte msgpack never uses
        b"\x81",  # a map announced, never delivered
        b"not msgpack at all \xff\xfe",
        _frame({"v": 1, "id": 1, "op": "get"}) + b"trailing",
    ],
    ids=["empty", "never-used-byte", "truncated", "garbage", "trailing-bytes"],
)
def test_not_msgpack_is_protocol_error(frame):
    """Bytes that are not exactly one msgpack object are refused."""
    with pytest.raises(ProtocolError, match="msgpack"):
        wire.unpack_header(frame)


@pytest.mark.parametrize("obj", [[1, 1, "get"], "header", 1, None, b"bytes", 2.5])
def test_not_a_map_is_protocol_error(obj):
    """A header that is valid msgpack but not a map is refused."""
    with pytest.raises(ProtocolError, match="map"):
        wire.unpack_header(_frame(obj))


def test_non_string_map_keys_are_protocol_error():
    """Map keys that are not strings (e.g. ints) are refused."""
    with pytest.raises(ProtocolError):
        wire.unpack_header(_frame({1: 1, "id": 1, "op": "get"}))


@pytest.mark.parametrize("version", [None, 0, 2, -1, "1", 1.5, [1], True, 1.0])
def test_wrong_version_is_protocol_error(version):
    """Any version other than the integer VERSION (incl. True and 1.0) is refused."""
    header = {"id": 1, "op": "get"}
    if version is not None:
        header["v"] = version
    with pytest.raises(ProtocolError, match="version"):
        wire.unpack_header(_frame(header))


@pytest.mark.parametrize("req_id", [None, "1", 1.0, [1], True, False])
def test_missing_or_mistyped_id_is_protocol_error(req_id):
    """A header without an integer id (bool is not an int on the wire) is refused."""
    header = {"v": wire.VERSION, "op": "get"}
    if req_id is not None:
        header["id"] = req_id
    with pytest.raises(ProtocolError, match="id"):
        wire.unpack_header(_frame(header))


@pytest.mark.parametrize("op", [None, 1, b"get", ["get"], True])
def test_missing_or_mistyped_op_is_protocol_error(op):
    """A request without a string op is refused, naming the request id."""
    header = {"v": wire.VERSION, "id": 42}
    if op is not None:
        header["op"] = op
    with pytest.raises(ProtocolError, match="42"):
        wire.parse_request([_frame(header)])


def test_empty_message_is_protocol_error():
    """A message with no frames at all is refused."""
    with pytest.raises(ProtocolError):
        wire.parse_request([])


@given(headers)
def test_any_map_is_accepted_or_protocol_error(header):
    """Whatever map arrives, unpacking either succeeds with a valid header or raises
    ProtocolError, never anything else."""
    try:
        parsed = wire.unpack_header(_frame(header))
    except ProtocolError:
        return
    assert parsed["v"] == wire.VERSION and type(parsed["v"]) is int
    assert type(parsed["id"]) is int


@given(st.binary(max_size=64))
def test_any_bytes_are_accepted_or_protocol_error(frame):
    """Arbitrary bytes never raise anything but ProtocolError."""
    try:
        parsed = wire.parse_request([frame])
    except ProtocolError:
        return
    assert isinstance(parsed.op, str)


@given(req_id=request_ids, op=st.text(max_size=5), header=headers)
def test_well_formed_headers_always_parse(req_id, op, header):
    """Every map with v=VERSION, an int id and a str op parses, whatever else it holds."""
    header = {**header, "v": wire.VERSION, "id": req_id, "op": op}
    parsed = wire.parse_request([_frame(header)])
    assert (parsed.id, parsed.op) == (req_id, op)


# -- field -----------------------------------------------------------------------------------


def test_field_returns_value_of_right_type():
    """A present field of the asked type is returned as is."""
    header = {"op": "put", "key": "k", "n": 3, "t": 1.5, "keys": ["a"]}
    assert wire.field(header, "n", int) == 3
    assert wire.field(header, "keys", list) == ["a"]
    assert wire.field(header, "t", (int, float)) == 1.5
    assert wire.field(header, "n", (int, float)) == 3


def test_field_missing_is_protocol_error_naming_field_op_and_key():
    """A missing required field is a ProtocolError naming the field, the op and the key."""
    with pytest.raises(ProtocolError) as info:
        wire.field({"op": "put", "key": "snap"}, "metas", list)
    message = str(info.value)
    assert "metas" in message and "put" in message and "snap" in message


def test_field_default_when_missing():
    """A missing optional field gives its default."""
    assert wire.field({"op": "wait"}, "n", int, 0) == 0
    assert wire.field({"op": "wait"}, "x", str, None) is None


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("3", int),
        (3.0, int),
        (True, int),
        (False, int),
        (None, int),
        (3, str),
        (b"k", str),
        ({"a": 1}, list),
        ([1], dict),
        ("1.5", (int, float)),
    ],
)
def test_field_wrong_type_is_protocol_error(value, kind):
    """A field of the wrong type is refused; bool does not pass for int."""
    with pytest.raises(ProtocolError, match="'f'"):
        wire.field({"op": "x", "f": value}, "f", kind)


def test_field_present_but_mistyped_with_default_is_protocol_error():
    """A default does not excuse a field that is present with the wrong type."""
    with pytest.raises(ProtocolError):
        wire.field({"op": "wait", "n": "3"}, "n", int, 0)


def test_bool_is_not_a_number_field():
    """msgpack keeps bool apart from numbers; `timeout: true` must not mean 1 second."""
    with pytest.raises(ProtocolError, match="timeout"):
        wire.field({"op": "wait", "timeout": True}, "timeout", (int, float))
    assert wire.field({"op": "wait", "timeout": 2.5}, "timeout", (int, float)) == 2.5
    assert wire.field({"op": "get", "fetch": True}, "fetch", bool) is True
