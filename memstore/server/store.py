"""A shard's data: entries by key, memory accounting and parked waiters.

No sockets and no threads here: the shard loop calls in, and waiters are plain callbacks,
so the store is easy to test and the loop stays the only owner of the network.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from memstore import wire
from memstore.errors import KeyNotFound, StoreFull, WrongType

#: Bytes charged per entry on top of its payload (dict slot, header, key).
ENTRY_OVERHEAD = 128

TENSOR, DATASET, LIST, MODEL, SCRIPT = "tensor", "dataset", "list", "model", "script"
#: Kinds every shard holds a copy of (so their keys are not routed by placement).
REPLICATED = (MODEL, SCRIPT)


@dataclass
class Entry:
    """One stored value. ``frames`` are received payload buffers, kept as they arrived."""

    kind: str
    meta: Any = None
    frames: list = field(default_factory=list)
    nbytes: int = 0

    @classmethod
    def of(cls, kind: str, meta: Any, frames: list, key: str) -> Entry:
        size = sum(len(f) for f in frames) + len(key) + ENTRY_OVERHEAD
        if kind == LIST:
            size += sum(_item_size(i) for i in meta)
        elif kind == DATASET:  # its layout carries the metadata, which may be large
            size += len(wire.pack(meta))
        return cls(kind, meta, frames, size)


def _item_size(item: str) -> int:
    return len(item) + 8


@dataclass(order=True)
class Waiter:
    """A parked request: answered by ``callback(entry)`` when ``ready(entry)`` holds, or
    by ``callback(None)`` at ``deadline``."""

    deadline: float
    seq: int
    key: str = field(compare=False)
    ready: Callable[[Entry | None], bool] = field(compare=False)
    callback: Callable[[Entry | None], None] = field(compare=False)
    done: bool = field(default=False, compare=False)


class Store:
    """Entries of one shard with a memory cap (0 = unlimited)."""

    def __init__(self, max_memory: int = 0):
        self.max_memory = max_memory
        self.used = 0
        self._entries: dict[str, Entry] = {}
        self._waiters: dict[str, list[Waiter]] = {}
        self._deadlines: list[Waiter] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._entries)

    # -- reads -----------------------------------------------------------------------------

    def get(self, key: str, kind: str | None = None) -> Entry:
        """The entry at ``key``; ``KeyNotFound`` if absent, ``WrongType`` if of another kind."""
        entry = self._entries.get(key)
        if entry is None:
            what = kind or "key"
            raise KeyNotFound(f"{what} {key!r} not found")
        if kind is not None and entry.kind != kind:
            raise WrongType(f"key {key!r} holds a {entry.kind}, not a {kind}")
        return entry

    def exists(self, key: str, kind: str | None = None) -> bool:
        entry = self._entries.get(key)
        return entry is not None and (kind is None or entry.kind == kind)

    # -- writes ----------------------------------------------------------------------------

    def check_room(self, additions: list[tuple[str, int]]) -> None:
        """Raise ``StoreFull`` unless all ``(key, nbytes)`` writes fit together."""
        if not self.max_memory:
            return
        after = self.used
        for key, nbytes in additions:
            old = self._entries.get(key)
            after += nbytes - (old.nbytes if old else 0)
        if after > self.max_memory:
            keys = ", ".join(repr(k) for k, _ in additions[:3])
            raise StoreFull(
                f"storing {keys} needs {after - self.used} more bytes; shard holds "
                f"{self.used} of --max-memory {self.max_memory}: delete keys or start the "
                "shard with a larger --max-memory (nothing was evicted)"
            )

    def put(self, key: str, entry: Entry) -> None:
        """Store ``entry`` (replacing any value at ``key``) and wake waiters on ``key``."""
        self.check_room([(key, entry.nbytes)])
        old = self._entries.get(key)
        self.used += entry.nbytes - (old.nbytes if old else 0)
        self._entries[key] = entry
        self._wake(key, entry)

    def delete(self, key: str, kind: str | None = None) -> Entry:
        entry = self.get(key, kind)
        del self._entries[key]
        self.used -= entry.nbytes
        self._wake(key, None)
        return entry

    def copy(self, src: str, dst: str, kind: str | None = None) -> None:
        """Copy within this shard; buffers are immutable once stored, so they are shared."""
        entry = self.get(src, kind)
        meta = list(entry.meta) if entry.kind == LIST else entry.meta
        self.put(dst, Entry.of(entry.kind, meta, list(entry.frames), dst))

    def rename(self, src: str, dst: str, kind: str | None = None) -> None:
        entry = self.get(src, kind)
        if src == dst:
            return
        moved = Entry.of(entry.kind, entry.meta, entry.frames, dst)
        # A move frees the source: check room for the result, not for two copies at once.
        self.check_room([(src, 0), (dst, moved.nbytes)])
        self.delete(src)
        self.put(dst, moved)

    def list_push(self, key: str, items: list[str]) -> int:
        """Append ``items`` to the list at ``key`` (created if absent); its new length."""
        entry = self._entries.get(key)
        if entry is None:
            entry = Entry.of(LIST, [], [], key)
        elif entry.kind != LIST:
            raise WrongType(f"key {key!r} holds a {entry.kind}, not a list")
        added = sum(_item_size(i) for i in items)
        self.check_room([(key, entry.nbytes + added)])
        entry.meta.extend(items)
        self.used += added + (0 if key in self._entries else entry.nbytes)
        entry.nbytes += added
        self._entries[key] = entry
        self._wake(key, entry)
        return len(entry.meta)

    def flush(self) -> None:
        keys = list(self._entries)
        self._entries.clear()
        self.used = 0
        for key in keys:
            self._wake(key, None)

    def keys(self) -> list[str]:
        return list(self._entries)

    # -- waiters ---------------------------------------------------------------------------

    def wait(
        self,
        key: str,
        ready: Callable[[Entry | None], bool],
        timeout: float,
        callback: Callable[[Entry | None], None],
    ) -> None:
        """Call ``callback(entry)`` as soon as ``ready(entry)`` holds (maybe now), or
        ``callback(None)`` once ``timeout`` seconds pass."""
        entry = self._entries.get(key)
        if ready(entry):
            callback(entry)
            return
        waiter = Waiter(time.monotonic() + timeout, next(self._seq), key, ready, callback)
        self._waiters.setdefault(key, []).append(waiter)
        heapq.heappush(self._deadlines, waiter)

    def next_deadline(self) -> float | None:
        """Monotonic time of the earliest parked deadline, for the loop's poll timeout."""
        while self._deadlines and self._deadlines[0].done:
            heapq.heappop(self._deadlines)
        return self._deadlines[0].deadline if self._deadlines else None

    def expire(self, now: float | None = None) -> None:
        """Answer every waiter whose deadline has passed."""
        now = time.monotonic() if now is None else now
        while self._deadlines and self._deadlines[0].deadline <= now:
            waiter = heapq.heappop(self._deadlines)
            if not waiter.done:
                self._finish(waiter, None)

    @property
    def parked(self) -> int:
        return sum(len(ws) for ws in self._waiters.values())

    def _wake(self, key: str, entry: Entry | None) -> None:
        for waiter in list(self._waiters.get(key, ())):
            if not waiter.done and waiter.ready(entry):
                self._finish(waiter, entry)

    def _finish(self, waiter: Waiter, entry: Entry | None) -> None:
        waiter.done = True
        waiting = self._waiters.get(waiter.key, [])
        if waiter in waiting:
            waiting.remove(waiter)
        if not waiting:
            self._waiters.pop(waiter.key, None)
        waiter.callback(entry)
