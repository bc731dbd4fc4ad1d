"""Redis stream ids <-> memstore step numbers, for the gateway's X* commands.

Step ``s`` is the id ``"<s>-1"``: ids sort as their steps do, every id is above ``0-0``
(so ``XREAD ... 0`` and ``XGROUP CREATE ... 0`` start at step 0, as in Redis), and an id
reads back as its step. A bound given as ``ms`` or ``ms-seq`` (Redis's full id range, two
unsigned 64-bit numbers, ``(`` for an exclusive one) becomes the first or last step whose
id is inside it; ids that no step has (``5-0``, ``5-2``) simply fall between steps.
"""

from __future__ import annotations

from memstore.client.streams import MAX_STEP
from memstore.gateway.commands import CommandError

SEQ = 1  # the sequence part of every step's id
U64 = 2**64 - 1


def step_id(step: int) -> str:
    """The Redis id of ``step``."""
    return f"{step}-{SEQ}"


def parse(raw: bytes, key: str, seq_default: int = 0) -> tuple[int, int]:
    """``ms[-seq]`` as ``(ms, seq)``; a missing seq is ``seq_default``.

    Raises:
        CommandError: not a Redis stream id (the message names the key).
    """
    ms, dash, seq = raw.partition(b"-")
    try:
        parts = (int(ms), int(seq) if dash else seq_default)
    except ValueError:
        parts = (-1, -1)
    if not all(0 <= p <= U64 for p in parts) or not ms.isdigit() or (dash and not seq.isdigit()):
        raise CommandError(
            "ERR Invalid stream ID specified as stream command argument: "
            f"{raw[:64].decode('latin-1')!r} (stream {key!r}; memstore's ids are <step>-{SEQ})"
        )
    return parts


def first_after(raw: bytes, key: str) -> int:
    """The first step whose id is above ``raw`` (``XREAD``, ``XGROUP CREATE``)."""
    ms, seq = parse(raw, key)
    return ms if seq < SEQ else ms + 1


def lower_bound(raw: bytes, key: str) -> int:
    """The first step ``XRANGE``'s start ``raw`` lets in (``-``, ``(id`` or ``id``)."""
    if raw == b"-":
        return 0
    if raw == b"+":
        return MAX_STEP + 1
    if raw.startswith(b"("):
        return first_after(raw[1:], key)
    ms, seq = parse(raw, key)
    return ms if seq <= SEQ else ms + 1


def upper_bound(raw: bytes, key: str) -> int:
    """The last step ``XRANGE``'s end ``raw`` lets in (``+``, ``(id`` or ``id``); -1: none."""
    if raw == b"+":
        return MAX_STEP
    if raw == b"-":
        return -1
    if raw.startswith(b"("):
        ms, seq = parse(raw[1:], key, U64)
        return min(ms if seq > SEQ else ms - 1, MAX_STEP)
    ms, seq = parse(raw, key, U64)
    return min(ms if seq >= SEQ else ms - 1, MAX_STEP)


def step_of(raw: bytes, key: str) -> int | None:
    """The step whose id ``raw`` is (``XACK``, ``XDEL``); None if no step has that id."""
    ms, seq = parse(raw, key)
    return ms if seq == SEQ and ms <= MAX_STEP else None
