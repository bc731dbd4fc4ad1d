"""The shard's stream operations (mixed into :class:`~memstore.server.shard.Shard`).

A stream's state (:class:`~memstore.server.streams.StreamState`) is the ``meta`` of a store
entry of kind ``stream`` under the stream's name, on the shard that owns the name: the
*home* shard. Its handlers change that state in place on the shard's thread, then
:meth:`Store.touch` the key, which charges the state's size and wakes whatever is parked
on it: readers waiting for a step, group members waiting for one to take, appenders of a
``block`` stream waiting for acks. Nothing here blocks or polls.

Steps' data are ordinary entries (tensors, datasets) that clients put before appending.
A step dropped by ``maxlen``, a trim or a delete has its data deleted at once when the key
is this shard's, else by :class:`Reaper`, a thread that sends ``delete`` to the owner.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable

from memstore import wire
from memstore.config import MAX_WAIT_TIMEOUT
from memstore.errors import KeyNotFound, MemstoreError, ProtocolError, Timeout
from memstore.kinds import STREAM, TENSOR
from memstore.server.host import ShardHost
from memstore.server.peers import Peers
from memstore.server.store import ENTRY_OVERHEAD, Entry
from memstore.server.streams import (
    DATA_PREFIX,
    DROP_OLDEST,
    StreamState,
    check_settings,
)

log = logging.getLogger(__name__)


class Reaper:
    """Deletes the data of dropped steps that other shards hold, off the shard's loop.

    One daemon thread, started on first use, with its own peer sockets. A delete that
    fails is tried once more, then logged (the key stays: an orphan, never a wrong read).
    A delete may come with ``then``, called on the shard's loop (``on_loop``) once it is
    done, failed or not: an append is answered then (see ``StreamOps``).
    """

    def __init__(self, peers: Peers, on_loop: Callable[[Callable[[], None]], None]):
        self._peers = peers
        self._on_loop = on_loop
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def delete(self, keys: list[tuple[str, str]], then: Callable[[], None] | None = None) -> None:
        """Delete each ``(address, key)``, then ``then()`` on the loop."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="memstore-reaper", daemon=True)
            self._thread.start()
        self._queue.put((keys, then))

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        try:
            while (item := self._queue.get()) is not None:
                batch = [item]
                while len(batch) < 256 and not self._queue.empty():
                    more = self._queue.get()
                    if more is None:
                        self._finish(batch)
                        return
                    batch.append(more)
                self._finish(batch)
        finally:
            self._peers.close_thread()

    def _finish(self, batch: list[tuple[list, Callable[[], None] | None]]) -> None:
        try:
            self._delete([pair for keys, _ in batch for pair in keys])
        finally:
            for _, then in batch:
                if then is not None:
                    self._on_loop(then)

    def _delete(self, batch: list[tuple[str, str]], retry: bool = True) -> None:
        try:
            self._peers.request_all([(a, "delete", {"key": k}, []) for a, k in batch])
            return
        except MemstoreError:
            pass  # some failed (maybe only a key already gone): one at a time
        failed = []
        for address, key in batch:
            try:
                self._peers.request_all([(address, "delete", {"key": key}, [])])
            except KeyNotFound:
                pass
            except MemstoreError as exc:
                failed.append((address, key))
                if not retry:
                    log.warning("dropped step data %r on %s not deleted: %s", key, address, exc)
        if failed and retry:
            self._delete(failed, retry=False)


def _timeout(request, name: str = "timeout", default: float | None = None) -> float:
    value = wire.field(request.header, name, (int, float), default)
    value = float(value)
    if not 0 <= value <= MAX_WAIT_TIMEOUT:  # NaN and inf fail too
        raise ProtocolError(
            f"{request.op}: field {name!r} must be 0 to {MAX_WAIT_TIMEOUT:g} seconds, got {value!r}"
        )
    return value


def _ints(request, name: str) -> list[int]:
    values = wire.field(request.header, name, list)
    if not all(type(v) is int for v in values):
        raise ProtocolError(f"{request.op}: field {name!r} must be a list of ints")
    return values


class StreamOps(ShardHost):
    """stream_*: bounded step streams with readers and consumer groups (docs/protocol.md)."""

    def _init_streams(self, peers: Peers) -> None:
        self._reaper = Reaper(peers, self.executor.call_on_loop)
        #: Every stream this shard has held (checked against the store when used).
        self._streams: dict[str, StreamState] = {}
        #: Streams where a connection has pending deliveries, by connection.
        self._delivered_to: dict[bytes, set[str]] = {}

    def _close_streams(self) -> None:
        self._reaper.close()

    # -- state -----------------------------------------------------------------------------

    def _state(self, key: str) -> StreamState:
        return self.store.get(key, STREAM).meta

    def _current(self, key: str) -> StreamState | None:
        """The stream at ``key`` now, or None (gone, or replaced by another kind)."""
        return self.store.get(key).meta if self.store.exists(key, STREAM) else None

    def _changed(self, key: str, state: StreamState) -> None:
        """Charge the state's size and wake the waiters on the stream."""
        self.store.touch(key, len(key) + ENTRY_OVERHEAD + state.overhead())

    def _drop_data(self, keys: list[str], then: Callable[[], None] | None = None) -> bool:
        """Delete dropped steps' data: here at once, on other shards by the reaper, and
        ``then()`` on the loop once those are deleted; whether it will be called (False:
        nothing was on another shard)."""
        remote = []
        for key in keys:
            owner = self._owner(key)
            if owner is not None:
                remote.append((owner, key))
            elif self.store.exists(key):
                self.store.delete(key)
        if remote:
            self._reaper.delete(remote, then)
        return bool(remote) and then is not None

    def _reply_after_drops(self, identity: bytes, reply: list, dropped: list[str]) -> list | None:
        """``reply`` now, or once the reaper deleted the dropped steps' data on other
        shards: an append never runs ahead of the deletes it caused, so a producer's
        steps hold at most ``maxlen`` + 1 steps' data (docs/design.md, "Streams")."""
        if self._drop_data(dropped, lambda: self._send(identity, reply)):
            return None
        return reply

    def _stream_totals(self) -> dict:
        """``info``'s stream fields: streams held here, their steps and their data bytes."""
        live = {k: s for k, s in self._streams.items() if self._current(k) is s}
        self._streams = live
        return {
            "streams": len(live),
            "stream_steps": sum(len(s.steps) for s in live.values()),
            "stream_bytes": sum(s.bytes for s in live.values()),
        }

    def _freeze_streams(self, entries: list) -> list:
        """A snapshot's entries with each stream's state as plain data (loop thread)."""
        now = time.monotonic()
        return [
            (k, Entry(STREAM, e.meta.saved(now), [], e.nbytes) if e.kind == STREAM else e)
            for k, e in entries
        ]

    def _restore_stream(self, key: str, entry: Entry) -> None:
        """A stream from a snapshot: stored again, its pending steps redelivered later."""
        state = StreamState.restored(entry.meta, time.monotonic())
        self.store.put(key, Entry.of(STREAM, state, [], key))
        self._streams[key] = state
        self._changed(key, state)
        self._arm_timer(key, state)

    # -- create, append, read, wait ----------------------------------------------------------

    def _op_stream_create(self, request, identity):
        key = self._key(request)
        maxlen, policy = request.header.get("maxlen"), request.header.get("policy")
        named = maxlen is not None or policy is not None
        wanted = check_settings(key, maxlen, policy or DROP_OLDEST)
        if not self.store.exists(key):
            state = StreamState(key, *wanted)
            state.explicit = named
            self.store.put(key, Entry.of(STREAM, state, [], key))
            self._streams[key] = state
        else:
            state = self._state(key)
            if named and not state.explicit:  # made by a reader: the producer's settings win
                state.maxlen, state.policy, state.explicit = *wanted, True
                self._drop_data(state.trim(state.maxlen))
            elif named and wanted != (state.maxlen, state.policy):
                raise ProtocolError(
                    f"stream {key!r} exists with maxlen {state.maxlen}, policy "
                    f"{state.policy!r}; asked for maxlen {wanted[0]}, policy {wanted[1]!r}"
                )
            self._streams[key] = state
        self._changed(key, state)
        return wire.reply(request.id, state.describe())

    def _op_stream_append(self, request, identity):
        key = self._key(request)
        state = self._state(key)
        data = self._check_key(wire.field(request.header, "data", str), request.op, owned=False)
        if not data.startswith(DATA_PREFIX):
            raise ProtocolError(
                f"stream {key!r}: a step's data key must start with {DATA_PREFIX!r}"
            )
        kind = wire.field(request.header, "kind", str)
        nbytes = wire.field(request.header, "nbytes", int, 0)
        timeout = _timeout(request, default=0)
        carried = self._store_carried(request, key, data, kind)
        step = (data, kind, nbytes)
        if state.can_append():
            try:
                return self._append(identity, request.id, key, state, step)
            except MemstoreError:
                self._forget_carried(carried, data)
                raise
        if not self._waiting_client_is_connected(identity):
            self._forget_carried(carried, data)
            return None
        req_id = request.id

        def answer(entry: Entry | None) -> None:
            if self._current(key) is not state:
                error: MemstoreError = KeyNotFound(f"stream {key!r} was deleted")
            elif state.can_append():
                try:
                    reply = self._append(identity, req_id, key, state, step)
                except MemstoreError as exc:
                    error = exc
                else:
                    if reply is not None:
                        self._send(identity, reply)
                    return
            else:
                error = Timeout(
                    f"stream {key!r} (policy block, maxlen {state.maxlen}): the append waited "
                    f"{timeout:g}s for group {state.slowest_group()!r} to ack step "
                    f"{state.oldest}"
                )
            self._forget_carried(carried, data)
            self._send(identity, wire.error_reply(req_id, error))

        self.store.wait(key, lambda e: self._current(key) is not state or state.can_append(),
                        timeout, answer, owner=identity)  # fmt: skip
        return None

    def _store_carried(self, request, key: str, data: str, kind: str) -> bool:
        """Store the step's tensor if the append carries it (``keys``, ``metas`` and the
        payload or shared-memory file, as a ``put``: one request where a put and an
        append were two); whether it did. Its one key must be the step's data key."""
        keys = request.header.get("keys")
        if keys is None:
            return False
        if keys != [data] or kind != TENSOR:
            raise ProtocolError(
                f"stream {key!r}: an append carries one tensor (kind 'tensor'), under its "
                f"data key {data!r}; got keys {keys!r}, kind {kind!r}"
            )
        self._store_all(self._tensor_entries(request))
        return True

    def _forget_carried(self, carried: bool, data: str) -> None:
        """An append that carried its data failed: the data goes too."""
        if carried and self.store.exists(data):
            self.store.delete(data)

    def _append(
        self, identity: bytes, req_id: int, key: str, state: StreamState, step: tuple
    ) -> list | None:
        """Append ``step`` (data key, kind, bytes): the reply, or None when it is sent
        once the data of the steps it dropped is deleted on other shards."""
        number, dropped = state.append(*step)
        self._changed(key, state)
        return self._reply_after_drops(identity, wire.reply(req_id, {"step": number}), dropped)

    def _op_stream_read(self, request, identity):
        key = self._key(request)
        state = self._state(key)
        if request.header.get("last") is not None:
            items = state.last(wire.field(request.header, "last", int))
        elif request.header.get("span") is not None:
            span = _ints(request, "span")
            if len(span) != 3:
                raise ProtocolError(f"stream {key!r}: span must be [first, last, count]")
            items = state.span(*span, wire.field(request.header, "newest", bool, False))
        else:
            items = [(s, *state.item(s)) for s in _ints(request, "steps")]
        return wire.reply(request.id, {"items": [list(item) for item in items], **state.describe()})

    def _op_stream_wait(self, request, identity):
        key = self._key(request)
        state = self._state(key)
        step = wire.field(request.header, "step", int)
        timeout = _timeout(request)
        if not self._waiting_client_is_connected(identity):
            return None
        req_id = request.id

        def answer(entry: Entry | None) -> None:
            if self._current(key) is not state:
                self._send(identity, wire.error_reply(req_id, KeyNotFound(
                    f"stream {key!r} was deleted")))  # fmt: skip
                return
            fields = {"found": step in state.steps, **state.describe()}
            self._send(identity, wire.reply(req_id, fields))

        def ready(entry: Entry | None) -> bool:
            return self._current(key) is not state or state.next > step or state.closed

        self.store.wait(key, ready, timeout, answer, owner=identity)
        return None

    def _op_stream_close(self, request, identity):
        key = self._key(request)
        state = self._state(key)
        state.close()
        self._changed(key, state)
        return wire.reply(request.id)

    def _op_stream_info(self, request, identity):
        return wire.reply(request.id, self._state(self._key(request)).info())

    def _op_stream_trim(self, request, identity):
        key = self._key(request)
        state = self._state(key)
        maxlen = wire.field(request.header, "maxlen", int)
        if maxlen < 0:
            raise ProtocolError(f"stream {key!r}: trim maxlen must be >= 0, got {maxlen}")
        dropped = state.trim(maxlen)
        self._drop_data(dropped)
        self._changed(key, state)
        return wire.reply(request.id, {"dropped": len(dropped)})

    def _op_stream_delete_steps(self, request, identity):
        key = self._key(request)
        state = self._state(key)
        dropped = state.delete_steps(_ints(request, "steps"))
        self._drop_data(dropped)
        self._changed(key, state)
        return wire.reply(request.id, {"deleted": len(dropped)})

    # -- consumer groups ---------------------------------------------------------------------

    def _op_stream_group(self, request, identity):
        key = self._key(request)
        state = self._state(key)
        name = wire.field(request.header, "group", str)
        state.add_group(name, request.header.get("start") or "oldest")
        self._changed(key, state)
        return wire.reply(request.id)

    def _op_stream_take(self, request, identity):
        key = self._key(request)
        state = self._state(key)
        name = wire.field(request.header, "group", str)
        group = state.group(name)
        member = wire.field(request.header, "member", str, "")
        visibility = _timeout(request, "visibility", 30.0)
        timeout = _timeout(request, default=0)
        with_data = wire.field(request.header, "with_data", bool, False)
        files = request.header.get("shm") is True
        if request.header.get("ack") is not None:  # the previous step's ack rides along
            state.ack(name, _ints(request, "ack"))
            self._changed(key, state)
        if not self._waiting_client_is_connected(identity):  # also notes its connection
            return None
        req_id = request.id

        def attempt() -> list | None:
            got = state.take(group, member, identity, visibility, time.monotonic())
            if got is not None:
                self._delivered_to.setdefault(identity, set()).add(key)
                self._arm_timer(key, state)
                self._changed(key, state)
                step, data, kind, redelivered = got
                fields = {"step": step, "data": data, "kind": kind, "redelivered": redelivered}
                frames = self._step_data(fields, files) if with_data else []
                return wire.reply(req_id, fields, frames)
            return wire.reply(req_id, {"end": True}) if state.ended(group) else None

        reply = attempt()
        if reply is not None:
            return reply

        def answer(entry: Entry | None) -> None:
            if self._current(key) is not state:
                error = KeyNotFound(f"stream {key!r} was deleted")
                self._send(identity, wire.error_reply(req_id, error))
                return
            self._send(identity, attempt() or wire.reply(req_id, {"found": False}))

        def ready(entry: Entry | None) -> bool:
            return self._current(key) is not state or state.available(group, time.monotonic())

        self.store.wait(key, ready, timeout, answer, owner=identity)
        return None

    def _step_data(self, fields: dict, files: bool) -> list:
        """A taken step's tensor in its take's reply (``metas`` and the frame, or with
        ``files`` its shared-memory file's name, as ``get`` answers), when this shard
        holds it; else nothing and the client gets it from its shard."""
        data = fields["data"]
        if fields["kind"] != TENSOR or self._owner(data) is not None:
            return []
        if not self.store.exists(data, TENSOR):
            return []
        entry = self.store.get(data, TENSOR)
        fields["metas"] = [entry.meta]
        frames = [entry.frames[0]]
        if files and entry.shm is not None:
            frames = self._name_files(fields, [entry.shm.name], frames)
        return frames

    def _op_stream_ack(self, request, identity):
        key = self._key(request)
        state = self._state(key)
        name = wire.field(request.header, "group", str)
        acked = state.ack(name, _ints(request, "steps"))
        self._changed(key, state)
        return wire.reply(request.id, {"acked": acked})

    def _arm_timer(self, key: str, state: StreamState) -> None:
        """Wake the stream at its earliest visibility deadline, so that parked members see
        a step to redeliver without polling: one timer per stream, re-armed as it fires."""
        deadline = state.next_deadline()
        if deadline is None or not math.isfinite(deadline):
            return
        if state.timer_at is not None and state.timer_at <= deadline:
            return
        state.timer_at = deadline

        def fire(entry: Entry | None) -> None:
            if self._current(key) is state:
                state.timer_at = None
                self.store.touch(key)
                self._arm_timer(key, state)

        left = max(0.0, deadline - time.monotonic()) + 0.001
        self.store.wait(key, lambda e: False, left, fire)

    def _release_deliveries(self, identity: bytes) -> None:
        """A connection closed: the steps delivered on it and not acked go to others now."""
        for key in self._delivered_to.pop(identity, ()):
            state = self._current(key)
            if state is not None and state.release_owner(identity):
                self._changed(key, state)
