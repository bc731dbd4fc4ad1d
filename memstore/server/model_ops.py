"""The shard's model and script operations (mixed into :class:`Shard`).

Models and scripts are replicated: every shard holds every model, so a run executes on the
shard that holds its first input. Their keys are therefore exempt from the ownership check.
Loading and running happen on the :class:`Executor`'s workers; these handlers only
validate, start the work and answer when the executor calls back on the loop.
"""

from __future__ import annotations

import time

from memstore import wire
from memstore.errors import KeyNotFound, MemstoreError, ModelError, ProtocolError
from memstore.server.models import Executor, Job, Loaded, parse_device
from memstore.server.store import MODEL, SCRIPT, TENSOR, Entry

_FORMATS = {MODEL: ("torchscript", "pickle"), SCRIPT: ("source", "pickle")}


class ModelOps:
    """run_model, set_model & co. Expects the Shard's ``store``, ``_key``, ``_send``."""

    executor: Executor
    model_timeout: float

    def _model_kind(self, request) -> str:
        kind = request.header.get("kind", MODEL)
        if kind not in (MODEL, SCRIPT):
            raise ProtocolError(f"{request.op}: kind must be 'model' or 'script', got {kind!r}")
        return kind

    def _op_set_model(self, request, identity):
        kind = self._model_kind(request)
        key = self._key(request, kind=kind)
        meta = wire.field(request.header, "model", dict)
        backend = str(meta.get("backend", "TORCH")).upper()
        if backend != "TORCH":
            raise ModelError(
                f"{kind} {key!r}: backend {backend} is not supported; memstore "
                "runs TORCH models (TorchScript, or nn.Module with --allow-pickle)"
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
        if model is None or model.kind != kind:
            raise KeyNotFound(f"{kind} {key!r} not found: set it with set_{kind} first")
        local = {}
        for name in inputs:
            if self.store.exists(name, TENSOR):
                entry = self.store.get(name, TENSOR)
                local[name] = (entry.meta, entry.frames[0])

        def answer(error: MemstoreError | None) -> None:
            self._running_jobs.discard(job)
            self._send(
                identity, wire.error_reply(request.id, error) if error else wire.reply(request.id)
            )

        job = Job(
            model, fn_name, inputs, outputs, local, answer, time.monotonic() + self.model_timeout
        )
        self._running_jobs.add(job)
        self.executor.run(job)
        return None

    def _op_ai_info(self, request, identity):
        key = self._key(request, kind=MODEL)
        if self.store.get(key).kind not in (MODEL, SCRIPT):  # KeyNotFound for unknown names
            raise KeyNotFound(f"no model or script {key!r}")
        model = self.executor.models.get(key)
        stats = model.stats.as_dict() if model else {}
        if model and request.header.get("reset"):
            model.stats.__init__()
        device = model.device if model else None
        return wire.reply(request.id, {"stats": stats, "device": device, "address": self.address})

    def _key_list(self, request, name: str) -> list[str]:
        keys = wire.field(request.header, name, list)
        return [self._check_key(k, request.op, owned=False) for k in keys]

    def _expire_jobs(self, now: float) -> float | None:
        """Time out overdue runs; the next run deadline, for the loop's poll timeout."""
        nearest = None
        for job in list(self._running_jobs):
            if job.deadline <= now:
                self.executor.expire(job)
                self._running_jobs.discard(job)
            elif nearest is None or job.deadline < nearest:
                nearest = job.deadline
        return nearest
