"""Dynamic batching of model runs, RedisAI's way.

With ``batch_size > 0`` a model gets a :class:`Batcher`: a thread that merges queued calls
whose inputs agree on all but dim 0 (up to ``batch_size`` rows), runs them as one batch
and splits the outputs back along dim 0. ``min_batch_size`` holds a batch back until that
many rows are queued, but never longer than ``min_batch_timeout`` ms
(:data:`DEFAULT_MIN_BATCH_WAIT_MS` when that is 0), so a lone call is never stuck.

A call that cannot be merged with anything (a 0-d input, no inputs at all) runs alone, as
an unbatched call would: every turn of the loop takes at least the oldest queued call, so
the queue always drains and the thread never spins.

The batcher knows nothing of the executor: it is given the three callables it needs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from memstore.errors import ModelError

#: How long a batch waits for ``min_batch_size`` rows when ``min_batch_timeout`` is 0.
DEFAULT_MIN_BATCH_WAIT_MS = 50


class Batchable(Protocol):
    """What the batcher needs of a job: its input tensors."""

    tensors: list


@dataclass(frozen=True)
class BatchOptions:
    """A batched model's settings (``set_model``'s arguments of the same names)."""

    name: str
    batch_size: int
    min_batch_size: int = 0
    min_batch_timeout: int = 0


#: ``execute(inputs, calls)``: run the model once on ``inputs`` (``calls`` merged calls).
Execute = Callable[[list, int], list]
#: ``deliver(job, outputs)``: store one call's outputs and answer it.
Deliver = Callable[[Any, list], None]
#: ``fail(jobs, exc)``: answer these calls with an error.
Fail = Callable[[list, BaseException], None]


class Batcher:
    """Merges concurrent calls of one model into batches (a thread per batched model)."""

    def __init__(self, options: BatchOptions, execute: Execute, deliver: Deliver, fail: Fail):
        self.options = options
        self._execute, self._deliver, self._fail = execute, deliver, fail
        self._jobs: list[Batchable] = []
        self._cond = threading.Condition()
        self._running = True
        self._thread = threading.Thread(
            target=self._loop, daemon=True, name=f"batcher-{options.name}"
        )
        self._thread.start()

    def add(self, job: Batchable) -> None:
        """Queue ``job``; fails it at once if the model was replaced or deleted meanwhile."""
        with self._cond:
            if self._running:
                self._jobs.append(job)
                self._cond.notify()
                return
        self._fail([job], self._gone())

    def stop(self) -> None:
        """End the thread; queued calls fail with ``ModelError`` (the model is gone)."""
        with self._cond:
            self._running = False
            pending, self._jobs = self._jobs, []
            self._cond.notify()
        if pending:
            self._fail(pending, self._gone())

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the thread to end; whether it did."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _gone(self) -> ModelError:
        return ModelError(
            f"model {self.options.name!r} was replaced or deleted before this run started; "
            "run it again"
        )

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._run(batch)

    def _next_batch(self) -> list[Batchable] | None:
        """The next batch (never empty: it holds the oldest call), or None once stopped."""
        options = self.options
        wait_ms = options.min_batch_timeout or DEFAULT_MIN_BATCH_WAIT_MS
        with self._cond:
            while self._running and not self._jobs:
                self._cond.wait()
            if options.min_batch_size > 0:
                deadline = time.monotonic() + wait_ms / 1000
                while self._running and rows(self._jobs) < options.min_batch_size:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            if not self._running:  # stop() came during a wait and took the queue
                return None
            batch = select(self._jobs, options.batch_size)
            taken = {id(job) for job in batch}
            self._jobs = [job for job in self._jobs if id(job) not in taken]
            return batch

    def _run(self, batch: list[Batchable]) -> None:
        try:
            if len(batch) == 1:
                self._deliver(batch[0], self._execute(batch[0].tensors, 1))
                return
            self._run_merged(batch)
        except Exception as exc:
            self._fail(batch, exc)

    def _run_merged(self, batch: list[Batchable]) -> None:
        import torch

        name = self.options.name
        sizes = [int(job.tensors[0].shape[0]) for job in batch]
        merged = [torch.cat(parts) for parts in zip(*(job.tensors for job in batch))]
        outputs = self._execute(merged, len(batch))
        for out in outputs:
            if out.dim() == 0 or out.shape[0] != sum(sizes):
                raise ModelError(
                    f"model {name!r}: batched output has dim 0 of "
                    f"{tuple(out.shape)[:1]} but the batch has {sum(sizes)} "
                    "rows; batching needs outputs batched along dim 0"
                )
        # Clone each piece: a view would keep the whole batch's output alive in the store.
        pieces = [[piece.clone() for piece in out.split(sizes)] for out in outputs]
        for i, job in enumerate(batch):
            try:
                self._deliver(job, [p[i] for p in pieces])
            except Exception as exc:  # one call's outputs failing must not fail the others
                self._fail([job], exc)


def mergeable(job: Batchable) -> bool:
    """Whether a call can share a batch: it has inputs, none of them 0-d."""
    return bool(job.tensors) and all(t.dim() > 0 for t in job.tensors)


def rows(jobs: list[Batchable]) -> int:
    """Rows (dim 0) the calls bring; a call that cannot be merged counts as one."""
    return sum(int(job.tensors[0].shape[0]) if mergeable(job) else 1 for job in jobs)


def compatible(a: Batchable, b: Batchable) -> bool:
    """Inputs agree on count, dtype, device and every dimension but the first."""
    if not (mergeable(a) and mergeable(b)) or len(a.tensors) != len(b.tensors):
        return False
    return all(
        x.dtype == y.dtype and x.device == y.device and x.shape[1:] == y.shape[1:]
        for x, y in zip(a.tensors, b.tensors)
    )


def select(queue: list[Batchable], batch_size: int) -> list[Batchable]:
    """The oldest call plus the later ones that merge with it, up to ``batch_size`` rows.

    Never empty for a non-empty queue: a call that cannot be merged, or that alone has more
    than ``batch_size`` rows, forms a batch of its own.
    """
    if not queue:
        return []
    first = queue[0]
    batch, total = [first], rows([first])
    if not mergeable(first):
        return batch
    for job in queue[1:]:
        size = rows([job])
        if compatible(first, job) and total + size <= batch_size:
            batch.append(job)
            total += size
    return batch
