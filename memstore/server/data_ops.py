"""The shard's data operations (mixed into :class:`~memstore.server.shard.Shard`).

Tensors (``put``, ``get``, ``delete``, ``exists``, ``copy``, ``rename``), datasets, lists
and ``wait``, plus storing the outputs of model runs. Each handler checks its request's
fields, acts on the :class:`Store` and returns the reply; a ``wait`` that cannot be answered
yet parks in the store and is answered by the loop later. Payloads stay the frames they
arrived in (or shared-memory files a client wrote), never copied.
"""

from __future__ import annotations

import logging

from memstore import config, shm, tensors, wire
from memstore.config import MAX_WAIT_TIMEOUT
from memstore.errors import ProtocolError
from memstore.kinds import DATASET, LIST, REPLICATED, TENSOR
from memstore.server.host import ShardHost
from memstore.server.store import Entry

log = logging.getLogger(__name__)

#: ``wait``'s conditions: given ``n`` and a list's length (0 for other kinds), whether met.
_CONDITIONS = {
    "exists": lambda n, length: True,
    "len_eq": lambda n, length: length == n,
    "len_ge": lambda n, length: length >= n,
    "len_le": lambda n, length: length <= n,
}


class DataOps(ShardHost):
    """put, get, datasets, lists and wait: the operations on stored data."""

    # -- tensors ---------------------------------------------------------------------------

    def _tensor_entries(self, request) -> list[tuple[str, Entry]]:
        """A put's (or a stage's) tensors as entries: keys checked, each frame's size
        matched to its meta, shared-memory uploads adopted (and unlinked again on error)."""
        keys = wire.field(request.header, "keys", list)
        metas = wire.field(request.header, "metas", list)
        if not (len(keys) == len(metas) == len(request.payload)):
            raise ProtocolError(
                f"put: {len(keys)} keys, {len(metas)} metas and {len(request.payload)} "
                "payload frames must match"
            )
        files = self._upload_names(request, len(keys), "put")
        area, secret = request.header.get("area"), request.header.get("area_key")
        entries = []
        try:
            for i, (meta, frame) in enumerate(zip(metas, request.payload, strict=False)):
                key = self._check_key(keys[i], request.op)
                _check_meta_fields(meta, key)
                file = files[i] if files else None
                if file is None:
                    tensors.parse_meta(meta, len(frame), key)
                    entries.append((key, Entry.of(TENSOR, meta, [frame], key)))
                    continue
                nbytes = tensors.meta_nbytes(meta, key)
                view, adopted = self.shm.adopt(area, file, nbytes, key, secret)
                entry = Entry.of(TENSOR, meta, [view], key)
                entry.shm = adopted
                entries.append((key, entry))
        except BaseException:
            _discard_files(entries)
            raise
        return entries

    def _upload_names(self, request, count: int, what: str) -> list | None:
        """A put's shared-memory uploads, one name (or None: a frame) per tensor."""
        files = request.header.get("files")
        if files is not None and (
            self.shm is None or not isinstance(files, list) or len(files) != count
        ):
            raise ProtocolError(
                f"{what}: field 'files' needs shared memory and one name per tensor"
            )
        return files

    def _op_put(self, request, identity):
        self._store_all(self._tensor_entries(request))
        return wire.reply(request.id)

    def _store_all(self, entries: list[tuple[str, Entry]]) -> None:
        """Store every entry or none (``StoreFull``: the files of all of them are unlinked)."""
        try:
            self.store.check_room([(key, entry.nbytes) for key, entry in entries])
        except BaseException:
            _discard_files(entries)
            raise
        for key, entry in entries:
            self.store.put(key, entry)

    def _op_get(self, request, identity):
        keys = wire.field(request.header, "keys", list)
        entries = [self.store.get(self._check_key(k, request.op), TENSOR) for k in keys]
        fields = {"metas": [e.meta for e in entries]}
        frames = [e.frames[0] for e in entries]
        if request.header.get("shm") is True and any(e.shm is not None for e in entries):
            names = [None if e.shm is None else e.shm.name for e in entries]
            frames = self._name_files(fields, names, frames)
        return wire.reply(request.id, fields, frames)

    def _name_files(self, fields: dict, names: list, frames: list) -> list:
        """A get's reply names the files a client maps (and this shard's offer) instead of
        sending their bytes: the frames, those of files empty."""
        fields["files"], fields["shm"] = names, self.shm.offer()
        self.shm_gets += sum(n is not None for n in names)
        return [f if n is None else b"" for n, f in zip(names, frames, strict=True)]

    def _op_delete(self, request, identity):
        key, kind = self._key(request), self._kind(request)
        self.store.delete(key, kind)
        if kind in REPLICATED:
            self.executor.discard(key)
        return wire.reply(request.id)

    def _op_exists(self, request, identity):
        return wire.reply(
            request.id, {"exists": self.store.exists(self._key(request), self._kind(request))}
        )

    def _op_delete_keys(self, request, identity):
        """Delete those of ``keys`` that exist (a bulk delete: one request per shard); a key
        of another kind refuses the whole request before anything is deleted."""
        kind = self._kind(request)
        keys = self._keys_of(request, kind)
        found = [k for k in dict.fromkeys(keys) if self.store.exists(k)]  # once each
        for key in found:
            self.store.get(key, kind)  # WrongType names the key: nothing deleted yet
        for key in found:
            self.store.delete(key, kind)
            if kind in REPLICATED:
                self.executor.discard(key)
        return wire.reply(request.id, {"deleted": len(found)})

    def _op_exists_keys(self, request, identity):
        """Per key of ``keys``, whether it holds anything (of ``kind``, if given)."""
        kind = self._kind(request)
        exists = self.store.exists
        return wire.reply(
            request.id, {"exists": [exists(k, kind) for k in self._keys_of(request, kind)]}
        )

    def _keys_of(self, request, kind: str | None) -> list[str]:
        """The request's ``keys``, each checked (owned here unless ``kind`` is replicated)."""
        owned = kind not in REPLICATED
        keys = wire.field(request.header, "keys", list)
        return [self._check_key(k, request.op, owned=owned) for k in keys]

    def _op_copy(self, request, identity):
        self.store.copy(self._key(request, "src"), self._key(request, "dst"), self._kind(request))
        return wire.reply(request.id)

    def _op_rename(self, request, identity):
        self.store.rename(self._key(request, "src"), self._key(request, "dst"), self._kind(request))
        return wire.reply(request.id)

    # -- datasets and lists ----------------------------------------------------------------

    def _op_put_dataset(self, request, identity):
        key = self._key(request)
        layout = wire.field(request.header, "dataset", dict)
        specs = layout.get("tensors", [])
        if not isinstance(specs, list) or len(specs) != len(request.payload):
            raise ProtocolError(f"dataset {key!r}: tensor list and payload frames differ")
        files = self._upload_names(request, len(specs), f"dataset {key!r}")
        frames, adopted = list(request.payload), []
        try:
            for i, spec in enumerate(specs):
                if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                    raise ProtocolError(f"dataset {key!r}: each tensor needs a name")
                name = f"{key}.{spec['name']}"
                if files and files[i] is not None:
                    nbytes = tensors.meta_nbytes(spec.get("meta"), name)
                    frames[i], file = self.shm.adopt(request.header.get("area"), files[i],
                                                     nbytes, name,
                                                     request.header.get("area_key"))  # fmt: skip
                    adopted.append((i, file))
                else:
                    tensors.parse_meta(spec.get("meta"), len(frames[i]), name)
            entry = Entry.of(DATASET, layout, frames, key)
            entry.shm = shm.ShmFiles(adopted) if adopted else None
            self.store.put(key, entry)
        except BaseException:
            for _, file in adopted:
                file.unlink()
            raise
        return wire.reply(request.id)

    def _op_get_dataset(self, request, identity):
        entry = self.store.get(self._key(request), DATASET)
        fields, frames = {"dataset": entry.meta}, entry.frames
        if request.header.get("shm") is True and entry.shm is not None:
            frames = self._name_files(fields, entry.shm.names(len(frames)), frames)
        return wire.reply(request.id, fields, frames)

    @staticmethod
    def _list_items(request) -> list[str]:
        items = wire.field(request.header, "items", list)
        if not all(isinstance(i, str) for i in items):
            raise ProtocolError(f"{request.op}: items must be strings")
        return items

    def _op_list_push(self, request, identity):
        items = self._list_items(request)
        return wire.reply(request.id, {"length": self.store.list_push(self._key(request), items)})

    def _op_list_set(self, request, identity):
        key = self._key(request)
        items = self._list_items(request)
        self.store.put(key, Entry.of(LIST, list(items), [], key))
        return wire.reply(request.id)

    def _op_list_range(self, request, identity):
        key = self._key(request)
        start = wire.field(request.header, "start", int)
        end = wire.field(request.header, "end", int)
        items = self.store.get(key, LIST).meta if self.store.exists(key) else []
        # Redis LRANGE: inclusive end, negative indices count from the back; no list is empty.
        n = len(items)
        start = max(start + n if start < 0 else start, 0)
        end = end + n if end < 0 else min(end, n - 1)
        return wire.reply(request.id, {"items": items[start : end + 1] if start <= end else []})

    def _op_list_len(self, request, identity):
        key = self._key(request)
        length = len(self.store.get(key, LIST).meta) if self.store.exists(key) else 0
        return wire.reply(request.id, {"length": length})

    # -- waiting ---------------------------------------------------------------------------

    def _op_wait(self, request, identity):
        """Answer when the key exists (with the right kind) or a list length condition holds,
        or at the deadline with ``found: False``. With ``fetch`` the tensor comes along."""
        key = self._key(request)
        kind = self._kind(request)
        condition = _CONDITIONS.get(wire.field(request.header, "cond", str, "exists"))
        if condition is None:
            raise ProtocolError(f"wait {key!r}: unknown condition {request.header.get('cond')!r}")
        n = wire.field(request.header, "n", int, 0)
        timeout = float(wire.field(request.header, "timeout", (int, float)))
        fetch = bool(request.header.get("fetch")) and kind == TENSOR
        if not 0 <= timeout <= MAX_WAIT_TIMEOUT:  # NaN and inf fail too
            raise ProtocolError(
                f"wait {key!r}: field 'timeout' must be 0 to {MAX_WAIT_TIMEOUT:g} seconds, "
                f"got {timeout!r}"
            )
        if not self._waiting_client_is_connected(identity):
            return None  # it left: nobody to answer, nothing to park
        req_id = request.id  # not the request: a parked closure must not pin its frames

        def ready(entry: Entry | None) -> bool:
            if entry is None:
                return kind == LIST and condition(n, 0)
            if kind is not None and entry.kind != kind:
                return False
            return condition(n, len(entry.meta) if entry.kind == LIST else 0)

        def answer(entry: Entry | None) -> None:
            if entry is None and self.store.exists(key):  # the deadline: judge what is there
                entry = self.store.get(key)
            if not ready(entry):
                self._send(identity, wire.reply(req_id, {"found": False}))
            elif fetch:
                self._send(
                    identity, wire.reply(req_id, {"found": True, "meta": entry.meta}, entry.frames)
                )
            else:
                self._send(identity, wire.reply(req_id, {"found": True}))

        self.store.wait(key, ready, timeout, answer, owner=identity)
        return None  # answered by `answer`, now or later

    # -- outputs of model runs (the executor's callbacks) -------------------------------------

    def _store_outputs(self, items: list) -> None:
        """Store the outputs of a run that this shard owns, all or none (loop thread)."""
        entries = []
        for key, (meta, buffer, file) in items:
            entry = Entry.of(TENSOR, meta, [buffer], key)
            entry.shm = file  # written by the worker (_output_file)
            entries.append((key, entry))
        self._store_all(entries)

    def _output_file(self, key: str, buffer: memoryview) -> tuple | None:
        """A model worker's thread: write a run's output of at least
        ``config.shm_threshold()`` bytes into this shard's shared-memory directory, so that
        gets name the file instead of sending it (``(mapping, file)``); None keeps it in
        memory (no such directory, a small output, or the file could not be written: a full
        ``/dev/shm`` never fails the run)."""
        area = self.shm
        if area is None or buffer.nbytes < config.shm_threshold():
            return None
        try:
            return area.write(buffer, key)
        except OSError as exc:
            log.debug("shard %s: output %r stays in memory: %s", self.address, key, exc)
            return None


#: The fields of a tensor's meta (docs/protocol.md); a shard stores no others.
META_FIELDS = frozenset({"dtype", "shape", "order"})


def _check_meta_fields(meta: object, key: str) -> None:
    """Refuse a tensor meta with fields beyond :data:`META_FIELDS`: stored whole, they
    would cost the shard memory its --max-memory does not count."""
    if isinstance(meta, dict) and not META_FIELDS.issuperset(meta):
        extra = sorted(str(f) for f in set(meta) - META_FIELDS)[:3]
        raise ProtocolError(
            f"tensor {key!r}: unknown meta field(s) {', '.join(map(repr, extra))}; a meta "
            "holds only dtype, shape and order"
        )


def _discard_files(entries: list) -> None:
    """Unlink the adopted files of entries that will not be stored."""
    for _, entry in entries:
        entry.discard()  # its mapping goes in the reaper, too
