"""The command table: RESP command name -> handler, plus the server-level commands.

A handler takes the :class:`Context` and the command's arguments (``bytes``) and returns a
reply value for :func:`memstore.gateway.resp.encode`. Handlers call :class:`memstore.Client`
and block; the server runs them off its event loop. memstore errors become Redis-style error
replies here, in one place. A handler that must wait on a shard (``XREAD BLOCK``) returns
:class:`Parked` instead of blocking, so the wait holds none of the server's threads.
"""

from __future__ import annotations

import concurrent.futures
import fnmatch
import hashlib
import logging
import threading
import time
from binascii import crc_hqx
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from memstore.errors import KeyNotFound, MemstoreError, WrongType
from memstore.gateway.resp import OK, Error, Map, Status
from memstore.placement import SLOTS, hash_tag

log = logging.getLogger(__name__)

Handler = Callable[["Context", list], Any]
#: Upper-case command name -> handler; filled by :func:`command` in this and sibling modules.
TABLE: dict[str, Handler] = {}


class CommandError(Exception):
    """A command's arguments are wrong; the message is the error reply's text."""


@dataclass(frozen=True)
class Parked:
    """A reply still waiting on a shard: once ``future`` is done, or ``seconds`` passed,
    :func:`resume` runs ``then`` for the reply (which may be Parked again). The server
    awaits ``future`` on its event loop, so a blocked client holds no worker thread."""

    name: str
    future: concurrent.futures.Future
    seconds: float
    then: Callable[[], Any]


def command(*names: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        for name in names:
            TABLE[name] = handler
        return handler

    return register


#: Redis's CONFIG parameters the gateway answers (with Redis 7's defaults); CONFIG SET of
#: any other is an error and CONFIG GET of one is empty, as in Redis. Values are kept per
#: gateway and change nothing in memstore (its shards' settings are fixed at start).
CONFIG_DEFAULTS = {
    "appendonly": "no",
    "busy-reply-threshold": "5000",
    "databases": "1",
    "lua-time-limit": "5000",
    "maxclients": "10000",
    "maxmemory": "0",
    "maxmemory-policy": "noeviction",
    "proto-max-bulk-len": "536870912",
    "save": "",
    "timeout": "0",
}


class Context:
    """What handlers share: the client, the gateway's own address and its settings.

    ``client`` is a :class:`memstore.Client` or a function returning one, called on the
    first command (a gateway inside a shard process starts before the shard knows its
    cluster). ``peers`` are every gateway of the store as ``(host, port)`` in one agreed
    order; ``CLUSTER SLOTS`` splits the 16384 slots over them (default: this one alone).
    """

    def __init__(self, client: Any, host: str, port: int, peers: list | None = None):
        self._client = None if callable(client) else client
        self._connect = client if callable(client) else None
        self._lock = threading.Lock()
        self.host, self.port = host, port
        self.peers: list[tuple[str, int]] = list(peers or [])
        self.started = time.time()
        self.last_save = int(self.started)
        self.config = dict(CONFIG_DEFAULTS)
        self.model_chunk_size = 511 * 1024 * 1024

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._connect()
        return self._client

    def close(self) -> None:
        """Close the client if this context made it."""
        if self._connect is not None and self._client is not None:
            self._client.close()


def execute(ctx: Context, args: list[bytes]) -> Any:
    """Run one command; every failure is an error reply, never an exception, so a
    malformed command costs its own reply only and the pipeline behind it is served."""
    name = args[0].decode("latin-1").upper()
    handler = TABLE.get(name)
    if handler is None:
        shown = args[0][:128].decode("latin-1")
        return Error(f"ERR unknown command '{shown}', with args beginning with: ")
    return _answer(name, lambda: handler(ctx, args[1:]))


def resume(parked: Parked) -> Any:
    """The reply of a :class:`Parked` command whose wait is over (errors as in execute)."""
    return _answer(parked.name, parked.then)


def _answer(name: str, call: Callable[[], Any]) -> Any:
    try:
        return call()
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
    except Exception as exc:  # a handler's bug: answer it, log it, keep the connection
        log.warning("gateway: %s failed", name[:64], exc_info=True)
        return Error(f"ERR {name[:64]} failed: {type(exc).__name__}: {exc}")


# -- argument helpers ------------------------------------------------------------------------


def arity(args: list, low: int, high: int | None = None, name: str = "") -> None:
    if len(args) < low or (high is not None and len(args) > high):
        raise CommandError(f"ERR wrong number of arguments for '{name.lower()}' command")


def text(value: bytes, what: str = "key") -> str:
    """A key or name as memstore stores it (``str``); distinct keys stay distinct.

    A UTF-8 key without a backslash is stored as it is, so every client names it alike.
    Any other key (SmartRedis's cluster mode makes hash tags of raw bytes, such as
    ``{p\\x9a}``) is escaped: each backslash doubled, each byte that is not UTF-8 spelled
    ``\\xNN``. An escaped key always holds a backslash and an unescaped one never does,
    and the escaping reads back one way only, so no two keys meet: ``a``, a backslash and
    ``x9a`` are stored as ``a\\\\x9a``; ``a`` and the byte 0x9a as ``a\\x9a``. Other names
    (list items, fields) must be UTF-8.
    """
    try:
        decoded = value.decode()
    except UnicodeDecodeError:
        if what != "key":
            raise CommandError(f"ERR {what} is not valid UTF-8: {value[:64]!r}") from None
        return value.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")
    if what == "key" and "\\" in decoded:
        return decoded.replace("\\", "\\\\")
    return decoded


def integer(value: bytes) -> int:
    try:
        return int(value)
    except ValueError:
        raise CommandError("ERR value is not an integer or out of range") from None


# -- connection and server -------------------------------------------------------------------


@command("PING")
def _ping(ctx: Context, args: list) -> Any:
    arity(args, 0, 1, "ping")
    return args[0] if args else PONG


PONG = Status("PONG")


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
    ctx.client.save()  # every shard into its --save-dir (memstore's snapshot)
    ctx.last_save = int(time.time())
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
        "# Persistence",
        "rdb_bgsave_in_progress:0",
        f"rdb_last_save_time:{ctx.last_save}",
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
    arity(args, 1, None, "config")
    sub = args[0].upper()
    if sub == b"GET" and len(args) >= 2:
        found = []
        for pattern in (a.decode("latin-1").lower() for a in args[1:]):
            for name, value in ctx.config.items():
                if fnmatch.fnmatchcase(name, pattern):
                    found += [name, value]
        return found
    if sub == b"SET" and len(args) >= 3 and len(args) % 2 == 1:
        pairs = [(n.decode("latin-1").lower(), v) for n, v in zip(args[1::2], args[2::2])]
        for name, _ in pairs:
            if name not in ctx.config:
                raise CommandError(
                    f"ERR Unknown option or number of arguments for CONFIG SET - '{name[:64]}'"
                )
        for name, value in pairs:
            ctx.config[name] = value.decode("latin-1")
        return OK
    if sub == b"RESETSTAT":
        return OK
    shown = args[0][:32].decode("latin-1")
    raise CommandError(f"ERR unknown subcommand or wrong number of arguments for '{shown}'")


def _nodes(ctx: Context) -> list[tuple[int, int, str, int, str]]:
    """``(first slot, last slot, host, port, node id)`` per gateway, in the peers' order."""
    peers = ctx.peers or [(ctx.host, ctx.port)]
    cut = [SLOTS * i // len(peers) for i in range(len(peers) + 1)]
    return [
        (cut[i], cut[i + 1] - 1, host, port, hashlib.sha1(f"{host}:{port}".encode()).hexdigest())
        for i, (host, port) in enumerate(peers)
    ]


@command("CLUSTER")
def _cluster(ctx: Context, args: list) -> Any:
    arity(args, 1, None, "cluster")
    sub = args[0].upper()
    nodes = _nodes(ctx)
    mine = next((n for n in nodes if n[2:4] == (ctx.host, ctx.port)), nodes[0])
    if sub == b"SLOTS":
        return [[first, last, [host, port, id_]] for first, last, host, port, id_ in nodes]
    if sub == b"SHARDS":
        return [
            ["slots", [first, last], "nodes", ["id", id_, "ip", host, "port", port]]
            for first, last, host, port, id_ in nodes
        ]
    if sub == b"NODES":
        return "".join(
            f"{id_} {host}:{port}@0 {'myself,' if node is mine else ''}master - 0 0 {n + 1} "
            f"connected {first}-{last}\n"
            for n, node in enumerate(nodes)
            for first, last, host, port, id_ in [node]
        )
    if sub == b"INFO":
        return (
            "cluster_enabled:1\r\ncluster_state:ok\r\n"
            f"cluster_slots_assigned:{SLOTS}\r\ncluster_slots_ok:{SLOTS}\r\n"
            f"cluster_known_nodes:{len(nodes)}\r\ncluster_size:{len(nodes)}\r\n"
        ).encode()
    if sub == b"MYID":
        return mine[4]
    if sub == b"KEYSLOT" and len(args) == 2:
        return redis_slot(args[1])
    raise CommandError(f"ERR unknown subcommand '{args[0][:32].decode('latin-1')}' for CLUSTER")


def redis_slot(key: bytes) -> int:
    """Redis Cluster's slot of raw ``key`` (``CLUSTER KEYSLOT``): CRC16 of the hash tag's
    bytes, as a Redis client computes it whatever memstore's spelling of the key."""
    return crc_hqx(hash_tag(key.decode("latin-1")).encode("latin-1"), 0) % SLOTS


@command("MEMSTORE.GATEWAYS")
def _gateways(ctx: Context, args: list) -> Any:
    """``MEMSTORE.GATEWAYS host:port ...``: every gateway of the store, in one order, set by
    whoever started them (``LocalCluster``); with no arguments, the list in use."""
    if not args:
        return [f"{host}:{port}" for *_, host, port, _ in _nodes(ctx)]
    ctx.peers = [parse_peer(a.decode("latin-1")) for a in args]
    return OK


def parse_peer(value: str) -> tuple[str, int]:
    """``host:port`` as a pair; ValueError when it is not one."""
    host, sep, port = value.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"gateway address {value[:64]!r} is not host:port")
    return host, int(port)
