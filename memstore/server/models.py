"""Models and scripts inside a shard: loading, execution and dynamic batching.

The shard loop never runs (or loads) a model. It hands a :class:`Job` to the
:class:`Executor`, whose worker threads (one pool per device; torch releases the GIL while
it computes) fetch the inputs that live on other shards, run the model, write each output
to the shard its key hashes to, and hand the answer back to the loop through a queue plus
a wake-up pipe the loop polls. Inputs and outputs move through an ordinary
:class:`memstore.Client` owned by the workers, so remote and local keys take one path.

Models with ``batch_size > 0`` get a :class:`~memstore.server.batching.Batcher`.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from memstore import tensors
from memstore.errors import MemstoreError, ModelError
from memstore.server.batching import Batcher

log = logging.getLogger(__name__)

TORCHSCRIPT, PICKLE, SOURCE = "torchscript", "pickle", "source"


def parse_device(text: str) -> str:
    """SmartRedis / torch device names → torch's: ``CPU``→``cpu``, ``GPU:1``→``cuda:1``."""
    name = str(text).strip().lower()
    if name == "cpu":
        return "cpu"
    for prefix in ("gpu", "cuda"):
        if name == prefix:
            return "cuda:0"
        if name.startswith(prefix + ":") and name[len(prefix) + 1 :].isdigit():
            return f"cuda:{int(name[len(prefix) + 1 :])}"
    raise ModelError(f"unknown device {text!r}: use CPU, GPU, GPU:n (or cpu, cuda:n)")


def check_device(device: str, name: str) -> None:
    """ModelError unless ``device`` exists on this machine."""
    import torch

    if device.startswith("cuda"):
        index = int(device.split(":")[1])
        if not torch.cuda.is_available():
            raise ModelError(
                f"model {name!r}: device {device} requested but this shard has "
                "no CUDA device; use device='CPU'"
            )
        if index >= torch.cuda.device_count():
            raise ModelError(
                f"model {name!r}: device {device} does not exist (this shard has "
                f"{torch.cuda.device_count()} GPU(s))"
            )


@dataclass
class Stats:
    """Per model and shard: what ``get_ai_info`` reports."""

    calls: int = 0
    batches: int = 0
    errors: int = 0
    total_time: float = 0.0

    def as_dict(self) -> dict:
        mean = self.total_time / self.batches if self.batches else 0.0
        return {
            "calls": self.calls,
            "batches": self.batches,
            "errors": self.errors,
            "total_time": self.total_time,
            "mean_time": mean,
        }


@dataclass
class Loaded:
    """A model or script ready to run on one device."""

    name: str
    kind: str  # "model" | "script"
    device: str
    runnable: Any  # a module/callable (models) or {fn name: callable} (scripts)
    batch_size: int = 0
    min_batch_size: int = 0
    min_batch_timeout: int = 0
    arity: int | None = None  # number of inputs, when the model declares it
    stats: Stats = field(default_factory=Stats)
    batcher: Batcher | None = None

    def function(self, fn_name: str | None) -> Callable:
        if self.kind == "model":
            return self.runnable
        if fn_name not in self.runnable:
            raise ModelError(
                f"script {self.name!r} has no function {fn_name!r} (it has {sorted(self.runnable)})"
            )
        return self.runnable[fn_name]


@dataclass(eq=False)
class Job:
    """One run_model / run_script call."""

    model: Loaded
    fn_name: str | None
    inputs: list[str]
    outputs: list[str]
    local: dict[str, tuple[dict, Any]]  # inputs this shard holds: key → (meta, frame)
    answer: Callable[[MemstoreError | None], None]  # called on the loop thread, once
    deadline: float
    done: bool = False
    tensors: list = field(default_factory=list)


class Executor:
    """Worker pools per device, batchers per model, and the channel back to the loop.

    Args:
        client_factory: makes a :class:`memstore.Client` of this cluster for a worker.
        owns: whether this shard holds a key (its outputs are stored without a round trip).
        store_local: stores ``[(key, (meta, buffer))]`` on this shard; called on the loop.
        model_threads: workers per device.
        intra_op_threads: ``torch.set_num_threads`` (0 keeps torch's default).
        allow_pickle: accept cloudpickled modules and functions (arbitrary code!).
    """

    def __init__(
        self,
        client_factory: Callable[[], Any],
        owns: Callable[[str], bool],
        store_local: Callable[[list], None],
        *,
        model_threads: int = 1,
        intra_op_threads: int = 0,
        allow_pickle: bool = False,
    ):
        self.allow_pickle = allow_pickle
        self.models: dict[str, Loaded] = {}
        self._client_factory = client_factory
        self._owns = owns
        self._store_local = store_local
        self._model_threads = max(1, model_threads)
        self._intra_op_threads = intra_op_threads
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._local = threading.local()
        self._clients: list[Any] = []
        self._clients_lock = threading.Lock()
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        self.wake_fd, self._wake_write = os.pipe()
        os.set_blocking(self.wake_fd, False)

    # -- loop side -------------------------------------------------------------------------

    def call_on_loop(self, fn: Callable[[], None]) -> None:
        """Queue ``fn`` for the loop thread and wake it (safe from any thread)."""
        self._done.put(fn)
        os.write(self._wake_write, b"x")

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
                loaded = self._load(name, kind, meta, payload)
                self.call_on_loop(lambda: on_done(loaded, None))
            except Exception as exc:
                error = _model_error(name, "could not be loaded", exc)
                self.call_on_loop(lambda: on_done(None, error))

        self._pool("loader").submit(work)

    def install(self, loaded: Loaded) -> None:
        """Make ``loaded`` the runnable version of its name (loop thread)."""
        self.discard(loaded.name)
        if loaded.batch_size > 0:
            loaded.batcher = Batcher(self, loaded)
        self.models[loaded.name] = loaded

    def discard(self, name: str) -> None:
        old = self.models.pop(name, None)
        if old is not None and old.batcher is not None:
            old.batcher.stop()

    def run(self, job: Job) -> None:
        """Start a job (loop thread); its ``answer`` comes back through the loop."""
        job.model.stats.calls += 1
        self._pool(job.model.device).submit(self._prepare, job)

    def expire(self, job: Job) -> None:
        """The loop's --model-timeout passed: answer now; the worker's result is dropped."""
        if not job.done:
            job.done = True
            job.model.stats.errors += 1
            job.answer(
                ModelError(
                    f"{job.model.kind} {job.model.name!r} did not finish within "
                    "--model-timeout; no outputs were written"
                )
            )

    def close(self) -> None:
        for loaded in list(self.models.values()):
            if loaded.batcher is not None:
                loaded.batcher.stop()
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
        with self._clients_lock:
            for client in self._clients:
                client.close()
        os.close(self.wake_fd)
        os.close(self._wake_write)

    # -- worker side -----------------------------------------------------------------------

    def _pool(self, device: str) -> ThreadPoolExecutor:
        pool = self._pools.get(device)
        if pool is None:
            pool = ThreadPoolExecutor(self._model_threads, thread_name_prefix=f"model-{device}")
            self._pools[device] = pool
        return pool

    def client(self):
        """This worker thread's client of the cluster."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._client_factory()
            with self._clients_lock:
                self._clients.append(client)
            self._local.client = client
        return client

    def _load(self, name: str, kind: str, meta: dict, payload: list) -> Loaded:
        import torch

        if self._intra_op_threads and torch.get_num_threads() != self._intra_op_threads:
            torch.set_num_threads(self._intra_op_threads)
        device = parse_device(meta.get("device", "cpu"))
        check_device(device, name)
        form = meta.get("format")
        blob = bytes(payload[0]) if payload else b""
        arity = None
        if kind == "model" and form == TORCHSCRIPT:
            runnable = torch.jit.load(io.BytesIO(blob), map_location=device)
            runnable.eval()
            arity = _declared_arity(runnable)
        elif kind == "model" and form == PICKLE:
            runnable = self._unpickle(name, blob)
            if isinstance(runnable, torch.nn.Module):
                runnable = runnable.to(device).eval()
        elif kind == "script" and form == SOURCE:
            runnable = self._compile_script(name, blob.decode(), payload[1:])
        elif kind == "script" and form == PICKLE:
            fn = self._unpickle(name, blob)
            runnable = {meta.get("fn_name") or getattr(fn, "__name__", name): fn}
        else:
            raise ModelError(f"{kind} {name!r}: unknown format {form!r}")
        return Loaded(
            name,
            kind,
            device,
            runnable,
            batch_size=int(meta.get("batch_size", 0)),
            min_batch_size=int(meta.get("min_batch_size", 0)),
            min_batch_timeout=int(meta.get("min_batch_timeout", 0)),
            arity=arity,
        )

    def _unpickle(self, name: str, blob: bytes) -> Any:
        if not self.allow_pickle:
            raise ModelError(
                f"{name!r} is cloudpickled Python code, which this shard refuses: "
                "start the shards with --allow-pickle to run client code "
                "(only on networks you trust), or send TorchScript"
            )
        import cloudpickle

        return cloudpickle.loads(blob)

    def _compile_script(self, name: str, source: str, fallback: list) -> dict:
        import torch

        try:
            unit = torch.jit.CompilationUnit(source)
        except Exception as exc:
            if fallback and self.allow_pickle:  # set_function sent the callable as well
                fn = self._unpickle(name, bytes(fallback[0]))
                return {fn.__name__: fn}
            hint = (
                " (set_function: start the shards with --allow-pickle to run it as plain Python)"
                if fallback
                else ""
            )
            raise ModelError(f"script {name!r} is not valid TorchScript{hint}: {exc}") from None
        names = [fn.name for fn in unit.get_functions()]
        return {n: getattr(unit, n) for n in names}

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
            outputs = self.execute(model, job.fn_name, job.tensors, batch=1)
            self.finish([(job, outputs)])
        except Exception as exc:
            self.fail([job], exc)

    def _inputs(self, job: Job) -> list:

        remote = [k for k in job.inputs if k not in job.local]
        fetched = (
            dict(zip(remote, self.client().get_tensors(remote, as_torch=True))) if (remote) else {}
        )
        found = []
        for key in job.inputs:
            if key in job.local:
                meta, frame = job.local[key]
                # Copy: the frame is the stored value, and a model may work in place.
                found.append(tensors.decode(meta, frame, as_torch=True, name=key).clone())
            else:
                found.append(fetched[key])
        device = job.model.device
        return found if device == "cpu" else [t.to(device) for t in found]

    def execute(self, model: Loaded, fn_name: str | None, inputs: list, batch: int) -> list:
        """Run once; returns the outputs as CPU tensors."""
        import torch

        fn = model.function(fn_name)
        started = time.perf_counter()
        with torch.no_grad():
            result = fn(*inputs)
        model.stats.total_time += time.perf_counter() - started
        model.stats.batches += 1
        outputs = list(result) if isinstance(result, (tuple, list)) else [result]
        for i, out in enumerate(outputs):
            if not isinstance(out, torch.Tensor):
                raise ModelError(
                    f"{model.kind} {model.name!r}: output {i} is a "
                    f"{type(out).__name__}, not a tensor"
                )
        return [out.detach().cpu() for out in outputs]

    def finish(self, results: list[tuple[Job, list]]) -> None:
        """Worker: store the outputs of finished jobs, then answer them.

        Outputs this shard owns are handed to the loop, which stores them without a round
        trip; the others go out in one message per shard for the whole batch. Jobs already
        answered (timed out) write nothing.
        """
        ready, remote = [], {}
        for job, outputs in results:
            if len(outputs) != len(job.outputs):
                self.fail(
                    [job],
                    ModelError(
                        f"{job.model.kind} {job.model.name!r} produced {len(outputs)} "
                        f"output(s) but {len(job.outputs)} output key(s) were given"
                    ),
                )
                continue
            if job.done:
                continue
            local = []
            for key, out in zip(job.outputs, outputs):
                if self._owns(key):
                    local.append((key, tensors.encode(out, key)))
                else:
                    remote[key] = out
            ready.append((job, local))
        if remote:
            try:
                self.client().put_tensors(remote)
            except Exception as exc:
                self.fail([job for job, _ in ready], exc)
                return

        def store_and_answer() -> None:
            for job, local in ready:
                if job.done:
                    continue
                try:
                    self._store_local(local)
                except MemstoreError as exc:
                    self._answer(job, exc)
                    continue
                self._answer(job, None)

        self.call_on_loop(store_and_answer)

    def fail(self, jobs: list[Job], exc: BaseException) -> None:
        """Answer ``jobs`` with ``exc``: store errors (a missing input, a full shard) as they
        are, anything the model raised as a ModelError carrying its text."""
        for job in jobs:
            error = (
                exc
                if isinstance(exc, MemstoreError)
                else _model_error(job.model.name, "failed", exc, job.model.kind)
            )
            self.call_on_loop(lambda job=job, error=error: self._answer(job, error))

    def _answer(self, job: Job, error: MemstoreError | None) -> None:
        if job.done:
            return
        job.done = True
        if error is not None:
            job.model.stats.errors += 1
        job.answer(error)


def _declared_arity(module: Any) -> int | None:
    try:
        arguments = module.forward.schema.arguments
    except Exception:
        return None
    if any(str(a.type).startswith("List") for a in arguments):
        return None
    return len(arguments) - 1  # self


def _model_error(name: str, what: str, exc: BaseException, kind: str = "model") -> ModelError:
    if isinstance(exc, ModelError):
        return exc
    detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return ModelError(f"{kind} {name!r} {what}: {detail}")
