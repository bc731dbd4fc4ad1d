"""``Client``: put, wait for and get tensors, datasets and lists across the shards.

Method and argument names follow SmartRedis's Python client, so switching is an import.
Every data call ``x_async(...)`` returns a :class:`memstore.Future`, and its blocking twin
``x(...)`` (made by :func:`memstore.client.blocking.blocking`) is exactly
``x_async(...).result()``. Keys are routed to shards by :mod:`memstore.placement`; ensemble
prefixes (``SSKEYIN``/``SSKEYOUT``) are applied as SmartRedis applies them.

Buffer ownership: a put sends the array's own memory without copying, so an array handed
to a ``*_async`` put must not be modified until its future is done. Arrays returned by a
get wrap the received message: writable, private to the caller, no copy.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import zmq

from memstore import address as addresses
from memstore import auth, tensors
from memstore.client.blocking import blocking
from memstore.client.datasets import DatasetCalls
from memstore.client.keys import RawKeys
from memstore.client.models import ModelCalls
from memstore.client.requests import Requests, hello_reply
from memstore.client.shm import SharedMemoryPath
from memstore.client.streams import Stream
from memstore.client.transport import ignore_reply
from memstore.config import ENV_KEY_IN, ENV_KEY_OUT, client_timeout, save_timeout
from memstore.errors import ConnectionLost, NoAnswer, Timeout
from memstore.futures import Future, InlineResult, chain
from memstore.kinds import DATASET, LIST, MODEL, TENSOR

log = logging.getLogger(__name__)


def _listed(names: Any) -> list:
    """``names`` of a bulk call, refused unless a list or tuple (a lone string would be
    taken letter by letter)."""
    if not isinstance(names, (list, tuple)):
        raise TypeError(f"names must be a list of strings, got {names!r:.80}")
    return list(names)


def _header_fields(header: dict, payload: list) -> dict:
    """A reply's own fields, without the envelope."""
    return {k: v for k, v in header.items() if k not in ("v", "id", "ok")}


class Client(DatasetCalls, ModelCalls):
    """A connection to every shard of one memstore cluster.

    Args:
        address: comma-separated ``tcp://host:port`` / ``host:port`` / ``ipc://path`` (or a
            list). Without it: ``MEMSTORE_ADDRESS``, then ``SSDB``, then the file named by
            ``MEMSTORE_ADDRESS_FILE``. One shard's address is enough: shards started by
            ``memstore start`` or ``LocalCluster`` hand out the full shard list.
        timeout: seconds to wait for any one answer before ``NoAnswer`` (a ``ConnectionLost``
            and a ``Timeout``; default: ``MEMSTORE_TIMEOUT`` as it is when the client is
            made, else 30).
        aliases: ``{cluster address: address to connect to instead}``, e.g. a node-local
            ``ipc://`` socket of a ``tcp://`` shard (``memstore.mpi`` passes these).
        curve: ``memstore.auth.ClientKeys`` for shards that require CURVE (default: from
            ``MEMSTORE_CURVE_DIR`` or ``MEMSTORE_CURVE_SERVER_KEY`` + ``MEMSTORE_CURVE_CLIENT_KEY``
            when set). A shard that refuses them raises ``AuthError``.
        shm: use the same-node shared-memory path where a shard offers it (None: unless
            ``MEMSTORE_SHM=0``; False: sockets only; True: even with ``MEMSTORE_SHM=0``).

    Thread-safe: each thread gets its own sockets. Use as a context manager or ``close()``.
    ``client.keys`` works on stored keys as they are, without prefixes
    (:class:`memstore.client.keys.RawKeys`).
    """

    def __init__(
        self,
        address: str | list[str] | None = None,
        cluster: bool | None = None,
        *,
        timeout: float | None = None,
        logger_name: str | None = None,
        aliases: dict[str, str] | None = None,
        curve: Any = None,
        shm: bool | None = None,
    ):
        if isinstance(address, bool):  # SmartRedis's older Client(cluster, address) order
            address, cluster = cluster, address  # type: ignore[assignment]
        timeout = client_timeout() if timeout is None else timeout  # MEMSTORE_TIMEOUT, now
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.timeout = float(timeout)
        self._context = zmq.Context.instance()
        self._aliases = dict(aliases or {})
        self._curve = curve if curve is not None else auth.client_keys()
        self._shm_wanted = shm
        self._connect([self._aliases.get(a, a) for a in addresses.resolve(address)])
        self._discover()
        self._put_prefix = os.environ.get(ENV_KEY_OUT, "")
        self._get_prefixes = [p for p in os.environ.get(ENV_KEY_IN, "").split(",") if p]
        self._get_prefix = self._get_prefixes[0] if self._get_prefixes else ""
        self._use_prefix = {TENSOR: True, DATASET: True, LIST: True, MODEL: False}

    def _connect(self, shard_addresses: list[str]) -> None:
        """Sockets for ``shard_addresses``, closed by ``close()`` or once this client and
        everything it sent are gone (:class:`memstore.client.requests.Requests`)."""
        self.addresses = shard_addresses
        self._requests = Requests(self._context, shard_addresses, self.timeout, self._curve)
        self._shm = SharedMemoryPath(self._requests, self._shm_wanted)
        self.keys = RawKeys(self._requests, self._shm)

    def _discover(self) -> None:
        """Ask the first shard for the cluster's shard list, which fixes key placement."""
        try:
            hello = self._sync(
                self._requests.to_shard, 0, "hello", {}, decode=hello_reply, what="hello"
            )
        except ConnectionLost as exc:
            self.close()
            raise (NoAnswer if isinstance(exc, NoAnswer) else ConnectionLost)(
                f"no memstore shard answered at {self.addresses[0]} within {self.timeout}s: "
                "is it running? (start one with `memstore start`)"
            ) from None
        shards = [self._aliases.get(a, a) for a in hello.get("shards") or []]
        if shards and shards != self.addresses:
            log.debug("using the cluster's shard list %s", shards)
            self.close()  # sockets were made for the old list
            self._connect(shards)
        self._requests.max_message = int(hello.get("max_message") or 0)
        self._requests.transport.batching = "batch" in (hello.get("features") or [])
        self._shm.offered(hello.get("index", 0) if shards else 0, hello)

    def __repr__(self) -> str:
        return f"Client({','.join(self.addresses)!r}, timeout={self.timeout})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def paths(self) -> list[str]:
        """How this client reaches each shard, in the order of ``addresses``: ``"unix"``
        (the shard's Unix socket: same node, same user), ``"zmq"``, or ``"unasked"`` (no
        request went to that shard yet)."""
        return self._requests.transport.paths()

    def close(self) -> None:
        """Close the sockets; pending futures fail with ``ConnectionLost``. Dropping the
        client does the same once nothing it sent is pending."""
        self._requests.close()

    def _broadcast(
        self,
        op: str,
        shards: list[str] | None,
        decode: Any = ignore_reply,
        combine: Any = list,
        fields: dict | None = None,
        wait: float = 0.0,
    ) -> Future | InlineResult:
        """``op`` on each of ``shards`` (addresses; default all), answers combined."""
        targets = []
        for shard in self.addresses if shards is None else shards:
            address = addresses.normalize(shard)
            address = self._aliases.get(address, address)  # a shard named by its cluster address
            if address not in self.addresses:
                raise ValueError(f"{shard!r} is not a shard of this cluster ({self.addresses})")
            targets.append(self.addresses.index(address))
        to_shard = self._requests.to_shard
        return self._requests.fan_out(
            [
                lambda i=i: to_shard(
                    i, op, fields or {}, (), decode, wait, f"{op} on {self.addresses[i]}"
                )
                for i in targets
            ],
            combine,
        )

    # -- tensors ---------------------------------------------------------------------------

    def empty(self, name: str, shape: Any, dtype: Any = np.float64, order: str = "C") -> Any:
        """A writable array for tensor ``name`` that lives in the store's shared memory:
        fill it in place, then ``put_tensor(name, array)`` stores it without a copy.

        That put is a snapshot like any other: the array stays usable and writable, but
        from then on it is the caller's private copy-on-write view (later writes never
        reach the store). A second put of it copies as usual. Without a shared-memory
        path to the shard (another node, ``MEMSTORE_SHM=0``), or below
        ``MEMSTORE_SHM_THRESHOLD``, it is a plain ``numpy.empty``. Either way its first
        contents are undefined, as ``numpy.empty``'s (a recycled file holds old bytes).

        Args:
            name: the tensor it is meant for (picks the shard whose memory it is).
            shape: the array's shape.
            dtype: any dtype a tensor may have.
            order: ``"C"`` or ``"F"``.
        """
        key = self._key(name, TENSOR, read=False)
        dtype = np.dtype(dtype)
        tensors.check_dtype(dtype, key)
        shape = (shape,) if isinstance(shape, int) else tuple(int(n) for n in shape)
        if order not in ("C", "F") or any(n < 0 for n in shape):
            raise ValueError(f"tensor {key!r}: order must be 'C' or 'F', shape non-negative")
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        mapping = self._shm.allocate(self._shard(key), nbytes, key)
        if mapping is not None:
            return np.ndarray(shape, dtype, buffer=mapping, order=order)
        return np.empty(shape, dtype, order=order)

    def put_tensor_async(self, name: str, data: Any) -> Future:
        """Store ``data`` (numpy array or torch tensor) under ``name``."""
        key = self._key(name, TENSOR, read=False)
        meta, buffer = tensors.encode(data, key)
        return self._put(self._shard(key), [key], [meta], [buffer], [data])

    def _put(
        self, shard: int, keys: list, metas: list, buffers: list, sources: list | None = None
    ) -> Future | InlineResult:
        """One put message of tensors (large ones as shared-memory files on the same node)."""
        fields = {"keys": keys, "metas": metas}
        return self._shm.put(shard, "put", fields, buffers, sources, ("put", keys[0]))

    def get_tensor_async(self, name: str, as_torch: bool = False) -> Future:
        """The tensor ``name`` as a numpy array (torch tensor with ``as_torch=True``)."""
        key = self._key(name, TENSOR, read=True)
        return self._get(self._shard(key), [key], as_torch, one=True)

    def _get(self, shard: int, keys: list, as_torch: bool, one: bool = False) -> Any:
        """One get message: the arrays (``one``: the first), mapped copy-on-write from
        shared-memory files where the shard shares memory with this process."""

        def arrays(header, payload):
            got = [
                tensors.decode(m, f, as_torch=as_torch, name=k)
                for k, m, f in zip(keys, header["metas"], payload, strict=False)
            ]
            return got[0] if one else got

        return self._shm.get(shard, "get", {"keys": keys}, arrays, ("get", keys[0]))

    def unpack_tensor_async(self, name: str, result: Any) -> Future:
        """Copy tensor ``name`` into the preallocated array ``result`` (same shape/dtype)."""

        def into(array):
            if array.shape != result.shape or array.dtype != result.dtype:
                raise TypeError(
                    f"tensor {name!r} is {array.dtype}{list(array.shape)}, "
                    f"result is {result.dtype}{list(result.shape)}"
                )
            result[...] = array
            return result

        return chain(self.get_tensor_async(name), into)

    def put_tensors_async(self, tensors_by_name: dict[str, Any]) -> Future:
        """Store several tensors: one message per shard (large ones as shared-memory files
        on the same node, as :meth:`put_tensor`)."""
        per_shard: dict[int, tuple[list, list, list, list]] = {}
        for name, data in tensors_by_name.items():
            key = self._key(name, TENSOR, read=False)
            meta, buffer = tensors.encode(data, key)
            keys, metas, buffers, sources = per_shard.setdefault(self._shard(key), ([], [], [], []))
            keys.append(key)
            metas.append(meta)
            buffers.append(buffer)
            sources.append(data)
        return self._requests.fan_out(
            [lambda s=s, m=m: self._put(s, *m) for s, m in per_shard.items()],
            combine=lambda _: None,
        )

    def get_tensors_async(self, names: list[str], as_torch: bool = False) -> Future:
        """Several tensors, in the order of ``names``: one message per shard (mapped from
        shared memory on the same node, as :meth:`get_tensor`)."""
        keys = [self._key(name, TENSOR, read=True) for name in _listed(names)]
        per_shard = self._requests.by_shard(keys)
        order = list(per_shard.values())
        calls = [
            lambda s=s, pos=pos: self._get(s, [keys[i] for i in pos], as_torch)
            for s, pos in per_shard.items()
        ]

        def combine(results):
            out: list[Any] = [None] * len(keys)
            for positions, arrays in zip(order, results, strict=False):
                for i, array in zip(positions, arrays, strict=False):
                    out[i] = array
            return out

        return self._requests.fan_out(calls, combine)

    def delete_tensor_async(self, name: str) -> Future:
        """Delete tensor ``name``; ``KeyNotFound`` if it does not exist."""
        return self.keys.delete_async(self._key(name, TENSOR, read=True), TENSOR)

    def delete_tensors_async(self, names: list[str]) -> Future:
        """Delete those of the tensors ``names`` that exist, one request per shard (the fast
        way to delete many); how many were deleted (a missing name is no error, as Redis's
        DEL). A name holding a dataset is ``WrongType``; its shard then deletes none."""
        keys = [self._key(name, TENSOR, read=True) for name in _listed(names)]
        return self.keys.delete_many_async(keys, TENSOR)

    def tensors_exist_async(self, names: list[str]) -> Future:
        """Per name, in order, whether tensor ``name`` exists: one request per shard."""
        keys = [self._key(name, TENSOR, read=True) for name in _listed(names)]
        return self.keys.exists_many_async(keys, TENSOR)

    def copy_tensor_async(self, src_name: str, dest_name: str) -> Future:
        """Copy tensor ``src_name`` to ``dest_name`` (across shards if they differ)."""
        src, dst = self._key(src_name, TENSOR, read=True), self._key(dest_name, TENSOR, read=False)
        return self.keys.copy_async(src, dst, TENSOR)

    def rename_tensor_async(self, old_name: str, new_name: str) -> Future:
        """Rename tensor ``old_name`` to ``new_name``."""
        src, dst = self._key(old_name, TENSOR, read=True), self._key(new_name, TENSOR, read=False)
        return self.keys.rename_async(src, dst, TENSOR)

    def tensor_exists_async(self, name: str) -> Future:
        """Whether tensor ``name`` exists."""
        return self.keys.exists_async(self._key(name, TENSOR, read=True), TENSOR)

    def dataset_exists_async(self, name: str) -> Future:
        """Whether dataset ``name`` exists."""
        return self.keys.exists_async(self._key(name, DATASET, read=True), DATASET)

    def key_exists_async(self, key: str) -> Future:
        """Whether ``key`` (taken as is, no prefix) holds anything."""
        return self.keys.exists_async(key)

    put_tensor = blocking(put_tensor_async)
    get_tensor = blocking(get_tensor_async)
    unpack_tensor = blocking(unpack_tensor_async)
    put_tensors = blocking(put_tensors_async)
    get_tensors = blocking(get_tensors_async)
    delete_tensor = blocking(delete_tensor_async)
    delete_tensors = blocking(delete_tensors_async)
    copy_tensor = blocking(copy_tensor_async)
    rename_tensor = blocking(rename_tensor_async)
    tensor_exists = blocking(tensor_exists_async)
    tensors_exist = blocking(tensors_exist_async)
    dataset_exists = blocking(dataset_exists_async)
    key_exists = blocking(key_exists_async)

    # -- waiting on the server -------------------------------------------------------------

    def poll_tensor_async(self, name: str, poll_frequency_ms: int, num_tries: int) -> Future:
        """True as soon as tensor ``name`` exists; False after
        ``poll_frequency_ms * num_tries`` ms. The shard waits; the client does not poll."""
        return self._poll(self._key(name, TENSOR, read=True), TENSOR, poll_frequency_ms, num_tries)

    def poll_dataset_async(self, name: str, poll_frequency_ms: int, num_tries: int) -> Future:
        """True as soon as dataset ``name`` exists (see ``poll_tensor``)."""
        return self._poll(
            self._key(name, DATASET, read=True), DATASET, poll_frequency_ms, num_tries
        )

    def poll_key_async(self, key: str, poll_frequency_ms: int, num_tries: int) -> Future:
        """True as soon as ``key`` (no prefix) holds anything (see ``poll_tensor``)."""
        return self._poll(key, None, poll_frequency_ms, num_tries)

    def poll_list_length_async(
        self, name: str, list_length: int, poll_frequency_ms: int, num_tries: int
    ) -> Future:
        """True as soon as list ``name`` has exactly ``list_length`` datasets."""
        return self._poll_list(name, list_length, poll_frequency_ms, num_tries, "len_eq")

    def poll_list_length_gte_async(
        self, name: str, list_length: int, poll_frequency_ms: int, num_tries: int
    ) -> Future:
        """True as soon as list ``name`` has at least ``list_length`` datasets."""
        return self._poll_list(name, list_length, poll_frequency_ms, num_tries, "len_ge")

    def poll_list_length_lte_async(
        self, name: str, list_length: int, poll_frequency_ms: int, num_tries: int
    ) -> Future:
        """True as soon as list ``name`` has at most ``list_length`` datasets."""
        return self._poll_list(name, list_length, poll_frequency_ms, num_tries, "len_le")

    def _poll_list(self, name, list_length, poll_frequency_ms, num_tries, cond) -> Future:
        if not isinstance(list_length, int) or list_length < 0:
            raise ValueError(f"list {name!r}: list_length must be a non-negative int")
        return self._poll(
            self._key(name, LIST, read=True), LIST, poll_frequency_ms, num_tries, cond, list_length
        )

    def wait_tensor_async(
        self, name: str, timeout: float | None = None, as_torch: bool = False
    ) -> Future:
        """The tensor ``name`` as soon as it is stored; ``Timeout`` after ``timeout`` seconds
        (default: the client's timeout)."""
        key = self._key(name, TENSOR, read=True)
        seconds = self.timeout if timeout is None else float(timeout)

        def decode(header, payload):
            if not header.get("found"):
                raise Timeout(f"tensor {key!r} did not appear within {seconds}s")
            return tensors.decode(header["meta"], payload[0], as_torch=as_torch, name=key)

        return self._requests.to_key(
            "wait",
            key,
            {"kind": TENSOR, "timeout": seconds, "fetch": True},
            decode=decode,
            wait=seconds,
        )

    poll_tensor = blocking(poll_tensor_async)
    poll_dataset = blocking(poll_dataset_async)
    poll_key = blocking(poll_key_async)
    poll_list_length = blocking(poll_list_length_async)
    poll_list_length_gte = blocking(poll_list_length_gte_async)
    poll_list_length_lte = blocking(poll_list_length_lte_async)
    wait_tensor = blocking(wait_tensor_async)

    # -- streams ---------------------------------------------------------------------------

    def stream(
        self,
        name: str,
        maxlen: int | None = None,
        policy: str | None = None,
        *,
        as_torch: bool = False,
    ) -> Stream:
        """The stream ``name``, created or attached (:class:`memstore.Stream`): bounded
        to ``maxlen`` steps with ``policy`` ``"drop_oldest"``, ``"block"`` or ``"latest"``;
        None attaches with the stream's own settings. Stream names are not prefixed."""
        return Stream(self, name, maxlen, policy, as_torch=as_torch)

    # -- ensembles -------------------------------------------------------------------------

    def set_data_source(self, source_id: str) -> None:
        """Read keys with prefix ``source_id`` (one of SSKEYIN, or SSKEYOUT)."""
        allowed = [*self._get_prefixes, self._put_prefix]
        if source_id not in allowed:
            raise ValueError(
                f"data source {source_id!r} is not in SSKEYIN ({self._get_prefixes})"
                f" nor SSKEYOUT ({self._put_prefix!r})"
            )
        self._get_prefix = source_id

    def use_tensor_ensemble_prefix(self, use_prefix: bool) -> None:
        """Apply ensemble prefixes to tensor names (on by default)."""
        self._use_prefix[TENSOR] = bool(use_prefix)

    def use_dataset_ensemble_prefix(self, use_prefix: bool) -> None:
        """Apply ensemble prefixes to dataset names (on by default)."""
        self._use_prefix[DATASET] = bool(use_prefix)

    def use_list_ensemble_prefix(self, use_prefix: bool) -> None:
        """Apply ensemble prefixes to aggregation list names (on by default)."""
        self._use_prefix[LIST] = bool(use_prefix)

    def use_model_ensemble_prefix(self, use_prefix: bool) -> None:
        """Apply ensemble prefixes to model and script names (off by default)."""
        self._use_prefix[MODEL] = bool(use_prefix)

    # -- admin -----------------------------------------------------------------------------

    def flush_db_async(self, addresses: list[str] | None = None) -> Future:
        """Delete every key on the given shards (default: all)."""
        return self._broadcast("flush", addresses, combine=lambda _: None)

    def get_db_node_info_async(self, addresses: list[str] | None = None) -> Future:
        """Per shard: address, keys, bytes, ops, clients, uptime."""
        return self._broadcast("info", addresses, decode=_header_fields)

    def save_async(
        self, path: str | os.PathLike | None = None, addresses: list[str] | None = None
    ) -> Future:
        """Snapshot the given shards (default: all) into directory ``path`` (default: each
        shard's ``--save-dir``); the result lists what each shard wrote (file, sha256, bytes,
        keys, seconds, pause). Each shard's file is consistent as of the moment it takes the
        request; docs/operations.md."""
        fields = {} if path is None else {"dir": os.path.abspath(os.fspath(path))}
        return self._broadcast("save", addresses, _header_fields, list, fields, save_timeout())

    def shutdown_async(self, addresses: list[str] | None = None) -> Future:
        """Stop the given shards (default: all); their data is gone."""
        return self._broadcast("shutdown", addresses, combine=lambda _: None)

    flush_db = blocking(flush_db_async)
    get_db_node_info = blocking(get_db_node_info_async)
    save = blocking(save_async)
    shutdown = blocking(shutdown_async)
