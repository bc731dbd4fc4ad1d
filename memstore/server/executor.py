"""Running models and scripts for a shard: worker threads, deadlines, all-or-nothing outputs.

The shard loop never runs (or loads) a model. It hands a :class:`Job` to the
:class:`Executor`, whose worker threads (one pool per device; torch releases the GIL while
it computes) fetch the inputs that live on other shards, run the model and hand the results
back to the loop through a queue plus a wake-up pipe the loop polls. Other shards are
reached through :class:`~memstore.server.peers.Peers`, never through the client.

Outputs appear all together or not at all. Outputs owned by other shards are first *staged*
there (held aside, room checked, invisible); the loop then decides, in one place, whether
the run still counts: if it timed out or a stage failed, every stage is aborted and nothing
was written; otherwise the loop stores this shard's outputs and the stages are committed.
After that decision a run no longer times out. The one way to end half-written is a commit
refused afterwards (a peer died, or filled up, between stage and commit): the caller then
gets an error that says so.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import queue
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from memstore import tensors
from memstore.errors import ConnectionLost, KeyNotFound, MemstoreError, ModelError
from memstore.server.batching import Batcher, BatchOptions
from memstore.server.models import Loaded, load, model_error
from memstore.server.peers import Peers

log = logging.getLogger(__name__)

#: Longest :meth:`Executor.close` waits for idle workers to leave (busy ones are daemons).
_CLOSE_WAIT_S = 1.0


@dataclass(eq=False)
class Job:
    """One run_model / run_script call. Its state changes on the loop thread only."""

    model: Loaded
    fn_name: str | None
    inputs: list[str]
    outputs: list[str]
    local: dict[str, tuple[dict, Any]]  # inputs this shard holds: key → (meta, frame)
    answer: Callable[[MemstoreError | None], None]  # called on the loop thread, once
    deadline: float
    done: bool = False  # answered
    committing: bool = False  # its outputs are being written: past the timeout's reach
    tensors: list = field(default_factory=list)
    txn: str = field(default_factory=lambda: uuid.uuid4().hex)


class Deadlines:
    """Items by deadline, cheap to add and to check each loop turn (a heap, not a scan).

    Items are held weakly: one answered early (most are) is not kept alive, with its
    tensors, until its deadline comes up.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, weakref.ref]] = []
        self._seq = itertools.count()

    def add(self, deadline: float, item: Any) -> None:
        heapq.heappush(self._heap, (deadline, next(self._seq), weakref.ref(item)))

    def due(self, now: float) -> list:
        """Remove and return the items whose deadline is ``now`` or earlier."""
        due = []
        while self._heap and self._heap[0][0] <= now:
            item = heapq.heappop(self._heap)[2]()
            if item is not None:
                due.append(item)
        return due

    def next(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def __len__(self) -> int:
        return len(self._heap)


class Workers:
    """A fixed set of daemon threads taking calls from a queue.

    Daemons, unlike ``ThreadPoolExecutor``'s threads: a model stuck in a run must not keep
    the interpreter from exiting once its shard is closed.
    """

    def __init__(self, name: str, threads: int, on_exit: Callable[[], None]):
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._on_exit = on_exit
        self._threads = [
            threading.Thread(target=self._work, daemon=True, name=f"{name}-{i}")
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable, *args: Any) -> None:
        self._calls.put((fn, args))

    def stop(self) -> None:
        """Let each thread leave once it is idle (calls still queued are dropped)."""
        for _ in self._threads:
            self._calls.put(None)

    def join(self, deadline: float) -> None:
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _work(self) -> None:
        try:
            while True:
                call = self._calls.get()
                if call is None:
                    return
                fn, args = call
                try:
                    fn(*args)
                except Exception:  # a bug in a call must not take the worker down
                    log.exception("model worker call failed")
        finally:
            self._on_exit()


class Executor:
    """Worker pools per device, batchers per model, and the channel back to the loop.

    Args:
        peers: requests to the other shards (inputs, staged outputs).
        route: the address of the shard that owns a key, None for this shard.
        store_local: stores ``[(key, (meta, buffer, file))]`` on this shard, all or none
            (``StoreFull``, having unlinked their files); called on the loop.
        spill: ``spill(key, buffer)``, called on the worker for each output this shard
            stores: ``(buffer, file)`` with its bytes moved into a shared-memory file
            (``memstore.shm.ShmFile``), or None to keep ``buffer`` in memory.
        model_threads: workers per device.
        intra_op_threads: ``torch.set_num_threads`` (0 keeps torch's default).
        allow_pickle: accept cloudpickled modules and functions (arbitrary code!).
    """

    def __init__(
        self,
        peers: Peers,
        route: Callable[[str], str | None],
        store_local: Callable[[list], None],
        *,
        spill: Callable[[str, Any], tuple | None] | None = None,
        model_threads: int = 1,
        intra_op_threads: int = 0,
        allow_pickle: bool = False,
    ):
        self.allow_pickle = allow_pickle
        self.models: dict[str, Loaded] = {}
        self._peers = peers
        self._route = route
        self._store_local = store_local
        self._spill = spill
        self._model_threads = max(1, model_threads)
        self._intra_op_threads = intra_op_threads
        self._pools: dict[str, Workers] = {}
        self._deadlines = Deadlines()
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        self._wake_lock = threading.Lock()  # no write to the pipe once close() closed it
        self._closed = False
        self.wake_fd, self._wake_write = os.pipe()
        os.set_blocking(self.wake_fd, False)
        os.set_blocking(self._wake_write, False)  # a full pipe already wakes the loop

    # -- loop side -------------------------------------------------------------------------

    def call_on_loop(self, fn: Callable[[], None]) -> None:
        """Queue ``fn`` for the loop thread and wake it (safe from any thread; dropped once
        the executor is closed)."""
        with self._wake_lock:
            if self._closed:
                return
            self._done.put(fn)
            try:
                os.write(self._wake_write, b"x")
            except BlockingIOError:
                pass

    def run_completions(self) -> None:
        """Run everything workers queued for the loop; the loop calls this when woken."""
        try:
            while os.read(self.wake_fd, 4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                fn = self._done.get_nowait()
            except queue.Empty:
                return
            fn()

    def load(
        self,
        name: str,
        kind: str,
        meta: dict,
        payload: list,
        on_done: Callable[[Loaded | None, MemstoreError | None], None],
    ) -> None:
        """Load a model/script on a worker; ``on_done(loaded, error)`` runs on the loop."""

        def work():
            try:
                loaded, error = self.load_now(name, kind, meta, payload), None
            except ModelError as exc:
                loaded, error = None, exc
            self.call_on_loop(lambda: on_done(loaded, error))

        self._pool("loader").submit(work)

    def load_now(self, name: str, kind: str, meta: dict, payload: list) -> Loaded:
        """Load a model/script on the calling thread: a worker, or a restore before the
        shard serves (so that a restored model runs as soon as it is listed).

        Raises:
            ModelError: the code does not load, naming it.
        """
        try:
            import torch

            if self._intra_op_threads and torch.get_num_threads() != self._intra_op_threads:
                torch.set_num_threads(self._intra_op_threads)
            return load(name, kind, meta, payload, self.allow_pickle)
        except Exception as exc:
            raise model_error(name, "could not be loaded", exc, kind) from None

    def install(self, loaded: Loaded) -> None:
        """Make ``loaded`` the runnable version of its name (loop thread)."""
        self.discard(loaded.name)
        if loaded.batch_size > 0:
            options = BatchOptions(
                loaded.name, loaded.batch_size, loaded.min_batch_size, loaded.min_batch_timeout
            )
            loaded.batcher = Batcher(
                options,
                lambda inputs, calls: self.execute(loaded, None, inputs),
                self.deliver,
                self.fail,
            )
        self.models[loaded.name] = loaded

    def discard(self, name: str) -> None:
        """Forget model ``name``; runs queued in its batcher fail (loop thread)."""
        old = self.models.pop(name, None)
        if old is not None and old.batcher is not None:
            old.batcher.stop()

    def run(self, job: Job) -> None:
        """Start a job (loop thread); its ``answer`` comes back through the loop."""
        job.model.stats.called()
        self._deadlines.add(job.deadline, job)
        self._pool(job.model.device).submit(self._prepare, job)

    def expire(self, now: float) -> float | None:
        """Answer runs past their deadline (loop thread); the next deadline, if any.

        A timed-out run is answered now; what its worker produces later is dropped.
        """
        for job in self._deadlines.due(now):
            if not job.done and not job.committing:
                self._answer(
                    job,
                    ModelError(
                        f"{job.model.kind} {job.model.name!r} did not finish within "
                        "--model-timeout; no outputs were written"
                    ),
                )
        return self._deadlines.next()

    def close(self) -> None:
        """Stop batchers and workers; idle workers leave, busy ones are daemons."""
        with self._wake_lock:
            self._closed = True
        for loaded in list(self.models.values()):
            if loaded.batcher is not None:
                loaded.batcher.stop()
        for pool in self._pools.values():
            pool.stop()
        deadline = time.monotonic() + _CLOSE_WAIT_S
        for pool in self._pools.values():
            pool.join(deadline)
        with self._wake_lock:  # call_on_loop holds it while it writes
            os.close(self.wake_fd)
            os.close(self._wake_write)

    # -- worker side -----------------------------------------------------------------------

    def _pool(self, device: str) -> Workers:
        pool = self._pools.get(device)
        if pool is None:
            threads = 1 if device in ("loader", "io") else self._model_threads
            pool = Workers(f"model-{device}", threads, self._peers.close_thread)
            self._pools[device] = pool
        return pool

    def _prepare(self, job: Job) -> None:
        """Worker: gather the inputs, then run now or queue for the batcher."""
        try:
            job.tensors = self._inputs(job)
            model = job.model
            if model.arity is not None and len(job.tensors) != model.arity:
                raise ModelError(
                    f"model {model.name!r} takes {model.arity} input(s), got {len(job.tensors)}"
                )
            if model.batcher is not None:
                model.batcher.add(job)
                return
            self.deliver(job, self.execute(model, job.fn_name, job.tensors))
        except Exception as exc:
            self.fail([job], exc)

    def _inputs(self, job: Job) -> list:
        by_shard: dict[str, list[str]] = {}
        for key in job.inputs:
            if key not in job.local:
                address = self._route(key)
                if address is None:
                    raise KeyNotFound(
                        f"{job.model.kind} {job.model.name!r}: input tensor {key!r} not found"
                    )
                by_shard.setdefault(address, []).append(key)
        fetched: dict[str, tuple[dict, Any]] = {}
        if by_shard:
            shards = list(by_shard)
            replies = self._ask_peers(job, [(a, "get", {"keys": by_shard[a]}, []) for a in shards])
            for address, (header, frames) in zip(shards, replies):
                fetched.update(zip(by_shard[address], zip(header["metas"], frames)))
        found = []
        for key in job.inputs:
            meta, frame = job.local[key] if key in job.local else fetched[key]
            # Copy: a local frame is the stored value and a remote one a read-only receive
            # buffer, while a model may work in place.
            found.append(tensors.decode(meta, frame, as_torch=True, name=key).clone())
        device = job.model.device
        return found if device == "cpu" else [t.to(device) for t in found]

    def _ask_peers(self, job: Job, requests: list) -> list:
        """Requests a run makes to other shards; one that is gone or silent fails the run
        with a ModelError naming it (what a caller of run_model catches)."""
        try:
            return self._peers.request_all(requests)
        except ConnectionLost as exc:
            raise ModelError(f"{job.model.kind} {job.model.name!r}: {exc}") from None

    def execute(self, model: Loaded, fn_name: str | None, inputs: list) -> list:
        """Run once; returns the outputs as CPU tensors."""
        import torch

        fn = model.function(fn_name)
        started = time.perf_counter()
        with torch.no_grad():
            result = fn(*inputs)
        model.stats.ran(time.perf_counter() - started)
        outputs = list(result) if isinstance(result, (tuple, list)) else [result]
        for i, out in enumerate(outputs):
            if not isinstance(out, torch.Tensor):
                raise ModelError(
                    f"{model.kind} {model.name!r}: output {i} is a "
                    f"{type(out).__name__}, not a tensor"
                )
        return [out.detach().cpu() for out in outputs]

    def deliver(self, job: Job, outputs: list) -> None:
        """Worker: write the large outputs this shard stores into shared-memory files
        (``spill``: here, not on the loop), stage the outputs other shards own, then let the
        loop decide (see the module's docstring). Raises what went wrong; nothing is left
        staged, and no file, then."""
        if len(outputs) != len(job.outputs):
            raise ModelError(
                f"{job.model.kind} {job.model.name!r} produced {len(outputs)} "
                f"output(s) but {len(job.outputs)} output key(s) were given"
            )
        local, remote = [], {}
        try:
            for key, out in zip(job.outputs, outputs):
                address = self._route(key)
                meta, buffer = tensors.encode(out, key)
                if address is None:
                    spilled = self._spill(key, buffer) if self._spill is not None else None
                    buffer, file = spilled if spilled is not None else (buffer, None)
                    local.append((key, (meta, buffer, file)))
                else:
                    remote.setdefault(address, []).append((key, (meta, buffer)))
        except BaseException:
            _discard_files(local)
            raise
        if remote:
            requests = [
                (
                    address,
                    "stage",
                    {
                        "txn": job.txn,
                        "keys": [k for k, _ in items],
                        "metas": [m for _, (m, _) in items],
                        "ttl": self._peers.timeout + max(0.0, job.deadline - time.monotonic()),
                    },
                    [b for _, (_, b) in items],
                )
                for address, items in remote.items()
            ]
            try:
                self._ask_peers(job, requests)
            except BaseException:
                _discard_files(local)
                self._end_stages(job.txn, list(remote), "abort")
                raise
        self.call_on_loop(lambda: self._decide(job, local, list(remote)))

    def _decide(self, job: Job, local: list, remote: list[str]) -> None:
        """Loop: the one place a run's outputs are kept or dropped."""
        if job.done:  # timed out (or failed) while its outputs were staged
            _discard_files(local)
            if remote:
                self._pool("io").submit(self._end_stages, job.txn, remote, "abort")
            return
        try:
            self._store_local(local)
        except MemstoreError as exc:
            if remote:
                self._pool("io").submit(self._end_stages, job.txn, remote, "abort")
            self._answer(job, exc)
            return
        if not remote:
            self._answer(job, None)
            return
        job.committing = True
        self._pool("io").submit(self._commit, job, remote)

    def _commit(self, job: Job, remote: list[str]) -> None:
        try:
            self._peers.request_all([(a, "commit", {"txn": job.txn}, []) for a in remote])
            error = None
        except MemstoreError as exc:
            error = ModelError(
                f"{job.model.kind} {job.model.name!r} ran, but writing its outputs on "
                f"another shard failed after some were written ({exc}); run it again"
            )
        self.call_on_loop(lambda: self._answer(job, error))

    def _end_stages(self, txn: str, remote: list[str], op: str) -> None:
        try:
            self._peers.request_all([(a, op, {"txn": txn}, []) for a in remote])
        except MemstoreError as exc:  # its stage expires there on its own
            log.warning("%s of staged outputs %s failed: %s", op, txn, exc)

    def fail(self, jobs: list[Job], exc: BaseException) -> None:
        """Answer ``jobs`` with ``exc``: store errors (a missing input, a full shard) as they
        are, anything the model raised as a ModelError carrying its text."""
        for job in jobs:
            error = (
                exc
                if isinstance(exc, MemstoreError)
                else model_error(job.model.name, "failed", exc, job.model.kind)
            )
            self.call_on_loop(lambda job=job, error=error: self._answer(job, error))

    def _answer(self, job: Job, error: MemstoreError | None) -> None:
        if job.done:
            return
        job.done = True
        if error is not None:
            job.model.stats.failed()
        job.answer(error)


def _discard_files(local: list) -> None:
    """Unlink the shared-memory files of outputs that will not be stored (their mappings
    go with them, in the reaper thread)."""
    for _, (_, buffer, file) in local:
        if file is not None:
            file.unlink([buffer])
