"""Redis stream commands (``XADD`` ... ``XDEL``) on memstore's streams (:class:`memstore.Stream`).

A Redis stream entry is a step of the same stream the Python client uses, so a C or Fortran
producer appends with hiredis and a Python trainer consumes with ``Stream``/``Group`` (and
the other way round). The mapping (README, "Streams over RESP"):

* ids: step ``s`` is ``"<s>-1"`` (:mod:`memstore.gateway.stream_ids`); ``XADD`` takes ``*``
  only, since the home shard numbers steps.
* entries: ``XADD``'s field/value pairs become a dict item of ``uint8`` tensors, one per
  field, so Python reads a dict of byte arrays; a step Python appended reads back as field
  -> the raw bytes of each tensor (a dict's or DataSet's tensors by name, a lone tensor as
  the field ``tensor``): dtype, shape and a DataSet's metadata are not sent.
* groups: ``XREADGROUP ... >`` takes steps for the consumer (a group member); a step not
  ``XACK``\\ ed within the visibility timeout is delivered again to a member of the group.

Blocking (``BLOCK``) waits on the stream's home shard (``Stream.wait``, ``Group.take``),
never a polling loop, and holds no gateway thread meanwhile (the handler returns
:class:`Parked`); ``BLOCK 0`` waits at most ``BLOCK_FOREVER_S``, then answers nil as a
timeout does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any

import numpy as np

from memstore.client.streams import MAX_STEP, Group, Stream
from memstore.dataset import DataSet
from memstore.errors import ConnectionLost, KeyNotFound, ProtocolError, StepDropped, Timeout
from memstore.gateway.commands import (
    OK,
    CommandError,
    Context,
    Parked,
    arity,
    command,
    integer,
    text,
)
from memstore.gateway.resp import Pairs
from memstore.gateway.stream_ids import (
    first_after,
    lower_bound,
    step_id,
    step_of,
    upper_bound,
)

#: The field a step holding one tensor (not a dict or DataSet) reads back under.
TENSOR_FIELD = "tensor"
#: What ``BLOCK 0`` ("forever") waits at most; then the nil reply of a timeout.
BLOCK_FOREVER_S = 300.0
#: Times a read is tried again when a step it listed was dropped before its data came.
READ_TRIES = 3


def _stream(ctx: Context, key: str) -> Stream:
    """A handle on ``key`` that sends nothing and makes no stream."""
    return Stream(ctx.client, key, create=False)


def _info(stream: Stream) -> dict | None:
    try:
        return stream.info()
    except KeyNotFound:
        return None


# -- entries -------------------------------------------------------------------------------


def _item(key: str, pairs: list) -> dict:
    """``XADD``'s field/value pairs as a dict of ``uint8`` tensors (no copy of the values)."""
    if len(pairs) < 2 or len(pairs) % 2:
        raise CommandError("ERR wrong number of arguments for 'xadd' command")
    item: dict = {}
    for field, value in zip(pairs[::2], pairs[1::2], strict=True):
        name = text(field, "field")
        if name in item:
            raise CommandError(
                f"ERR stream {key!r}: field {name!r} given twice (a step's fields are a dict)"
            )
        item[name] = np.frombuffer(value, dtype=np.uint8)
    return item


def _raw(array: Any) -> memoryview:
    """A tensor's bytes, C order, without a copy when it is contiguous already."""
    return memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))


def _entry(step: int, item: Any) -> list:
    """``[id, [field, value, ...]]`` of one step."""
    if isinstance(item, DataSet):
        item = {n: item.get_tensor(n) for n in item.get_tensor_names()}
    elif not isinstance(item, dict):
        item = {TENSOR_FIELD: item}
    return [step_id(step), [x for name, array in item.items() for x in (name, _raw(array))]]


def _range(stream: Stream, first: int, last: int, count: int, newest: bool = False) -> list:
    """The entries of the held steps from ``first`` to ``last``, at most ``count`` (the
    newest, newest first, with ``newest``); a step dropped between listing and fetching
    makes the read start again (bounded)."""
    if first > min(last, MAX_STEP) or count <= 0:
        return []
    for attempt in range(READ_TRIES):
        try:
            got = stream.range(first, last, count, newest=newest)
            return [_entry(s, item) for s, item in (got[::-1] if newest else got)]
        except StepDropped:
            if attempt == READ_TRIES - 1:
                raise
        except KeyNotFound:
            return []
    return []


# -- options -------------------------------------------------------------------------------


def _maxlen(args: list, at: int, key: str) -> tuple[int, int]:
    """``MAXLEN [=|~] n`` at ``args[at]``: (n, the index after it). ``~`` trims exactly."""
    word = args[at].upper()
    if word == b"MINID":
        raise CommandError(
            f"ERR stream {key!r}: MINID is not supported (memstore's ids are step "
            "numbers, not times): trim with MAXLEN"
        )
    if word != b"MAXLEN" or at + 1 >= len(args):
        raise CommandError("ERR syntax error")
    at += 1 + (args[at + 1] in (b"=", b"~"))
    if at >= len(args):
        raise CommandError("ERR syntax error")
    n = integer(args[at])
    if n < 0:
        raise CommandError(f"ERR stream {key!r}: the MAXLEN argument must be >= 0, got {n}")
    return n, at + 1


def _block_seconds(value: bytes) -> float:
    ms = integer(value)
    if ms < 0:
        raise CommandError("ERR timeout is negative")
    return BLOCK_FOREVER_S if ms == 0 else min(ms / 1000, BLOCK_FOREVER_S)


def _read_options(args: list, name: str, at: int = 0) -> tuple[dict, list, list]:
    """``[COUNT n] [BLOCK ms] [NOACK] STREAMS key... id...``: options, keys, raw ids."""
    options: dict = {"count": MAX_STEP, "block": None, "noack": False}
    while at < len(args) and args[at].upper() != b"STREAMS":
        word = args[at].upper()
        if word == b"NOACK" and name == "xreadgroup":
            options["noack"], at = True, at + 1
            continue
        if word not in (b"COUNT", b"BLOCK") or at + 1 >= len(args):
            raise CommandError("ERR syntax error")
        if word == b"COUNT":
            options["count"] = max(integer(args[at + 1]), 0) or MAX_STEP
        else:
            options["block"] = _block_seconds(args[at + 1])
        at += 2
    rest = args[at + 1 :]
    if at >= len(args) or not rest or len(rest) % 2:
        raise CommandError(
            f"ERR Unbalanced '{name}' list of streams: for each stream key an ID or '$' "
            "must be specified."
        )
    half = len(rest) // 2
    return options, [text(k) for k in rest[:half]], rest[half:]


# -- commands ------------------------------------------------------------------------------


@command("XADD")
def _xadd(ctx: Context, args: list) -> Any:
    """``XADD key [NOMKSTREAM] [MAXLEN [=|~] n] *|id field value [...]``."""
    arity(args, 4, None, "xadd")
    key, at, maxlen, nomkstream = text(args[0]), 1, None, False
    while at < len(args) and args[at].upper() in (b"NOMKSTREAM", b"MAXLEN", b"MINID"):
        if args[at].upper() == b"NOMKSTREAM":
            nomkstream, at = True, at + 1
        else:
            maxlen, at = _maxlen(args, at, key)
    if at >= len(args) or args[at] != b"*":
        shown = args[at][:64].decode("latin-1") if at < len(args) else ""
        raise CommandError(
            f"ERR stream {key!r}: XADD takes the id '*' only, not {shown!r}: memstore's "
            "home shard numbers the steps (step s has the id '<s>-1')"
        )
    item = _item(key, args[at + 1 :])
    stream = _stream(ctx, key)
    try:
        step = stream.append(item)
    except KeyNotFound:
        if nomkstream:
            return None
        stream = Stream(ctx.client, key, maxlen or None)  # made now, bounded by MAXLEN
        step = stream.append(item)
    if maxlen is not None:
        stream.trim(maxlen)
    return step_id(step)


@command("XLEN")
def _xlen(ctx: Context, args: list) -> Any:
    arity(args, 1, 1, "xlen")
    info = _info(_stream(ctx, text(args[0])))
    return 0 if info is None else info["steps"]


@command("XRANGE")
def _xrange(ctx: Context, args: list) -> Any:
    """``XRANGE key start end [COUNT n]``."""
    key, count = _range_options(args, "xrange")
    first, last = lower_bound(args[1], key), upper_bound(args[2], key)
    return _range(_stream(ctx, key), first, last, count)


@command("XREVRANGE")
def _xrevrange(ctx: Context, args: list) -> Any:
    """``XREVRANGE key end start [COUNT n]``: newest first."""
    key, count = _range_options(args, "xrevrange")
    first, last = lower_bound(args[2], key), upper_bound(args[1], key)
    return _range(_stream(ctx, key), first, last, count, newest=True)


def _range_options(args: list, name: str) -> tuple[str, int]:
    """The key and ``COUNT`` (default: all) of ``XRANGE``/``XREVRANGE``."""
    arity(args, 3, 5, name)
    if len(args) > 3 and (len(args) != 5 or args[3].upper() != b"COUNT"):
        raise CommandError("ERR syntax error")
    return text(args[0]), integer(args[4]) if len(args) == 5 else MAX_STEP


@command("XTRIM")
def _xtrim(ctx: Context, args: list) -> Any:
    """``XTRIM key MAXLEN [=|~] n``: how many steps were dropped."""
    arity(args, 3, 4, "xtrim")
    key = text(args[0])
    maxlen, at = _maxlen(args, 1, key)
    if at != len(args):
        raise CommandError("ERR syntax error")
    try:
        return _stream(ctx, key).trim(maxlen)
    except KeyNotFound:
        return 0


@command("XDEL")
def _xdel(ctx: Context, args: list) -> Any:
    """``XDEL key id...``: how many of those steps were held."""
    arity(args, 2, None, "xdel")
    key = text(args[0])
    steps = [s for s in (step_of(raw, key) for raw in args[1:]) if s is not None]
    try:
        return _stream(ctx, key).delete_steps(steps) if steps else 0
    except KeyNotFound:
        return 0


@command("XREAD")
def _xread(ctx: Context, args: list) -> Any:
    """``XREAD [COUNT n] [BLOCK ms] STREAMS key... id...``; ``$``: steps after the newest."""
    options, keys, ids = _read_options(args, "xread")
    reads = []
    for key, raw in zip(keys, ids, strict=True):
        stream = _stream(ctx, key)
        info = _info(stream)
        known_next = 0 if info is None else info["next"]
        first = known_next if raw == b"$" else first_after(raw, key)
        reads.append((stream, first, max(first, known_next), info is not None))
    found = _read_now(reads, options["count"])
    if found or options["block"] is None:
        return found or None
    seconds = options["block"]
    waits = [_wait(ctx, stream, step, made, seconds) for stream, _, step, made in reads]
    woken = _first_of(waits)
    return Parked("XREAD", woken, seconds, lambda: _read_now(reads, options["count"]) or None)


def _read_now(reads: list, count: int) -> Pairs:
    """``[[key, entries], ...]`` of the streams with steps from their ``first`` on."""
    found = Pairs()
    for stream, first, *_ in reads:
        entries = _range(stream, first, MAX_STEP, count)
        if entries:
            found.append([stream.name, entries])
    return found


def _wait(ctx: Context, stream: Stream, step: int, made: bool, seconds: float) -> Future:
    """A wait on ``stream``'s home shard until ``step`` is appended, or ``seconds``. A
    stream not ``made`` yet is made now (with null settings, which a producer's settings
    replace) so that it can be waited on."""
    if not made:
        Stream(ctx.client, stream.name)
    return stream.wait_async(step, seconds)


def _first_of(futures: list) -> Future:
    """A future done as soon as one of ``futures`` is, whatever its outcome."""
    first = Future()

    def done(_: Future) -> None:
        with contextlib.suppress(InvalidStateError):  # another one was first
            first.set_result(None)

    for future in futures:
        future.add_done_callback(done)
    return first


@command("XGROUP")
def _xgroup(ctx: Context, args: list) -> Any:
    """``XGROUP CREATE key group id|$ [MKSTREAM]`` (the other subcommands are refused)."""
    arity(args, 1, None, "xgroup")
    if args[0].upper() != b"CREATE":
        shown = args[0][:32].decode("latin-1")
        raise CommandError(f"ERR XGROUP {shown!r} is not supported by memstore: CREATE only")
    arity(args, 4, 5, "xgroup")
    key, group = text(args[1]), text(args[2], "group name")
    if len(args) == 5 and args[4].upper() != b"MKSTREAM":
        raise CommandError("ERR syntax error")
    stream = _stream(ctx, key)
    info = _info(stream)
    if info is None and len(args) < 5:
        raise CommandError(
            f"ERR The XGROUP subcommand requires the key to exist (stream {key!r}). Note that "
            "for CREATE you may want to use the MKSTREAM option to create an empty stream "
            "automatically."
        )
    if info is None:
        info = Stream(ctx.client, key).info()
    if group in info["groups"]:
        raise CommandError(f"BUSYGROUP Consumer Group name {group!r} already exists on {key!r}")
    start = "next" if args[3] == b"$" else first_after(args[3], key)
    stream.group(group, member="", start=start)
    return OK


def _no_group(stream: Stream, group: str, error: Exception, command_name: str) -> Exception:
    """``-NOGROUP`` when ``group`` (or the stream) does not exist, else ``error`` itself."""
    info = _info(stream)
    if info is not None and group in info["groups"]:
        return error
    return CommandError(
        f"NOGROUP No such key {stream.name!r} or consumer group {group!r} in {command_name}"
    )


@command("XREADGROUP")
def _xreadgroup(ctx: Context, args: list) -> Any:
    """``XREADGROUP GROUP g consumer [COUNT n] [BLOCK ms] [NOACK] STREAMS key... >...``."""
    arity(args, 6, None, "xreadgroup")
    if args[0].upper() != b"GROUP":
        raise CommandError("ERR syntax error")
    group, member = text(args[1], "group name"), text(args[2], "consumer name")
    options, keys, ids = _read_options(args, "xreadgroup", at=3)
    for key, raw in zip(keys, ids, strict=True):
        if raw != b">":
            raise CommandError(
                f"ERR stream {key!r}: memstore's XREADGROUP reads new steps only (id '>'); "
                "a consumer's pending history is not kept: an unacked step is delivered "
                "again after the visibility timeout"
            )
    if options["block"] is not None and len(keys) > 1:
        raise CommandError("ERR memstore's XREADGROUP BLOCK waits on one stream: name one key")
    found = Pairs()
    for key in keys:
        handle = _stream(ctx, key).group(group, member=member, create=False)
        entries = _delivered(handle, _take(handle, options["count"]), options["noack"])
        if entries:
            found.append([key, entries])
    if found or options["block"] is None:
        return found or None
    seconds = options["block"]
    waiting = _taking(handle, lambda: handle.take_async(timeout=seconds))

    def then() -> Any:
        first = _taking(handle, lambda: [_result(waiting)])
        taken = [] if first == [None] else first + _take(handle, options["count"] - 1)
        entries = _delivered(handle, taken, options["noack"])
        return Pairs([[keys[0], entries]]) if entries else None

    return Parked("XREADGROUP", waiting, seconds, then)


def _result(waiting: Future) -> Any:
    """A blocked take's ``(step, item)``; None when it timed out or its step was dropped."""
    try:
        return waiting.result(0)
    except ConnectionLost:  # a NoAnswer is a Timeout too, but an error here
        raise
    except (Timeout, StepDropped):
        return None


def _taking(handle: Group, call: Callable[[], Any]) -> Any:
    """``call()``, with an unknown group or stream answered ``-NOGROUP``."""
    try:
        return call()
    except StepDropped:
        raise
    except (ProtocolError, KeyNotFound) as exc:
        error = _no_group(handle.stream, handle.name, exc, "XREADGROUP with GROUP option")
        raise error from None


def _delivered(handle: Group, taken: list, noack: bool) -> list:
    """The entries of the ``(step, item)`` pairs taken (acked at once with ``NOACK``)."""
    if noack and taken:
        handle.ack([s for s, _ in taken])
    return [_entry(s, item) for s, item in taken]


def _take(handle: Group, count: int) -> list:
    """Up to ``count`` steps for the member, of those delivered now (no waiting)."""
    taken: list = []
    while len(taken) < count:
        try:
            got = _taking(handle, lambda: handle.take(timeout=0.0))
        except StepDropped:  # dropped after it was taken: nothing to deliver
            continue
        except ConnectionLost:
            raise
        except Timeout:
            break
        if got is None:  # the stream is closed and every step was delivered
            break
        taken.append(got)
    return taken


@command("XACK")
def _xack(ctx: Context, args: list) -> Any:
    """``XACK key group id...``: how many of those steps were pending for the group."""
    arity(args, 3, None, "xack")
    key, group = text(args[0]), text(args[1], "group name")
    steps = [s for s in (step_of(raw, key) for raw in args[2:]) if s is not None]
    handle = _stream(ctx, key).group(group, member="", create=False)
    try:
        return handle.ack(steps) if steps else 0
    except KeyNotFound:
        return 0
    except ProtocolError as exc:
        error = _no_group(handle.stream, group, exc, "XACK")
        if error is not exc:
            raise error from None
    # a step never delivered to the group: Redis counts an id that was not pending as 0
    return sum(_ack_one(handle, step) for step in steps)


def _ack_one(handle: Group, step: int) -> int:
    try:
        return handle.ack(step)
    except ProtocolError:  # never delivered
        return 0
