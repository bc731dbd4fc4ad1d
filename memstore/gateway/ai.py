"""RedisAI's commands (SmartRedis's tensors, models and scripts) on memstore's client.

``AI.TENSORSET`` wraps the request's blob as an array (no copy) and stores it with
``put_tensor``; ``AI.TENSORGET`` answers with the stored array's own buffer, so a tensor is
the same entry whichever client wrote it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from memstore.gateway.commands import OK, CommandError, Context, arity, command, integer, text

#: RedisAI type names <-> numpy dtypes (little-endian, as RedisAI stores them).
DTYPES = {
    "FLOAT": np.dtype("<f4"),
    "DOUBLE": np.dtype("<f8"),
    "HALF": np.dtype("<f2"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "BOOL": np.dtype("?"),
}
_NAMES = {dtype: name for name, dtype in DTYPES.items()}


def _dtype(value: bytes) -> np.dtype:
    try:
        return DTYPES[value.decode("latin-1").upper()]
    except KeyError:
        raise CommandError(f"ERR invalid data type {value[:32].decode('latin-1')!r}") from None


def joined(chunks: list) -> bytes | bytearray:
    """A blob sent in ``chunks``; one chunk (what clients send) as it is, not copied."""
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


@command("AI.TENSORSET")
def _tensorset(ctx: Context, args: list) -> Any:
    arity(args, 2, None, "ai.tensorset")
    key, dtype = text(args[0]), _dtype(args[1])
    rest = args[2:]
    upper = [a.upper() for a in rest]
    cut = next((i for i, a in enumerate(upper) if a in (b"BLOB", b"VALUES")), len(rest))
    shape = [integer(d) for d in rest[:cut]]
    if any(d < 0 for d in shape):
        raise CommandError("ERR invalid or negative value found in tensor shape")
    count = int(np.prod(shape)) if shape else 1
    if cut == len(rest):
        array = np.zeros(count, dtype)
    elif upper[cut] == b"BLOB":
        blob = joined(rest[cut + 1 :])
        if len(blob) != count * dtype.itemsize:
            raise CommandError("ERR data length does not match tensor shape and type")
        array = np.frombuffer(blob, dtype)
    else:
        values = rest[cut + 1 :]
        if len(values) != count:
            raise CommandError("ERR wrong number of values provided")
        parse = float if dtype.kind == "f" else int
        try:
            array = np.array([parse(v) for v in values], dtype)
        except (ValueError, OverflowError):
            raise CommandError("ERR invalid value") from None
    ctx.client.put_tensor(key, array.reshape(shape))
    return OK


@command("AI.TENSORGET")
def _tensorget(ctx: Context, args: list) -> Any:
    arity(args, 1, 3, "ai.tensorget")
    key = text(args[0])
    want = {a.upper() for a in args[1:]}
    if not want <= {b"META", b"BLOB", b"VALUES"} or {b"BLOB", b"VALUES"} <= want:
        raise CommandError("ERR unrecognized parameter or BLOB with VALUES")
    if not ctx.client.tensor_exists(key):
        raise CommandError("ERR tensor key is empty or in a different shard")
    array = np.asarray(ctx.client.get_tensor(key))
    name = _NAMES.get(array.dtype.newbyteorder("<") if array.dtype.itemsize > 1 else array.dtype)
    if name is None:
        raise CommandError(f"ERR tensor {key!r} has dtype {array.dtype}, which RedisAI lacks")
    blob = memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
    if not want:
        want = {b"META", b"VALUES"}
    if want == {b"BLOB"}:
        return blob
    reply: list = []
    if b"META" in want:
        reply += ["dtype", name, "shape", list(array.shape)]
    if b"BLOB" in want:
        reply += ["blob", blob]
    elif b"VALUES" in want:
        flat = array.reshape(-1).tolist()
        reply += ["values", [repr(v) if isinstance(v, float) else int(v) for v in flat]]
    return reply


# -- models ----------------------------------------------------------------------------------


def _names(args: list, at: int) -> tuple[list[str], int]:
    """``n name1 .. namen`` starting at ``args[at]``: the names and the index after them."""
    if at >= len(args):
        raise CommandError("ERR missing name count")
    count = integer(args[at])
    names = args[at + 1 : at + 1 + count]
    if count < 0 or len(names) != count:
        raise CommandError("ERR wrong number of names")
    return [text(n) for n in names], at + 1 + count


@command("AI.MODELSTORE")
def _modelstore(ctx: Context, args: list) -> Any:
    arity(args, 4, None, "ai.modelstore")
    key, backend, device = text(args[0]), text(args[1]), text(args[2])
    options: dict[str, Any] = {"inputs": [], "outputs": []}
    i = 3
    while i < len(args):
        word = args[i].upper()
        if word == b"BLOB":
            blob = joined(args[i + 1 :])
            break
        if word in (b"INPUTS", b"OUTPUTS"):
            options[word.decode().lower()], i = _names(args, i + 1)
            continue
        if i + 1 >= len(args):
            raise CommandError(f"ERR missing value for {word.decode('latin-1')}")
        if word == b"TAG":
            options["tag"] = text(args[i + 1], "tag")
        elif word in (b"BATCHSIZE", b"MINBATCHSIZE", b"MINBATCHTIMEOUT"):
            field = {b"BATCHSIZE": "batch_size", b"MINBATCHSIZE": "min_batch_size"}
            options[field.get(word, "min_batch_timeout")] = integer(args[i + 1])
        else:
            raise CommandError(f"ERR unrecognized parameter {word[:32].decode('latin-1')}")
        i += 2
    else:
        raise CommandError("ERR insufficient arguments, missing model BLOB")
    ctx.client.set_model(key, blob, backend, device, **options)
    return OK


@command("AI.MODELGET")
def _modelget(ctx: Context, args: list) -> Any:
    arity(args, 1, 3, "ai.modelget")
    blob = ctx.client.get_model(text(args[0]))
    want = {a.upper() for a in args[1:]} or {b"META", b"BLOB"}
    if want == {b"BLOB"}:
        return blob
    reply: list = ["backend", "TORCH", "device", "CPU", "tag", ""]
    return reply + (["blob", blob] if b"BLOB" in want else [])


@command("AI.MODELDEL")
def _modeldel(ctx: Context, args: list) -> Any:
    arity(args, 1, 1, "ai.modeldel")
    ctx.client.delete_model(text(args[0]))
    return OK


def _io(args: list, at: int, words: tuple[bytes, ...], counted: bool) -> dict[str, list[str]]:
    """``INPUTS ...``/``OUTPUTS ...``/``KEYS ...`` groups: counted (``n a b``) or not."""
    found: dict[str, list[str]] = {}
    i = at
    while i < len(args):
        word = args[i].upper()
        if word == b"TIMEOUT":
            i += 2
            continue
        if word not in words:
            raise CommandError(f"ERR unrecognized parameter {word[:32].decode('latin-1')}")
        if counted:
            found[word.decode().lower()], i = _names(args, i + 1)
        else:
            j = i + 1
            while j < len(args) and args[j].upper() not in (*words, b"TIMEOUT"):
                j += 1
            found[word.decode().lower()] = [text(n) for n in args[i + 1 : j]]
            i = j
    return found


@command("AI.MODELEXECUTE")
def _modelexecute(ctx: Context, args: list) -> Any:
    arity(args, 1, None, "ai.modelexecute")
    io = _io(args, 1, (b"INPUTS", b"OUTPUTS"), counted=True)
    ctx.client.run_model(text(args[0]), io.get("inputs", []), io.get("outputs", []))
    return OK


@command("AI.MODELRUN")
def _modelrun(ctx: Context, args: list) -> Any:
    arity(args, 1, None, "ai.modelrun")
    io = _io(args, 1, (b"INPUTS", b"OUTPUTS"), counted=False)
    ctx.client.run_model(text(args[0]), io.get("inputs", []), io.get("outputs", []))
    return OK


# -- scripts ---------------------------------------------------------------------------------


@command("AI.SCRIPTSET", "AI.SCRIPTSTORE")
def _scriptset(ctx: Context, args: list) -> Any:
    arity(args, 3, None, "ai.scriptset")
    key, device = text(args[0]), text(args[1])
    upper = [a.upper() for a in args]
    if b"SOURCE" not in upper[2:] or upper.index(b"SOURCE", 2) + 1 >= len(args):
        raise CommandError("ERR insufficient arguments, missing script SOURCE")
    source = args[upper.index(b"SOURCE", 2) + 1]
    ctx.client.set_script(key, text(source, "script source"), device)
    return OK


@command("AI.SCRIPTGET")
def _scriptget(ctx: Context, args: list) -> Any:
    arity(args, 1, 3, "ai.scriptget")
    source = ctx.client.get_script(text(args[0]))
    want = {a.upper() for a in args[1:]} or {b"META", b"SOURCE"}
    if want == {b"SOURCE"}:
        return source
    return ["device", "CPU", "tag", ""] + (["source", source] if b"SOURCE" in want else [])


@command("AI.SCRIPTDEL")
def _scriptdel(ctx: Context, args: list) -> Any:
    arity(args, 1, 1, "ai.scriptdel")
    ctx.client.delete_script(text(args[0]))
    return OK


@command("AI.SCRIPTRUN")
def _scriptrun(ctx: Context, args: list) -> Any:
    arity(args, 2, None, "ai.scriptrun")
    io = _io(args, 2, (b"INPUTS", b"OUTPUTS"), counted=False)
    if "outputs" not in io:
        raise CommandError("ERR insufficient arguments, missing OUTPUTS")
    ctx.client.run_script(text(args[0]), text(args[1]), io.get("inputs", []), io["outputs"])
    return OK


@command("AI.SCRIPTEXECUTE")
def _scriptexecute(ctx: Context, args: list) -> Any:
    arity(args, 2, None, "ai.scriptexecute")
    io = _io(args, 2, (b"KEYS", b"INPUTS", b"ARGS", b"OUTPUTS"), counted=True)
    ctx.client.run_script(text(args[0]), text(args[1]), io.get("inputs", []), io.get("outputs", []))
    return OK


# -- statistics and settings -----------------------------------------------------------------


@command("AI.INFO")
def _info(ctx: Context, args: list) -> Any:
    arity(args, 1, 2, "ai.info")
    key = text(args[0])
    reset = len(args) == 2 and args[1].upper() == b"RESETSTAT"
    stats = ctx.client.get_ai_info(key, reset_stat=reset)
    if reset:
        return OK
    return [
        "key", key, "type", "MODEL", "backend", "TORCH", "device", "CPU", "tag", "",
        "duration", int(stats.get("total_time", 0) * 1e6), "samples", -1,
        "calls", int(stats.get("calls", 0)), "errors", int(stats.get("errors", 0)),
    ]  # fmt: skip


@command("AI.CONFIG")
def _aiconfig(ctx: Context, args: list) -> Any:
    arity(args, 1, 2, "ai.config")
    if args[0].upper() == b"GET" and len(args) == 2:
        if args[1].upper() == b"MODEL_CHUNK_SIZE":
            return ctx.model_chunk_size
        return None
    if args[0].upper() == b"MODEL_CHUNK_SIZE" and len(args) == 2:
        ctx.model_chunk_size = integer(args[1])
        return OK
    if args[0].upper() in (b"BACKENDSPATH", b"LOADBACKEND"):
        return OK
    raise CommandError("ERR unsupported AI.CONFIG option")
