"""One shard: a ZeroMQ ROUTER socket served by a single thread, Redis-style.

The loop receives a request, runs its handler against the :class:`Store` and sends the
reply. Nothing in a handler blocks: polls park a waiter in the store and are answered when
the key changes or their deadline passes. Every request gets an answer — a bad one gets a
``ProtocolError`` — and nothing a client sends can stop the loop except ``shutdown``.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
import traceback
from collections.abc import Callable

import zmq
from zmq.utils.monitor import recv_monitor_message

from memstore import auth, config, shm, tensors, wire
from memstore.config import (
    DEFAULT_CLIENT_OUTPUT_LIMIT,
    DEFAULT_MAX_CLIENT_WAITERS,
    DEFAULT_MAX_WAITERS,
    DEFAULT_MODELS,
    MAX_FRAMES,
    MAX_KEY_BYTES,
    MAX_SHARDS,
    MAX_WAIT_TIMEOUT,
    MODEL_POLICIES,
    MODELS_ALL,
)
from memstore.errors import AuthError, MemstoreError, ProtocolError, RemoteError
from memstore.kinds import DATASET, LIST, REPLICATED, TENSOR
from memstore.placement import key_shard
from memstore.server.executor import Executor
from memstore.server.model_ops import ModelOps
from memstore.server.output import OutputLimits, source_fd
from memstore.server.peers import Peers
from memstore.server.persist_ops import BEFORE_RESTORE, PersistOps
from memstore.server.store import Entry, Store

log = logging.getLogger(__name__)

Handler = Callable[[wire.Request, bytes], "list | None"]
#: Longest the loop sleeps in poll, so ``stop()`` from another thread takes effect.
_IDLE_POLL_MS = 500
_KINDS = (TENSOR, DATASET, LIST, *REPLICATED, None)
_CONDITIONS = {
    "exists": lambda n, length: True,
    "len_eq": lambda n, length: length == n,
    "len_ge": lambda n, length: length >= n,
    "len_le": lambda n, length: length <= n,
}


class Shard(ModelOps, PersistOps):
    """A shard server bound to one address (``tcp://host:port`` or ``ipc://path``).

    Args:
        address: where to bind; ``tcp://127.0.0.1:0`` picks a free port.
        max_memory: byte cap on stored data (0 = unlimited); writes past it get ``StoreFull``.
        max_message: largest request accepted, in bytes (0 = unlimited); a single frame
            over it makes libzmq drop the connection before the frame is kept in memory.
        max_waiters: most parked waits (polls) on this shard (0 = unlimited).
        max_client_waiters: most parked waits of one client connection (0 = unlimited).
        client_output_limit: most bytes of replies one client may leave unread before it is
            disconnected (0 = unlimited; ``memstore/server/output.py``).
        models: which client code runs here: ``"none"``, ``"torchscript"`` (the default) or
            ``"all"`` (cloudpickled modules and functions too: arbitrary code!).
        allow_pickle: the same as ``models="all"`` (older spelling).
        model_threads: model workers per device.
        intra_op_threads: ``torch.set_num_threads`` for model runs (0: torch's default).
        model_timeout: seconds a model run may take before its caller gets ``ModelError``.
        shm: offer the same-node shared-memory path (None: unless ``MEMSTORE_SHM=0``).
        curve: ``memstore.auth.ServerKeys``: speak CURVE and admit only their clients, with
            their admin policy (None: plain sockets, every client admitted).
        restore: a snapshot directory to load, once the shard knows its cluster
            (docs/operations.md).
        save_every: seconds between snapshots to ``save_dir`` (0: only when asked).
        save_dir: where periodic saves, and ``save`` requests naming no directory, write.
    """

    def __init__(
        self,
        address: str,
        *,
        max_memory: int = 0,
        max_message: int = 0,
        models: str | None = None,
        allow_pickle: bool = False,
        model_threads: int = 1,
        intra_op_threads: int = 0,
        model_timeout: float = 300.0,
        max_waiters: int = DEFAULT_MAX_WAITERS,
        max_client_waiters: int = DEFAULT_MAX_CLIENT_WAITERS,
        client_output_limit: int = DEFAULT_CLIENT_OUTPUT_LIMIT,
        shm: bool | None = None,
        curve: auth.ServerKeys | None = None,
        restore: str | None = None,
        save_every: float = 0.0,
        save_dir: str | None = None,
    ):
        models = models or (MODELS_ALL if allow_pickle else DEFAULT_MODELS)
        if models not in MODEL_POLICIES:
            raise ValueError(f"models must be one of {MODEL_POLICIES}, got {models!r}")
        self.models = models
        self.store = Store(max_memory, max_waiters, max_client_waiters)
        self.max_message = max_message
        self.model_timeout = model_timeout
        self.executor = Executor(
            Peers(
                timeout=max(30.0, model_timeout),
                curve=curve.cluster_client() if curve is not None else None,
            ),
            self._owner,
            self._store_outputs,
            spill=self._output_file,
            model_threads=model_threads,
            intra_op_threads=intra_op_threads,
            allow_pickle=models == MODELS_ALL,
        )
        self._init_models()
        self._init_persist(restore, save_every, save_dir)
        self.cluster: list[str] = []
        self.index = 0
        self.ops = 0
        self.messages = 0  # requests arrive in fewer messages when clients batch them
        self.clients = 0
        self.started = time.time()
        self._running = False
        self._in_batch = False
        self._context = zmq.Context.instance()
        self._guard = auth.Guard.acquire(self._context, curve) if curve is not None else None
        self._socket = self._context.socket(zmq.ROUTER)
        if self._guard is not None:
            self._guard.apply(self._socket)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.SNDHWM, 0)  # never drop a reply to a slow reader
        self._socket.setsockopt(zmq.RCVHWM, 0)
        if max_message:  # refused while it arrives, not after it is all in memory
            self._socket.setsockopt(zmq.MAXMSGSIZE, max_message)
        # Which connection (file descriptor) each waiting client came on, so that its
        # waiters go when the monitor reports that connection closed.
        self._live_fds: set[int] = set()
        self._peer_fd: dict[bytes, int] = {}
        self._fd_peers: dict[int, set[bytes]] = {}
        self._source = None
        self._source_identity = b""
        self._monitor = self._socket.get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
        if address.startswith("tcp://") and address.rsplit(":", 1)[1] in ("0", "*"):
            port = self._socket.bind_to_random_port(address.rsplit(":", 1)[0])
            address = f"{address.rsplit(':', 1)[0]}:{port}"
        else:
            _private_ipc_dir(address)
            self._socket.bind(address)
            _private_ipc_socket(address)
        self.address = address
        self.output = OutputLimits(client_output_limit, address)
        self.shm = _shm_area(shm, self._room)
        self._handlers: dict[str, Handler] = {
            name[4:]: getattr(self, name) for name in dir(self) if name.startswith("_op_")
        }

    # -- the loop --------------------------------------------------------------------------

    def serve(self) -> None:
        """Serve until ``shutdown`` is requested, :meth:`stop` is called or KeyboardInterrupt."""
        self._running = True
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        poller.register(self.executor.wake_fd, zmq.POLLIN)
        log.info("shard %s serving (pid %d)", self.address, os.getpid())
        try:
            if self.cluster:  # told before serving (MPI): restore before the first request
                self._restore_if_pending()
            while self._running:
                # No request ends the loop: _handle answers any error in a handler, the
                # store logs any error in a waiter's answer, and every deadline is bounded.
                # A bug in the loop itself still stops the shard, loudly, rather than spin.
                next_model_deadline = self._expire_models(time.monotonic())
                events = dict(poller.poll(self._poll_timeout_ms(next_model_deadline)))
                if self._monitor in events:
                    self._count_clients()
                if self._socket in events:
                    self._drain()
                if self.executor.wake_fd in events:
                    self.executor.run_completions()
                self.store.expire()
                self._maybe_autosave(time.monotonic())
                if self.shm is not None:
                    self.shm.maybe_sweep(time.monotonic())
        except KeyboardInterrupt:
            log.info("shard %s interrupted", self.address)
        finally:
            self.close()

    def stop(self) -> None:
        """Ask the loop to exit (thread-safe; takes effect within half a second)."""
        self._running = False

    def bind(self, address: str) -> None:
        """Listen on one more address, e.g. a node-local ``ipc://`` path next to TCP.

        ``address`` stays the shard's name in the cluster list; call before :meth:`serve`.
        """
        _private_ipc_dir(address)
        self._socket.bind(address)
        _private_ipc_socket(address)

    def close(self) -> None:
        self._running = False
        if not self._socket.closed:
            self._close_saves()
            self.executor.close()
            self._socket.disable_monitor()  # before closing its PAIR, or libzmq can wedge
            self._monitor.close(linger=0)
            self._socket.close(linger=0)
            if self.shm is not None:
                self.store.flush()  # its files go with the directory
                self.shm.close()
            if self._guard is not None:
                self._guard.release()
            log.info("shard %s closed", self.address)

    def _poll_timeout_ms(self, next_model_deadline: float | None) -> int:
        deadlines = [d for d in (self.store.next_deadline(), next_model_deadline) if d is not None]
        deadline = min(deadlines) if deadlines else None
        if deadline is None:
            return _IDLE_POLL_MS
        left_ms = (deadline - time.monotonic()) * 1000  # clamped as a float: int(inf) raises
        return int(max(0.0, min(float(_IDLE_POLL_MS), left_ms + 1)))

    def _drain(self, budget: int = 256) -> None:
        """Answer up to ``budget`` queued requests without going back to poll."""
        socket = self._socket
        for _ in range(budget):
            if not socket.get(zmq.EVENTS) & zmq.POLLIN:  # cheaper than a recv raising Again
                return
            frames = self._recv()
            self.messages += 1
            identity = frames[0].bytes
            self._source_identity = identity
            if len(frames) > MAX_FRAMES + 1:
                reply = wire.error_reply(
                    _request_id(frames[1]),
                    ProtocolError(
                        f"a message of more than {MAX_FRAMES} frames was refused by shard "
                        f"{self.address}: send fewer tensors per request"
                    ),
                )
            else:
                reply = self._handle(identity, frames[1:])
            if reply is not None:
                self._send(identity, reply)

    def _recv(self) -> list:
        """One message's frames; past :data:`MAX_FRAMES` the rest are read and dropped, so a
        message of millions of empty frames never becomes millions of Python objects."""
        recv = self._socket.recv
        frame = recv(copy=False)
        frames = [frame]
        while frame.more:
            frame = recv(copy=False)
            if len(frames) <= MAX_FRAMES + 1:
                frames.append(frame)
        return frames

    def _send(self, identity: bytes, frames: list) -> None:
        """One reply: the routing id, then its frames (stored payloads go without a copy);
        nothing to a client disconnected for leaving too many replies unread."""
        source = (
            self._source if identity == self._source_identity else self._peer_fd.get(identity, -1)
        )
        evicted = self.output.evicted
        frames = self.output.admit(identity, frames, source)
        if frames is None:
            if self.output.evicted != evicted:
                self.store.drop_owner(identity)
            return
        send, last = self._socket.send, len(frames) - 1
        try:
            send(identity, zmq.SNDMORE)
            for i, frame in enumerate(frames):
                send(frame, zmq.SNDMORE if i < last else 0, copy=False)
        except zmq.ZMQError as exc:  # the client went away; its answer has nowhere to go
            log.debug("reply to a departed client dropped: %s", exc)

    def _handle(self, identity: bytes, frames: list) -> list | None:
        self.ops += 1
        req_id = -1
        self._source = frames[0]  # which connection it came on, read only if it waits
        try:
            request = wire.parse_request(frames)
            req_id = request.id  # first, so that even a refusal reaches the waiting caller
            size = sum(len(f) for f in frames)
            if self.max_message and size > self.max_message:
                raise ProtocolError(
                    f"request of {size} bytes exceeds this shard's --max-message "
                    f"{self.max_message}: split the data or raise the limit"
                )
            handler = self._handlers.get(request.op)
            if handler is None:
                raise ProtocolError(f"unknown operation {request.op!r}")
            if request.op in auth.ADMIN_OPS and self._guard is not None:
                refusal = self._guard.admin_refusal(frames[0])
                if refusal is not None:
                    raise AuthError(f"shard {self.address} refused {request.op}: {refusal}")
            if self._restore_dir is not None and request.op not in BEFORE_RESTORE:
                self._restore_if_pending()  # never told its cluster: a shard on its own
            return handler(request, identity)
        except MemstoreError as exc:
            return wire.error_reply(req_id, exc)
        except Exception as exc:  # a bug in a handler must not take the shard down
            log.exception("request %s failed", req_id)
            detail = "".join(traceback.format_exception(exc))
            return wire.error_reply(req_id, RemoteError(f"shard {self.address}: {detail}"))

    def _count_clients(self) -> None:
        """Count connections opened and closed; forget the waiters of closed ones."""
        while True:
            try:
                event = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            fd = int(event["value"])
            if event["event"] == zmq.EVENT_ACCEPTED:
                self.clients += 1
                self._live_fds.add(fd)
            else:
                self.clients -= 1
                self._live_fds.discard(fd)
                self.output.closed(fd)
                for identity in self._fd_peers.pop(fd, ()):
                    del self._peer_fd[identity]
                    dropped = self.store.drop_owner(identity)
                    log.debug("shard %s: a client left, %d waits dropped", self.address, dropped)

    def _waiting_client_is_connected(self, identity: bytes) -> bool:
        """Note the connection a waiting client came on; False if it has closed already
        (its requests can outlive it in the socket's queue)."""
        fd = source_fd(self._source)
        if fd < 0 or self._peer_fd.get(identity) == fd:
            return True
        # Its ACCEPTED event, and the DISCONNECTED of an earlier owner of the same descriptor,
        # were queued before its first message: read them before trusting ``fd``.
        self._count_clients()
        if fd not in self._live_fds:
            return False
        self._peer_fd[identity] = fd
        self._fd_peers.setdefault(fd, set()).add(identity)
        return True

    # -- helpers ---------------------------------------------------------------------------

    def _key(self, request: wire.Request, name: str = "key", kind: str | None = None) -> str:
        kind = kind or request.header.get("kind")
        return self._check_key(
            wire.field(request.header, name, str), request.op, owned=kind not in REPLICATED
        )

    def _check_key(self, key: object, op: str, owned: bool = True) -> str:
        """Refuse keys that are not strings, are empty or too long, or (``owned``) live on
        another shard; models and scripts live on every shard."""
        if not isinstance(key, str) or not key or len(key.encode()) > MAX_KEY_BYTES:
            raise ProtocolError(f"{op}: key {key!r} must be a string of 1 to {MAX_KEY_BYTES} bytes")
        if owned and len(self.cluster) > 1 and key_shard(key, len(self.cluster)) != self.index:
            owner = self.cluster[key_shard(key, len(self.cluster))]
            raise ProtocolError(
                f"key {key!r} belongs to shard {owner}, not {self.address}: this client's "
                "shard list differs from the cluster's; connect with the cluster's address list"
            )
        return key

    @staticmethod
    def _kind(request: wire.Request) -> str | None:
        kind = request.header.get("kind")
        if kind not in _KINDS:
            raise ProtocolError(f"{request.op}: unknown kind {kind!r}")
        return kind

    def _owns(self, key: str) -> bool:
        n = len(self.cluster)
        return n <= 1 or key_shard(key, n) == self.index

    def _store_outputs(self, items: list) -> None:
        """Store model outputs this shard owns, all or none (loop thread); the files of
        outputs refused (``StoreFull``) are unlinked."""
        entries = []
        for key, (meta, buffer, file) in items:
            entry = Entry.of(TENSOR, meta, [buffer], key)
            entry.shm = file  # written by the worker (_output_file)
            entries.append((key, entry))
        try:
            self.store.check_room([(key, entry.nbytes) for key, entry in entries])
        except BaseException:
            _discard_files(entries)
            raise
        for key, entry in entries:
            self.store.put(key, entry)

    def _output_file(self, key: str, buffer: memoryview) -> tuple | None:
        """A model worker's thread: a run's output this shard stores, of at least
        ``config.shm_threshold()`` bytes, as a file of its shared-memory directory, which
        gets of it name
        (``(mapping, file)``); None keeps it in memory (no such directory, a small output,
        or the file could not be written: a full ``/dev/shm`` never fails the run)."""
        area = self.shm
        if area is None or buffer.nbytes < config.shm_threshold():
            return None
        try:
            return area.write(buffer, key)
        except OSError as exc:
            log.debug("shard %s: output %r stays in memory: %s", self.address, key, exc)
            return None

    def _owner(self, key: str) -> str | None:
        """The address of the shard that owns ``key``; None when it is this one."""
        return None if self._owns(key) else self.cluster[key_shard(key, len(self.cluster))]

    # -- admin -----------------------------------------------------------------------------

    def _op_hello(self, request, identity):
        return wire.reply(
            request.id,
            {
                "shards": self.cluster,
                "index": self.index,
                "address": self.address,
                "pid": os.getpid(),
                "max_message": self.max_message,
                # what a client may use beyond the version's basics
                "features": ["batch", "shm"] if self.shm is not None else ["batch"],
                "shm": self.shm.offer() if self.shm is not None else None,
            },
        )

    def _op_cluster(self, request, identity):
        """Learn the shard list once, at startup; no client can rewrite it later."""
        header = request.header
        self.join(wire.field(header, "shards", list), wire.field(header, "index", int))
        return wire.reply(request.id)

    def join(self, shards: list, index: int) -> None:
        """Take ``shards`` as this shard's cluster, with this shard at ``index``: set once.

        Called by the ``cluster`` op (launchers, after every shard answers) and by
        ``memstore-server --cluster`` (a shard restarted in place knows its cluster before it
        serves). A repeat of the same list changes nothing.

        Raises:
            ProtocolError: a malformed list, an index that does not name this shard, a
                different list than the one already set, or keys stored already.
        """
        if not shards or len(shards) > MAX_SHARDS:
            raise ProtocolError(f"cluster: field 'shards' must list 1 to {MAX_SHARDS} addresses")
        if not all(isinstance(s, str) and s for s in shards) or len(set(shards)) != len(shards):
            raise ProtocolError("cluster: field 'shards' must be distinct address strings")
        if not 0 <= index < len(shards) or shards[index] != self.address:
            raise ProtocolError(
                f"cluster: field 'index' {index} must name this shard ({self.address}) in 'shards'"
            )
        if self.cluster:
            if (shards, index) == (self.cluster, self.index):
                return  # a repeated startup call changes nothing
            raise ProtocolError(
                f"cluster: shard {self.address} already serves a cluster of "
                f"{len(self.cluster)}; its topology is fixed after start"
            )
        if len(self.store):
            raise ProtocolError(
                f"cluster: shard {self.address} already holds {len(self.store)} keys placed "
                "for a single shard; the shard list must be set before any data is stored"
            )
        self.cluster, self.index = list(shards), index
        self._restore_if_pending()

    def _op_batch(self, request, identity):
        """Several requests in one message (a client's pipeline): each is handled as if it
        came alone, in order, and those answered now share one reply message."""
        counts = wire.field(request.header, "n", list)
        if not all(type(c) is int and c >= 1 for c in counts) or sum(counts) != len(
            request.payload
        ):
            raise ProtocolError("batch: part frame counts must be positive and match the frames")
        if self._in_batch:
            raise ProtocolError("batch: batches do not nest")
        counts_out, frames_out, at = [], [], 0
        self._in_batch = True
        try:
            for count in counts:
                reply = self._handle(identity, request.payload[at : at + count])
                at += count
                if reply is not None:  # a parked wait answers on its own later
                    counts_out.append(len(reply))
                    frames_out.extend(reply)
        finally:
            self._in_batch = False
        self.ops -= 1  # the parts were counted, the envelope is not an operation
        return wire.reply(0, {"n": counts_out}, frames_out)

    def _room(self) -> float:
        """Bytes the store may still take under --max-memory: spare shared-memory files
        (read by the reaper thread) stay within it."""
        store = self.store
        return store.max_memory - store.used - store.held if store.max_memory else float("inf")

    def _op_info(self, request, identity):
        store = self.store
        return wire.reply(request.id, {
            "address": self.address, "keys": len(store), "bytes": store.used,
            "max_memory": store.max_memory, "max_message": self.max_message,
            "rss": _rss(), "rss_peak": _rss_peak(), "ops": self.ops, "messages": self.messages,
            "clients": self.clients,
            "parked": store.parked, "parked_clients": store.parked_clients,
            "max_waiters": store.max_waiters, "max_client_waiters": store.max_client_waiters,
            "client_output_limit": self.output.limit, "clients_evicted": self.output.evicted,
            "models": self.models, "uptime": time.time() - self.started,
            "pid": os.getpid(), "index": self.index, "shards": len(self.cluster) or 1,
            "shm_bytes": store.shm_used, "shm_dir": self.shm.path if self.shm else None,
            "shm_spare_bytes": self.shm.spare_bytes() if self.shm else 0,
            "saves": self.saves, "last_save": self.last_save, "saving": self._saver is not None,
        })  # fmt: skip

    def _op_flush(self, request, identity):
        self.store.flush()
        for name in list(self.executor.models):
            self.executor.discard(name)
        return wire.reply(request.id)

    def _op_keys(self, request, identity):
        return wire.reply(request.id, {"keys": self.store.keys()})

    def _op_shutdown(self, request, identity):
        log.info("shard %s: shutdown requested", self.address)
        self._running = False
        return wire.reply(request.id)

    # -- tensors ---------------------------------------------------------------------------

    def _tensor_entries(self, request) -> list[tuple[str, Entry]]:
        keys = wire.field(request.header, "keys", list)
        metas = wire.field(request.header, "metas", list)
        if not (len(keys) == len(metas) == len(request.payload)):
            raise ProtocolError(
                f"put: {len(keys)} keys, {len(metas)} metas and {len(request.payload)} "
                "payload frames must match"
            )
        files = self._upload_names(request, len(keys), "put")
        area = request.header.get("area")
        entries = []
        try:
            for i, (meta, frame) in enumerate(zip(metas, request.payload, strict=False)):
                key = self._check_key(keys[i], request.op)
                file = files[i] if files else None
                if file is None:
                    tensors.parse_meta(meta, len(frame), key)
                    entries.append((key, Entry.of(TENSOR, meta, [frame], key)))
                    continue
                view, adopted = self.shm.adopt(area, file, tensors.meta_nbytes(meta, key), key)
                entry = Entry.of(TENSOR, meta, [view], key)
                entry.shm = adopted
                entries.append((key, entry))
        except BaseException:
            _discard_files(entries)
            raise
        return entries

    def _upload_names(self, request, count: int, what: str) -> list | None:
        """A put's shared-memory uploads, one name (or None: a frame) per tensor."""
        files = request.header.get("files")
        if files is not None and (
            self.shm is None or not isinstance(files, list) or len(files) != count
        ):
            raise ProtocolError(
                f"{what}: field 'files' needs shared memory and one name per tensor"
            )
        return files

    def _op_put(self, request, identity):
        entries = self._tensor_entries(request)
        try:
            self.store.check_room([(key, e.nbytes) for key, e in entries])
        except BaseException:
            _discard_files(entries)
            raise
        for key, entry in entries:
            self.store.put(key, entry)
        return wire.reply(request.id)

    def _op_get(self, request, identity):
        keys = wire.field(request.header, "keys", list)
        entries = [self.store.get(self._check_key(k, request.op), TENSOR) for k in keys]
        fields = {"metas": [e.meta for e in entries]}
        frames = [e.frames[0] for e in entries]
        if request.header.get("shm") is True and any(e.shm is not None for e in entries):
            names = [None if e.shm is None else e.shm.name for e in entries]
            frames = self._name_files(fields, names, frames)
        return wire.reply(request.id, fields, frames)

    def _name_files(self, fields: dict, names: list, frames: list) -> list:
        """A get's reply names the files a client maps (and this shard's offer) instead of
        sending their bytes: the frames, those of files empty."""
        fields["files"], fields["shm"] = names, self.shm.offer()
        return [f if n is None else b"" for n, f in zip(names, frames, strict=True)]

    def _op_delete(self, request, identity):
        key, kind = self._key(request), self._kind(request)
        self.store.delete(key, kind)
        if kind in REPLICATED:
            self.executor.discard(key)
        return wire.reply(request.id)

    def _op_exists(self, request, identity):
        return wire.reply(
            request.id, {"exists": self.store.exists(self._key(request), self._kind(request))}
        )

    def _op_copy(self, request, identity):
        self.store.copy(self._key(request, "src"), self._key(request, "dst"), self._kind(request))
        return wire.reply(request.id)

    def _op_rename(self, request, identity):
        self.store.rename(self._key(request, "src"), self._key(request, "dst"), self._kind(request))
        return wire.reply(request.id)

    # -- datasets and lists ----------------------------------------------------------------

    def _op_put_dataset(self, request, identity):
        key = self._key(request)
        layout = wire.field(request.header, "dataset", dict)
        specs = layout.get("tensors", [])
        if not isinstance(specs, list) or len(specs) != len(request.payload):
            raise ProtocolError(f"dataset {key!r}: tensor list and payload frames differ")
        files = self._upload_names(request, len(specs), f"dataset {key!r}")
        frames, adopted = list(request.payload), []
        try:
            for i, spec in enumerate(specs):
                if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                    raise ProtocolError(f"dataset {key!r}: each tensor needs a name")
                name = f"{key}.{spec['name']}"
                if files and files[i] is not None:
                    nbytes = tensors.meta_nbytes(spec.get("meta"), name)
                    frames[i], file = self.shm.adopt(request.header.get("area"), files[i],
                                                     nbytes, name)  # fmt: skip
                    adopted.append((i, file))
                else:
                    tensors.parse_meta(spec.get("meta"), len(frames[i]), name)
            entry = Entry.of(DATASET, layout, frames, key)
            entry.shm = shm.ShmFiles(adopted) if adopted else None
            self.store.put(key, entry)
        except BaseException:
            for _, file in adopted:
                file.unlink()
            raise
        return wire.reply(request.id)

    def _op_get_dataset(self, request, identity):
        entry = self.store.get(self._key(request), DATASET)
        fields, frames = {"dataset": entry.meta}, entry.frames
        if request.header.get("shm") is True and entry.shm is not None:
            frames = self._name_files(fields, entry.shm.names(len(frames)), frames)
        return wire.reply(request.id, fields, frames)

    @staticmethod
    def _list_items(request) -> list[str]:
        items = wire.field(request.header, "items", list)
        if not all(isinstance(i, str) for i in items):
            raise ProtocolError(f"{request.op}: items must be strings")
        return items

    def _op_list_push(self, request, identity):
        items = self._list_items(request)
        return wire.reply(request.id, {"length": self.store.list_push(self._key(request), items)})

    def _op_list_set(self, request, identity):
        key = self._key(request)
        items = self._list_items(request)
        self.store.put(key, Entry.of(LIST, list(items), [], key))
        return wire.reply(request.id)

    def _op_list_range(self, request, identity):
        key = self._key(request)
        start = wire.field(request.header, "start", int)
        end = wire.field(request.header, "end", int)
        items = self.store.get(key, LIST).meta if self.store.exists(key) else []
        # Redis LRANGE: inclusive end, negative indices count from the back; no list is empty.
        n = len(items)
        start = max(start + n if start < 0 else start, 0)
        end = end + n if end < 0 else min(end, n - 1)
        return wire.reply(request.id, {"items": items[start : end + 1] if start <= end else []})

    def _op_list_len(self, request, identity):
        key = self._key(request)
        length = len(self.store.get(key, LIST).meta) if self.store.exists(key) else 0
        return wire.reply(request.id, {"length": length})

    # -- waiting ---------------------------------------------------------------------------

    def _op_wait(self, request, identity):
        """Answer when the key exists (with the right kind) or a list length condition holds,
        or at the deadline with ``found: False``. With ``fetch`` the tensor comes along."""
        key = self._key(request)
        kind = self._kind(request)
        condition = _CONDITIONS.get(wire.field(request.header, "cond", str, "exists"))
        if condition is None:
            raise ProtocolError(f"wait {key!r}: unknown condition {request.header.get('cond')!r}")
        n = wire.field(request.header, "n", int, 0)
        timeout = float(wire.field(request.header, "timeout", (int, float)))
        fetch = bool(request.header.get("fetch")) and kind == TENSOR
        if not 0 <= timeout <= MAX_WAIT_TIMEOUT:  # NaN and inf fail too
            raise ProtocolError(
                f"wait {key!r}: field 'timeout' must be 0 to {MAX_WAIT_TIMEOUT:g} seconds, "
                f"got {timeout!r}"
            )
        if not self._waiting_client_is_connected(identity):
            return None  # it left: nobody to answer, nothing to park
        req_id = request.id  # not the request: a parked closure must not pin its frames

        def ready(entry: Entry | None) -> bool:
            if entry is None:
                return kind == LIST and condition(n, 0)
            if kind is not None and entry.kind != kind:
                return False
            return condition(n, len(entry.meta) if entry.kind == LIST else 0)

        def answer(entry: Entry | None) -> None:
            if entry is None and self.store.exists(key):  # the deadline: judge what is there
                entry = self.store.get(key)
            if not ready(entry):
                self._send(identity, wire.reply(req_id, {"found": False}))
            elif fetch:
                self._send(
                    identity, wire.reply(req_id, {"found": True, "meta": entry.meta}, entry.frames)
                )
            else:
                self._send(identity, wire.reply(req_id, {"found": True}))

        self.store.wait(key, ready, timeout, answer, owner=identity)
        return None  # answered by `answer`, now or later


def _private_ipc_dir(address: str) -> None:
    """Create an ``ipc://`` socket's missing directory private (0700): a socket anyone can
    reach is a shard anyone can use."""
    if address.startswith("ipc://"):
        directory = os.path.dirname(address[len("ipc://") :])
        if directory and not os.path.isdir(directory):
            os.makedirs(directory, mode=0o700, exist_ok=True)


def _private_ipc_socket(address: str) -> None:
    if address.startswith("ipc://") and not address.startswith("ipc://@"):  # @: abstract
        try:
            os.chmod(address[len("ipc://") :], 0o700)
        except OSError as exc:
            log.warning("cannot make %s private: %s", address, exc)


def _shm_area(wanted: bool | None, room) -> shm.ShardArea | None:
    """This shard's shared-memory directory, unless turned off or impossible here."""
    if wanted is False or (wanted is None and not shm.enabled()):
        return None
    try:
        return shm.ShardArea(room=room)
    except OSError as exc:
        log.info("no shared-memory path (%s): clients use the sockets", exc)
        return None


def _discard_files(entries: list) -> None:
    """Unlink the adopted files of entries that will not be stored."""
    for _, entry in entries:
        if entry.shm is not None:
            entry.shm.unlink(entry.frames)  # its mapping goes in the reaper, too


def _request_id(frame: object) -> int:
    """The id of a request refused before it is parsed (-1 if it has none)."""
    try:
        return wire.unpack_header(frame)["id"]
    except ProtocolError:
        return -1


def _rss() -> int:
    """This process's resident memory in bytes (0 where /proc is missing)."""
    return _proc_status("VmRSS:")


def _rss_peak() -> int:
    """The most resident memory this process has used, in bytes: VmHWM, since getrusage's
    maxrss on Linux carries over the parent's peak across fork and exec."""
    peak = _proc_status("VmHWM:")
    if peak:
        return peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux and BSDs count KiB


def _proc_status(field: str) -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024  # the kernel writes kB
    except (OSError, ValueError, IndexError):
        pass
    return 0
