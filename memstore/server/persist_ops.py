"""The shard's snapshot operations (mixed into :class:`Shard`): save, periodic saves, restore.

A save takes the store's entry references in one loop turn (:meth:`Store.snapshot`) and a
saver thread streams them to a new ``shard-<i>-<random>.msnap`` (:mod:`snapdir`) while the
loop keeps serving; the reply goes out when the file is in place and the manifest names it.
Saves asked for while one runs wait their turn, each taking its own snapshot when it
starts. A restore runs on the loop before the shard serves data, once it knows its cluster
(the ``cluster`` op, ``--cluster``, or MPI's bootstrap), keeping the keys it owns under the
current layout, so a snapshot of 3 shards restores onto 2 (every shard then reads every
file).
"""

from __future__ import annotations

import logging
import threading
import time

from memstore import wire
from memstore.errors import MemstoreError, ModelError, SnapshotError, StoreFull
from memstore.kinds import REPLICATED, STREAM
from memstore.server import snapshot
from memstore.server.executor import Executor
from memstore.server.host import ShardHost
from memstore.server.snapdir import SaveDir
from memstore.server.store import Entry, Store

log = logging.getLogger(__name__)

#: Operations a shard answers before it has restored its snapshot (any other restores it).
BEFORE_RESTORE = frozenset({"hello", "cluster", "info", "shutdown"})
#: Seconds ``close`` waits for a running save to finish writing.
CLOSE_SAVE_WAIT = 30.0
#: Milliseconds a shard whose restore failed lets its last replies (the SnapshotError its
#: caller waits for) go out when it closes; otherwise replies unsent at close are dropped.
FAILED_RESTORE_LINGER_MS = 2000


class PersistOps(ShardHost):
    """save and restore. Expects the Shard's ``store``, ``executor``, ``cluster``,
    ``index``, ``address``, ``_send``, ``_owns``, ``_check_allowed`` and
    :meth:`_init_persist` called from its ``__init__``."""

    store: Store
    executor: Executor
    cluster: list[str]
    index: int
    address: str

    def _init_persist(self, restore: str | None, save_every: float, save_dir: str | None):
        if save_every < 0 or (save_every and not save_dir):
            raise ValueError("save_every needs a positive number of seconds and a save_dir")
        self.save_dir = save_dir
        self.save_every = float(save_every)
        self._restore_dir = restore
        self.restore_error: SnapshotError | None = None  # why the restore at start failed
        self._saver: threading.Thread | None = None
        self._save_queue: list[tuple[str, tuple | None]] = []
        self._next_autosave = time.monotonic() + self.save_every
        self.saves = 0
        self.last_save: dict | None = None

    # -- saving ----------------------------------------------------------------------------

    def _op_save(self, request, identity):
        directory = wire.field(request.header, "dir", str, None) or self.save_dir
        if not directory:
            raise SnapshotError(
                f"shard {self.address} has no --save-dir: name a directory "
                "(client.save(DIR) / memstore save DIR)"
            )
        self._queue_save(directory, (identity, request.id))
        return None  # answered when the file is written

    def _queue_save(self, directory: str, reply_to: tuple | None) -> None:
        self._save_queue.append((directory, reply_to))
        if self._saver is None:
            self._start_save()

    def _maybe_autosave(self, now: float) -> None:
        """``--save-every``: queue a save to ``--save-dir`` unless one is pending."""
        if self.save_every and now >= self._next_autosave:
            self._next_autosave = now + self.save_every
            if self._saver is None and not self._save_queue:
                self._queue_save(self.save_dir, None)

    def _start_save(self) -> None:
        directory, reply_to = self._save_queue.pop(0)
        started = time.perf_counter()
        entries = self._freeze_streams(self.store.snapshot())  # what the loop waits for
        pause = time.perf_counter() - started
        shards = list(self.cluster) or [self.address]
        index = self.index if self.cluster else 0
        self._saver = threading.Thread(
            target=self._save_worker,
            args=(directory, index, shards, entries, pause, reply_to),
            name=f"memstore-save-{index}",
            daemon=True,  # a shard killed mid-save leaves the previous file intact
        )
        self._saver.start()

    def _save_worker(self, directory, index, shards, entries, pause, reply_to) -> None:
        try:
            with SaveDir(directory, shards, index) as target:
                saved = target.save(lambda f: snapshot.write_entries(f, index, shards, entries))
            error = None
        except Exception as exc:  # reported to the caller and the log, the shard serves on
            saved, error = (
                None,
                SnapshotError(
                    f"shard {self.address}: saving a snapshot to {directory} failed: {exc}"
                ),
            )
        self.executor.call_on_loop(lambda: self._save_done(saved, error, pause, reply_to))

    def _save_done(self, saved, error, pause: float, reply_to: tuple | None) -> None:
        self.store.end_snapshot()
        self._saver = None
        if error is None:
            self.saves += 1
            self.last_save = {
                "file": saved.path, "sha256": saved.sha256, "bytes": saved.nbytes,
                "keys": saved.keys, "seconds": saved.seconds, "pause": pause,
                "at": time.time(),
            }  # fmt: skip
            log.info(
                "shard %s saved %d keys, %d bytes to %s in %.3fs (loop paused %.6fs)",
                self.address, saved.keys, saved.nbytes, saved.path, saved.seconds, pause,
            )  # fmt: skip
        else:
            log.error("%s", error)
        if reply_to is not None:
            identity, req_id = reply_to
            reply = wire.error_reply(req_id, error) if error else wire.reply(req_id, self.last_save)
            self._send(identity, reply)
        if self._save_queue:
            self._start_save()

    def _close_linger_ms(self) -> int:
        return FAILED_RESTORE_LINGER_MS if self.restore_error is not None else 0

    def _close_saves(self) -> None:
        saver = self._saver
        if saver is not None:
            saver.join(CLOSE_SAVE_WAIT)

    # -- restoring -------------------------------------------------------------------------

    def _restore_if_pending(self) -> None:
        """Restore the snapshot given at start, once; a shard that cannot stops serving."""
        directory, self._restore_dir = self._restore_dir, None
        if directory is None:
            return
        try:
            self.restore(directory)
        except SnapshotError as exc:
            self._running = False
            self.restore_error = exc
            log.error("shard %s stops: %s", self.address, exc)
            raise
        except BaseException:
            self._running = False
            raise

    def restore(self, directory: str) -> int:
        """Load the keys this shard owns from the snapshot in ``directory``; how many.

        Raises:
            SnapshotError: a missing, torn or altered file (named), or data over
                ``--max-memory``.
        """
        started = time.monotonic()
        saved_shards, plan = snapshot.plan_restore(directory)
        count = len(self.cluster) or 1
        index = self.index if self.cluster else 0
        # Same shard count: keys sit where they sat, so this shard's own file has them all.
        files = [(index, plan[index])] if len(plan) == count else list(enumerate(plan))
        kept: dict[str, snapshot.Loaded] = {}
        for position, (path, sha256) in files:
            items = snapshot.read_shard(path, sha256)
            first = next(items)
            if first.get("index") != position or first.get("shards") != saved_shards:
                raise SnapshotError(
                    f"snapshot file {path} is shard {first.get('index')} of another cluster, "
                    f"not shard {position} of the manifest's: restore a whole snapshot directory"
                )
            for item in items:  # checked once the last is read, so nothing is stored yet
                if item.kind in REPLICATED:
                    kept.setdefault(item.key, item)
                elif self._owns(item.key):
                    kept[item.key] = item
        entries = _entries(directory, kept)
        try:
            self.store.check_room([(key, entry.nbytes) for key, entry in entries])
        except StoreFull as exc:
            raise SnapshotError(f"restoring {directory} on shard {self.address}: {exc}") from None
        for key, entry in entries:
            if entry.kind in REPLICATED:
                self._restore_code(key, entry)
            elif entry.kind == STREAM:
                self._restore_stream(key, entry)
            else:
                self.store.put(key, entry)
        log.info(
            "shard %s restored %d keys from %s (%d of %d files) in %.3fs",
            self.address, len(entries), directory, len(files), len(plan),
            time.monotonic() - started,
        )  # fmt: skip
        return len(entries)

    def _restore_code(self, key: str, entry: Entry) -> None:
        """A model or script: loaded here, on the loop before the shard serves, so that it
        runs as soon as ``model_exists`` lists it (loaded on a worker, it was listed about a
        second before it ran, and a run in that second was ``KeyNotFound``)."""
        try:
            self._check_allowed(entry.kind, key, entry.meta.get("format"))
        except ModelError as exc:
            log.warning("not restoring %s %r: %s", entry.kind, key, exc)
            return
        try:
            loaded = self.executor.load_now(key, entry.kind, entry.meta, list(entry.frames))
        except ModelError as exc:
            log.error("not restoring %s %r: it does not load: %s", entry.kind, key, exc)
            return
        self.store.put(key, entry)
        self.executor.install(loaded)


def _entries(directory: str, kept: dict[str, snapshot.Loaded]) -> list[tuple[str, Entry]]:
    """The store's entries for what was read; :class:`SnapshotError` for one it refuses."""
    entries = []
    for key, item in kept.items():
        try:
            entries.append((key, Entry.of(item.kind, item.meta, item.frames, key)))
        except MemstoreError:
            raise
        except Exception as exc:  # a file that passed its checksum but was written wrong
            raise SnapshotError(
                f"snapshot {directory}: key {key!r} ({item.kind}) cannot be restored: {exc}"
            ) from None
    return entries
