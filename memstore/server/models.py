"""Models and scripts inside a shard: devices, loading, what a loaded one holds.

Running them is :mod:`memstore.server.executor`'s job; batching is
:mod:`memstore.server.batching`'s.
"""

from __future__ import annotations

import io
import logging
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from memstore.errors import ModelError
from memstore.kinds import MODEL, SCRIPT
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


class Stats:
    """Per model and shard: what ``get_ai_info`` reports.

    Updated by the loop and by every worker thread, hence the lock (``+=`` on an attribute
    is a read and a write, and a thread switch between them loses a count).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.calls = self.batches = self.errors = 0
            self.total_time = 0.0

    def called(self) -> None:
        with self._lock:
            self.calls += 1

    def ran(self, seconds: float) -> None:
        with self._lock:
            self.batches += 1
            self.total_time += seconds

    def failed(self) -> None:
        with self._lock:
            self.errors += 1

    def as_dict(self) -> dict:
        with self._lock:
            mean = self.total_time / self.batches if self.batches else 0.0
            return {
                "calls": self.calls,
                "batches": self.batches,
                "errors": self.errors,
                "total_time": self.total_time,
                "mean_time": mean,
            }


@dataclass(eq=False)
class Loaded:
    """A model or script ready to run on one device."""

    name: str
    kind: str  # MODEL | SCRIPT
    device: str
    runnable: Any  # a module/callable (models) or {fn name: callable} (scripts)
    batch_size: int = 0
    min_batch_size: int = 0
    min_batch_timeout: int = 0
    arity: int | None = None  # number of inputs, when the model declares it
    stats: Stats = field(default_factory=Stats)
    batcher: Batcher | None = None

    def function(self, fn_name: str | None) -> Callable:
        if self.kind == MODEL:
            return self.runnable
        if fn_name not in self.runnable:
            raise ModelError(
                f"script {self.name!r} has no function {fn_name!r} (it has {sorted(self.runnable)})"
            )
        return self.runnable[fn_name]


def load(name: str, kind: str, meta: dict, payload: list, allow_pickle: bool) -> Loaded:
    """Build the runnable form of a stored model or script (on a worker thread).

    Raises:
        ModelError: unknown format, missing device, pickled code without ``allow_pickle``,
            invalid TorchScript.
    """
    import torch

    device = parse_device(meta.get("device", "cpu"))
    check_device(device, name)
    form = meta.get("format")
    blob = bytes(payload[0]) if payload else b""
    arity = None
    if kind == MODEL and form == TORCHSCRIPT:
        runnable = torch.jit.load(io.BytesIO(blob), map_location=device)
        runnable.eval()
        arity = _declared_arity(runnable)
    elif kind == MODEL and form == PICKLE:
        runnable = _unpickle(name, blob, allow_pickle)
        if isinstance(runnable, torch.nn.Module):
            runnable = runnable.to(device).eval()
    elif kind == SCRIPT and form == SOURCE:
        runnable = _compile_script(name, blob.decode(), payload[1:], allow_pickle)
    elif kind == SCRIPT and form == PICKLE:
        fn = _unpickle(name, blob, allow_pickle)
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


def _unpickle(name: str, blob: bytes, allow_pickle: bool) -> Any:
    if not allow_pickle:
        raise ModelError(
            f"{name!r} is cloudpickled Python code, which this shard refuses: "
            "start the shards with --models all (or --allow-pickle) to run client code "
            "(only on networks you trust), or send TorchScript"
        )
    import cloudpickle

    return cloudpickle.loads(blob)


def _compile_script(name: str, source: str, fallback: list, allow_pickle: bool) -> dict:
    import torch

    try:
        unit = torch.jit.CompilationUnit(source)
    except Exception as exc:
        if fallback and allow_pickle:  # set_function sent the callable as well
            fn = _unpickle(name, bytes(fallback[0]), allow_pickle)
            return {fn.__name__: fn}
        hint = (
            " (set_function: start the shards with --models all to run it as plain Python)"
            if fallback
            else ""
        )
        raise ModelError(f"script {name!r} is not valid TorchScript{hint}: {exc}") from None
    names = [fn.name for fn in unit.get_functions()]
    return {n: getattr(unit, n) for n in names}


def _declared_arity(module: Any) -> int | None:
    try:
        arguments = module.forward.schema.arguments
    except Exception:
        return None
    if any(str(a.type).startswith("List") for a in arguments):
        return None
    return len(arguments) - 1  # self


def model_error(name: str, what: str, exc: BaseException, kind: str = MODEL) -> ModelError:
    """``exc`` (raised by a model, or while loading one) as a ModelError naming the model."""
    if isinstance(exc, ModelError):
        return exc
    detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return ModelError(f"{kind} {name!r} {what}: {detail}")
