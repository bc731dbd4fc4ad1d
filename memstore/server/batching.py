"""Dynamic batching of model runs, RedisAI's way.

With ``batch_size > 0`` a model gets a :class:`Batcher`: a thread that merges queued calls
whose inputs agree on all but dim 0 (up to ``batch_size`` rows), runs them as one batch
and splits the outputs back along dim 0. ``min_batch_size`` holds a batch back until that
many rows are queued, but never longer than ``min_batch_timeout`` ms
(:data:`DEFAULT_MIN_BATCH_WAIT_MS` when that is 0), so a lone call is never stuck.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from memstore.errors import ModelError

if TYPE_CHECKING:
    from memstore.server.models import Executor, Job, Loaded

#: How long a batch waits for ``min_batch_size`` rows when ``min_batch_timeout`` is 0.
DEFAULT_MIN_BATCH_WAIT_MS = 50


class Batcher:
    """Merges concurrent calls of one model into batches (a thread per batched model)."""

    def __init__(self, executor: Executor, model: Loaded):
        self.executor, self.model = executor, model
        self._jobs: list[Job] = []
        self._cond = threading.Condition()
        self._running = True
        self._thread = threading.Thread(
            target=self._loop, daemon=True, name=f"batcher-{model.name}"
        )
        self._thread.start()

    def add(self, job: Job) -> None:
        with self._cond:
            self._jobs.append(job)
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._running = False
            pending, self._jobs = self._jobs, []
            self._cond.notify()
        if pending:
            self.executor.fail(
                pending,
                ModelError(f"model {self.model.name!r} was replaced or deleted before it ran"),
            )

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._run(batch)

    def _next_batch(self) -> list[Job] | None:
        model = self.model
        wait_ms = model.min_batch_timeout or DEFAULT_MIN_BATCH_WAIT_MS
        with self._cond:
            while self._running and not self._jobs:
                self._cond.wait()
            if not self._running:
                return None
            if model.min_batch_size > 0:
                deadline = time.monotonic() + wait_ms / 1000
                while self._running and _rows(self._jobs) < model.min_batch_size:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            first = self._jobs[0]
            batch, rows = [], 0
            for job in list(self._jobs):
                size = _rows([job])
                if _compatible(first, job) and (not batch or rows + size <= model.batch_size):
                    batch.append(job)
                    rows += size
            for job in batch:
                self._jobs.remove(job)
            return batch

    def _run(self, batch: list[Job]) -> None:
        import torch

        executor, model = self.executor, self.model
        try:
            if len(batch) == 1:
                outputs = executor.execute(model, None, batch[0].tensors, 1)
                executor.finish([(batch[0], outputs)])
                return
            sizes = [_rows([job]) for job in batch]
            merged = [torch.cat(parts) for parts in zip(*(job.tensors for job in batch))]
            outputs = executor.execute(model, None, merged, len(batch))
            for out in outputs:
                if out.dim() == 0 or out.shape[0] != sum(sizes):
                    raise ModelError(
                        f"model {model.name!r}: batched output has dim 0 of "
                        f"{tuple(out.shape)[:1]} but the batch has {sum(sizes)} "
                        "rows; batching needs outputs batched along dim 0"
                    )
            # Clone each piece: a view would keep the whole batch's output alive in the store.
            pieces = [[piece.clone() for piece in out.split(sizes)] for out in outputs]
            executor.finish([(job, [p[i] for p in pieces]) for i, job in enumerate(batch)])
        except Exception as exc:
            executor.fail(batch, exc)


def _rows(jobs: list[Job]) -> int:
    return sum(
        int(job.tensors[0].shape[0]) if job.tensors and job.tensors[0].dim() else 1 for job in jobs
    )


def _compatible(a: Job, b: Job) -> bool:
    """Inputs agree on count, dtype and every dimension but the first."""
    if len(a.tensors) != len(b.tensors):
        return False
    return all(
        x.dim() > 0 and x.dtype == y.dtype and x.shape[1:] == y.shape[1:] and y.dim() == x.dim()
        for x, y in zip(a.tensors, b.tensors)
    )
