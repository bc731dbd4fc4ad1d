"""docs/protocol.md against a real shard: the ops its tables list, the error codes and the
reply fields it names.

Only the shard's wire answers and public names are used (a raw DEALER, no memstore Client,
no private module names), so the checks hold wherever the handlers live.
"""

from __future__ import annotations

import re
from pathlib import Path

import msgpack
import pytest
import zmq

import memstore
from memstore import errors

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
META = {"dtype": "|u1", "shape": [4], "order": "C"}
#: A stream step's data key (the prefix the shard asks of them).
STEP = "\x00step\x00" + "0" * 32
#: A name no shard will ever serve.
MADE_UP = "no_such_op_xyz"


# -- the document ---------------------------------------------------------------------------


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _tables() -> list[tuple[list[str], list[list[str]]]]:
    """Each markdown table of the doc: (header cells, rows of cells)."""
    tables, block = [], []
    for line in [*DOC.read_text().splitlines(), ""]:
        if line.startswith("|"):
            block.append(line)
            continue
        if block:
            header = _cells(block[0])
            assert set(block[1]) <= set("|-: "), f"table without a separator row: {block[0]}"
            rows = [_cells(row) for row in block[2:]]
            for row in rows:  # a '|' inside a cell would shift the columns
                assert len(row) == len(header), f"{DOC.name}: row has {len(row)} cells: {row}"
            tables.append((header, rows))
            block = []
    return tables


def _names(cell: str) -> list[str]:
    """The `names` a cell lists (quoted strings such as `"batch"` are not names)."""
    return re.findall(r"`([a-z_]+)`", cell)


def _rows(first_column: str) -> list[list[str]]:
    """Rows of every table whose first header cell is ``first_column``."""
    return [row for header, rows in _tables() if header[0] == first_column for row in rows]


def doc_ops() -> list[str]:
    """The ops of the doc's op tables, in their order (a row may name several)."""
    ops = [op for row in _rows("op") for op in _names(row[0])]
    assert ops, f"no op table (first column 'op') in {DOC}"
    return ops


def doc_reply_fields(op: str) -> set[str]:
    """Every `name` in the reply column of ``op``'s row."""
    for header, rows in _tables():
        if header[0] == "op":
            for row in rows:
                if op in _names(row[0]):
                    return set(_names(row[header.index("reply")]))
    raise AssertionError(f"{DOC.name} has no row for op {op!r}")


# -- a raw connection to one shard --------------------------------------------------------------


class Raw:
    """A DEALER speaking the protocol by hand."""

    def __init__(self, address: str):
        self.socket = zmq.Context.instance().socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(address)
        self.ids = 0

    def next_id(self) -> int:
        self.ids += 1
        return self.ids

    def ask(self, op: str, fields: dict | None = None, payload: list = ()) -> tuple[dict, list]:
        req_id = self.next_id()
        header = {"v": 1, "id": req_id, "op": op, **(fields or {})}
        return self.exchange(req_id, [msgpack.packb(header, use_bin_type=True), *payload])

    def exchange(self, req_id: int, frames: list, timeout: float = 60.0) -> tuple[dict, list]:
        """Send ``frames`` and return the reply with ``req_id``: (header, payload frames)."""
        self.socket.send_multipart(frames)
        while self.socket.poll(int(timeout * 1000)):
            reply = self.socket.recv_multipart()
            header = msgpack.unpackb(reply[0], raw=False)
            if header.get("id") == req_id:
                return header, reply[1:]
        raise AssertionError(f"no reply to request {req_id} within {timeout}s")

    def close(self) -> None:
        self.socket.close(linger=0)


@pytest.fixture
def raw(single):
    connection = Raw(single.addresses[0])
    yield connection
    connection.close()


def _unknown_op_answer(op: str) -> dict:
    """What a shard answers for an op it does not serve (checked on a made-up name)."""
    return {"ok": False, "code": "protocol", "msg": f"unknown operation {op!r}"}


def _answer(header: dict) -> dict:
    return {k: header.get(k) for k in ("ok", "code", "msg")}


def _requests(address: str, save_dir: str) -> list[tuple[str, dict, list, str]]:
    """(op, fields, payload, expected: "ok" or an error code), in an order in which each
    request finds what it needs; the model ops need no torch: they stop before loading."""
    part = msgpack.packb({"v": 1, "id": 10_000, "op": "keys"}, use_bin_type=True)
    dataset = {"tensors": [{"name": "x", "meta": META}], "meta": {}}
    return [
        ("hello", {}, [], "ok"),
        ("cluster", {"shards": [address], "index": 0}, [], "ok"),  # the launcher's list again
        ("batch", {"n": [1]}, [part], "ok"),
        ("put", {"keys": ["t"], "metas": [META]}, [b"abcd"], "ok"),
        ("get", {"keys": ["t"]}, [], "ok"),
        ("exists", {"key": "t"}, [], "ok"),
        ("exists_keys", {"keys": ["t", "u"], "kind": "tensor"}, [], "ok"),
        ("copy", {"src": "t", "dst": "t2"}, [], "ok"),
        ("rename", {"src": "t2", "dst": "t3"}, [], "ok"),
        ("delete", {"key": "t3"}, [], "ok"),
        ("delete_keys", {"keys": ["t", "nothing"], "kind": "tensor"}, [], "ok"),
        ("put_dataset", {"key": "d", "dataset": dataset}, [b"abcd"], "ok"),
        ("get_dataset", {"key": "d"}, [], "ok"),
        ("list_push", {"key": "l", "items": ["d"]}, [], "ok"),
        ("list_set", {"key": "l", "items": ["d", "d"]}, [], "ok"),
        ("list_range", {"key": "l", "start": 0, "end": -1}, [], "ok"),
        ("list_len", {"key": "l"}, [], "ok"),
        ("wait", {"key": "t", "timeout": 0}, [], "ok"),
        ("set_model", {"key": "m", "model": {"format": "none such"}}, [b"x"], "protocol"),
        ("get_model", {"key": "m"}, [], "not_found"),
        ("run", {"key": "m", "inputs": [], "outputs": []}, [], "not_found"),
        ("ai_info", {"key": "m"}, [], "not_found"),
        ("stage", {"txn": "a", "ttl": 30, "keys": ["s"], "metas": [META]}, [b"abcd"], "ok"),
        ("commit", {"txn": "a"}, [], "ok"),
        ("abort", {"txn": "b"}, [], "ok"),
        ("stream_create", {"key": "st", "maxlen": 2, "policy": "drop_oldest"}, [], "ok"),
        ("put", {"keys": [STEP], "metas": [META]}, [b"abcd"], "ok"),
        ("stream_append", {"key": "st", "data": STEP, "kind": "tensor", "nbytes": 4}, [], "ok"),
        ("stream_read", {"key": "st", "steps": [0]}, [], "ok"),
        ("stream_wait", {"key": "st", "step": 0, "timeout": 0}, [], "ok"),
        ("stream_group", {"key": "st", "group": "g"}, [], "ok"),
        ("stream_take", {"key": "st", "group": "g", "timeout": 0}, [], "ok"),
        ("stream_ack", {"key": "st", "group": "g", "steps": [0]}, [], "ok"),
        ("stream_info", {"key": "st"}, [], "ok"),
        ("stream_delete_steps", {"key": "st", "steps": [0]}, [], "ok"),
        ("stream_trim", {"key": "st", "maxlen": 0}, [], "ok"),
        ("stream_close", {"key": "st"}, [], "ok"),
        ("info", {}, [], "ok"),
        ("keys", {}, [], "ok"),
        ("save", {"dir": save_dir}, [], "ok"),
        ("flush", {}, [], "ok"),
        # Last: the shard exits after answering; the fixture copes with a stopped shard.
        ("shutdown", {}, [], "ok"),
    ]


# -- the tests ----------------------------------------------------------------------------------


def test_every_documented_op_is_served(single, raw, tmp_path):
    """Each op of the doc's tables reaches a handler; one the doc forgets, that this test
    sends, fails; and a made-up op gets the unknown-op answer, so the check can fail."""
    header, _ = raw.ask(MADE_UP)
    assert _answer(header) == _unknown_op_answer(MADE_UP)

    ops = doc_ops()
    requests = _requests(single.addresses[0], str(tmp_path / "snap"))
    sent = [op for op, *_ in requests]
    assert set(sent) - set(ops) == set(), "ops the shard serves that the doc does not list"
    last = [r for r in requests if r[0] == "shutdown"]
    # Ops the doc adds that this test does not know: a bare request, before the shutdown.
    bare = [(op, {}, [], None) for op in ops if op not in sent]
    for op, fields, payload, expected in [*requests[:-1], *bare, *last]:
        if op == "batch":  # the envelope's id is 0; so is its reply's
            frames = [msgpack.packb({"v": 1, "id": 0, "op": op, **fields}), *payload]
            reply, frames_back = raw.exchange(0, frames)
            assert reply.get("n") == [len(frames_back)], reply
        else:
            reply, _ = raw.ask(op, fields, payload)
        assert _answer(reply) != _unknown_op_answer(op), f"the shard does not serve {op!r}"
        if expected == "ok":
            assert reply["ok"] is True, f"{op}: {reply}"
        elif expected is not None:
            assert (reply["ok"], reply.get("code")) == (False, expected), f"{op}: {reply}"


def test_documented_error_codes_are_the_mapped_ones():
    """The doc's error table lists exactly the codes memstore.errors maps, each with the
    class from_wire rebuilds and that class's bases.

    memstore.errors has no public list of codes: the mapping is read from the public
    MemstoreError subclasses it exposes (their ``code``) and checked through ``from_wire``.
    """
    mapped = {
        cls.code: cls
        for name, cls in vars(errors).items()
        if not name.startswith("_")
        and isinstance(cls, type)
        and issubclass(cls, errors.MemstoreError)
    }
    rows = _rows("code")
    documented = {_names(row[0])[0]: row for row in rows}
    assert len(documented) == len(rows), "an error code is listed twice"
    assert set(documented) == set(mapped)
    for code, (_, exception, bases, _) in documented.items():
        rebuilt = errors.from_wire(code, "message")
        assert type(rebuilt) is mapped[code], f"from_wire({code!r}) gives {type(rebuilt)}"
        assert exception == f"`{type(rebuilt).__name__}`", f"{code}: the doc says {exception}"
        ancestry = {base.__name__ for base in type(rebuilt).__mro__}
        for base in re.findall(r"`(\w+)`", bases):
            assert base in ancestry, f"{code}: {type(rebuilt).__name__} is not a {base}"
    assert type(errors.from_wire("no such code", "")) is errors.RemoteError  # as documented


def test_documented_reply_fields_of_hello_and_info(raw):
    """Every field the shard puts in hello's and info's replies is in the doc, and the
    shared-memory offer's table lists exactly the offer's fields."""
    hello, _ = raw.ask("hello")
    info, _ = raw.ask("info")
    envelope = {"v", "id", "ok"}
    if "unix" in hello["features"]:  # the Unix socket's offer: exactly its table's fields
        unix_fields = {name for row in _rows("unix offer field") for name in _names(row[0])}
        assert unix_fields == set(hello["unix"])
    assert set(hello) - envelope - doc_reply_fields("hello") == set()
    assert set(info) - envelope - doc_reply_fields("info") == set()
    if "shm" not in hello["features"]:
        pytest.skip("this shard offers no shared memory (MEMSTORE_SHM=0 or no /dev/shm)")
    offer_fields = {_names(row[0])[0] for row in _rows("field")}
    assert offer_fields == set(hello["shm"])


def test_doc_lists_every_handler_the_package_defines():
    """While handlers are written ``def _op_<name>`` (wherever they live), each name is a
    documented op. Read as text, not imported: skipped once that convention is gone."""
    package = Path(memstore.__file__).resolve().parent
    handlers = {
        name
        for path in package.rglob("*.py")
        for name in re.findall(r"^\s*def _op_(\w+)\(", path.read_text(), re.MULTILINE)
    }
    if not handlers:
        pytest.skip("no `def _op_<name>` handlers in the package: nothing to compare")
    assert handlers - set(doc_ops()) == set()
