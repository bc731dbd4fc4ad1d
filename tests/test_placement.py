"""Key → slot → shard: Redis Cluster's slots and hash tags, stable and evenly spread."""

from __future__ import annotations

import itertools
import math
import random
import string
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memstore.placement import SLOTS, hash_tag, key_shard, key_slot, slot_range, slot_shard

shard_counts = st.integers(min_value=1, max_value=64)
keys = st.text(max_size=40)


def _crc16_xmodem(data: bytes) -> int:
    """Bit-by-bit CRC16-CCITT (XMODEM), as in Redis's crc16.c, written independently."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


@pytest.mark.parametrize(
    ("key", "slot"),
    [
        ("123456789", 12739),  # the CRC16 check value 0x31C3, quoted by the Redis spec
        ("foo", 12182),  # CLUSTER KEYSLOT foo
        ("bar", 5061),
        ("hello", 866),
        ("somekey", 11058),
        ("", 0),
        ("{foo}bar", 12182),
        ("{user1000}.following", key_slot("user1000")),
    ],
)
def test_reference_slots(key, slot):
    """Slots match the values Redis Cluster gives for the same keys."""
    assert key_slot(key) == slot


@given(keys)
def test_slot_is_crc16_xmodem_of_the_hash_tag(key):
    """key_slot equals an independent CRC16-XMODEM of the tag, mod 16384."""
    assert key_slot(key) == _crc16_xmodem(hash_tag(key).encode()) % SLOTS


@pytest.mark.parametrize(
    ("key", "tag"),
    [
        ("{user1000}.following", "user1000"),
        ("{user1000}.followers", "user1000"),
        ("foo{}{bar}", "foo{}{bar}"),  # the first {} is empty: the whole key is hashed
        ("foo{{bar}}zap", "{bar"),  # the tag runs from the first { to the next }
        ("foo{bar}{zap}", "bar"),  # only the first tag counts
        ("{}", "{}"),
        ("{", "{"),
        ("}", "}"),
        ("}{", "}{"),
        ("{a", "{a"),
        ("a}b{c}", "c"),  # a } before the first { does not close anything
        ("{}{a}", "{}{a}"),
        ("plain", "plain"),
        ("", ""),
        ("é{ß}ü", "ß"),
    ],
)
def test_hash_tag_rules(key, tag):
    """The hash tag is the first non-empty {...} after the first {, as in Redis Cluster."""
    assert hash_tag(key) == tag


@given(key=keys, shards=shard_counts)
def test_key_shard_is_stable_and_in_range(key, shards):
    """A key maps to the same shard every time, inside [0, shards)."""
    shard = key_shard(key, shards)
    assert 0 <= shard < shards
    assert key_shard(key, shards) == shard
    assert shard == slot_shard(key_slot(key), shards)


@given(shards=shard_counts)
def test_slot_ranges_partition_the_slots(shards):
    """slot_range of each shard is the exact inverse of slot_shard; together they cover every
    slot once, in order, with sizes differing by at most one."""
    ranges = [slot_range(i, shards) for i in range(shards)]
    assert ranges[0].start == 0 and ranges[-1].stop == SLOTS
    for before, after in itertools.pairwise(ranges):
        assert before.stop == after.start
    assert max(map(len, ranges)) - min(map(len, ranges)) <= 1
    for i, slots in enumerate(ranges):
        assert all(slot_shard(s, shards) == i for s in slots)


@given(slot=st.integers(0, SLOTS - 1), shards=shard_counts)
def test_slot_shard_in_range_and_inside_its_slot_range(slot, shards):
    """Every slot's shard owns that slot."""
    shard = slot_shard(slot, shards)
    assert 0 <= shard < shards
    assert slot in slot_range(shard, shards)


@given(
    prefix=st.text(max_size=10).filter(lambda s: "{" not in s),
    tag=st.text(min_size=1, max_size=10).filter(lambda s: "}" not in s),
    suffix=st.text(max_size=10),
    other_suffix=st.text(max_size=10),
    shards=shard_counts,
)
def test_same_hash_tag_same_shard(prefix, tag, suffix, other_suffix, shards):
    """Keys sharing a {tag} land on one shard, whatever surrounds the tag."""
    a = f"{prefix}{{{tag}}}{suffix}"
    b = f"{{{tag}}}{other_suffix}"
    assert hash_tag(a) == hash_tag(b) == tag
    assert key_shard(a, shards) == key_shard(b, shards)


def _random_keys(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + "._-:/"
    return ["".join(rng.choices(alphabet, k=rng.randint(1, 24))) for _ in range(n)]


@pytest.mark.parametrize("shards", [2, 3, 4, 5, 7, 8, 16, 64])
@pytest.mark.parametrize("seed", [0, 1])
def test_spread_over_shards(shards, seed):
    """10,000 random keys spread evenly: each shard's count is within 6 standard deviations
    of the binomial expectation 10,000/N (and every shard gets keys)."""
    n = 10_000
    counts = Counter(key_shard(key, shards) for key in _random_keys(n, seed))
    p = 1 / shards
    expected, sigma = n * p, math.sqrt(n * p * (1 - p))
    assert set(counts) == set(range(shards))
    for shard in range(shards):
        assert abs(counts[shard] - expected) <= 6 * sigma + 2, (shard, counts[shard], expected)


def test_slots_themselves_spread():
    """The 16384 slots fill evenly: 10,000 keys over 16 slot bands of 1024 each."""
    counts = Counter(key_slot(key) // 1024 for key in _random_keys(10_000, 2))
    assert len(counts) == 16
    assert max(counts.values()) < 1.3 * 10_000 / 16
    assert min(counts.values()) > 0.7 * 10_000 / 16


def test_sequential_keys_spread():
    """Keys that differ only in a counter (snap0, snap1, ...) still spread over shards."""
    counts = Counter(key_shard(f"snap{i}", 4) for i in range(4000))
    assert min(counts.values()) > 0.8 * 1000 and max(counts.values()) < 1.2 * 1000
