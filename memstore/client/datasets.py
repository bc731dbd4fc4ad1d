"""The dataset and aggregation-list half of :class:`memstore.Client` (SmartRedis's names).

A dataset is stored whole on the shard of its name, in one message. A list holds dataset
keys on the shard of the list's name; ``append_to_list`` stores the dataset before listing
it, so a reader never finds a listed dataset missing.
"""

from __future__ import annotations

from memstore.client.base import ClientBase
from memstore.client.blocking import blocking
from memstore.dataset import DataSet
from memstore.errors import KeyNotFound
from memstore.futures import DoneFuture, Future, Gathered, chain
from memstore.kinds import DATASET, LIST


class DatasetCalls(ClientBase):
    """Mixed into :class:`memstore.Client`; uses what :class:`ClientBase` declares."""

    # -- datasets --------------------------------------------------------------------------

    def put_dataset_async(self, dataset: DataSet) -> Future:
        """Store ``dataset`` whole on one shard, in one message."""
        if not isinstance(dataset, DataSet):
            raise TypeError(f"put_dataset takes a memstore.DataSet, got {type(dataset).__name__}")
        return self.keys.put_dataset_async(self._key(dataset.name, DATASET, read=False), dataset)

    def get_dataset_async(self, name: str) -> Future:
        """The dataset ``name``."""
        return self.keys.get_dataset_async(self._key(name, DATASET, read=True), name)

    def delete_dataset_async(self, name: str) -> Future:
        """Delete dataset ``name``; ``KeyNotFound`` if it does not exist."""
        return self.keys.delete_async(self._key(name, DATASET, read=True), DATASET)

    def copy_dataset_async(self, src_name: str, dest_name: str) -> Future:
        """Copy dataset ``src_name`` to ``dest_name``."""
        src = self._key(src_name, DATASET, read=True)
        return self.keys.copy_async(src, self._key(dest_name, DATASET, read=False), DATASET)

    def rename_dataset_async(self, old_name: str, new_name: str) -> Future:
        """Rename dataset ``old_name`` to ``new_name``."""
        src = self._key(old_name, DATASET, read=True)
        return self.keys.rename_async(src, self._key(new_name, DATASET, read=False), DATASET)

    put_dataset = blocking(put_dataset_async)
    get_dataset = blocking(get_dataset_async)
    delete_dataset = blocking(delete_dataset_async)
    copy_dataset = blocking(copy_dataset_async)
    rename_dataset = blocking(rename_dataset_async)

    # -- aggregation lists -----------------------------------------------------------------

    def append_to_list_async(self, list_name: str, dataset: DataSet) -> Future:
        """Store ``dataset``, then append it to list ``list_name``; the list's new length.

        The dataset is stored before it is listed, so a reader never sees a listed dataset
        that is not there yet."""
        list_key = self._key(list_name, LIST, read=False)
        dataset_key = self._key(dataset.name, DATASET, read=False)
        return chain(
            self.put_dataset_async(dataset),
            lambda _: self.keys.list_push_async(list_key, [dataset_key]),
        )

    def delete_list_async(self, list_name: str) -> Future:
        """Delete list ``list_name`` (not the datasets in it)."""
        return self.keys.delete_async(self._key(list_name, LIST, read=True), LIST)

    def copy_list_async(self, src_name: str, dest_name: str) -> Future:
        """Copy list ``src_name`` to ``dest_name`` (the dataset references, not the datasets);
        a missing or empty source is ``KeyNotFound``, as in SmartRedis."""
        src = self._key(src_name, LIST, read=True)
        dst = self._key(dest_name, LIST, read=False)

        def store_copy(items: list) -> Future:
            if not items:  # a missing list reads as empty (LRANGE), but is nothing to copy
                raise KeyNotFound(f"list {src!r} not found (or empty): nothing to copy")
            return self._requests.to_key("list_set", dst, {"items": items})

        return chain(self.keys.list_range_async(src, 0, -1), store_copy)

    def rename_list_async(self, src_name: str, dest_name: str) -> Future:
        """Rename list ``src_name`` to ``dest_name`` (nothing to do if the names are equal)."""
        if src_name == dest_name:  # copy-then-delete onto itself would delete the list
            return DoneFuture(None)
        src = self._key(src_name, LIST, read=True)
        return chain(
            self.copy_list_async(src_name, dest_name),
            lambda _: self.keys.delete_async(src, LIST),
        )

    def get_list_length_async(self, list_name: str) -> Future:
        """Number of datasets in list ``list_name`` (0 if it does not exist)."""
        return self.keys.list_length_async(self._key(list_name, LIST, read=True))

    def get_datasets_from_list_async(self, list_name: str) -> Future:
        """Every dataset in list ``list_name``, in order (fetched in parallel)."""
        return self.get_dataset_list_range_async(list_name, 0, -1)

    def get_dataset_list_range_async(
        self, list_name: str, start_index: int, end_index: int
    ) -> Future:
        """Datasets ``start_index..end_index`` of the list, inclusive; negative indices
        count from the end (Redis LRANGE)."""
        key = self._key(list_name, LIST, read=True)
        return chain(
            self.keys.list_range_async(key, start_index, end_index),
            lambda keys: Gathered(
                [self.keys.get_dataset_async(k, _unprefixed(k, self._get_prefix)) for k in keys]
            ),
        )

    append_to_list = blocking(append_to_list_async)
    delete_list = blocking(delete_list_async)
    copy_list = blocking(copy_list_async)
    rename_list = blocking(rename_list_async)
    get_list_length = blocking(get_list_length_async)
    get_datasets_from_list = blocking(get_datasets_from_list_async)
    get_dataset_list_range = blocking(get_dataset_list_range_async)


def _unprefixed(key: str, prefix: str) -> str:
    return key[len(prefix) + 1 :] if prefix and key.startswith(prefix + ".") else key
