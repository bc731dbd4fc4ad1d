"""The dataset and aggregation-list half of :class:`memstore.Client` (SmartRedis's names).

A dataset is stored whole on the shard of its name, in one message. A list holds dataset
keys on the shard of the list's name; ``append_to_list`` stores the dataset before listing
it, so a reader never finds a listed dataset missing.
"""

from __future__ import annotations

from typing import Any

from memstore import shm_client
from memstore.dataset import DataSet
from memstore.errors import KeyNotFound
from memstore.kinds import DATASET, LIST
from memstore.transport import Future, Gathered, Resolved, chain

_UNKNOWN = shm_client.UNASKED


class DatasetCalls:
    """Mixed into :class:`memstore.Client`; uses its routing and futures."""

    # -- datasets --------------------------------------------------------------------------

    def put_dataset_async(self, dataset: DataSet) -> Future:
        """Store ``dataset`` whole on one shard, in one message."""
        if not isinstance(dataset, DataSet):
            raise TypeError(f"put_dataset takes a memstore.DataSet, got {type(dataset).__name__}")
        return self._put_dataset(self._key(dataset.name, DATASET, read=False), dataset)

    def put_dataset(self, dataset: DataSet) -> Any:
        """Store ``dataset`` whole on one shard, in one message.

        Blocking form of :meth:`put_dataset_async`."""
        return self._sync(self.put_dataset_async, dataset)

    def _put_dataset(self, key: str, dataset: DataSet) -> Future:
        """Large tensors go as shared-memory files on the same node, as in ``put_tensor``."""
        layout, buffers = dataset.to_wire()
        fields = {"key": key, "dataset": layout}
        return self._put_files(self._shard(key), "put_dataset", fields, buffers, None,
                               ("put_dataset", key))  # fmt: skip

    def get_dataset_async(self, name: str) -> Future:
        """The dataset ``name``."""
        return self._get_dataset(self._key(name, DATASET, read=True), name)

    def get_dataset(self, name: str) -> Any:
        """The dataset ``name``.

        Blocking form of :meth:`get_dataset_async`."""
        return self._sync(self.get_dataset_async, name)

    def _get_dataset(self, key: str, name: str, link: Any = _UNKNOWN) -> Future:
        """Tensors the shard holds as files are mapped copy-on-write, as in ``get_tensor``;
        one overwritten before it was mapped makes it ask again over the socket."""
        shard = self._shard(key)
        if link is _UNKNOWN:
            link = self._links[shard]

        def dataset(header, payload):
            return DataSet.from_wire(name, header["dataset"], payload)

        fields = {"shm": True} if link is not None else {}
        decode = self._shm_decoder(shard, link, dataset)
        reply = self._call("get_dataset", key, fields, decode=decode)
        return self._unless_stale(reply, link, lambda: self._get_dataset(key, name, None))

    def delete_dataset_async(self, name: str) -> Future:
        """Delete dataset ``name``; ``KeyNotFound`` if it does not exist."""
        return self._call("delete", self._key(name, DATASET, read=True), {"kind": DATASET})

    def delete_dataset(self, name: str) -> Any:
        """Delete dataset ``name``; ``KeyNotFound`` if it does not exist.

        Blocking form of :meth:`delete_dataset_async`."""
        return self._sync(self.delete_dataset_async, name)

    def copy_dataset_async(self, src_name: str, dest_name: str) -> Future:
        """Copy dataset ``src_name`` to ``dest_name``."""
        return self._copy(
            DATASET,
            self._key(src_name, DATASET, read=True),
            self._key(dest_name, DATASET, read=False),
        )

    def copy_dataset(self, src_name: str, dest_name: str) -> Any:
        """Copy dataset ``src_name`` to ``dest_name``.

        Blocking form of :meth:`copy_dataset_async`."""
        return self._sync(self.copy_dataset_async, src_name, dest_name)

    def rename_dataset_async(self, old_name: str, new_name: str) -> Future:
        """Rename dataset ``old_name`` to ``new_name``."""
        return self._rename(
            DATASET,
            self._key(old_name, DATASET, read=True),
            self._key(new_name, DATASET, read=False),
        )

    def rename_dataset(self, old_name: str, new_name: str) -> Any:
        """Rename dataset ``old_name`` to ``new_name``.

        Blocking form of :meth:`rename_dataset_async`."""
        return self._sync(self.rename_dataset_async, old_name, new_name)

    # -- aggregation lists -----------------------------------------------------------------

    def append_to_list_async(self, list_name: str, dataset: DataSet) -> Future:
        """Store ``dataset``, then append it to list ``list_name``; the list's new length.

        The dataset is stored before it is listed, so a reader never sees a listed dataset
        that is not there yet."""
        list_key = self._key(list_name, LIST, read=False)
        dataset_key = self._key(dataset.name, DATASET, read=False)
        return chain(
            self.put_dataset_async(dataset),
            lambda _: self._call(
                "list_push", list_key, {"items": [dataset_key]}, decode=lambda h, p: h["length"]
            ),
        )

    def append_to_list(self, list_name: str, dataset: DataSet) -> Any:
        """Store ``dataset``, then append it to list ``list_name``; the list's new length.

        Blocking form of :meth:`append_to_list_async`."""
        return self._sync(self.append_to_list_async, list_name, dataset)

    def delete_list_async(self, list_name: str) -> Future:
        """Delete list ``list_name`` (not the datasets in it)."""
        return self._call("delete", self._key(list_name, LIST, read=True), {"kind": LIST})

    def delete_list(self, list_name: str) -> Any:
        """Delete list ``list_name`` (not the datasets in it).

        Blocking form of :meth:`delete_list_async`."""
        return self._sync(self.delete_list_async, list_name)

    def copy_list_async(self, src_name: str, dest_name: str) -> Future:
        """Copy list ``src_name`` to ``dest_name`` (the dataset references, not the datasets);
        a missing or empty source is ``KeyNotFound``, as in SmartRedis."""
        src = self._key(src_name, LIST, read=True)
        dst = self._key(dest_name, LIST, read=False)

        def store_copy(items: list) -> Future:
            if not items:  # a missing list reads as empty (LRANGE), but is nothing to copy
                raise KeyNotFound(f"list {src!r} not found (or empty): nothing to copy")
            return self._call("list_set", dst, {"items": items})

        return chain(self._list_range(src, 0, -1), store_copy)

    def copy_list(self, src_name: str, dest_name: str) -> Any:
        """Copy list ``src_name`` to ``dest_name`` (the dataset references, not the datasets);

        Blocking form of :meth:`copy_list_async`."""
        return self._sync(self.copy_list_async, src_name, dest_name)

    def rename_list_async(self, src_name: str, dest_name: str) -> Future:
        """Rename list ``src_name`` to ``dest_name`` (nothing to do if the names are equal)."""
        if src_name == dest_name:  # copy-then-delete onto itself would delete the list
            return Resolved(None)
        src = self._key(src_name, LIST, read=True)
        return chain(
            self.copy_list_async(src_name, dest_name),
            lambda _: self._call("delete", src, {"kind": LIST}),
        )

    def rename_list(self, src_name: str, dest_name: str) -> Any:
        """Rename list ``src_name`` to ``dest_name`` (nothing to do if the names are equal).

        Blocking form of :meth:`rename_list_async`."""
        return self._sync(self.rename_list_async, src_name, dest_name)

    def get_list_length_async(self, list_name: str) -> Future:
        """Number of datasets in list ``list_name`` (0 if it does not exist)."""
        return self._call(
            "list_len", self._key(list_name, LIST, read=True), decode=lambda h, p: h["length"]
        )

    def get_list_length(self, list_name: str) -> Any:
        """Number of datasets in list ``list_name`` (0 if it does not exist).

        Blocking form of :meth:`get_list_length_async`."""
        return self._sync(self.get_list_length_async, list_name)

    def get_datasets_from_list_async(self, list_name: str) -> Future:
        """Every dataset in list ``list_name``, in order (fetched in parallel)."""
        return self.get_dataset_list_range_async(list_name, 0, -1)

    def get_datasets_from_list(self, list_name: str) -> Any:
        """Every dataset in list ``list_name``, in order (fetched in parallel).

        Blocking form of :meth:`get_datasets_from_list_async`."""
        return self._sync(self.get_datasets_from_list_async, list_name)

    def get_dataset_list_range_async(
        self, list_name: str, start_index: int, end_index: int
    ) -> Future:
        """Datasets ``start_index..end_index`` of the list, inclusive; negative indices
        count from the end (Redis LRANGE)."""
        key = self._key(list_name, LIST, read=True)
        return chain(
            self._list_range(key, start_index, end_index),
            lambda keys: Gathered(
                [self._get_dataset(k, _unprefixed(k, self._get_prefix)) for k in keys]
            ),
        )

    def get_dataset_list_range(self, list_name: str, start_index: int, end_index: int) -> Any:
        """Datasets ``start_index..end_index`` of the list, inclusive; negative indices

        Blocking form of :meth:`get_dataset_list_range_async`."""
        return self._sync(self.get_dataset_list_range_async, list_name, start_index, end_index)

    def _list_range(self, key: str, start: int, end: int) -> Future:
        if not isinstance(start, int) or not isinstance(end, int):
            raise TypeError(f"list {key!r}: start and end indices must be ints")
        return self._call(
            "list_range", key, {"start": start, "end": end}, decode=lambda h, p: h["items"]
        )


def _unprefixed(key: str, prefix: str) -> str:
    return key[len(prefix) + 1 :] if prefix and key.startswith(prefix + ".") else key
