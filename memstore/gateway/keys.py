"""Key, hash and list commands, mapped onto memstore's tensors, datasets and lists.

A Redis hash (SmartRedis keeps a dataset's metadata in one) is stored as a memstore dataset
whose tensors are the fields' bytes (``uint8``), so hash values stay binary-safe. A Redis
list is a memstore list; its items must be UTF-8 (SmartRedis lists hold dataset keys).
Hash writes are read-modify-write in the gateway: not atomic between two gateways.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from memstore.dataset import DataSet
from memstore.errors import KeyNotFound
from memstore.gateway.commands import OK, CommandError, Context, arity, command, integer, text
from memstore.kinds import DATASET, LIST, TENSOR


def _delete(ctx: Context, key: str) -> bool:
    try:
        ctx.client.keys.delete(key)
    except KeyNotFound:
        return False
    return True


@command("DEL", "UNLINK")
def _del(ctx: Context, args: list) -> Any:
    """One request per shard (a bulk delete); a key named twice is deleted once, as Redis."""
    arity(args, 1, None, "del")
    return ctx.client.keys.delete_many([text(k) for k in args])


@command("EXISTS")
def _exists(ctx: Context, args: list) -> Any:
    """One request per shard; a key named twice counts twice, as Redis."""
    arity(args, 1, None, "exists")
    return sum(ctx.client.keys.exists_many([text(k) for k in args]))


def _kind_of(ctx: Context, key: str) -> str:
    for kind in (TENSOR, DATASET, LIST):
        if ctx.client.keys.exists(key, kind):
            return kind
    raise CommandError("ERR no such key")


@command("TYPE")
def _type(ctx: Context, args: list) -> Any:
    arity(args, 1, 1, "type")
    try:
        kind = _kind_of(ctx, text(args[0]))
    except CommandError:
        return OK.__class__("none")
    return OK.__class__({TENSOR: "string", DATASET: "hash", LIST: "list"}[kind])


@command("RENAME")
def _rename(ctx: Context, args: list) -> Any:
    arity(args, 2, 2, "rename")
    src, dst = text(args[0]), text(args[1])
    ctx.client.keys.rename(src, dst, _kind_of(ctx, src))
    return OK


@command("COPY")
def _copy(ctx: Context, args: list) -> Any:
    arity(args, 2, 3, "copy")
    src, dst = text(args[0]), text(args[1])
    replace = len(args) == 3 and args[2].upper() == b"REPLACE"
    if ctx.client.key_exists(dst) and not replace:
        return 0
    ctx.client.keys.copy(src, dst, _kind_of(ctx, src))
    return 1


# -- hashes ----------------------------------------------------------------------------------


def _hash(ctx: Context, key: str) -> DataSet | None:
    if not ctx.client.keys.exists(key, DATASET):
        return None
    return ctx.client.keys.get_dataset(key)


def _fields(dataset: DataSet | None) -> dict[str, bytes]:
    if dataset is None:
        return {}
    return {f: dataset.get_tensor(f).tobytes() for f in dataset.get_tensor_names()}


@command("HSET", "HMSET")
def _hset(ctx: Context, args: list) -> Any:
    if len(args) < 3 or len(args) % 2 == 0:
        raise CommandError("ERR wrong number of arguments for 'hset' command")
    key = text(args[0])
    dataset = _hash(ctx, key) or DataSet(key)
    before = set(dataset.get_tensor_names())
    for field, value in zip(args[1::2], args[2::2], strict=True):
        dataset.add_tensor(text(field, "field"), np.frombuffer(value, dtype=np.uint8))
    ctx.client.keys.put_dataset(key, dataset)
    return len(set(dataset.get_tensor_names()) - before)


@command("HGETALL")
def _hgetall(ctx: Context, args: list) -> Any:
    arity(args, 1, 1, "hgetall")
    return [x for pair in _fields(_hash(ctx, text(args[0]))).items() for x in pair]


@command("HGET")
def _hget(ctx: Context, args: list) -> Any:
    arity(args, 2, 2, "hget")
    return _fields(_hash(ctx, text(args[0]))).get(text(args[1], "field"))


@command("HEXISTS")
def _hexists(ctx: Context, args: list) -> Any:
    arity(args, 2, 2, "hexists")
    return text(args[1], "field") in _fields(_hash(ctx, text(args[0])))


@command("HLEN")
def _hlen(ctx: Context, args: list) -> Any:
    arity(args, 1, 1, "hlen")
    return len(_fields(_hash(ctx, text(args[0]))))


@command("HKEYS")
def _hkeys(ctx: Context, args: list) -> Any:
    arity(args, 1, 1, "hkeys")
    return list(_fields(_hash(ctx, text(args[0]))))


@command("HDEL")
def _hdel(ctx: Context, args: list) -> Any:
    arity(args, 2, None, "hdel")
    key = text(args[0])
    fields = _fields(_hash(ctx, key))
    gone = [f for f in (text(a, "field") for a in args[1:]) if fields.pop(f, None) is not None]
    if not gone:
        return 0
    if not fields:
        _delete(ctx, key)  # Redis: a hash with no fields is no key
        return len(gone)
    dataset = DataSet(key)
    for field, value in fields.items():
        dataset.add_tensor(field, np.frombuffer(value, dtype=np.uint8))
    ctx.client.keys.put_dataset(key, dataset)
    return len(gone)


# -- lists -----------------------------------------------------------------------------------


@command("RPUSH")
def _rpush(ctx: Context, args: list) -> Any:
    arity(args, 2, None, "rpush")
    items = [text(a, "list item") for a in args[1:]]
    return ctx.client.keys.list_push(text(args[0]), items)


@command("LRANGE")
def _lrange(ctx: Context, args: list) -> Any:
    arity(args, 3, 3, "lrange")
    return ctx.client.keys.list_range(text(args[0]), integer(args[1]), integer(args[2]))


@command("LLEN")
def _llen(ctx: Context, args: list) -> Any:
    arity(args, 1, 1, "llen")
    return ctx.client.keys.list_length(text(args[0]))
