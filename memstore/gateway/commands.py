"""The command table: RESP command name -> handler, plus the server-level commands.

A handler takes the :class:`Context` and the command's arguments (``bytes``) and returns a
reply value for :func:`memstore.gateway.resp.encode`. Handlers call :class:`memstore.Client`
and block; the server runs them off its event loop. memstore errors become Redis-style error
replies here, in one place.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from memstore.errors import KeyNotFound, MemstoreError, WrongType
from memstore.gateway.resp import OK, Error, Map

Handler = Callable[["Context", list], Any]
#: Upper-case command name -> handler; filled by :func:`command` in this and sibling modules.
TABLE: dict[str, Handler] = {}


class CommandError(Exception):
    """A command's arguments are wrong; the message is the error reply's text."""


def command(*names: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        for name in names:
            TABLE[name] = handler
        return handler

    return register


class Context:
    """What handlers share: the client, the gateway's own address and its settings."""

    def __init__(self, client: Any, host: str, port: int):
        self.client = client
        self.host, self.port = host, port
        self.started = time.time()
        self.config: dict[str, str] = {"maxmemory": "0", "save": "", "appendonly": "no"}
        self.model_chunk_size = 511 * 1024 * 1024


def execute(ctx: Context, args: list[bytes]) -> Any:
    """Run one command; every failure is an error reply, never an exception."""
    name = args[0].decode("latin-1").upper()
    handler = TABLE.get(name)
    if handler is None:
        shown = args[0][:128].decode("latin-1")
        return Error(f"ERR unknown command '{shown}', with args beginning with: ")
    try:
        return handler(ctx, args[1:])
    except CommandError as exc:
        return Error(str(exc))
    except WrongType as exc:
        return Error(f"WRONGTYPE {exc}")
    except KeyNotFound as exc:
        return Error(f"ERR {exc}")
    except MemstoreError as exc:
        return Error(f"ERR {type(exc).__name__}: {exc}")
    except (TypeError, ValueError, OverflowError) as exc:
        return Error(f"ERR {exc}")


# -- argument helpers ------------------------------------------------------------------------


def arity(args: list, low: int, high: int | None = None, name: str = "") -> None:
    if len(args) < low or (high is not None and len(args) > high):
        raise CommandError(f"ERR wrong number of arguments for '{name.lower()}' command")


def text(value: bytes, what: str = "key") -> str:
    """A key or name as memstore stores it (``str``); keys must be UTF-8."""
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise CommandError(f"ERR {what} is not valid UTF-8: {value[:64]!r}") from None


def integer(value: bytes) -> int:
    try:
        return int(value)
    except ValueError:
        raise CommandError("ERR value is not an integer or out of range") from None


# -- connection and server -------------------------------------------------------------------


@command("PING")
def _ping(ctx: Context, args: list) -> Any:
    arity(args, 0, 1, "ping")
    return args[0] if args else _pong


_pong = OK.__class__("PONG")


@command("ECHO")
def _echo(ctx: Context, args: list) -> Any:
    arity(args, 1, 1, "echo")
    return args[0]


@command("SELECT")
def _select(ctx: Context, args: list) -> Any:
    arity(args, 1, 1, "select")
    if args[0] != b"0":
        raise CommandError("ERR DB index is out of range (memstore has one database)")
    return OK


@command("CLIENT", "READONLY", "READWRITE")
def _client(ctx: Context, args: list) -> Any:
    return OK  # names, tracking, read-only routing: nothing to do behind one gateway


@command("COMMAND")
def _command(ctx: Context, args: list) -> Any:
    return []


@command("HELLO")
def _hello(ctx: Context, args: list) -> Any:
    version = args[0] if args else b"2"
    if version not in (b"2", b"3"):
        return Error("NOPROTO unsupported protocol version")
    fields = {"server": "memstore", "version": "7.0.0", "proto": int(version), "mode": "cluster"}
    return Map(fields) if version == b"3" else [x for pair in fields.items() for x in pair]


@command("FLUSHDB", "FLUSHALL")
def _flushdb(ctx: Context, args: list) -> Any:
    ctx.client.flush_db()
    return OK


@command("DBSIZE")
def _dbsize(ctx: Context, args: list) -> Any:
    return sum(info["keys"] for info in ctx.client.get_db_node_info())


@command("SAVE")
def _save(ctx: Context, args: list) -> Any:
    ctx.client.save()
    return OK


@command("INFO")
def _info(ctx: Context, args: list) -> Any:
    infos = ctx.client.get_db_node_info()
    lines = [
        "# Server",
        "redis_version:7.0.0",
        "memstore_gateway:1",
        f"tcp_port:{ctx.port}",
        f"uptime_in_seconds:{int(time.time() - ctx.started)}",
        "# Memory",
        f"used_memory:{sum(i['bytes'] for i in infos)}",
        "# Keyspace",
        f"db0:keys={sum(i['keys'] for i in infos)},expires=0,avg_ttl=0",
        "# Memstore",
        f"shards:{len(infos)}",
    ]
    for n, info in enumerate(infos):
        lines.append(
            f"shard{n}:address={info['address']},keys={info['keys']},bytes={info['bytes']}"
        )
    return ("\r\n".join(lines) + "\r\n").encode()


@command("CONFIG")
def _config(ctx: Context, args: list) -> Any:
    arity(args, 2, None, "config")
    sub = args[0].upper()
    if sub == b"GET":
        pattern = args[1].decode("latin-1").lower()
        found = []
        for name, value in ctx.config.items():
            if pattern in ("*", name) or (pattern.endswith("*") and name.startswith(pattern[:-1])):
                found += [name, value]
        return found
    if sub == b"SET" and len(args) == 3:
        ctx.config[args[1].decode("latin-1").lower()] = args[2].decode("latin-1")
        return OK
    raise CommandError(f"ERR unknown subcommand or wrong arguments for 'config|{args[0][:32]}'")


@command("CLUSTER")
def _cluster(ctx: Context, args: list) -> Any:
    arity(args, 1, None, "cluster")
    sub = args[0].upper()
    node_id = f"{ctx.port:040x}"
    if sub == b"SLOTS":
        return [[0, 16383, [ctx.host, ctx.port, node_id]]]
    if sub == b"SHARDS":
        return [["slots", [0, 16383], "nodes", ["id", node_id, "ip", ctx.host, "port", ctx.port]]]
    if sub == b"NODES":
        return f"{node_id} {ctx.host}:{ctx.port}@0 myself,master - 0 0 1 connected 0-16383\n"
    if sub == b"INFO":
        return (
            b"cluster_enabled:1\r\ncluster_state:ok\r\ncluster_slots_assigned:16384\r\n"
            b"cluster_slots_ok:16384\r\ncluster_known_nodes:1\r\ncluster_size:1\r\n"
        )
    if sub == b"MYID":
        return node_id
    raise CommandError(f"ERR unknown subcommand '{args[0][:32].decode('latin-1')}' for CLUSTER")
