"""A shard's data: entries by key, memory accounting and parked waiters.

No sockets and no threads here: the shard loop calls in, and waiters are plain callbacks,
so the store is easy to test and the loop stays the only owner of the network.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from memstore import wire
from memstore.errors import KeyNotFound, StoreFull, WrongType
from memstore.kinds import DATASET, LIST, TENSOR

log = logging.getLogger(__name__)

#: Bytes charged per entry on top of its payload and key: what one more entry costs the
#: shard process in Python objects (the Entry, its meta map and shape list, the frame list,
#: the key's string and dict slot). Measured as RSS growth per key over 20,000 puts into one
#: shard: 0.85 KiB for empty tensors, 0.8-2.1 KiB beyond the payload up to 128 KiB values
#: (docs/security.md, "Memory caps"); the rest is charged per frame (FRAME_SLACK).
ENTRY_OVERHEAD = 1024
#: Allocator slack charged per payload frame: ``min(len(frame), FRAME_SLACK)``.
FRAME_SLACK = 1024
#: Extra bytes charged per dimension of a tensor's shape (a list slot and an int object).
DIM_OVERHEAD = 40
#: Payload frames smaller than this are copied into their own ``bytes`` when stored.
#: ZeroMQ delivers small messages as slices of a shared receive buffer (8 KiB of data plus
#: its bookkeeping, ~18 KiB): keeping one 512-byte slice keeps the whole buffer alive
#: (20,000 puts of 512 B: 3.0 KiB of RSS per key kept as frames, 1.3 KiB copied). Measured
#: up to 40 KB, copying stops paying off between 16 and 40 KB, where libzmq already gives
#: each message a buffer of its own.
COPY_BELOW = 16 * 1024


@dataclass(slots=True)
class Entry:
    """One stored value. ``frames`` are payload buffers: large ones kept as they arrived,
    small ones copied (see :data:`COPY_BELOW`)."""

    kind: str
    meta: Any = None
    frames: list = field(default_factory=list)
    nbytes: int = 0
    #: The shared-memory file holding ``frames[0]`` (``memstore.shm.ShmFile``), if any:
    #: unlinked when the entry leaves the store; readers' mappings stay valid.
    shm: Any = None
    #: The store's snapshot epoch when this entry was stored: entries of an older epoch
    #: belong to the snapshot being written (see :meth:`Store.snapshot`).
    epoch: int = 0

    @classmethod
    def of(cls, kind: str, meta: Any, frames: list, key: str) -> Entry:
        frames = [_compact(f) for f in frames]
        size = sum(len(f) + min(len(f), FRAME_SLACK) for f in frames)
        size += len(key) + ENTRY_OVERHEAD
        if kind == LIST:
            size += sum(_item_size(i) for i in meta)
        elif kind == DATASET:  # its layout carries the metadata, which may be large
            size += len(wire.pack(meta))
        elif kind == TENSOR and isinstance(meta, dict) and isinstance(meta.get("shape"), list):
            size += DIM_OVERHEAD * len(meta["shape"])
        return cls(kind, meta, frames, size)

    def discard(self) -> None:
        """Unlink the file of an entry that will not be stored (its mapping goes too)."""
        if self.shm is not None:
            self.shm.unlink(self.frames)
            self.shm = None


def _compact(frame: Any) -> Any:
    """A small received frame as compact ``bytes``; a copy that must happen, so that a
    stored 512-byte value does not pin ZeroMQ's whole shared receive buffer."""
    if isinstance(frame, bytes) or len(frame) >= COPY_BELOW:
        return frame
    return bytes(frame)


#: Bytes charged per list item on top of ``sys.getsizeof`` of its string: the list's slot,
#: its over-allocation and the allocator's rounding. Measured as RSS growth per item over
#: 400,000 items unpacked by msgpack and appended: getsizeof + 13 (10-character items),
#: + 15 (100), + 43 (1,000).
ITEM_OVERHEAD = 48


def _item_size(item: str) -> int:
    """What one list item costs the shard: its Python string object, not its length."""
    return sys.getsizeof(item) + ITEM_OVERHEAD


@dataclass(order=True, slots=True)
class Waiter:
    """A parked request: answered by ``callback(entry)`` when ``ready(entry)`` holds, or
    by ``callback(None)`` at ``deadline``. Once finished it lets go of both callables, so
    whatever they hold is freed even while the waiter still sits in the deadline heap."""

    deadline: float
    seq: int
    key: str = field(compare=False)
    ready: Callable[[Entry | None], bool] | None = field(compare=False)
    callback: Callable[[Entry | None], None] | None = field(compare=False)
    owner: bytes = field(default=b"", compare=False)
    done: bool = field(default=False, compare=False)


class Store:
    """Entries of one shard with a memory cap (0 = unlimited) and parked waiters, at most
    ``max_waiters`` in all and ``max_client_waiters`` per owner (0 = unlimited)."""

    def __init__(self, max_memory: int = 0, max_waiters: int = 0, max_client_waiters: int = 0):
        self.max_memory = max_memory
        self.max_waiters = max_waiters
        self.max_client_waiters = max_client_waiters
        self.used = 0
        self.shm_used = 0  # of ``used``: bytes held in shared-memory files
        self._entries: dict[str, Entry] = {}
        # Waiters by key and by owner, each in arrival order (seq): O(1) to drop one.
        self._waiters: dict[str, dict[int, Waiter]] = {}
        self._owned: dict[bytes, dict[int, Waiter]] = {}
        self._deadlines: list[Waiter] = []
        self._finished_in_heap = 0
        self._seq = itertools.count()
        # Snapshots: entries stored before ``_snap_epoch`` are being written by a saver
        # thread, so they stay in memory until it ends, even once overwritten or deleted;
        # ``held`` counts those bytes against --max-memory (0 when no save runs).
        self._epoch = 0
        self._snap_epoch = 0
        self.held = 0
        #: Bytes held aside for outputs staged by model runs on other shards (model_ops).
        self.staged = 0

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

    def check_room(self, additions: list[tuple[str, int]], staged: int = 0) -> None:
        """Raise ``StoreFull`` unless all ``(key, nbytes)`` writes fit together (with
        ``staged`` more bytes held aside). A value replaced while a save holds it frees
        nothing until the save ends, so it is not counted as freed."""
        if not self.max_memory:
            return
        after = self.used + self.held + self.staged + staged
        for key, nbytes in additions:
            after += nbytes - self._freed_by_replacing(key)
        if after > self.max_memory:
            keys = ", ".join(repr(k) for k, _ in additions[:3]) or "staged outputs"
            aside = (
                (self.held, "bytes of values replaced during the running save"),
                (self.staged + staged, "bytes staged by model runs on other shards"),
            )
            saving = "".join(f" (and {n} {what})" for n, what in aside if n)
            raise StoreFull(
                f"storing {keys} needs {after - self.used - self.held - self.staged} more "
                f"bytes; shard holds {self.used}{saving} of --max-memory {self.max_memory}: "
                "delete keys or start the shard with a larger --max-memory (nothing was evicted)"
            )

    def _freed_by_replacing(self, key: str) -> int:
        """Bytes a write at ``key`` frees: its old value's, unless a running save holds it."""
        old = self._entries.get(key)
        return 0 if old is None or old.epoch < self._snap_epoch else old.nbytes

    def put(self, key: str, entry: Entry) -> None:
        """Store ``entry`` (replacing any value at ``key``) and wake waiters on ``key``."""
        self.check_room([(key, entry.nbytes)])
        old = self._entries.get(key)
        entry.epoch = self._epoch
        self._place(key, entry)
        if old is not None and old is not entry:
            self._release(old)
        self._wake(key, entry)

    def _place(self, key: str, entry: Entry) -> None:
        """Put ``entry`` at ``key`` and charge it, less the value it replaces."""
        old = self._entries.get(key)
        self.used += entry.nbytes - (old.nbytes if old else 0)
        self._entries[key] = entry
        if entry.shm is not None:
            self.shm_used += entry.nbytes

    def _release(self, entry: Entry) -> None:
        """An entry left the store: its shared-memory file goes (mappings stay valid)."""
        if entry.epoch < self._snap_epoch:  # the running save still holds it
            self.held += entry.nbytes
        if entry.shm is not None:
            self.shm_used -= entry.nbytes
            entry.shm.unlink(entry.frames)
            entry.shm = None

    def delete(self, key: str, kind: str | None = None) -> Entry:
        entry = self.get(key, kind)
        del self._entries[key]
        self.used -= entry.nbytes
        self._release(entry)
        self._wake(key, None)
        return entry

    def copy(self, src: str, dst: str, kind: str | None = None) -> None:
        """Copy within this shard; buffers are immutable once stored, so they are shared."""
        entry = self.get(src, kind)
        meta = list(entry.meta) if entry.kind == LIST else entry.meta
        self.put(dst, Entry.of(entry.kind, meta, list(entry.frames), dst))

    def rename(self, src: str, dst: str, kind: str | None = None) -> None:
        """Move the value at ``src`` to ``dst``: the same entry (frames, file, and the
        epoch that tells a running save holds it), so nothing is freed and charged again
        and a refusal (``StoreFull``) leaves ``src`` as it was."""
        entry = self.get(src, kind)
        if src == dst:
            return
        nbytes = entry.nbytes + len(dst) - len(src)  # the key is charged (Entry.of)
        self.check_room([(dst, nbytes - entry.nbytes)])  # src's bytes become dst's
        del self._entries[src]
        self.used -= entry.nbytes
        if entry.shm is not None:
            self.shm_used -= entry.nbytes
        entry.nbytes = nbytes
        self._wake(src, None)
        old = self._entries.get(dst)
        self._place(dst, entry)
        if old is not None:
            self._release(old)
        self._wake(dst, entry)

    def list_push(self, key: str, items: list[str]) -> int:
        """Append ``items`` to the list at ``key`` (created if absent); its new length."""
        entry = self._entries.get(key)
        if entry is None:
            entry = Entry.of(LIST, [], [], key)
            entry.epoch = self._epoch
        elif entry.kind != LIST:
            raise WrongType(f"key {key!r} holds a {entry.kind}, not a list")
        added = sum(_item_size(i) for i in items)
        self.check_room([(key, entry.nbytes + added)])
        if key in self._entries and entry.epoch < self._snap_epoch:
            # A save is writing this list: extend a copy (copy-on-write), never its items.
            self._release(entry)
            entry = Entry(LIST, list(entry.meta), [], entry.nbytes, epoch=self._epoch)
        entry.meta.extend(items)
        self.used += added + (0 if key in self._entries else entry.nbytes)
        entry.nbytes += added
        self._entries[key] = entry
        self._wake(key, entry)
        return len(entry.meta)

    def touch(self, key: str, nbytes: int | None = None) -> None:
        """The value at ``key`` changed in place (a stream's state): charge it ``nbytes``
        (if given) and wake the waiters whose condition now holds."""
        entry = self._entries.get(key)
        if entry is not None and nbytes is not None and nbytes != entry.nbytes:
            self.used += nbytes - entry.nbytes
            entry.nbytes = nbytes
        self._wake(key, entry)

    def flush(self) -> None:
        keys = list(self._entries)
        for entry in self._entries.values():
            self._release(entry)
        self._entries.clear()
        self.used = self.shm_used = 0
        for key in keys:
            self._wake(key, None)

    def keys(self) -> list[str]:
        return list(self._entries)

    # -- snapshots -------------------------------------------------------------------------

    def snapshot(self) -> list[tuple[str, Entry]]:
        """Every ``(key, entry)`` now, for a saver thread to write while the loop serves.

        Entries are immutable once stored (lists are copied on write while a save runs),
        so the references are a consistent snapshot; one ``list()`` of the dict is the
        whole pause. Call :meth:`end_snapshot` when the save is done.
        """
        if self._snap_epoch:
            raise RuntimeError("a snapshot is already being written")
        self._epoch += 1
        self._snap_epoch = self._epoch
        return list(self._entries.items())

    def end_snapshot(self) -> None:
        """The save finished: the values it held are freed, and no longer counted."""
        self._snap_epoch = 0
        self.held = 0

    # -- waiters ---------------------------------------------------------------------------

    def wait(
        self,
        key: str,
        ready: Callable[[Entry | None], bool],
        timeout: float,
        callback: Callable[[Entry | None], None],
        owner: bytes = b"",
    ) -> None:
        """Call ``callback(entry)`` as soon as ``ready(entry)`` holds (maybe now), or
        ``callback(None)`` once ``timeout`` seconds pass. ``owner`` names the client, so that
        :meth:`drop_owner` can forget its waiters when it goes.

        Raises:
            StoreFull: the shard or this owner already has its most parked waiters.
        """
        entry = self._entries.get(key)
        if ready(entry):
            callback(entry)
            return
        self._check_waiter_room(key, owner)
        waiter = Waiter(time.monotonic() + timeout, next(self._seq), key, ready, callback, owner)
        self._waiters.setdefault(key, {})[waiter.seq] = waiter
        self._owned.setdefault(owner, {})[waiter.seq] = waiter
        heapq.heappush(self._deadlines, waiter)

    def _check_waiter_room(self, key: str, owner: bytes) -> None:
        if self.max_waiters and self.parked >= self.max_waiters:
            raise StoreFull(
                f"wait on {key!r}: this shard already has {self.parked} parked waits "
                f"(--max-waiters {self.max_waiters}); retry later or raise the limit"
            )
        mine = len(self._owned.get(owner, ()))
        if self.max_client_waiters and mine >= self.max_client_waiters:
            raise StoreFull(
                f"wait on {key!r}: this client already has {mine} parked waits on this shard "
                f"(--max-client-waiters {self.max_client_waiters}); wait for some to finish"
            )

    def next_deadline(self) -> float | None:
        """Monotonic time of the earliest parked deadline, for the loop's poll timeout."""
        while self._deadlines and self._deadlines[0].done:
            heapq.heappop(self._deadlines)
            self._finished_in_heap -= 1
        return self._deadlines[0].deadline if self._deadlines else None

    def expire(self, now: float | None = None) -> None:
        """Answer every waiter whose deadline has passed."""
        now = time.monotonic() if now is None else now
        while self._deadlines and self._deadlines[0].deadline <= now:
            waiter = heapq.heappop(self._deadlines)
            if waiter.done:
                self._finished_in_heap -= 1
            else:
                self._finish(waiter, None, in_heap=False)

    def drop_owner(self, owner: bytes) -> int:
        """Forget every waiter of ``owner`` (a client that went away) without answering;
        how many there were."""
        waiters = list(self._owned.get(owner, {}).values())
        for waiter in waiters:
            self._retire(waiter)
        return len(waiters)

    @property
    def parked(self) -> int:
        return len(self._deadlines) - self._finished_in_heap

    @property
    def parked_clients(self) -> int:
        """How many owners have parked waiters."""
        return len(self._owned)

    def _wake(self, key: str, entry: Entry | None) -> None:
        for waiter in list(self._waiters.get(key, {}).values()):
            if not waiter.done and waiter.ready(entry):
                self._finish(waiter, entry)

    def _finish(self, waiter: Waiter, entry: Entry | None, in_heap: bool = True) -> None:
        callback = waiter.callback
        self._retire(waiter, in_heap)
        try:
            callback(entry)
        except Exception:  # one broken answer must not stop the put that woke it, or others
            log.exception("answering a waiter on %r failed", waiter.key)

    def _retire(self, waiter: Waiter, in_heap: bool = True) -> None:
        """Unlink a waiter everywhere and drop its callables (and what they hold)."""
        waiter.done = True
        waiter.ready = waiter.callback = None
        for index, name in ((self._waiters, waiter.key), (self._owned, waiter.owner)):
            group = index.get(name)
            if group is not None:
                group.pop(waiter.seq, None)
                if not group:
                    del index[name]
        if in_heap:
            self._finished_in_heap += 1
            # Finished waiters behind a long-parked one would stay in the heap until it
            # expires: rebuild once they are the majority, so the heap stays O(parked).
            if self._finished_in_heap > 64 and self._finished_in_heap * 2 > len(self._deadlines):
                self._deadlines = [w for w in self._deadlines if not w.done]
                heapq.heapify(self._deadlines)
                self._finished_in_heap = 0
