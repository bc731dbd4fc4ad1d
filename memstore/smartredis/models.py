"""SmartRedis's model and script calls, mixed into the compat ``Client``.

SmartRedis checks a model's backend, device and batch settings before storing it; the four
model setters (bytes or file, one device or one copy per GPU) share those checks through
one helper, ``__store_model``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from memstore.smartredis.checks import checked
from memstore.smartredis.error import RedisRuntimeError
from memstore.smartredis.logger import LLInfo, LogContext
from memstore.smartredis.util import typecheck

__all__ = ["ModelCalls"]

_BACKENDS = ("TF", "TFLITE", "TORCH", "ONNX")  # SmartRedis's; memstore runs TORCH only

#: tensor names: one, or a list of them (SmartRedis takes both)
Names = list[str] | str


def _device(device: str) -> str:
    typecheck(device, "device", str)
    device = device.upper()
    if not device.startswith(("CPU", "GPU")):
        raise TypeError(f"device {device!r} must start with CPU or GPU")
    return device


def _backend(backend: str) -> str:
    typecheck(backend, "backend", str)
    if backend.upper() not in _BACKENDS:
        raise TypeError(f"backend {backend!r} is not one of {', '.join(_BACKENDS)}")
    return backend.upper()


def _batching(name: str, batch_size: int, min_batch_size: int, min_batch_timeout: int) -> bool:
    """Check SmartRedis's batch-setting rules; True when it would warn they are ignored."""
    for arg, value in (
        ("batch_size", batch_size),
        ("min_batch_size", min_batch_size),
        ("min_batch_timeout", min_batch_timeout),
    ):
        typecheck(value, arg, int)
        if value < 0:
            raise RedisRuntimeError(f"model {name!r}: {arg} must be >= 0, got {value}")
    if batch_size == 0 and (min_batch_size or min_batch_timeout):
        raise RedisRuntimeError(
            f"model {name!r}: min_batch_size and min_batch_timeout need batch_size > 0"
        )
    if min_batch_timeout and not min_batch_size:
        raise RedisRuntimeError(f"model {name!r}: min_batch_timeout needs min_batch_size > 0")
    return batch_size > 0 and min_batch_size > 0 and min_batch_timeout == 0


def _tensor_names(names: Names | None) -> list[str] | None:
    """SmartRedis takes one name as a list of one."""
    return [names] if isinstance(names, str) else names


class ModelCalls(LogContext):
    """Models and scripts as SmartRedis's client has them; mixed into ``Client`` ahead of
    :class:`memstore.Client`, whose methods ``super()`` reaches."""

    # -- models ----------------------------------------------------------------------------

    @checked
    def set_model(
        self,
        name: str,
        model: bytes,
        backend: str,
        device: str = "CPU",
        batch_size: int = 0,
        min_batch_size: int = 0,
        min_batch_timeout: int = 0,
        tag: str = "",
        inputs: Names | None = None,
        outputs: Names | None = None,
    ) -> None:
        batching = (batch_size, min_batch_size, min_batch_timeout)
        self.__store_model(name, backend, device, batching, tag, inputs, outputs, model=model)

    @checked
    def set_model_from_file(
        self,
        name: str,
        model_file: str,
        backend: str,
        device: str = "CPU",
        batch_size: int = 0,
        min_batch_size: int = 0,
        min_batch_timeout: int = 0,
        tag: str = "",
        inputs: Names | None = None,
        outputs: Names | None = None,
    ) -> None:
        batching = (batch_size, min_batch_size, min_batch_timeout)
        self.__store_model(name, backend, device, batching, tag, inputs, outputs, file=model_file)

    @checked
    def set_model_multigpu(
        self,
        name: str,
        model: bytes,
        backend: str,
        first_gpu: int,
        num_gpus: int,
        batch_size: int = 0,
        min_batch_size: int = 0,
        min_batch_timeout: int = 0,
        tag: str = "",
        inputs: Names | None = None,
        outputs: Names | None = None,
    ) -> None:
        batching = (batch_size, min_batch_size, min_batch_timeout)
        gpus = (first_gpu, num_gpus)
        self.__store_model(name, backend, gpus, batching, tag, inputs, outputs, model=model)

    @checked
    def set_model_from_file_multigpu(
        self,
        name: str,
        model_file: str,
        backend: str,
        first_gpu: int,
        num_gpus: int,
        batch_size: int = 0,
        min_batch_size: int = 0,
        min_batch_timeout: int = 0,
        tag: str = "",
        inputs: Names | None = None,
        outputs: Names | None = None,
    ) -> None:
        batching = (batch_size, min_batch_size, min_batch_timeout)
        gpus = (first_gpu, num_gpus)
        self.__store_model(name, backend, gpus, batching, tag, inputs, outputs, file=model_file)

    def __store_model(
        self,
        name: str,
        backend: str,
        placement: str | tuple[int, int],
        batching: tuple[int, int, int],
        tag: str,
        inputs: Names | None,
        outputs: Names | None,
        model: bytes | None = None,
        file: str | None = None,
    ) -> None:
        """What the four model setters share: SmartRedis's checks of the backend, batch
        settings, device and file (in its order), then memstore's ``set_model`` on one
        device (``placement`` names it) or ``set_model_multigpu`` on ``(first_gpu,
        num_gpus)``. ``model`` is the model's bytes, or ``file`` holds them."""
        backend = _backend(backend)
        if _batching(name, *batching):
            self.log_warning(
                LLInfo, f"model {name!r}: min_batch_size is ignored because min_batch_timeout is 0"
            )
        device = _device(placement) if isinstance(placement, str) else None
        if file is not None:
            if not os.path.isfile(file):
                raise FileNotFoundError(os.path.abspath(file))
            model = Path(file).read_bytes()
        size, least, timeout = batching
        options = {
            "batch_size": size,
            "min_batch_size": least,
            "min_batch_timeout": timeout,
            "tag": tag,
            "inputs": _tensor_names(inputs),
            "outputs": _tensor_names(outputs),
        }
        if device is not None:
            super().set_model(name, model, backend, device, **options)
        else:
            super().set_model_multigpu(name, model, backend, *placement, **options)

    @checked
    def set_model_chunk_size(self, chunk_size: int) -> None:
        """Accepted for SmartRedis code; memstore sends a model whole (up to --max-message)."""
        if chunk_size <= 0:
            raise RedisRuntimeError(f"chunk_size must be positive, got {chunk_size}")
        self._model_chunk_size = chunk_size

    @checked
    def get_model(self, name: str) -> bytes:
        return super().get_model(name)

    @checked
    def run_model(
        self, name: str, inputs: Names | None = None, outputs: Names | None = None
    ) -> None:
        super().run_model(name, inputs, outputs)

    @checked
    def run_model_multigpu(
        self,
        name: str,
        offset: int,
        first_gpu: int,
        num_gpus: int,
        inputs: Names | None = None,
        outputs: Names | None = None,
    ) -> None:
        super().run_model_multigpu(name, offset, first_gpu, num_gpus, inputs, outputs)

    @checked
    def delete_model(self, name: str) -> None:
        super().delete_model(name)

    @checked
    def delete_model_multigpu(self, name: str, first_gpu: int, num_gpus: int) -> None:
        super().delete_model_multigpu(name, first_gpu, num_gpus)

    @checked
    def model_exists(self, name: str) -> bool:
        return super().model_exists(name)

    @checked
    def poll_model(self, name: str, poll_frequency_ms: int, num_tries: int) -> bool:
        return super().poll_model(name, poll_frequency_ms, num_tries)

    # -- functions and scripts -------------------------------------------------------------

    @checked
    def set_function(self, name: str, function: Callable, device: str = "CPU") -> None:
        super().set_function(name, function, _device(device))

    @checked
    def set_function_multigpu(
        self, name: str, function: Callable, first_gpu: int, num_gpus: int
    ) -> None:
        super().set_function_multigpu(name, function, first_gpu, num_gpus)

    @checked
    def set_script(self, name: str, script: str, device: str = "CPU") -> None:
        super().set_script(name, script, _device(device))

    @checked
    def set_script_multigpu(self, name: str, script: str, first_gpu: int, num_gpus: int) -> None:
        super().set_script_multigpu(name, script, first_gpu, num_gpus)

    @checked
    def set_script_from_file(self, name: str, file: str, device: str = "CPU") -> None:
        super().set_script_from_file(name, file, _device(device))

    @checked
    def set_script_from_file_multigpu(
        self, name: str, file: str, first_gpu: int, num_gpus: int
    ) -> None:
        super().set_script_from_file_multigpu(name, file, first_gpu, num_gpus)

    @checked
    def get_script(self, name: str) -> str:
        return super().get_script(name)

    @checked
    def run_script(self, name: str, fn_name: str, inputs: Names, outputs: Names) -> None:
        super().run_script(name, fn_name, inputs, outputs)

    @checked
    def run_script_multigpu(
        self,
        name: str,
        fn_name: str,
        inputs: Names,
        outputs: Names,
        offset: int,
        first_gpu: int,
        num_gpus: int,
    ) -> None:
        super().run_script_multigpu(name, fn_name, inputs, outputs, offset, first_gpu, num_gpus)

    @checked
    def delete_script(self, name: str) -> None:
        super().delete_script(name)

    @checked
    def delete_script_multigpu(self, name: str, first_gpu: int, num_gpus: int) -> None:
        super().delete_script_multigpu(name, first_gpu, num_gpus)
