"""``client.keys``: calls on the store's own key names, with no ensemble prefix applied.

:class:`memstore.Client` takes *names* and prefixes them as SmartRedis does (``SSKEYIN`` /
``SSKEYOUT``). Code that already speaks in stored keys (the RESP gateway, tools) uses these
instead. Few on purpose: exists and delete (of one key, or of many: one request per shard),
copy, rename, a dataset in and out, and a list's push, range and length (the requests the
named methods are built on). Each ``x_async`` returns a :class:`memstore.Future`; ``x``
blocks and returns its result.
"""

from __future__ import annotations

from typing import Any

from memstore.client.blocking import blocking
from memstore.client.requests import Requests
from memstore.client.shm import SharedMemoryPath
from memstore.dataset import DataSet
from memstore.errors import KeyNotFound
from memstore.futures import Future, chain
from memstore.kinds import LIST, TENSOR


def _raw_tensor(header: dict, payload: list) -> tuple[dict, Any]:
    return header["metas"][0], payload[0]


class RawKeys:
    """Calls on stored keys as they are (see the module). ``kind``: ``"tensor"``,
    ``"dataset"``, ``"list"``, ``"model"``, ``"script"`` (:mod:`memstore.kinds`), or None
    where any will do."""

    def __init__(self, requests: Requests, shm: SharedMemoryPath):
        self._requests = requests
        self._shm = shm

    def _sync(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        return self._requests.inline.run(method, *args, **kwargs)

    def exists_async(self, key: str, kind: str | None = None) -> Future:
        """Whether ``key`` holds anything (of ``kind``, if given)."""
        return self._requests.to_key(
            "exists", key, {"kind": kind}, decode=lambda h, p: bool(h["exists"])
        )

    def delete_async(self, key: str, kind: str | None = None) -> Future:
        """Delete ``key`` (if it holds ``kind``, if given); ``KeyNotFound`` if there is none."""
        return self._requests.to_key("delete", key, {"kind": kind})

    def delete_many_async(self, keys: list[str], kind: str | None = None) -> Future:
        """Delete those of ``keys`` that exist (of ``kind``, if given): one request per
        shard; how many were deleted. A key holding another kind is ``WrongType`` and its
        shard deletes none of its keys."""
        return self._per_shard(
            "delete_keys", keys, kind, "deleted", lambda parts: sum(n for _, n in parts)
        )

    def exists_many_async(self, keys: list[str], kind: str | None = None) -> Future:
        """Per key, in order, whether it holds anything (of ``kind``): one request per shard."""

        def in_order(parts: list) -> list[bool]:
            found = [False] * len(keys)
            for positions, answers in parts:
                for i, answer in zip(positions, answers, strict=True):
                    found[i] = bool(answer)
            return found

        return self._per_shard("exists_keys", keys, kind, "exists", in_order)

    def _per_shard(self, op: str, keys: list[str], kind: str | None, field: str, combine) -> Any:
        """``op`` of each shard's share of ``keys``, all in flight at once; ``combine`` gets
        (positions in ``keys``, the reply's ``field``) per shard."""
        if not isinstance(keys, (list, tuple)):
            raise TypeError(f"{op}: keys must be a list of strings, got {type(keys).__name__}")
        requests = self._requests

        def ask(shard: int, positions: list[int]) -> Any:
            share = [keys[i] for i in positions]
            return requests.to_shard(
                shard, op, {"keys": share, "kind": kind},
                decode=lambda header, payload: (positions, header[field]), what=(op, share[0]),
            )  # fmt: skip

        shares = requests.by_shard(list(keys)).items()
        return requests.fan_out([lambda s=s, p=p: ask(s, p) for s, p in shares], combine)

    def copy_async(self, src: str, dst: str, kind: str) -> Future:
        """Copy ``src`` (of ``kind``) to ``dst``, across shards if they differ: a tensor as
        its raw bytes (every dtype survives), a list as its items, a dataset whole."""
        requests = self._requests
        if requests.shard_of(src) == requests.shard_of(dst):
            return requests.to_key("copy", src, {"src": src, "dst": dst, "kind": kind})
        if kind == TENSOR:
            return chain(
                requests.to_key("get", src, {"keys": [src]}, decode=_raw_tensor),
                lambda raw: requests.to_key(
                    "put", dst, {"keys": [dst], "metas": [raw[0]]}, [raw[1]]
                ),
            )
        if kind == LIST:
            return chain(
                self.exists_async(src, LIST), lambda found: self._copy_list(src, dst, found)
            )
        return chain(self.get_dataset_async(src), lambda ds: self.put_dataset_async(dst, ds))

    def _copy_list(self, src: str, dst: str, found: bool) -> Future:
        """The items of list ``src`` (which exists if ``found``) stored as list ``dst``."""
        if not found:
            raise KeyNotFound(f"list {src!r} does not exist: nothing to copy to {dst!r}")
        return chain(
            self.list_range_async(src, 0, -1),
            lambda items: self._requests.to_key("list_set", dst, {"items": items}),
        )

    def rename_async(self, src: str, dst: str, kind: str) -> Future:
        """Rename ``src`` (of ``kind``) to ``dst``: a copy, then a delete, across shards."""
        requests = self._requests
        if requests.shard_of(src) == requests.shard_of(dst):
            return requests.to_key("rename", src, {"src": src, "dst": dst, "kind": kind})
        return chain(
            self.copy_async(src, dst, kind),
            lambda _: requests.to_key("delete", src, {"kind": kind}),
        )

    def get_dataset_async(self, key: str, name: str | None = None) -> Future:
        """The dataset stored under ``key``, named ``name`` (default: the key). Tensors the
        shard holds as files are mapped copy-on-write, as in ``get_tensor``."""
        label = key if name is None else name

        def dataset(header: dict, payload: list) -> DataSet:
            return DataSet.from_wire(label, header["dataset"], payload)

        shm = self._shm
        return shm.get(
            self._requests.shard_of(key), "get_dataset", {"key": key}, dataset, ("get_dataset", key)
        )

    def put_dataset_async(self, key: str, dataset: DataSet) -> Future:
        """Store ``dataset`` under ``key``, whole, in one message (large tensors as
        shared-memory files on the same node, as in ``put_tensor``)."""
        layout, buffers = dataset.to_wire()
        fields = {"key": key, "dataset": layout}
        shard = self._requests.shard_of(key)
        return self._shm.put(shard, "put_dataset", fields, buffers, None, ("put_dataset", key))

    def list_push_async(self, key: str, items: list[str]) -> Future:
        """Append ``items`` to the list ``key``; its new length."""
        return self._requests.to_key(
            "list_push", key, {"items": list(items)}, decode=lambda h, p: h["length"]
        )

    def list_range_async(self, key: str, start: int, end: int) -> Future:
        """Items ``start..end`` of list ``key``, inclusive; negative indices count from the
        end (Redis LRANGE). A missing list is empty."""
        if not isinstance(start, int) or not isinstance(end, int):
            raise TypeError(f"list {key!r}: start and end indices must be ints")
        return self._requests.to_key(
            "list_range", key, {"start": start, "end": end}, decode=lambda h, p: h["items"]
        )

    def list_length_async(self, key: str) -> Future:
        """Number of items in list ``key`` (0 if it does not exist)."""
        return self._requests.to_key("list_len", key, decode=lambda h, p: h["length"])

    exists = blocking(exists_async)
    delete = blocking(delete_async)
    delete_many = blocking(delete_many_async)
    exists_many = blocking(exists_many_async)
    copy = blocking(copy_async)
    rename = blocking(rename_async)
    get_dataset = blocking(get_dataset_async)
    put_dataset = blocking(put_dataset_async)
    list_push = blocking(list_push_async)
    list_range = blocking(list_range_async)
    list_length = blocking(list_length_async)
