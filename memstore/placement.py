"""Key → slot → shard, the Redis Cluster way.

A key's slot is ``CRC16(key) % 16384`` (XMODEM CRC, as Redis Cluster), computed over the
``{hash tag}`` alone when the key has a non-empty one, so ``{snap7}.u`` and ``{snap7}.v``
land on the same shard. Slots are split into contiguous, equal ranges, one per shard, in
the order of the cluster's address list; every client and shard of a cluster agrees on that
list because shards hand it out (see ``Client``).
"""

from __future__ import annotations

from binascii import crc_hqx

SLOTS = 16384


def hash_tag(key: str) -> str:
    """The part of ``key`` that decides its slot: the first non-empty ``{...}``, else all."""
    start = key.find("{")
    if start != -1:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def key_slot(key: str) -> int:
    """Slot of ``key`` in ``[0, 16384)``."""
    return crc_hqx(hash_tag(key).encode(), 0) % SLOTS


def slot_shard(slot: int, shards: int) -> int:
    """Shard index owning ``slot`` when ``shards`` shards split the slots evenly."""
    return slot * shards // SLOTS


def key_shard(key: str, shards: int) -> int:
    """Shard index for ``key`` in a cluster of ``shards`` shards."""
    return slot_shard(key_slot(key), shards)


def slot_range(index: int, shards: int) -> range:
    """The slots shard ``index`` owns (the inverse of :func:`slot_shard`)."""
    first = -(-index * SLOTS // shards)
    last = -(-(index + 1) * SLOTS // shards)
    return range(first, last)
