"""The shard's op table: every operation documented or sent anywhere in memstore is answered.

A real shard gets each operation with no fields; any answer but "unknown operation" (most
are a ``ProtocolError`` naming the missing field) shows the op table has its handler.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import msgpack
import pytest
import zmq

import memstore
from memstore import wire

ROOT = Path(__file__).resolve().parent.parent
#: Calls whose string arguments name an operation: the client's request helpers, the
#: launchers' one-shot admin request, the executor's requests to peer shards.
SENDERS = {"to_key", "to_shard", "broadcast", "_broadcast", "request_once", "request_all",
           "_put_files", "_end_stages", "submit", "try_fast"}  # fmt: skip
#: Operations sent without a literal name at the call (the transport's envelope; the
#: executor's staged outputs, built in a list first).
UNNAMED = {"batch", "stage"}


def documented_ops() -> set[str]:
    """The op names in the first column of docs/protocol.md's op tables (those whose
    header's first cell is ``op``; the error-code table is not one)."""
    ops, in_op_table = set(), False
    for line in (ROOT / "docs" / "protocol.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) < 3:
            in_op_table = False
        elif cells[1] == "op":
            in_op_table = True
        elif in_op_table:
            ops.update(re.findall(r"`([a-z_]+)`", cells[1]))
    return ops


def sent_ops() -> set[str]:
    """Every op name memstore's own code passes to a request helper (an ast scan)."""
    ops = set()
    for path in (ROOT / "memstore").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and _called(node.func) in SENDERS:
                ops.update(_names(node.args[:4]))
    return ops


def _called(func: ast.expr) -> str | None:
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)


def _names(args: list[ast.expr]) -> set[str]:
    """String constants among ``args``, and first-two tuple items of a list of requests."""
    found = set()
    for arg in args:
        items = [arg]
        if isinstance(arg, (ast.List, ast.ListComp)):
            elements = [arg.elt] if isinstance(arg, ast.ListComp) else arg.elts
            items = [i for e in elements if isinstance(e, ast.Tuple) for i in e.elts[:2]]
        for item in items:
            value = item.value if isinstance(item, ast.Constant) else None
            if isinstance(value, str) and re.fullmatch(r"[a-z][a-z_]*", value):
                found.add(value)
    return found


@pytest.fixture(scope="module")
def shard_socket():
    """A bare DEALER socket on a fresh one-shard store."""
    with memstore.LocalCluster(shards=1) as running:
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(running.addresses[0])
        yield sock
        sock.close()


def answer_to(sock: zmq.Socket, op: str) -> dict:
    sock.send_multipart([msgpack.packb({"v": wire.VERSION, "id": 5, "op": op})])
    assert sock.poll(10_000), f"no answer to {op!r}"
    return msgpack.unpackb(sock.recv_multipart()[0])


def test_the_scan_finds_the_client_s_requests():
    """If the request helpers are renamed the scan finds nothing: update SENDERS then."""
    assert {"put", "get", "hello", "wait", "run", "set_model", "save", "commit"} <= sent_ops()


def test_an_unknown_op_is_refused(shard_socket):
    reply = answer_to(shard_socket, "frobnicate")
    assert not reply["ok"] and "unknown operation 'frobnicate'" in reply["msg"]


def test_every_documented_and_sent_op_has_a_handler(shard_socket):
    ops = documented_ops() | sent_ops() | UNNAMED
    assert "put_dataset" in ops and len(ops) >= 25
    for op in sorted(ops - {"shutdown"}):
        reply = answer_to(shard_socket, op)
        assert "unknown operation" not in reply.get("msg", ""), (op, reply)
    assert answer_to(shard_socket, "shutdown")["ok"]
