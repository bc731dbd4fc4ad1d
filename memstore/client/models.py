"""The model and script half of :class:`memstore.Client` (RedisAI's job, SmartRedis's names).

A model or script is sent once per shard and kept by every shard, so any shard can run it
next to its data; ``run_model`` goes to the shard that holds the first input, which fetches
other inputs itself and writes each output to the shard its key hashes to.
"""

from __future__ import annotations

import inspect
import io
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from memstore.address import normalize
from memstore.client.base import ClientBase
from memstore.client.blocking import blocking
from memstore.config import MODEL_LOAD_WAIT, MODEL_RUN_WAIT
from memstore.errors import ModelError
from memstore.futures import Chained, Future, Gathered
from memstore.kinds import MODEL, SCRIPT, TENSOR


def _serialize_model(model: Any, name: str) -> tuple[str, bytes]:
    """``(format, bytes)``: TorchScript bytes as they are, ScriptModules saved, other
    callables cloudpickled (the shard runs those only with --allow-pickle)."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        return "torchscript", bytes(model)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, (torch.jit.ScriptModule, torch.jit.ScriptFunction)):
        buffer = io.BytesIO()
        torch.jit.save(model, buffer)
        return "torchscript", buffer.getvalue()
    if callable(model):
        return "pickle", pickle_code(model)
    raise TypeError(
        f"model {name!r}: expected TorchScript bytes, a torch.jit.ScriptModule or "
        f"a callable, got {type(model).__name__}"
    )


def pickle_code(obj: Any) -> bytes:
    """cloudpickle ``obj`` with the user's own modules carried by value.

    cloudpickle refers to classes and functions of importable modules by name, which a shard
    (another process, maybe another node) cannot import; so the module that defines ``obj``
    (or its class) travels with it, unless it is part of torch, numpy or the stdlib.
    """
    import cloudpickle

    modules = set()
    for candidate in (obj, type(obj)):
        name = getattr(candidate, "__module__", None) or ""
        root = name.split(".")[0]
        if (
            name
            and name != "__main__"
            and root not in ("torch", "numpy", "builtins")
            and (root not in sys.stdlib_module_names and name in sys.modules)
        ):
            modules.add(sys.modules[name])
    for module in modules:
        cloudpickle.register_pickle_by_value(module)
    try:
        return cloudpickle.dumps(obj)
    finally:
        for module in modules:
            cloudpickle.unregister_pickle_by_value(module)


def _as_list(keys: str | list[str] | None, what: str, model: str) -> list[str]:
    if keys is None:
        raise ValueError(f"run of {model!r}: give the {what} tensor names")
    keys = [keys] if isinstance(keys, str) else list(keys)
    if not all(isinstance(k, str) and k for k in keys):
        raise TypeError(f"run of {model!r}: {what} must be tensor names (strings)")
    return keys


def _gpu_name(name: str, gpu: int) -> str:
    return f"{name}.GPU:{gpu}"  # SmartRedis's naming of per-GPU copies


def _gpus(first_gpu: int, num_gpus: int) -> range:
    if first_gpu < 0 or num_gpus < 1:
        raise ValueError(f"need first_gpu >= 0 and num_gpus >= 1, got {first_gpu}, {num_gpus}")
    return range(first_gpu, first_gpu + num_gpus)


def _per_gpu(
    name: str, first_gpu: int, num_gpus: int, call: Callable[[str, int], Future]
) -> Future:
    """``call(copy name, gpu)`` for every GPU copy of ``name``; done when all are."""
    return Gathered(
        [call(_gpu_name(name, g), g) for g in _gpus(first_gpu, num_gpus)], combine=lambda _: None
    )


def _gpu_copy(name: str, offset: int, first_gpu: int, num_gpus: int) -> str:
    """The copy a caller with ``offset`` runs: GPU ``first_gpu + offset % num_gpus``."""
    return _gpu_name(name, first_gpu + offset % len(_gpus(first_gpu, num_gpus)))


class ModelCalls(ClientBase):
    """Mixed into :class:`memstore.Client`; uses what :class:`ClientBase` declares."""

    # -- storing ---------------------------------------------------------------------------

    def _replicate(self, kind: str, key: str, meta: dict, payload: list) -> Future:
        """Send a model/script to every shard; done when all have loaded it.

        The key's home shard loads it last, so ``model_exists``/``poll_model`` (which ask
        the home shard) say yes only once every shard can run it."""
        home = self._shard(key)

        def send(shards) -> Future:
            return Gathered(
                [
                    self._requests.to_shard(
                        i,
                        "set_model",
                        {"key": key, "kind": kind, "model": meta},
                        payload,
                        what=f"set_{kind} {key!r} on {self.addresses[i]}",
                        wait=MODEL_LOAD_WAIT,  # loading a large model takes a while
                    )
                    for i in shards
                ],
                combine=lambda _: None,
            )

        others = [i for i in range(len(self.addresses)) if i != home]
        return Chained(send(others), lambda _: send([home]))

    def set_model_async(
        self,
        name: str,
        model: Any,
        backend: str = "TORCH",
        device: str = "CPU",
        batch_size: int = 0,
        min_batch_size: int = 0,
        min_batch_timeout: int = 0,
        tag: str = "",
        inputs: list[str] | None = None,
        outputs: list[str] | None = None,
    ) -> Future:
        """Store a model on every shard: TorchScript bytes, a ``torch.jit.ScriptModule``,
        or (shards with --allow-pickle) any ``nn.Module``/callable. With ``batch_size > 0``
        concurrent runs are batched (``min_batch_size`` rows, waiting at most
        ``min_batch_timeout`` ms)."""
        if str(backend).upper() != "TORCH":
            raise ModelError(
                f"model {name!r}: backend {backend} is not supported; memstore "
                "runs TORCH models only"
            )
        form, blob = _serialize_model(model, name)
        meta = {
            "backend": "TORCH",
            "device": device,
            "format": form,
            "tag": tag,
            "batch_size": batch_size,
            "min_batch_size": min_batch_size,
            "min_batch_timeout": min_batch_timeout,
            "inputs": list(inputs or []),
            "outputs": list(outputs or []),
        }
        return self._replicate(MODEL, self._key(name, MODEL, read=False), meta, [blob])

    set_model = blocking(set_model_async)

    def set_model_from_file_async(
        self,
        name: str,
        model_file: str,
        backend: str = "TORCH",
        device: str = "CPU",
        batch_size: int = 0,
        min_batch_size: int = 0,
        min_batch_timeout: int = 0,
        tag: str = "",
        inputs: list[str] | None = None,
        outputs: list[str] | None = None,
    ) -> Future:
        """Store the TorchScript model saved in ``model_file`` (see ``set_model``)."""
        return self.set_model_async(
            name,
            Path(model_file).read_bytes(),
            backend,
            device,
            batch_size,
            min_batch_size,
            min_batch_timeout,
            tag,
            inputs,
            outputs,
        )

    set_model_from_file = blocking(set_model_from_file_async)

    def set_script_async(self, name: str, script: str, device: str = "CPU") -> Future:
        """Store TorchScript source; run its functions with ``run_script``."""
        if not isinstance(script, str):
            raise TypeError(f"script {name!r}: expected TorchScript source as a str")
        meta = {"device": device, "format": "source"}
        return self._replicate(SCRIPT, self._key(name, MODEL, read=False), meta, [script.encode()])

    set_script = blocking(set_script_async)

    def set_script_from_file_async(self, name: str, file: str, device: str = "CPU") -> Future:
        """Store the TorchScript source in ``file``."""
        return self.set_script_async(name, Path(file).read_text(), device)

    set_script_from_file = blocking(set_script_from_file_async)

    def set_function_async(self, name: str, function: Any, device: str = "CPU") -> Future:
        """Store a Python function: compiled as TorchScript from its source, or (shards with
        --allow-pickle) run as plain Python when it is not valid TorchScript."""
        if not callable(function):
            raise TypeError(f"function {name!r}: expected a callable")
        try:
            source = textwrap.dedent(inspect.getsource(function))
        except (OSError, TypeError):
            source = ""  # no source (e.g. defined in a REPL): only the pickled form can run
        meta = {
            "device": device,
            "format": "source" if source else "pickle",
            "fn_name": function.__name__,
        }
        payload = [source.encode(), pickle_code(function)] if source else [pickle_code(function)]
        return self._replicate(SCRIPT, self._key(name, MODEL, read=False), meta, payload)

    set_function = blocking(set_function_async)

    # -- reading and deleting --------------------------------------------------------------

    def _get_code(self, kind: str, name: str) -> Future:
        key = self._key(name, MODEL, read=True)
        return self._requests.to_key(
            "get_model", key, {"kind": kind}, decode=lambda h, p: (h["model"], bytes(p[0]))
        )

    def get_model_async(self, name: str) -> Future:
        """The stored model's bytes (TorchScript, or cloudpickle for Python models)."""
        return self._chain_value(self._get_code(MODEL, name), lambda meta, blob: blob)

    get_model = blocking(get_model_async)

    def get_script_async(self, name: str) -> Future:
        """The stored script's source (bytes for a cloudpickled function)."""
        return self._chain_value(
            self._get_code(SCRIPT, name),
            lambda meta, blob: blob.decode() if meta.get("format") == "source" else blob,
        )

    get_script = blocking(get_script_async)

    def _chain_value(self, future: Future, pick) -> Future:
        return Chained(future, lambda pair: pick(*pair))

    def _delete_everywhere(self, kind: str, key: str) -> Future:
        return Gathered(
            [
                self._requests.to_shard(
                    i, "delete", {"key": key, "kind": kind}, what=f"delete_{kind} {key!r}"
                )
                for i in range(len(self.addresses))
            ],
            combine=lambda _: None,
        )

    def delete_model_async(self, name: str) -> Future:
        """Delete the model from every shard."""
        return self._delete_everywhere(MODEL, self._key(name, MODEL, read=True))

    delete_model = blocking(delete_model_async)

    def delete_script_async(self, name: str) -> Future:
        """Delete the script from every shard."""
        return self._delete_everywhere(SCRIPT, self._key(name, MODEL, read=True))

    delete_script = blocking(delete_script_async)

    def model_exists_async(self, name: str) -> Future:
        """Whether a model or a script ``name`` is stored (SmartRedis: either)."""
        key = self._key(name, MODEL, read=True)
        return Gathered(
            [self.keys.exists_async(key, MODEL), self.keys.exists_async(key, SCRIPT)], combine=any
        )

    model_exists = blocking(model_exists_async)

    def poll_model_async(self, name: str, poll_frequency_ms: int, num_tries: int) -> Future:
        """True as soon as a model or script ``name`` is stored (the shard waits; see
        ``poll_tensor``). A tensor stored under that name counts as no model."""
        key = self._key(name, MODEL, read=True)
        return Chained(
            self._poll(key, None, poll_frequency_ms, num_tries),
            lambda found: self.model_exists_async(name) if found else False,
        )

    poll_model = blocking(poll_model_async)

    # -- running ---------------------------------------------------------------------------

    def _run(self, kind: str, name: str, fn_name: str | None, inputs, outputs) -> Future:
        key = self._key(name, MODEL, read=True)
        ins = [self._key(k, TENSOR, read=True) for k in _as_list(inputs, "input", name)]
        outs = [self._key(k, TENSOR, read=False) for k in _as_list(outputs, "output", name)]
        home = self._shard(ins[0] if ins else key)  # run next to the first input
        fields = {"key": key, "kind": kind, "inputs": ins, "outputs": outs}
        if fn_name is not None:
            fields["fn_name"] = fn_name
        return self._requests.to_shard(
            home, "run", fields, what=f"run_{kind} {key!r}", wait=MODEL_RUN_WAIT
        )

    def run_model_async(
        self,
        name: str,
        inputs: str | list[str] | None = None,
        outputs: str | list[str] | None = None,
    ) -> Future:
        """Run model ``name`` on the stored ``inputs``; its results are stored as
        ``outputs``. Inputs may live on any shards."""
        return self._run(MODEL, name, None, inputs, outputs)

    run_model = blocking(run_model_async)

    def run_script_async(
        self, name: str, fn_name: str, inputs: str | list[str], outputs: str | list[str]
    ) -> Future:
        """Run function ``fn_name`` of script ``name`` on ``inputs``, storing ``outputs``."""
        if not isinstance(fn_name, str) or not fn_name:
            raise TypeError(f"run_script {name!r}: fn_name must be the function's name")
        return self._run(SCRIPT, name, fn_name, inputs, outputs)

    run_script = blocking(run_script_async)

    # -- several GPUs (SmartRedis's *_multigpu: one copy per GPU) ---------------------------

    def set_model_multigpu_async(
        self,
        name: str,
        model: Any,
        backend: str,
        first_gpu: int,
        num_gpus: int,
        batch_size: int = 0,
        min_batch_size: int = 0,
        min_batch_timeout: int = 0,
        tag: str = "",
        inputs: list[str] | None = None,
        outputs: list[str] | None = None,
    ) -> Future:
        """Store one copy of the model on each of GPUs ``first_gpu .. first_gpu+num_gpus-1``."""
        options = (batch_size, min_batch_size, min_batch_timeout, tag, inputs, outputs)
        return _per_gpu(
            name,
            first_gpu,
            num_gpus,
            lambda copy, g: self.set_model_async(copy, model, backend, f"GPU:{g}", *options),
        )

    set_model_multigpu = blocking(set_model_multigpu_async)

    def set_model_from_file_multigpu_async(
        self,
        name: str,
        model_file: str,
        backend: str,
        first_gpu: int,
        num_gpus: int,
        **options: Any,
    ) -> Future:
        """``set_model_multigpu`` from a TorchScript file."""
        return self.set_model_multigpu_async(
            name, Path(model_file).read_bytes(), backend, first_gpu, num_gpus, **options
        )

    set_model_from_file_multigpu = blocking(set_model_from_file_multigpu_async)

    def run_model_multigpu_async(
        self,
        name: str,
        offset: int,
        first_gpu: int,
        num_gpus: int,
        inputs: str | list[str] | None = None,
        outputs: str | list[str] | None = None,
    ) -> Future:
        """Run the copy on GPU ``first_gpu + offset % num_gpus`` (spread callers by offset)."""
        return self.run_model_async(_gpu_copy(name, offset, first_gpu, num_gpus), inputs, outputs)

    run_model_multigpu = blocking(run_model_multigpu_async)

    def delete_model_multigpu_async(self, name: str, first_gpu: int, num_gpus: int) -> Future:
        """Delete every per-GPU copy."""
        return _per_gpu(name, first_gpu, num_gpus, lambda copy, g: self.delete_model_async(copy))

    delete_model_multigpu = blocking(delete_model_multigpu_async)

    def set_script_multigpu_async(
        self, name: str, script: str, first_gpu: int, num_gpus: int
    ) -> Future:
        """Store one copy of the script per GPU."""
        return _per_gpu(
            name,
            first_gpu,
            num_gpus,
            lambda copy, g: self.set_script_async(copy, script, f"GPU:{g}"),
        )

    set_script_multigpu = blocking(set_script_multigpu_async)

    def set_script_from_file_multigpu_async(
        self, name: str, file: str, first_gpu: int, num_gpus: int
    ) -> Future:
        """``set_script_multigpu`` from a file."""
        return self.set_script_multigpu_async(name, Path(file).read_text(), first_gpu, num_gpus)

    set_script_from_file_multigpu = blocking(set_script_from_file_multigpu_async)

    def set_function_multigpu_async(
        self, name: str, function: Any, first_gpu: int, num_gpus: int
    ) -> Future:
        """Store one copy of the function per GPU."""
        return _per_gpu(
            name,
            first_gpu,
            num_gpus,
            lambda copy, g: self.set_function_async(copy, function, f"GPU:{g}"),
        )

    set_function_multigpu = blocking(set_function_multigpu_async)

    def run_script_multigpu_async(
        self,
        name: str,
        fn_name: str,
        inputs: str | list[str],
        outputs: str | list[str],
        offset: int,
        first_gpu: int,
        num_gpus: int,
    ) -> Future:
        """Run the script copy on GPU ``first_gpu + offset % num_gpus``."""
        copy = _gpu_copy(name, offset, first_gpu, num_gpus)
        return self.run_script_async(copy, fn_name, inputs, outputs)

    run_script_multigpu = blocking(run_script_multigpu_async)

    def delete_script_multigpu_async(self, name: str, first_gpu: int, num_gpus: int) -> Future:
        """Delete every per-GPU script copy."""
        return _per_gpu(name, first_gpu, num_gpus, lambda copy, g: self.delete_script_async(copy))

    delete_script_multigpu = blocking(delete_script_multigpu_async)

    # -- statistics ------------------------------------------------------------------------

    def get_ai_info_async(
        self, name: str, key: str | None = None, reset_stat: bool = False
    ) -> Future:
        """Run statistics of a model or script: calls, batches, errors, total and mean time,
        summed over shards, plus ``per_shard``. SmartRedis's ``get_ai_info(address, key)``
        form asks one shard."""
        if key is None:
            key, targets = self._key(name, MODEL, read=True), range(len(self.addresses))
        else:
            targets = [self.addresses.index(normalize(name))]

        return Gathered(
            [
                self._requests.to_shard(
                    i,
                    "ai_info",
                    {"key": key, "reset": reset_stat},
                    decode=lambda h, p: {
                        **h["stats"],
                        "address": h["address"],
                        "device": h["device"],
                    },
                    what=f"get_ai_info {key!r}",
                )
                for i in targets
            ],
            combine=_sum_stats,
        )

    get_ai_info = blocking(get_ai_info_async)


def _sum_stats(per_shard: list[dict]) -> dict:
    total = {
        name: sum(s.get(name, 0) for s in per_shard)
        for name in ("calls", "batches", "errors", "total_time")
    }
    total["mean_time"] = total["total_time"] / total["batches"] if total["batches"] else 0.0
    total["per_shard"] = per_shard
    return total
