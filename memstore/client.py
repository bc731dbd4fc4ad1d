"""``Client``: put, wait for and get tensors, datasets and lists across the shards.

Method and argument names follow SmartRedis's Python client, so switching is an import.
Every data call ``x(...)`` has a non-blocking twin ``x_async(...)`` that returns a
:class:`memstore.Future`; ``x`` is exactly ``x_async(...).result()``. Keys are routed to
shards by :mod:`memstore.placement`; ensemble prefixes (``SSKEYIN``/``SSKEYOUT``) are applied
as SmartRedis applies them.

Buffer ownership: a put sends the array's own memory without copying, so an array handed
to a ``*_async`` put must not be modified until its future is done. Arrays returned by a
get wrap the received message: writable, private to the caller, no copy.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import zmq

from memstore import address as addresses
from memstore import auth, shm_client, tensors
from memstore.client_datasets import DatasetCalls
from memstore.client_models import ModelCalls
from memstore.config import (
    ENV_KEY_IN,
    ENV_KEY_OUT,
    client_max_inflight,
    client_sockets,
    client_timeout,
    save_timeout,
    shm_threshold,
)
from memstore.errors import ConnectionLost, ProtocolError, Timeout
from memstore.kinds import DATASET, LIST, MODEL, TENSOR
from memstore.placement import key_shard
from memstore.transport import UNAVAILABLE, Future, Gathered, Settled, Transport, _ignore, chain

log = logging.getLogger(__name__)


def _found(header: dict, payload: list) -> bool:
    return bool(header.get("found"))


def _raw_tensor(header: dict, payload: list) -> tuple[dict, Any]:
    return header["metas"][0], payload[0]


_UNKNOWN = shm_client.UNASKED
_STALE = shm_client.STALE


def _header_fields(header: dict, payload: list) -> dict:
    """A reply's own fields, without the envelope."""
    return {k: v for k, v in header.items() if k not in ("v", "id", "ok")}


def _failed(future: Any) -> bool:
    return future.cancelled() or future.exception(0) is not None


class Client(DatasetCalls, ModelCalls):
    """A connection to every shard of one memstore cluster.

    Args:
        address: comma-separated ``tcp://host:port`` / ``host:port`` / ``ipc://path`` (or a
            list). Without it: ``MEMSTORE_ADDRESS``, then ``SSDB``, then the file named by
            ``MEMSTORE_ADDRESS_FILE``. One shard's address is enough: shards started by
            ``memstore start`` or ``LocalCluster`` hand out the full shard list.
        timeout: seconds to wait for any one answer before ``ConnectionLost`` (default:
            ``MEMSTORE_TIMEOUT`` as it is when the client is made, else 30).
        aliases: ``{cluster address: address to connect to instead}``, e.g. a node-local
            ``ipc://`` socket of a ``tcp://`` shard (``memstore.mpi`` passes these).
        curve: ``memstore.auth.ClientKeys`` for shards that require CURVE (default: from
            ``MEMSTORE_CURVE_DIR`` or ``MEMSTORE_CURVE_SERVER_KEY`` + ``MEMSTORE_CURVE_CLIENT_KEY``
            when set). A shard that refuses them raises ``AuthError``.
        shm: use the same-node shared-memory path where a shard offers it (None: unless
            ``MEMSTORE_SHM=0``; False: sockets only; True: even with ``MEMSTORE_SHM=0``).

    Thread-safe: each thread gets its own sockets. Use as a context manager or ``close()``.
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
        self._local = threading.local()
        self._aliases = dict(aliases or {})
        self._curve = curve if curve is not None else auth.client_keys()
        self._max_message = 0  # the cluster's --max-message, once hello tells it
        self._shm = shm
        self._connect([self._aliases.get(a, a) for a in addresses.resolve(address)])
        self._discover()
        self._put_prefix = os.environ.get(ENV_KEY_OUT, "")
        self._get_prefixes = [p for p in os.environ.get(ENV_KEY_IN, "").split(",") if p]
        self._get_prefix = self._get_prefixes[0] if self._get_prefixes else ""
        self._use_prefix = {TENSOR: True, DATASET: True, LIST: True, MODEL: False}

    def _connect(self, shard_addresses: list[str]) -> None:
        """Sockets for ``shard_addresses``, closed by ``close()`` or when this client is
        garbage-collected (the finalizer holds the transport, not the client)."""
        self.addresses = shard_addresses
        # Per shard: its shared-memory link, None (sockets only) or not asked yet. Shards in
        # this process (inproc://) get copies from the transport instead.
        off = self._shm is False
        self._links: list[Any] = [
            None if off or a.startswith("inproc://") else _UNKNOWN for a in shard_addresses
        ]
        self._shm_threshold = shm_threshold()
        self._transport = Transport(
            self._context, shard_addresses, client_sockets(), client_max_inflight(), self._curve
        )
        self._finalizer = weakref.finalize(self, self._transport.close)

    def _discover(self) -> None:
        """Ask the first shard for the cluster's shard list, which fixes key placement."""
        try:
            hello = self._sync(self._submit, 0, "hello", {}, decode=lambda h, p: h, what="hello")
        except ConnectionLost:
            self.close()
            raise ConnectionLost(
                f"no memstore shard answered at {self.addresses[0]} within {self.timeout}s: "
                "is it running? (start one with `memstore start`)"
            ) from None
        self._max_message = int(hello.get("max_message") or 0)
        batching = "batch" in (hello.get("features") or [])
        shards = [self._aliases.get(a, a) for a in hello.get("shards") or []]
        if shards and shards != self.addresses:
            log.debug("using the cluster's shard list %s", shards)
            self.close()  # sockets were made for the old list
            self._connect(shards)
        self._transport.batching = batching
        index = hello.get("index", 0) if shards else 0
        if 0 <= index < len(self._links) and self._links[index] is _UNKNOWN:
            self._links[index] = self._negotiate(hello)

    def _negotiate(self, hello: dict) -> shm_client.Link | None:
        if "shm" not in (hello.get("features") or []):
            return None
        return shm_client.Link.negotiate(hello.get("shm"), self._shm)

    def _link(self, shard: int) -> shm_client.Link | None:
        """The shared-memory link to ``shard``, asking it the first time (a ``hello``)."""
        link = self._links[shard]
        if link is _UNKNOWN:
            local = self._local
            inline = getattr(local, "inline", False)  # the caller's request keeps its fast path
            try:
                hello = self._sync(
                    self._submit, shard, "hello", {}, decode=lambda h, p: h, what="hello"
                )
            finally:
                local.inline = inline
            link = self._links[shard] = self._negotiate(hello)
        return link

    def __repr__(self) -> str:
        return f"Client({','.join(self.addresses)!r}, timeout={self.timeout})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the sockets; pending futures fail with ``ConnectionLost``. Dropping the
        client does the same once nothing it sent is pending."""
        self._finalizer()

    # -- plumbing --------------------------------------------------------------------------

    def _sync(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``method`` (an ``*_async`` method) and wait for its result; its first request
        may take the transport's fast path (no future, no other thread)."""
        local = self._local
        local.inline = True
        try:
            return method(*args, **kwargs).result()
        finally:
            local.inline = False

    def _submit(
        self,
        shard: int,
        op: str,
        fields: dict,
        payload: Iterable = (),
        decode: Callable = _ignore,
        wait: float = 0.0,
        what: Any = "",
    ) -> Future | Settled:
        timeout = self.timeout + (wait if wait > 0 else 0.0)  # NaN: the shard refuses it
        payload = list(payload)
        if self._max_message and payload:
            self._check_size(payload, what or op)
        local = self._local
        if getattr(local, "inline", False):
            local.inline = False  # only the call's first request: the rest are its steps
            value = self._transport.call(shard, op, fields, payload, decode, timeout, what or op)
            if value is not UNAVAILABLE:
                return Settled(value)
        reply = self._transport.submit(
            shard, op, fields, list(payload), decode, timeout, what or op
        )
        reply.keepalive = self  # a dropped client stays open until its replies are in
        return reply

    def _shard(self, key: str) -> int:
        return key_shard(key, len(self.addresses))

    def _check_size(self, payload: list, what: Any) -> None:
        """Refuse here what the shard's ``--max-message`` would cut off (it drops the
        connection of a peer sending an oversized frame, failing everything in flight)."""
        size = sum(memoryview(frame).nbytes for frame in payload)
        if size > self._max_message:
            name = f"{what[0]} {what[1]!r}" if isinstance(what, tuple) else what
            raise ProtocolError(
                f"{name}: {size} bytes exceed the shard's --max-message {self._max_message}: "
                "split the data or raise the limit (nothing was sent)"
            )

    def _call(
        self,
        op: str,
        key: str,
        fields: dict | None = None,
        payload: Iterable = (),
        decode: Callable = _ignore,
        wait: float = 0.0,
    ) -> Future | Settled:
        """One request about ``key``, sent to the shard that owns it."""
        return self._submit(
            self._shard(key), op, {"key": key, **(fields or {})}, payload, decode, wait, (op, key)
        )

    def _fan_out(self, requests: list[tuple], combine: Callable[[list], Any]) -> Future | Settled:
        """``_submit(*request)`` for each request, all in flight at once; the results
        combined. A single request may still take the fast path."""
        if len(requests) == 1:
            return chain(self._submit(*requests[0]), lambda result: combine([result]))
        self._local.inline = False  # in flight together, not one fast call after another
        return Gathered([self._submit(*request) for request in requests], combine)

    def _fan_out_calls(self, calls: list[Callable[[], Any]], combine: Callable) -> Any:
        """``_fan_out`` of requests made by calls (``_put``, ``_get``: shared memory)."""
        if len(calls) == 1:
            return chain(calls[0](), lambda result: combine([result]))
        self._local.inline = False
        return Gathered([call() for call in calls], combine)

    def _key(self, name: str, kind: str, read: bool) -> str:
        """The stored key for ``name``: SmartRedis's ensemble prefix rules."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"a {kind} name must be a non-empty string, got {name!r}")
        prefix = self._get_prefix if read else self._put_prefix
        return f"{prefix}.{name}" if prefix and self._use_prefix[kind] else name

    def _broadcast(
        self,
        op: str,
        shards: list[str] | None,
        decode: Callable = _ignore,
        combine: Callable[[list], Any] = list,
        fields: dict | None = None,
        wait: float = 0.0,
    ) -> Future:
        """``op`` on each of ``shards`` (addresses; default all), answers combined."""
        targets = []
        for shard in self.addresses if shards is None else shards:
            address = addresses.normalize(shard)
            address = self._aliases.get(address, address)  # a shard named by its cluster address
            if address not in self.addresses:
                raise ValueError(f"{shard!r} is not a shard of this cluster ({self.addresses})")
            targets.append(self.addresses.index(address))
        return self._fan_out(
            [
                (i, op, fields or {}, (), decode, wait, f"{op} on {self.addresses[i]}")
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
        link = self._link(self._shard(key)) if nbytes >= self._shm_threshold else None
        if link is not None:
            try:
                mapping = link.allocate(nbytes)
            except OSError as exc:  # /dev/shm full or gone: an ordinary array still works
                log.debug("empty(%r) in shared memory failed (%s): a plain array", key, exc)
            else:
                return np.ndarray(shape, dtype, buffer=mapping, order=order)
        return np.empty(shape, dtype, order=order)

    def put_tensor_async(self, name: str, data: Any) -> Future:
        """Store ``data`` (numpy array or torch tensor) under ``name``."""
        key = self._key(name, TENSOR, read=False)
        meta, buffer = tensors.encode(data, key)
        return self._put(self._shard(key), [key], [meta], [buffer], [data])

    def _put(
        self, shard: int, keys: list, metas: list, buffers: list, sources: list | None = None
    ) -> Future | Settled:
        """One put message of tensors (see :meth:`_put_files`)."""
        fields = {"keys": keys, "metas": metas}
        return self._put_files(shard, "put", fields, buffers, sources, ("put", keys[0]))

    def _put_files(
        self, shard: int, op: str, fields: dict, buffers: list, sources: list | None, what: Any
    ) -> Future | Settled:
        """Request ``op`` with ``buffers`` as its payload; those of at least the threshold
        go as shared-memory files when ``shard`` shares memory with this process (written
        now: a snapshot), and arrays from :meth:`empty` (``sources``: what each buffer came
        from) as their own files."""
        views = [memoryview(b) for b in buffers]  # a copied dataset brings received frames
        big = [i for i, v in enumerate(views) if v.nbytes >= self._shm_threshold]
        link = self._link(shard) if big else None
        if link is None:
            return self._submit(shard, op, fields, buffers, what=what)
        if self._max_message:  # the same limit whichever way the bytes go
            self._check_size(buffers, what)
        files: list = [None] * len(buffers)
        payload, area, sealing = list(buffers), None, []
        try:
            for i in big:
                allocation = shm_client.claim(sources[i], link.root) if sources else None
                if allocation is not None:
                    sealing.append(allocation)
                    area, files[i] = allocation.uploads.name, allocation.name
                else:
                    area, files[i] = link.upload(views[i])
                payload[i] = b""
        except OSError as exc:  # /dev/shm full or gone: the sockets still work
            log.debug("shared-memory upload failed (%s): sending %r over the socket", exc, what)
            link.discard_all(area, files)
            for allocation in sealing:
                allocation.seal()
            return self._submit(shard, op, fields, buffers, what=what)
        if sealing:  # by the pump, not inline: the shard adopts while this thread seals
            self._local.inline = False
        try:
            reply = self._submit(
                shard, op, {**fields, "area": area, "files": files}, payload, what=what
            )
        except BaseException:
            link.discard_all(area, files)
            raise
        finally:
            # Before the call returns (async too): from here on the caller's writes stay
            # private. Its file is unchanged meanwhile: a caller must not write an array
            # during its own put, as with any buffer.
            for allocation in sealing:
                allocation.seal()
        reply.add_done_callback(lambda f: _failed(f) and link.discard_all(area, files))
        return reply

    def put_tensor(self, name: str, data: Any) -> Any:
        """Store ``data`` (numpy array or torch tensor) under ``name``.

        Blocking form of :meth:`put_tensor_async`."""
        return self._sync(self.put_tensor_async, name, data)

    def get_tensor_async(self, name: str, as_torch: bool = False) -> Future:
        """The tensor ``name`` as a numpy array (torch tensor with ``as_torch=True``)."""
        key = self._key(name, TENSOR, read=True)
        return self._get(self._shard(key), [key], as_torch, one=True)

    def _get(
        self, shard: int, keys: list, as_torch: bool, one: bool = False, link: Any = _UNKNOWN
    ) -> Future | Settled:
        """One get message: the arrays (``one``: the first), mapping shared-memory files
        copy-on-write; a file overwritten before it was mapped is fetched again by socket.
        A shard not asked yet sends its offer along with the files (no extra round trip)."""
        if link is _UNKNOWN:
            link = self._links[shard]

        def arrays(header, payload):
            got = [
                tensors.decode(m, f, as_torch=as_torch, name=k)
                for k, m, f in zip(keys, header["metas"], payload, strict=False)
            ]
            return got[0] if one else got

        fields = {"keys": keys, "shm": True} if link is not None else {"keys": keys}
        decode = self._shm_decoder(shard, link, arrays)
        reply = self._submit(shard, "get", fields, decode=decode, what=("get", keys[0]))
        return self._unless_stale(reply, link, lambda: self._get(shard, keys, as_torch, one, None))

    def _shm_decoder(self, shard: int, link: Any, build: Callable) -> Callable:
        """A reply decoder that maps the files the reply names (:meth:`_mapped`), then
        ``build(header, payload)``; ``_STALE`` when one is gone."""

        def decode(header, payload):
            payload = self._mapped(shard, link, header, payload)
            return _STALE if payload is _STALE else build(header, payload)

        return decode

    @staticmethod
    def _unless_stale(reply: Any, link: Any, again: Callable) -> Any:
        """``reply``, or what ``again()`` (the same request by socket) gives when it was
        ``_STALE``; no shared-memory link, no retry."""
        if link is None:
            return reply
        return chain(reply, lambda got: again() if got is _STALE else got)

    def _mapped(self, shard: int, link: Any, header: dict, payload: list) -> Any:
        """``payload`` with the files a reply names mapped copy-on-write in their place;
        ``_STALE`` if one is gone (overwritten since) or memory is not shared after all."""
        files = header.get("files") if link is not None else None
        if not files:
            return payload
        if link is _UNKNOWN:  # a shard not asked yet sent its offer along
            link = self._links[shard] = shm_client.Link.negotiate(header.get("shm"), self._shm)
            if link is None:
                return _STALE
        payload = list(payload)
        for i, name in enumerate(files):
            if name is not None:
                payload[i] = link.map(name)
                if payload[i] is None:
                    return _STALE
        return payload

    def get_tensor(self, name: str, as_torch: bool = False) -> Any:
        """The tensor ``name`` as a numpy array (torch tensor with ``as_torch=True``).

        Blocking form of :meth:`get_tensor_async`."""
        return self._sync(self.get_tensor_async, name, as_torch)

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

    def unpack_tensor(self, name: str, result: Any) -> Any:
        """Copy tensor ``name`` into the preallocated array ``result`` (same shape/dtype).

        Blocking form of :meth:`unpack_tensor_async`."""
        return self._sync(self.unpack_tensor_async, name, result)

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
        return self._fan_out_calls(
            [lambda s=s, m=m: self._put(s, *m) for s, m in per_shard.items()],
            combine=lambda _: None,
        )

    def put_tensors(self, tensors_by_name: dict[str, Any]) -> Any:
        """Store several tensors: one message per shard.

        Blocking form of :meth:`put_tensors_async`."""
        return self._sync(self.put_tensors_async, tensors_by_name)

    def get_tensors_async(self, names: list[str], as_torch: bool = False) -> Future:
        """Several tensors, in the order of ``names``: one message per shard (mapped from
        shared memory on the same node, as :meth:`get_tensor`)."""
        keys = [self._key(name, TENSOR, read=True) for name in names]
        per_shard: dict[int, list[int]] = {}
        for i, key in enumerate(keys):
            per_shard.setdefault(self._shard(key), []).append(i)

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

        return self._fan_out_calls(calls, combine)

    def get_tensors(self, names: list[str], as_torch: bool = False) -> Any:
        """Several tensors, in the order of ``names``: one message per shard.

        Blocking form of :meth:`get_tensors_async`."""
        return self._sync(self.get_tensors_async, names, as_torch)

    def delete_tensor_async(self, name: str) -> Future:
        """Delete tensor ``name``; ``KeyNotFound`` if it does not exist."""
        return self._call("delete", self._key(name, TENSOR, read=True), {"kind": TENSOR})

    def delete_tensor(self, name: str) -> Any:
        """Delete tensor ``name``; ``KeyNotFound`` if it does not exist.

        Blocking form of :meth:`delete_tensor_async`."""
        return self._sync(self.delete_tensor_async, name)

    def copy_tensor_async(self, src_name: str, dest_name: str) -> Future:
        """Copy tensor ``src_name`` to ``dest_name`` (across shards if they differ)."""
        return self._copy(
            TENSOR, self._key(src_name, TENSOR, read=True), self._key(dest_name, TENSOR, read=False)
        )

    def copy_tensor(self, src_name: str, dest_name: str) -> Any:
        """Copy tensor ``src_name`` to ``dest_name`` (across shards if they differ).

        Blocking form of :meth:`copy_tensor_async`."""
        return self._sync(self.copy_tensor_async, src_name, dest_name)

    def rename_tensor_async(self, old_name: str, new_name: str) -> Future:
        """Rename tensor ``old_name`` to ``new_name``."""
        return self._rename(
            TENSOR, self._key(old_name, TENSOR, read=True), self._key(new_name, TENSOR, read=False)
        )

    def rename_tensor(self, old_name: str, new_name: str) -> Any:
        """Rename tensor ``old_name`` to ``new_name``.

        Blocking form of :meth:`rename_tensor_async`."""
        return self._sync(self.rename_tensor_async, old_name, new_name)

    def tensor_exists_async(self, name: str) -> Future:
        """Whether tensor ``name`` exists."""
        return self._exists(self._key(name, TENSOR, read=True), TENSOR)

    def tensor_exists(self, name: str) -> Any:
        """Whether tensor ``name`` exists.

        Blocking form of :meth:`tensor_exists_async`."""
        return self._sync(self.tensor_exists_async, name)

    def dataset_exists_async(self, name: str) -> Future:
        """Whether dataset ``name`` exists."""
        return self._exists(self._key(name, DATASET, read=True), DATASET)

    def dataset_exists(self, name: str) -> Any:
        """Whether dataset ``name`` exists.

        Blocking form of :meth:`dataset_exists_async`."""
        return self._sync(self.dataset_exists_async, name)

    def key_exists_async(self, key: str) -> Future:
        """Whether ``key`` (taken as is, no prefix) holds anything."""
        return self._exists(key, None)

    def key_exists(self, key: str) -> Any:
        """Whether ``key`` (taken as is, no prefix) holds anything.

        Blocking form of :meth:`key_exists_async`."""
        return self._sync(self.key_exists_async, key)

    def _exists(self, key: str, kind: str | None) -> Future:
        return self._call("exists", key, {"kind": kind}, decode=lambda h, p: bool(h["exists"]))

    def _copy(self, kind: str, src: str, dst: str) -> Future:
        if self._shard(src) == self._shard(dst):
            return self._call("copy", src, {"src": src, "dst": dst, "kind": kind})
        if kind == TENSOR:  # move the raw bytes: no decode, so every dtype survives
            return chain(
                self._call("get", src, {"keys": [src]}, decode=_raw_tensor),
                lambda raw: self._call("put", dst, {"keys": [dst], "metas": [raw[0]]}, [raw[1]]),
            )
        return chain(self._get_dataset(src, src), lambda ds: self._put_dataset(dst, ds))

    def _rename(self, kind: str, src: str, dst: str) -> Future:
        if self._shard(src) == self._shard(dst):
            return self._call("rename", src, {"src": src, "dst": dst, "kind": kind})
        return chain(
            self._copy(kind, src, dst), lambda _: self._call("delete", src, {"kind": kind})
        )

    # -- waiting on the server -------------------------------------------------------------

    def _poll(
        self,
        key: str,
        kind: str | None,
        poll_frequency_ms: int,
        num_tries: int,
        cond: str = "exists",
        n: int = 0,
    ) -> Future:
        """Park a wait on ``key``'s shard for ``poll_frequency_ms * num_tries`` ms (SmartRedis's
        polling budget, spent waiting on the server instead of polling)."""
        if poll_frequency_ms < 0 or num_tries < 0:
            raise ValueError("poll_frequency_ms and num_tries must be non-negative")
        seconds = poll_frequency_ms * num_tries / 1000.0
        return self._call(
            "wait",
            key,
            {"kind": kind, "cond": cond, "n": n, "timeout": seconds},
            decode=_found,
            wait=seconds,
        )

    def poll_tensor_async(self, name: str, poll_frequency_ms: int, num_tries: int) -> Future:
        """True as soon as tensor ``name`` exists; False after
        ``poll_frequency_ms * num_tries`` ms. The shard waits; the client does not poll."""
        return self._poll(self._key(name, TENSOR, read=True), TENSOR, poll_frequency_ms, num_tries)

    def poll_tensor(self, name: str, poll_frequency_ms: int, num_tries: int) -> Any:
        """True as soon as tensor ``name`` exists; False after

        Blocking form of :meth:`poll_tensor_async`."""
        return self._sync(self.poll_tensor_async, name, poll_frequency_ms, num_tries)

    def poll_dataset_async(self, name: str, poll_frequency_ms: int, num_tries: int) -> Future:
        """True as soon as dataset ``name`` exists (see ``poll_tensor``)."""
        return self._poll(
            self._key(name, DATASET, read=True), DATASET, poll_frequency_ms, num_tries
        )

    def poll_dataset(self, name: str, poll_frequency_ms: int, num_tries: int) -> Any:
        """True as soon as dataset ``name`` exists (see ``poll_tensor``).

        Blocking form of :meth:`poll_dataset_async`."""
        return self._sync(self.poll_dataset_async, name, poll_frequency_ms, num_tries)

    def poll_key_async(self, key: str, poll_frequency_ms: int, num_tries: int) -> Future:
        """True as soon as ``key`` (no prefix) holds anything (see ``poll_tensor``)."""
        return self._poll(key, None, poll_frequency_ms, num_tries)

    def poll_key(self, key: str, poll_frequency_ms: int, num_tries: int) -> Any:
        """True as soon as ``key`` (no prefix) holds anything (see ``poll_tensor``).

        Blocking form of :meth:`poll_key_async`."""
        return self._sync(self.poll_key_async, key, poll_frequency_ms, num_tries)

    def poll_list_length_async(
        self, name: str, list_length: int, poll_frequency_ms: int, num_tries: int
    ) -> Future:
        """True as soon as list ``name`` has exactly ``list_length`` datasets."""
        return self._poll_list(name, list_length, poll_frequency_ms, num_tries, "len_eq")

    def poll_list_length(
        self, name: str, list_length: int, poll_frequency_ms: int, num_tries: int
    ) -> Any:
        """True as soon as list ``name`` has exactly ``list_length`` datasets.

        Blocking form of :meth:`poll_list_length_async`."""
        return self._sync(
            self.poll_list_length_async, name, list_length, poll_frequency_ms, num_tries
        )

    def poll_list_length_gte_async(
        self, name: str, list_length: int, poll_frequency_ms: int, num_tries: int
    ) -> Future:
        """True as soon as list ``name`` has at least ``list_length`` datasets."""
        return self._poll_list(name, list_length, poll_frequency_ms, num_tries, "len_ge")

    def poll_list_length_gte(
        self, name: str, list_length: int, poll_frequency_ms: int, num_tries: int
    ) -> Any:
        """True as soon as list ``name`` has at least ``list_length`` datasets.

        Blocking form of :meth:`poll_list_length_gte_async`."""
        return self._sync(
            self.poll_list_length_gte_async, name, list_length, poll_frequency_ms, num_tries
        )

    def poll_list_length_lte_async(
        self, name: str, list_length: int, poll_frequency_ms: int, num_tries: int
    ) -> Future:
        """True as soon as list ``name`` has at most ``list_length`` datasets."""
        return self._poll_list(name, list_length, poll_frequency_ms, num_tries, "len_le")

    def poll_list_length_lte(
        self, name: str, list_length: int, poll_frequency_ms: int, num_tries: int
    ) -> Any:
        """True as soon as list ``name`` has at most ``list_length`` datasets.

        Blocking form of :meth:`poll_list_length_lte_async`."""
        return self._sync(
            self.poll_list_length_lte_async, name, list_length, poll_frequency_ms, num_tries
        )

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

        return self._call(
            "wait",
            key,
            {"kind": TENSOR, "timeout": seconds, "fetch": True},
            decode=decode,
            wait=seconds,
        )

    def wait_tensor(self, name: str, timeout: float | None = None, as_torch: bool = False) -> Any:
        """The tensor ``name`` as soon as it is stored; ``Timeout`` after ``timeout`` seconds

        Blocking form of :meth:`wait_tensor_async`."""
        return self._sync(self.wait_tensor_async, name, timeout, as_torch)

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

    def flush_db(self, addresses: list[str] | None = None) -> Any:
        """Delete every key on the given shards (default: all).

        Blocking form of :meth:`flush_db_async`."""
        return self._sync(self.flush_db_async, addresses)

    def get_db_node_info_async(self, addresses: list[str] | None = None) -> Future:
        """Per shard: address, keys, bytes, ops, clients, uptime."""
        return self._broadcast(
            "info",
            addresses,
            decode=lambda h, p: {k: v for k, v in h.items() if k not in ("v", "id", "ok")},
        )

    def get_db_node_info(self, addresses: list[str] | None = None) -> Any:
        """Per shard: address, keys, bytes, ops, clients, uptime.

        Blocking form of :meth:`get_db_node_info_async`."""
        return self._sync(self.get_db_node_info_async, addresses)

    def save_async(
        self, path: str | os.PathLike | None = None, addresses: list[str] | None = None
    ) -> Future:
        """Snapshot the given shards (default: all) into directory ``path`` (default: each
        shard's ``--save-dir``); the result lists what each shard wrote (file, sha256, bytes,
        keys, seconds, pause). Each shard's file is consistent as of the moment it takes the
        request; docs/operations.md."""
        fields = {} if path is None else {"dir": os.path.abspath(os.fspath(path))}
        return self._broadcast("save", addresses, _header_fields, list, fields, save_timeout())

    def save(
        self, path: str | os.PathLike | None = None, addresses: list[str] | None = None
    ) -> Any:
        """Snapshot the given shards (default: all) into directory ``path`` (default: each
        shard's --save-dir).

        Blocking form of :meth:`save_async`."""
        return self._sync(self.save_async, path, addresses)

    def shutdown_async(self, addresses: list[str] | None = None) -> Future:
        """Stop the given shards (default: all); their data is gone."""
        return self._broadcast("shutdown", addresses, combine=lambda _: None)

    def shutdown(self, addresses: list[str] | None = None) -> Any:
        """Stop the given shards (default: all); their data is gone.

        Blocking form of :meth:`shutdown_async`."""
        return self._sync(self.shutdown_async, addresses)
