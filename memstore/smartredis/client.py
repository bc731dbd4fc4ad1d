"""``Client``: memstore's :class:`memstore.Client` with SmartRedis's constructor forms,
argument checks, error classes and the few semantics where the two differ.

Adapts, does not fork: every call goes to the memstore method of the same name. What
differs is listed in README.md ("Coming from SmartSim/SmartRedis"):

* ``delete_tensor`` and ``delete_list`` of a missing key are silent (memstore raises).
* ``append_to_list`` only references a dataset put separately (memstore stores it too).
* ``get_ai_info(addresses, key)`` takes a list of shard addresses and returns one dict each.
* memstore errors come out as SmartRedis's classes (:mod:`memstore.smartredis.error`),
  which are also the memstore classes.
"""

from __future__ import annotations

import fnmatch
import functools
import inspect
import os
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from memstore import address as _addresses
from memstore.client import Client as _MemstoreClient
from memstore.dataset import DataSet
from memstore.errors import KeyNotFound, MemstoreError
from memstore.kinds import DATASET, LIST
from memstore.smartredis.configoptions import ConfigOptions
from memstore.smartredis.dataset import Dataset
from memstore.smartredis.error import (
    RedisConnectionError,
    RedisReplyError,
    RedisRuntimeError,
    translate,
)
from memstore.smartredis.logger import LLInfo, LogContext
from memstore.smartredis.util import Dtypes, typecheck

__all__ = ["Client"]

_BACKENDS = ("TF", "TFLITE", "TORCH", "ONNX")  # SmartRedis's; memstore runs TORCH only
_NAMES = (list, str)  # one tensor name or a list of them
_MAYBE_NAMES = (list, str, type(None))
# SmartRedis's Redis key of a dataset's metadata hash: [prefix.]{name}.meta
_DATASET_META_KEY = re.compile(r"^(?P<prefix>.*)\{(?P<name>[^{}]+)\}\.meta$")


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


def _as_sr(dataset: DataSet) -> Dataset:
    return dataset if isinstance(dataset, Dataset) else Dataset.from_pybind(dataset)


class Client(_MemstoreClient, LogContext):
    """A SmartRedis-compatible client of a memstore cluster.

    Either ``Client(config_options=None, logger_name="Default")`` (address from ``SSDB``,
    or ``SSDB_<suffix>`` of the options) or ``Client(cluster, address=None,
    logger_name="Default")``; ``cluster`` is accepted and ignored (memstore always finds
    every shard). Any memstore address variable works as well as ``SSDB``.
    """

    def __init__(self, *a: Any, **kw: Any):
        if (a and isinstance(a[0], bool)) or (not a and ("address" in kw or "cluster" in kw)):
            unknown = set(kw) - {"cluster", "address", "logger_name"}
            if unknown:
                raise TypeError(f"Client() got unexpected keyword arguments {sorted(unknown)}")
            address, logger_name = self.__address_construction(*a, **kw)
        elif not a or a[0] is None or isinstance(a[0], ConfigOptions):
            address, logger_name = self.__standard_construction(*a, **kw)
        else:
            raise TypeError(f"Client(): invalid type for argument 0: {type(a[0]).__name__}")
        typecheck(logger_name, "logger_name", str)
        LogContext.__init__(self, logger_name)
        self._model_chunk_size = 0
        try:
            _MemstoreClient.__init__(self, address, logger_name=logger_name)
        except MemstoreError as exc:
            raise RedisConnectionError(f"could not connect to memstore at {address}: {exc}")

    def __address_construction(
        self, cluster: bool, address: str | None = None, logger_name: str = "Default"
    ) -> tuple[list[str], str]:
        """The ``Client(cluster, address)`` form: ``address`` is also written to ``SSDB``."""
        if address:
            os.environ["SSDB"] = address  # SmartRedis does this, and scripts rely on it
        return self._Client__resolve(None), logger_name

    @staticmethod
    def __standard_construction(
        config_options: ConfigOptions | None = None, logger_name: str = "Default"
    ) -> tuple[list[str], str]:
        """The ``Client(config_options)`` form: the address from the options' ``SSDB``."""
        address = None
        if config_options is not None and config_options.is_configured("SSDB"):
            address = config_options.get_string_option("SSDB")
        return Client.__resolve(address), logger_name

    @staticmethod
    def __resolve(address: str | None) -> list[str]:
        try:
            return _addresses.resolve(address.replace(";", ",") if address else None)
        except MemstoreError as exc:
            raise RedisConnectionError(str(exc)) from None

    def __str__(self) -> str:
        return (
            f"memstore.smartredis.Client {self._log_context!r}: "
            f"{len(self.addresses)} shards at {', '.join(self.addresses)}"
        )

    # -- where SmartRedis's semantics differ from memstore's -------------------------------

    def put_tensor(self, name: str, data: np.ndarray) -> None:
        Dtypes.tensor_from_numpy(data)  # SmartRedis's tensor types only
        _MemstoreClient.put_tensor(self, name, data)

    def delete_tensor(self, name: str) -> None:
        """Delete tensor ``name``; nothing happens when there is none (SmartRedis)."""
        try:
            _MemstoreClient.delete_tensor(self, name)
        except KeyNotFound:
            pass

    def delete_list(self, list_name: str) -> None:
        """Delete list ``list_name``; nothing happens when there is none (SmartRedis)."""
        try:
            _MemstoreClient.delete_list(self, list_name)
        except KeyNotFound:
            pass

    def put_dataset(self, dataset: DataSet) -> None:
        _MemstoreClient.put_dataset(self, dataset)

    def get_dataset(self, name: str) -> Dataset:
        return _as_sr(_MemstoreClient.get_dataset(self, name))

    def get_datasets_from_list(self, list_name: str) -> list[Dataset]:
        return [_as_sr(d) for d in _MemstoreClient.get_datasets_from_list(self, list_name)]

    def get_dataset_list_range(
        self, list_name: str, start_index: int, end_index: int
    ) -> list[Dataset]:
        datasets = _MemstoreClient.get_dataset_list_range(self, list_name, start_index, end_index)
        return [_as_sr(d) for d in datasets]

    def append_to_list(self, list_name: str, dataset: DataSet) -> None:
        """Append a reference to ``dataset`` (put it with ``put_dataset``) to the list."""
        list_key = self._key(list_name, LIST, read=False)
        dataset_key = self._key(dataset.name, DATASET, read=False)
        self._sync(self._call, "list_push", list_key, {"items": [dataset_key]})

    def key_exists(self, key: str) -> bool:
        """Whether ``key`` holds anything; SmartRedis's dataset key ``[prefix.]{name}.meta``
        names the dataset ``[prefix.]name``."""
        match = _DATASET_META_KEY.match(key)
        if match:
            return self._sync(self._exists, match["prefix"] + match["name"], DATASET)
        return _MemstoreClient.key_exists(self, key)

    def set_data_source(self, source_id: str) -> None:
        try:
            _MemstoreClient.set_data_source(self, source_id)
        except ValueError as exc:
            raise RedisRuntimeError(str(exc)) from None

    # -- models and scripts ----------------------------------------------------------------

    def set_function(self, name: str, function: Callable, device: str = "CPU") -> None:
        _MemstoreClient.set_function(self, name, function, _device(device))

    def set_script(self, name: str, script: str, device: str = "CPU") -> None:
        _MemstoreClient.set_script(self, name, script, _device(device))

    def set_script_from_file(self, name: str, file: str, device: str = "CPU") -> None:
        _MemstoreClient.set_script_from_file(self, name, file, _device(device))

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
        inputs: str | list[str] | None = None,
        outputs: str | list[str] | None = None,
    ) -> None:
        batching = self.__model_checks(name, backend, batch_size, min_batch_size, min_batch_timeout)
        _MemstoreClient.set_model(
            self, name, model, _backend(backend), _device(device), *batching, tag, inputs, outputs
        )

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
        inputs: str | list[str] | None = None,
        outputs: str | list[str] | None = None,
    ) -> None:
        batching = self.__model_checks(name, backend, batch_size, min_batch_size, min_batch_timeout)
        _device(device)
        if not os.path.isfile(model_file):
            raise FileNotFoundError(os.path.abspath(model_file))
        _MemstoreClient.set_model_from_file(
            self, name, model_file, backend, device, *batching, tag, inputs, outputs
        )

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
        inputs: str | list[str] | None = None,
        outputs: str | list[str] | None = None,
    ) -> None:
        batching = self.__model_checks(name, backend, batch_size, min_batch_size, min_batch_timeout)
        _MemstoreClient.set_model_multigpu(
            self, name, model, backend, first_gpu, num_gpus, *batching, tag, inputs, outputs
        )

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
        inputs: str | list[str] | None = None,
        outputs: str | list[str] | None = None,
    ) -> None:
        batching = self.__model_checks(name, backend, batch_size, min_batch_size, min_batch_timeout)
        if not os.path.isfile(model_file):
            raise FileNotFoundError(os.path.abspath(model_file))
        _MemstoreClient.set_model_from_file_multigpu(
            self,
            name,
            model_file,
            backend,
            first_gpu,
            num_gpus,
            batch_size=batching[0],
            min_batch_size=batching[1],
            min_batch_timeout=batching[2],
            tag=tag,
            inputs=inputs,
            outputs=outputs,
        )

    def __model_checks(
        self, name: str, backend: str, batch_size: int, min_batch_size: int, timeout: int
    ) -> tuple[int, int, int]:
        """SmartRedis's checks of a model's backend and batch settings, in its order."""
        _backend(backend)
        if _batching(name, batch_size, min_batch_size, timeout):
            self.log_warning(
                LLInfo,
                f"model {name!r}: min_batch_size is ignored because min_batch_timeout is 0",
            )
        return batch_size, min_batch_size, timeout

    def set_model_chunk_size(self, chunk_size: int) -> None:
        """Accepted for SmartRedis code; memstore sends a model whole (up to --max-message)."""
        if chunk_size <= 0:
            raise RedisRuntimeError(f"chunk_size must be positive, got {chunk_size}")
        self._model_chunk_size = chunk_size

    def get_ai_info(
        self, address: list[str], key: str, reset_stat: bool = False
    ) -> list[dict[str, Any]]:
        """Run statistics of model or script ``key`` on each shard of ``address``."""
        infos = []
        for one in address:
            try:
                normalized = _addresses.normalize(one)
            except MemstoreError as exc:
                raise RedisRuntimeError(str(exc), "Client.get_ai_info") from None
            if self._aliases.get(normalized, normalized) not in self.addresses:
                raise RedisRuntimeError(
                    f"{one!r} is not a shard of this cluster ({', '.join(self.addresses)})",
                    "Client.get_ai_info",
                )
            try:
                info = _MemstoreClient.get_ai_info(self, normalized, key, reset_stat)
            except KeyNotFound as exc:
                raise RedisRuntimeError(str(exc), "Client.get_ai_info", key) from None
            infos.append(info)
        return infos

    # -- cluster administration ------------------------------------------------------------

    def get_db_cluster_info(self, addresses: list[str]) -> list[dict[str, Any]]:
        """Per shard: the cluster's state as memstore sees it (every cluster is sharded)."""
        infos = self.get_db_node_info(addresses)
        return [
            {
                "cluster_state": "ok",
                "cluster_size": len(self.addresses),
                "cluster_known_nodes": len(self.addresses),
                **info,
            }
            for info in infos
        ]

    def config_get(self, expression: str, address: str) -> dict[str, str]:
        """The shard's settings whose names match glob ``expression`` (``{}`` if none)."""
        info = self.get_db_node_info(_addresses.parse(address))[0]
        return {k: str(v) for k, v in info.items() if fnmatch.fnmatchcase(k, expression)}

    def config_set(self, config_param: str, value: str, address: str) -> None:
        """Always refused: a memstore shard's settings are fixed when it starts."""
        self.get_db_node_info(_addresses.parse(address))  # a bad address fails as such
        raise RedisReplyError(
            f"memstore shards take no runtime settings ({config_param!r} = {value!r}): "
            "set them when starting the shards (memstore start --help)",
            "Client.config_set",
        )

    def save(self, addresses: list[str]) -> None:
        """Snapshot the shards at ``addresses`` into their ``--save-dir`` (Redis's SAVE);
        ``RedisReplyError`` where a shard was started without one."""
        super().save(addresses=addresses)


# SmartRedis's argument types, checked before any call (TypeError, as SmartRedis raises).
_CHECKS: dict[str, dict[str, Any]] = {
    "put_tensor": {"name": str, "data": np.ndarray},
    "get_tensor": {"name": str},
    "delete_tensor": {"name": str},
    "copy_tensor": {"src_name": str, "dest_name": str},
    "rename_tensor": {"old_name": str, "new_name": str},
    "put_dataset": {"dataset": DataSet},
    "get_dataset": {"name": str},
    "delete_dataset": {"name": str},
    "copy_dataset": {"src_name": str, "dest_name": str},
    "rename_dataset": {"old_name": str, "new_name": str},
    "set_function": {"name": str, "device": str},
    "set_function_multigpu": {"name": str, "first_gpu": int, "num_gpus": int},
    "set_script": {"name": str, "script": str, "device": str},
    "set_script_multigpu": {"name": str, "script": str, "first_gpu": int, "num_gpus": int},
    "set_script_from_file": {"name": str, "file": str, "device": str},
    "set_script_from_file_multigpu": {
        "name": str,
        "file": str,
        "first_gpu": int,
        "num_gpus": int,
    },
    "get_script": {"name": str},
    "run_script": {"name": str, "fn_name": str, "inputs": _NAMES, "outputs": _NAMES},
    "run_script_multigpu": {
        "name": str,
        "fn_name": str,
        "inputs": _NAMES,
        "outputs": _NAMES,
        "offset": int,
        "first_gpu": int,
        "num_gpus": int,
    },
    "delete_script": {"name": str},
    "delete_script_multigpu": {"name": str, "first_gpu": int, "num_gpus": int},
    "get_model": {"name": str},
    "set_model": {"name": str, "backend": str, "device": str, "tag": str},
    "set_model_multigpu": {
        "name": str,
        "backend": str,
        "first_gpu": int,
        "num_gpus": int,
        "tag": str,
    },
    "set_model_from_file": {
        "name": str,
        "model_file": str,
        "backend": str,
        "device": str,
        "tag": str,
    },
    "set_model_from_file_multigpu": {
        "name": str,
        "model_file": str,
        "backend": str,
        "first_gpu": int,
        "num_gpus": int,
        "tag": str,
    },
    "run_model": {"name": str, "inputs": _MAYBE_NAMES, "outputs": _MAYBE_NAMES},
    "run_model_multigpu": {
        "name": str,
        "offset": int,
        "first_gpu": int,
        "num_gpus": int,
        "inputs": _MAYBE_NAMES,
        "outputs": _MAYBE_NAMES,
    },
    "delete_model": {"name": str},
    "delete_model_multigpu": {"name": str, "first_gpu": int, "num_gpus": int},
    "tensor_exists": {"name": str},
    "dataset_exists": {"name": str},
    "model_exists": {"name": str},
    "key_exists": {"key": str},
    "poll_key": {"key": str, "poll_frequency_ms": int, "num_tries": int},
    "poll_tensor": {"name": str, "poll_frequency_ms": int, "num_tries": int},
    "poll_dataset": {"name": str, "poll_frequency_ms": int, "num_tries": int},
    "poll_model": {"name": str, "poll_frequency_ms": int, "num_tries": int},
    "set_data_source": {"source_id": str},
    "use_model_ensemble_prefix": {"use_prefix": bool},
    "use_list_ensemble_prefix": {"use_prefix": bool},
    "use_tensor_ensemble_prefix": {"use_prefix": bool},
    "use_dataset_ensemble_prefix": {"use_prefix": bool},
    "get_db_node_info": {"addresses": list},
    "get_db_cluster_info": {"addresses": list},
    "get_ai_info": {"address": list, "key": str, "reset_stat": bool},
    "flush_db": {"addresses": list},
    "config_get": {"expression": str, "address": str},
    "config_set": {"config_param": str, "value": str, "address": str},
    "save": {"addresses": list},
    "set_model_chunk_size": {"chunk_size": int},
    "append_to_list": {"list_name": str, "dataset": DataSet},
    "delete_list": {"list_name": str},
    "copy_list": {"src_name": str, "dest_name": str},
    "rename_list": {"src_name": str, "dest_name": str},
    "get_list_length": {"list_name": str},
    "poll_list_length": {
        "name": str,
        "list_length": int,
        "poll_frequency_ms": int,
        "num_tries": int,
    },
    "poll_list_length_gte": {
        "name": str,
        "list_length": int,
        "poll_frequency_ms": int,
        "num_tries": int,
    },
    "poll_list_length_lte": {
        "name": str,
        "list_length": int,
        "poll_frequency_ms": int,
        "num_tries": int,
    },
    "get_datasets_from_list": {"list_name": str},
    "get_dataset_list_range": {"list_name": str, "start_index": int, "end_index": int},
}


def _adapt(method: Callable, checks: dict[str, Any]) -> Callable:
    """``method`` with SmartRedis's argument checks before it and its errors after it."""
    signature = inspect.signature(method)
    missing = set(checks) - set(signature.parameters)
    assert not missing, f"{method.__name__}: no parameters {missing}"  # a typo in _CHECKS
    label = f"Client.{method.__name__}"

    @functools.wraps(method)
    def adapted(self: Client, *args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(self, *args, **kwargs)
        for name, types in checks.items():
            if name in bound.arguments:
                typecheck(bound.arguments[name], name, types)
        try:
            return method(self, *args, **kwargs)
        except MemstoreError as exc:
            raise translate(exc, label) from exc

    return adapted


for _name, _checks in _CHECKS.items():
    setattr(Client, _name, _adapt(getattr(Client, _name), _checks))
