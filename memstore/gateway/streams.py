"""Redis stream commands (XADD, XREAD, XREADGROUP, ...) on memstore's streams, so a C, C++
or Fortran producer (hiredis, redis-plus-plus) appends to the stream a Python trainer reads.

The mapping (docs/gateway.md, "Streams"):

- An entry ID is ``<step + 1>-0``: step 0 is ``1-0``, so IDs sort as Redis's do and the
  ID ``0`` (or ``0-0``, ``-``) comes before every step. Reads after an ID ``a-b`` start at
  step ``a``. ``XADD`` takes ``*`` only: the home shard numbers the steps.
- An entry's field/value pairs are one step whose item is a dict of ``uint8`` tensors, one
  per field, holding the value's bytes: a Python reader gets ``{field: array}``. A step a
  Python producer appended reads back through ``XRANGE`` as its tensors' raw bytes (C
  order; dtype and shape are not sent), a single tensor as the field ``value``.
- ``MAXLEN n`` on ``XADD`` makes a new stream with ``maxlen`` n (``drop_oldest``; ``~`` is
  taken as ``=``), and trims an existing one to n after the append. A stream made without
  ``MAXLEN`` keeps 1024 steps (memstore streams are bounded).
- ``XREADGROUP`` reads new entries only (``>``); a consumer is a group member, and an entry
  it does not ``XACK`` within 30 s goes to another consumer (Redis keeps it pending until
  ``XCLAIM``). ``BLOCK`` waits on the shard, in chunks of at most 10 s, never a polling loop
  (``XREADGROUP`` on its first stream); ``BLOCK 0`` waits at most 300 s.
"""

from __future__ import annotations

import concurrent.futures
import time
from typing import Any

import numpy as np

from memstore.dataset import DataSet
from memstore.errors import ProtocolError, StepDropped
from memstore.gateway.commands import OK, CommandError, Context, arity, command, integer, text
from memstore.gateway.resp import Error
from memstore.kinds import STREAM

#: The longest one wait on the shard lasts; BLOCK 0 (forever) waits chunk after chunk.
BLOCK_CHUNK_S = 10.0
#: What BLOCK 0 ("forever") waits at most: then the null reply of a timeout.
BLOCK_FOREVER_S = 300.0
#: Entries one XRANGE / XREAD returns without COUNT (memstore streams are bounded anyway).
DEFAULT_COUNT = 1024


# -- IDs and entries -------------------------------------------------------------------------


def entry_id(step: int) -> str:
    return f"{step + 1}-0"


def parse_id(value: bytes) -> tuple[int, int]:
    """``a-b`` (or ``a``) as ``(a, b)``; ``-`` and ``+`` as the least and the greatest."""
    if value == b"-":
        return 0, 0
    if value == b"+":
        return 2**63 - 1, 2**63 - 1
    head, _, tail = value.partition(b"-")
    try:
        first, second = int(head), int(tail) if tail else 0
    except ValueError:
        raise CommandError("ERR Invalid stream ID specified as stream command argument") from None
    if first < 0 or second < 0:
        raise CommandError("ERR Invalid stream ID specified as stream command argument")
    return first, second


def first_after(value: bytes) -> int:
    """The first step whose ID is greater than ``value`` (XREAD's exclusive start)."""
    return parse_id(value)[0]


def first_from(value: bytes) -> int:
    """The first step whose ID is at least ``value`` (XRANGE's inclusive start)."""
    first, second = parse_id(value)
    return max(first - 1 if second == 0 else first, 0)


def last_to(value: bytes) -> int:
    """The last step whose ID is at most ``value`` (XRANGE's inclusive end)."""
    return parse_id(value)[0] - 1


def fields_of(item: Any) -> list[bytes]:
    """A step's item as Redis field/value pairs, flattened."""
    if isinstance(item, DataSet):
        item = {name: item.get_tensor(name) for name in item.get_tensor_names()}
    if not isinstance(item, dict):
        item = {"value": item}
    return [x for name, value in item.items() for x in (name.encode(), _bytes(value))]


def _bytes(value: Any) -> bytes:
    return np.ascontiguousarray(value).tobytes()


def entry(step: int, item: Any) -> list:
    return [entry_id(step), fields_of(item)]


# -- the stream behind a key ------------------------------------------------------------------


def _existing(ctx: Context, key: str) -> Any:
    """The stream at ``key``, or None when there is none (nothing is made)."""
    if not ctx.client.keys.exists(key, STREAM):
        return None
    return ctx.client.stream(key)


def _read(stream: Any, steps: list[int]) -> list:
    """Entries of ``steps`` still held (a step dropped meanwhile is left out)."""
    futures = [stream.read_async(step) for step in steps]
    out = []
    for step, future in zip(steps, futures, strict=True):
        try:
            out.append(entry(step, future.result()))
        except StepDropped:
            continue
    return out


def _count(args: list, at: int) -> int:
    count = integer(args[at])
    if count <= 0:
        raise CommandError("ERR COUNT must be > 0")
    return count


# -- appends and trims ------------------------------------------------------------------------


@command("XADD")
def _xadd(ctx: Context, args: list) -> Any:
    arity(args, 4, None, "xadd")
    key, rest = text(args[0]), args[1:]
    maxlen, nomkstream = None, False
    while rest and rest[0].upper() in (b"MAXLEN", b"NOMKSTREAM"):
        if rest[0].upper() == b"NOMKSTREAM":
            nomkstream, rest = True, rest[1:]
            continue
        maxlen, rest = _maxlen(rest[1:])
    if not rest or rest[0] != b"*":
        raise CommandError("ERR memstore numbers the steps of a stream: XADD takes * as the ID")
    pairs = rest[1:]
    if not pairs or len(pairs) % 2:
        raise CommandError("ERR wrong number of arguments for 'xadd' command")
    item = {text(n, "field"): np.frombuffer(v, np.uint8) for n, v in zip(pairs[::2], pairs[1::2])}
    stream = _existing(ctx, key)
    if stream is None:
        if nomkstream:
            return None
        stream = ctx.client.stream(key, maxlen, None if maxlen is None else "drop_oldest")
    step = stream.append(item)
    if maxlen is not None and stream.settings["maxlen"] != maxlen:
        stream.trim(maxlen)  # an existing stream of another maxlen: trimmed, as Redis does
    return entry_id(step)


def _maxlen(rest: list) -> tuple[int, list]:
    """``[=|~] n ...`` after MAXLEN: (n, the arguments after it)."""
    if rest and rest[0] in (b"=", b"~"):
        rest = rest[1:]
    if not rest:
        raise CommandError("ERR syntax error")
    maxlen = integer(rest[0])
    if maxlen < 1:
        raise CommandError("ERR memstore streams keep at least one step: MAXLEN must be >= 1")
    return maxlen, rest[1:]


@command("XTRIM")
def _xtrim(ctx: Context, args: list) -> Any:
    arity(args, 3, 4, "xtrim")
    if args[1].upper() != b"MAXLEN":
        raise CommandError("ERR memstore trims streams by MAXLEN only")
    maxlen, rest = _maxlen(args[2:])
    if rest:
        raise CommandError("ERR syntax error")
    stream = _existing(ctx, text(args[0]))
    return 0 if stream is None else stream.trim(maxlen)


@command("XDEL")
def _xdel(ctx: Context, args: list) -> Any:
    arity(args, 2, None, "xdel")
    stream = _existing(ctx, text(args[0]))
    steps = [parse_id(a)[0] - 1 for a in args[1:]]
    return 0 if stream is None else stream.delete_steps([s for s in steps if s >= 0])


@command("XLEN")
def _xlen(ctx: Context, args: list) -> Any:
    arity(args, 1, 1, "xlen")
    stream = _existing(ctx, text(args[0]))
    return 0 if stream is None else stream.info()["steps"]


# -- reads ------------------------------------------------------------------------------------


@command("XRANGE")
def _xrange(ctx: Context, args: list, reverse: bool = False) -> Any:
    arity(args, 3, 5, "xrange")
    if len(args) == 4 or (len(args) == 5 and args[3].upper() != b"COUNT"):
        raise CommandError("ERR syntax error")
    count = _count(args, 4) if len(args) == 5 else DEFAULT_COUNT
    stream = _existing(ctx, text(args[0]))
    if stream is None:
        return []
    low, high = (args[2], args[1]) if reverse else (args[1], args[2])
    info = stream.info()
    steps = range(max(first_from(low), info["oldest"]), min(last_to(high), info["next"] - 1) + 1)
    chosen = list(reversed(steps))[:count] if reverse else list(steps)[:count]
    return _read(stream, chosen)


@command("XREVRANGE")
def _xrevrange(ctx: Context, args: list) -> Any:
    return _xrange(ctx, args, reverse=True)


@command("XREAD")
def _xread(ctx: Context, args: list) -> Any:
    count, block, keys, ids = _read_options(args, "xread")
    streams = [_existing(ctx, key) for key in keys]
    starts = [
        (s.info()["next"] if raw == b"$" else first_after(raw)) if s is not None else 0
        for s, raw in zip(streams, ids, strict=True)
    ]
    deadline = time.monotonic() + (block or 0.0)
    while True:
        found = _available(streams, keys, starts, count)
        if found or block is None or not _wait_any(streams, starts, deadline):
            return found or None


def _read_options(args: list, name: str) -> tuple[int, float | None, list, list]:
    """XREAD's ``[COUNT n] [BLOCK ms] STREAMS key... id...``: count, block seconds (None: do
    not block; BLOCK 0: ``BLOCK_FOREVER_S``), keys and ids."""
    count, block, at = DEFAULT_COUNT, None, 0
    while at < len(args) and args[at].upper() in (b"COUNT", b"BLOCK", b"NOACK"):
        option = args[at].upper()
        if option == b"NOACK":
            at += 1
            continue
        if at + 1 >= len(args):
            raise CommandError("ERR syntax error")
        if option == b"COUNT":
            count = _count(args, at + 1)
        else:
            ms = integer(args[at + 1])
            if ms < 0:
                raise CommandError("ERR timeout is negative")
            block = BLOCK_FOREVER_S if ms == 0 else ms / 1000
        at += 2
    if at >= len(args) or args[at].upper() != b"STREAMS":
        raise CommandError("ERR syntax error")
    rest = args[at + 1 :]
    if not rest or len(rest) % 2:
        raise CommandError(
            f"ERR Unbalanced '{name}' list of streams: for each stream key an ID must be specified."
        )
    half = len(rest) // 2
    return count, block, [text(k) for k in rest[:half]], rest[half:]


def _available(streams: list, keys: list, starts: list, count: int) -> list:
    """``[[key, entries]]`` of the streams with steps from their start on."""
    found = []
    for stream, key, start in zip(streams, keys, starts, strict=True):
        if stream is None:
            continue
        info = stream.info()
        steps = list(range(max(start, info["oldest"]), info["next"]))[:count]
        entries = _read(stream, steps) if steps else []
        if entries:
            found.append([key, entries])
    return found


def _wait_any(streams: list, starts: list, deadline: float) -> bool:
    """Wait on the shards (at most ``BLOCK_CHUNK_S`` at a time) until one stream has a step
    at its start or later; False once the deadline passed or there is nothing to wait on."""
    left = min(deadline - time.monotonic(), BLOCK_CHUNK_S)
    waits = [s.wait_async(start, timeout=left) for s, start in zip(streams, starts) if s]
    if left <= 0 or not waits:
        return False
    concurrent.futures.wait(waits, left + 5, concurrent.futures.FIRST_COMPLETED)
    return time.monotonic() < deadline or any(w.done() and w.result(0) for w in waits)


# -- consumer groups --------------------------------------------------------------------------


@command("XGROUP")
def _xgroup(ctx: Context, args: list) -> Any:
    arity(args, 1, None, "xgroup")
    if args[0].upper() != b"CREATE" or len(args) not in (4, 5):
        raise CommandError("ERR memstore supports XGROUP CREATE key group id|$ [MKSTREAM]")
    key, group = text(args[1]), text(args[2], "group name")
    if len(args) == 5 and args[4].upper() != b"MKSTREAM":
        raise CommandError("ERR syntax error")
    stream = _existing(ctx, key)
    if stream is None:
        if len(args) == 4:
            raise CommandError(
                "ERR The XGROUP subcommand requires the key to exist. Note that for CREATE "
                "you may want to use the MKSTREAM option to create an empty stream "
                "automatically."
            )
        stream = ctx.client.stream(key)
    if group in stream.info()["groups"]:
        return Error("BUSYGROUP Consumer Group name already exists")
    stream.group(group, start="next" if args[3] == b"$" else first_after(args[3]))
    return OK


@command("XREADGROUP")
def _xreadgroup(ctx: Context, args: list) -> Any:
    arity(args, 6, None, "xreadgroup")
    if args[0].upper() != b"GROUP":
        raise CommandError("ERR syntax error")
    group, member = text(args[1], "group name"), text(args[2], "consumer name")
    count, block, keys, ids = _read_options(args[3:], "xreadgroup")
    if any(i != b">" for i in ids):
        raise CommandError("ERR memstore's XREADGROUP reads new entries only: give > as the ID")
    found = []
    for key in keys:
        stream = _existing(ctx, key)
        if stream is None or group not in stream.info()["groups"]:
            return Error(
                f"NOGROUP No such key '{key}' or consumer group '{group}' in XREADGROUP "
                "with GROUP option"
            )
        entries = _take(stream.group(group, member=member), count, 0.0)
        if entries:
            found.append([key, entries])
    if found or block is None:
        return found or None
    stream = ctx.client.stream(keys[0])  # BLOCK waits on the first stream
    entries = _take(stream.group(group, member=member), count, block)
    return [[keys[0], entries]] if entries else None


def _take(group: Any, count: int, wait: float) -> list:
    """Up to ``count`` entries delivered to ``group``'s member: the first waits up to
    ``wait`` seconds on the shard, the rest are those already there."""
    entries = []
    while len(entries) < count:
        try:
            got = group.take(timeout=wait if not entries else 0.0)
        except StepDropped:
            continue
        except TimeoutError:
            break
        if got is None:
            break
        entries.append(entry(*got))
    return entries


@command("XACK")
def _xack(ctx: Context, args: list) -> Any:
    arity(args, 3, None, "xack")
    stream = _existing(ctx, text(args[0]))
    name = text(args[1], "group name")
    if stream is None or name not in stream.info()["groups"]:
        return 0
    group = stream.group(name)
    acked = 0
    for step in {parse_id(a)[0] - 1 for a in args[2:]}:
        try:
            acked += group.ack(step)
        except ProtocolError:  # never delivered to the group: Redis counts it 0
            continue
    return acked
