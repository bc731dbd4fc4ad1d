"""``Client``: memstore's :class:`memstore.Client` with SmartRedis's constructor forms,
argument checks, error classes and the few semantics where the two differ.

Adapts, does not fork: every call goes to the memstore method of the same name. Each
SmartRedis method is written out below with SmartRedis's signature and marked
:func:`checked`, which derives its argument checks from that signature. What differs is
listed in README.md ("Coming from SmartSim/SmartRedis"):

* ``delete_tensor`` and ``delete_list`` of a missing key are silent (memstore raises).
* ``append_to_list`` only references a dataset put separately (memstore stores it too).
* ``get_ai_info(addresses, key)`` takes a list of shard addresses and returns one dict each.
* memstore errors come out as SmartRedis's classes (:mod:`memstore.smartredis.error`),
  which are also the memstore classes.
"""

from __future__ import annotations

import fnmatch
import os
import re
from typing import Any

import numpy as np

from memstore.address import normalize, parse, resolve
from memstore.client import Client as MemstoreClient
from memstore.dataset import DataSet
from memstore.errors import KeyNotFound, MemstoreError
from memstore.kinds import DATASET, LIST
from memstore.smartredis.checks import checked
from memstore.smartredis.configoptions import ConfigOptions
from memstore.smartredis.dataset import Dataset
from memstore.smartredis.error import RedisConnectionError, RedisReplyError, RedisRuntimeError
from memstore.smartredis.logger import LogContext
from memstore.smartredis.models import ModelCalls
from memstore.smartredis.util import Dtypes, typecheck

__all__ = ["Client"]

#: SmartRedis's Redis key of a dataset's metadata hash: ``[prefix.]{name}.meta``
_DATASET_META_KEY = re.compile(r"^(?P<prefix>.*)\{(?P<name>[^{}]+)\}\.meta$")


def _as_sr(dataset: DataSet) -> Dataset:
    return dataset if isinstance(dataset, Dataset) else Dataset.from_pybind(dataset)


class Client(ModelCalls, MemstoreClient, LogContext):
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
            MemstoreClient.__init__(self, address, logger_name=logger_name)
        except MemstoreError as exc:
            raise RedisConnectionError(f"could not connect to memstore at {address}: {exc}")

    # SmartRedis's two constructor forms, as SmartRedis names them (its suite patches them)

    def __address_construction(
        self, cluster: bool, address: str | None = None, logger_name: str = "Default"
    ) -> tuple[list[str], str]:
        """The ``Client(cluster, address)`` form: ``address`` is also written to ``SSDB``."""
        if address:
            os.environ["SSDB"] = address  # SmartRedis does this, and scripts rely on it
        return Client.__resolve(None), logger_name

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
        """The shard addresses of ``address`` (SmartRedis separates them with ``;`` too)."""
        try:
            return resolve(address.replace(";", ",") if address else None)
        except MemstoreError as exc:
            raise RedisConnectionError(str(exc)) from None

    def __str__(self) -> str:
        return (
            f"memstore.smartredis.Client {self._log_context!r}: "
            f"{len(self.addresses)} shards at {', '.join(self.addresses)}"
        )

    # -- tensors ---------------------------------------------------------------------------

    @checked
    def put_tensor(self, name: str, data: np.ndarray) -> None:
        Dtypes.tensor_from_numpy(data)  # SmartRedis's tensor types only
        super().put_tensor(name, data)

    @checked
    def get_tensor(self, name: str, as_torch: bool = False) -> Any:
        return super().get_tensor(name, as_torch)

    @checked
    def delete_tensor(self, name: str) -> None:
        """Delete tensor ``name``; nothing happens when there is none (SmartRedis)."""
        try:
            super().delete_tensor(name)
        except KeyNotFound:
            pass

    @checked
    def copy_tensor(self, src_name: str, dest_name: str) -> None:
        super().copy_tensor(src_name, dest_name)

    @checked
    def rename_tensor(self, old_name: str, new_name: str) -> None:
        super().rename_tensor(old_name, new_name)

    @checked
    def tensor_exists(self, name: str) -> bool:
        return super().tensor_exists(name)

    @checked
    def poll_tensor(self, name: str, poll_frequency_ms: int, num_tries: int) -> bool:
        return super().poll_tensor(name, poll_frequency_ms, num_tries)

    # -- datasets --------------------------------------------------------------------------

    @checked
    def put_dataset(self, dataset: DataSet) -> None:
        super().put_dataset(dataset)

    @checked
    def get_dataset(self, name: str) -> Dataset:
        return _as_sr(super().get_dataset(name))

    @checked
    def delete_dataset(self, name: str) -> None:
        super().delete_dataset(name)

    @checked
    def copy_dataset(self, src_name: str, dest_name: str) -> None:
        super().copy_dataset(src_name, dest_name)

    @checked
    def rename_dataset(self, old_name: str, new_name: str) -> None:
        super().rename_dataset(old_name, new_name)

    @checked
    def dataset_exists(self, name: str) -> bool:
        return super().dataset_exists(name)

    @checked
    def poll_dataset(self, name: str, poll_frequency_ms: int, num_tries: int) -> bool:
        return super().poll_dataset(name, poll_frequency_ms, num_tries)

    # -- lists of datasets -----------------------------------------------------------------

    @checked
    def append_to_list(self, list_name: str, dataset: DataSet) -> None:
        """Append a reference to ``dataset`` (put it with ``put_dataset``) to the list."""
        list_key = self._key(list_name, LIST, read=False)
        dataset_key = self._key(dataset.name, DATASET, read=False)
        self.keys.list_push(list_key, [dataset_key])

    @checked
    def delete_list(self, list_name: str) -> None:
        """Delete list ``list_name``; nothing happens when there is none (SmartRedis)."""
        try:
            super().delete_list(list_name)
        except KeyNotFound:
            pass

    @checked
    def copy_list(self, src_name: str, dest_name: str) -> None:
        super().copy_list(src_name, dest_name)

    @checked
    def rename_list(self, src_name: str, dest_name: str) -> None:
        super().rename_list(src_name, dest_name)

    @checked
    def get_list_length(self, list_name: str) -> int:
        return super().get_list_length(list_name)

    @checked
    def poll_list_length(
        self, name: str, list_length: int, poll_frequency_ms: int, num_tries: int
    ) -> bool:
        return super().poll_list_length(name, list_length, poll_frequency_ms, num_tries)

    @checked
    def poll_list_length_gte(
        self, name: str, list_length: int, poll_frequency_ms: int, num_tries: int
    ) -> bool:
        return super().poll_list_length_gte(name, list_length, poll_frequency_ms, num_tries)

    @checked
    def poll_list_length_lte(
        self, name: str, list_length: int, poll_frequency_ms: int, num_tries: int
    ) -> bool:
        return super().poll_list_length_lte(name, list_length, poll_frequency_ms, num_tries)

    @checked
    def get_datasets_from_list(self, list_name: str) -> list[Dataset]:
        return [_as_sr(d) for d in super().get_datasets_from_list(list_name)]

    @checked
    def get_dataset_list_range(
        self, list_name: str, start_index: int, end_index: int
    ) -> list[Dataset]:
        datasets = super().get_dataset_list_range(list_name, start_index, end_index)
        return [_as_sr(d) for d in datasets]

    # -- keys and prefixes -----------------------------------------------------------------

    @checked
    def key_exists(self, key: str) -> bool:
        """Whether ``key`` holds anything; SmartRedis's dataset key ``[prefix.]{name}.meta``
        names the dataset ``[prefix.]name``."""
        match = _DATASET_META_KEY.match(key)
        if match:
            return self.keys.exists(match["prefix"] + match["name"], DATASET)
        return super().key_exists(key)

    @checked
    def poll_key(self, key: str, poll_frequency_ms: int, num_tries: int) -> bool:
        return super().poll_key(key, poll_frequency_ms, num_tries)

    @checked
    def set_data_source(self, source_id: str) -> None:
        try:
            super().set_data_source(source_id)
        except ValueError as exc:
            raise RedisRuntimeError(str(exc)) from None

    @checked
    def use_tensor_ensemble_prefix(self, use_prefix: bool) -> None:
        super().use_tensor_ensemble_prefix(use_prefix)

    @checked
    def use_dataset_ensemble_prefix(self, use_prefix: bool) -> None:
        super().use_dataset_ensemble_prefix(use_prefix)

    @checked
    def use_list_ensemble_prefix(self, use_prefix: bool) -> None:
        super().use_list_ensemble_prefix(use_prefix)

    @checked
    def use_model_ensemble_prefix(self, use_prefix: bool) -> None:
        super().use_model_ensemble_prefix(use_prefix)

    # -- cluster administration ------------------------------------------------------------

    @checked
    def get_db_node_info(self, addresses: list[str] | None = None) -> list[dict[str, Any]]:
        return super().get_db_node_info(addresses)

    @checked
    def get_ai_info(
        self, address: list[str], key: str, reset_stat: bool = False
    ) -> list[dict[str, Any]]:
        """Run statistics of model or script ``key`` on each shard of ``address``."""
        infos = []
        for one in address:
            try:
                normalized = normalize(one)
            except MemstoreError as exc:
                raise RedisRuntimeError(str(exc), "Client.get_ai_info") from None
            if self._aliases.get(normalized, normalized) not in self.addresses:
                raise RedisRuntimeError(
                    f"{one!r} is not a shard of this cluster ({', '.join(self.addresses)})",
                    "Client.get_ai_info",
                )
            try:
                info = super().get_ai_info(normalized, key, reset_stat)
            except KeyNotFound as exc:
                raise RedisRuntimeError(str(exc), "Client.get_ai_info", key) from None
            infos.append(info)
        return infos

    @checked
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

    @checked
    def flush_db(self, addresses: list[str] | None = None) -> None:
        super().flush_db(addresses)

    @checked
    def config_get(self, expression: str, address: str) -> dict[str, str]:
        """The shard's settings whose names match glob ``expression`` (``{}`` if none)."""
        info = self.get_db_node_info(parse(address))[0]
        return {k: str(v) for k, v in info.items() if fnmatch.fnmatchcase(k, expression)}

    @checked
    def config_set(self, config_param: str, value: str, address: str) -> None:
        """Always refused: a memstore shard's settings are fixed when it starts."""
        self.get_db_node_info(parse(address))  # a bad address fails as such
        raise RedisReplyError(
            f"memstore shards take no runtime settings ({config_param!r} = {value!r}): "
            "set them when starting the shards (memstore start --help)",
            "Client.config_set",
        )

    @checked
    def save(self, addresses: list[str]) -> None:
        """Snapshot the shards at ``addresses`` into their ``--save-dir`` (Redis's SAVE);
        ``RedisReplyError`` where a shard was started without one."""
        super().save(addresses=addresses)
