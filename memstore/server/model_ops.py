"""The shard's model and script operations (mixed into :class:`Shard`).

Models and scripts are replicated: every shard holds every model, so a run executes on the
shard that holds its first input. Their keys are therefore exempt from the ownership check.
Loading and running happen on the :class:`Executor`'s workers; these handlers only
validate, start the work and answer when the executor calls back on the loop.

``stage`` / ``commit`` / ``abort`` are how a run on another shard writes outputs this shard
owns all or nothing: staged outputs are held aside (room checked, invisible) until the
running shard commits or aborts them, and dropped if it does neither in time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from memstore import wire
from memstore.config import MODELS_NONE, MODELS_TORCHSCRIPT
from memstore.errors import KeyNotFound, MemstoreError, ModelError, ProtocolError, StoreFull
from memstore.kinds import MODEL, SCRIPT, TENSOR
from memstore.server.executor import Deadlines, Job
from memstore.server.host import ShardHost
from memstore.server.models import PICKLE, Loaded, parse_device
from memstore.server.store import Entry

#: Seconds a stage outlives --model-timeout at most: its run decides within the timeout,
#: then its commit has this long to arrive.
STAGE_SLACK = 30.0

_FORMATS = {MODEL: ("torchscript", "pickle"), SCRIPT: ("source", "pickle")}


@dataclass(eq=False)
class Staged:
    """Outputs of a run on another shard, held until it commits or aborts them."""

    txn: str
    entries: list[tuple[str, Entry]]
    nbytes: int
    deadline: float


class ModelOps(ShardHost):
    """run_model, set_model & co, and the staged outputs of runs on other shards;
    :meth:`_init_models` is called from the shard's ``__init__``."""

    def _init_models(self) -> None:
        self._staged: dict[str, Staged] = {}
        self._staged_deadlines = Deadlines()

    def _expire_models(self, now: float) -> float | None:
        """Time out overdue runs and forgotten stages; the next such deadline, if any."""
        nearest = self.executor.expire(now)
        for staged in self._staged_deadlines.due(now):
            if self._staged.get(staged.txn) is staged:  # not a later stage of the same txn
                self._drop_staged(staged.txn)
        later = self._staged_deadlines.next()
        if later is not None and (nearest is None or later < nearest):
            nearest = later
        return nearest

    def _model_kind(self, request) -> str:
        kind = request.header.get("kind", MODEL)
        if kind not in (MODEL, SCRIPT):
            raise ProtocolError(f"{request.op}: kind must be 'model' or 'script', got {kind!r}")
        return kind

    def _op_set_model(self, request, identity):
        kind = self._model_kind(request)
        key = self._key(request, kind=kind)
        meta = wire.field(request.header, "model", dict)
        self._check_allowed(kind, key, meta.get("format"))
        backend = str(meta.get("backend", "TORCH")).upper()
        if backend != "TORCH":
            raise ModelError(
                f"{kind} {key!r}: backend {backend} is not supported; memstore "
                "runs TORCH models (TorchScript, or nn.Module with --models all)"
            )
        if meta.get("format") not in _FORMATS[kind] or not request.payload:
            raise ProtocolError(
                f"{kind} {key!r}: format must be one of {_FORMATS[kind]} "
                "with the serialised code as payload"
            )
        parse_device(meta.get("device", "cpu"))  # a bad name fails now, not on a worker
        for name in ("batch_size", "min_batch_size", "min_batch_timeout"):
            value = meta.get(name, 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ModelError(f"{kind} {key!r}: {name} must be a non-negative int")
        payload = list(request.payload)

        def loaded(model: Loaded | None, error: MemstoreError | None) -> None:
            if error is None:
                try:
                    self.store.put(key, Entry.of(kind, meta, payload, key))
                    self.executor.install(model)
                except MemstoreError as exc:
                    error = exc
            self._send(
                identity, wire.error_reply(request.id, error) if error else wire.reply(request.id)
            )

        self.executor.load(key, kind, meta, payload, loaded)
        return None

    def _check_allowed(self, kind: str, key: str, form: object) -> None:
        """Refuse code this shard's ``--models`` setting does not run, before any is loaded."""
        if self.models == MODELS_NONE:
            raise ModelError(
                f"{kind} {key!r}: shard {self.address} runs with --models none and refuses "
                "models and scripts; start the shards with --models torchscript to run them"
            )
        if self.models == MODELS_TORCHSCRIPT and form == PICKLE:
            raise ModelError(
                f"{kind} {key!r} is cloudpickled Python code, which shard {self.address} "
                "refuses (--models torchscript): send TorchScript, or start the shards with "
                "--models all / --allow-pickle (arbitrary code: only on networks you trust)"
            )

    def _op_get_model(self, request, identity):
        kind = self._model_kind(request)
        entry = self.store.get(self._key(request, kind=kind), kind)
        return wire.reply(request.id, {"model": entry.meta}, entry.frames[:1])

    def _op_run(self, request, identity):
        """Run a model (or a script's function) on this shard's workers."""
        kind = self._model_kind(request)
        key = self._key(request, kind=kind)
        inputs = self._key_list(request, "inputs")
        outputs = self._key_list(request, "outputs")
        fn_name = request.header.get("fn_name") if kind == SCRIPT else None
        if kind == SCRIPT and not isinstance(fn_name, str):
            raise ProtocolError(f"run_script {key!r}: missing fn_name")
        model = self.executor.models.get(key)
        if model is None or model.kind != kind:  # KeyNotFound, as for any missing key
            raise KeyNotFound(f"{kind} {key!r} not found: set it with set_{kind} first")
        local = {}
        for name in inputs:
            if self.store.exists(name, TENSOR):
                entry = self.store.get(name, TENSOR)
                local[name] = (entry.meta, entry.frames[0])

        def answer(error: MemstoreError | None) -> None:
            self._send(
                identity, wire.error_reply(request.id, error) if error else wire.reply(request.id)
            )

        job = Job(
            model, fn_name, inputs, outputs, local, answer, time.monotonic() + self.model_timeout
        )
        self.executor.run(job)
        return None

    def _op_ai_info(self, request, identity):
        key = self._key(request, kind=MODEL)
        if self.store.get(key).kind not in (MODEL, SCRIPT):  # KeyNotFound for unknown names
            raise KeyNotFound(f"no model or script {key!r}")
        model = self.executor.models.get(key)
        stats = model.stats.as_dict() if model else {}
        if model and request.header.get("reset"):
            model.stats.reset()
        device = model.device if model else None
        return wire.reply(request.id, {"stats": stats, "device": device, "address": self.address})

    def _key_list(self, request, name: str) -> list[str]:
        keys = wire.field(request.header, name, list)
        return [self._check_key(k, request.op, owned=False) for k in keys]

    # -- outputs written by runs on other shards ---------------------------------------------

    def _op_stage(self, request, identity):
        """Hold a run's outputs aside, counted against --max-memory until they are
        committed, aborted or expire: after ``ttl`` seconds, at most --model-timeout plus
        :data:`STAGE_SLACK` (the reply says which)."""
        txn = wire.field(request.header, "txn", str)
        ttl = wire.field(request.header, "ttl", (int, float))
        if not 0 <= ttl < float("inf"):
            raise ProtocolError(f"stage {txn!r}: ttl must be a finite number >= 0")
        entries = self._tensor_entries(request)
        nbytes = sum(entry.nbytes for _, entry in entries)
        replaced = self._staged.get(txn)
        try:  # room for these beside everything staged already, which may commit as well
            self.store.check_room([], staged=nbytes - (replaced.nbytes if replaced else 0))
        except StoreFull as exc:
            _discard(entries)
            keys = ", ".join(repr(k) for k, _ in entries[:3])
            raise StoreFull(f"stage {txn!r} of {keys}: {exc}") from None
        self._drop_staged(txn)
        ttl = min(ttl, self.model_timeout + STAGE_SLACK)
        staged = Staged(txn, entries, nbytes, time.monotonic() + ttl)
        self._staged[txn] = staged
        self.store.staged += nbytes
        self._staged_deadlines.add(staged.deadline, staged)
        return wire.reply(request.id, {"ttl": ttl})

    def _op_commit(self, request, identity):
        txn = wire.field(request.header, "txn", str)
        staged = self._staged.get(txn)
        if staged is None:
            raise ModelError(f"staged outputs {txn!r} on {self.address} expired before commit")
        self._drop_staged(txn, discard=False)
        try:
            self.store.check_room([(key, entry.nbytes) for key, entry in staged.entries])
        except StoreFull:
            _discard(staged.entries)
            raise
        for key, entry in staged.entries:
            self.store.put(key, entry)
        return wire.reply(request.id)

    def _op_abort(self, request, identity):
        self._drop_staged(wire.field(request.header, "txn", str))
        return wire.reply(request.id)

    def _drop_staged(self, txn: str, discard: bool = True) -> None:
        """Forget the outputs staged as ``txn``; ``discard``: unlink their files too."""
        staged = self._staged.pop(txn, None)
        if staged is not None:
            self.store.staged -= staged.nbytes
            if discard:
                _discard(staged.entries)

    def _drop_all_staged(self) -> None:
        """``flush`` and ``close``: every staged output goes, with its file."""
        for txn in list(self._staged):
            self._drop_staged(txn)


def _discard(entries: list) -> None:
    """Unlink the shared-memory files of entries that will not be stored."""
    for _, entry in entries:
        entry.discard()
