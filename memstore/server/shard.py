"""One shard: a ZeroMQ ROUTER socket served by a single thread, Redis-style.

The loop receives a request, runs its handler against the :class:`Store` and sends the
reply. Nothing in a handler blocks: polls park a waiter in the store and are answered when
the key changes or their deadline passes. Every request gets an answer — a bad one gets a
``ProtocolError`` — and nothing a client sends can stop the loop except ``shutdown``.

This module holds the loop, the sockets, the connections, the request checks and the op
table (:meth:`Shard._handler_table`); the operations themselves live in one mixin per
family: :mod:`.admin_ops`, :mod:`.data_ops`, :mod:`.model_ops`, :mod:`.persist_ops`,
:mod:`.stream_ops`.
"""

from __future__ import annotations

import logging
import os
import time
import traceback

import zmq
from zmq.utils.monitor import recv_monitor_message

from memstore import auth, shm, wire
from memstore.config import (
    DEFAULT_CLIENT_OUTPUT_LIMIT,
    DEFAULT_MAX_CLIENT_WAITERS,
    DEFAULT_MAX_WAITERS,
    DEFAULT_MODELS,
    MAX_FRAMES,
    MAX_KEY_BYTES,
    MODEL_POLICIES,
    MODELS_ALL,
    heartbeat_options,
    unix_enabled,
)
from memstore.errors import AuthError, MemstoreError, ProtocolError, RemoteError
from memstore.kinds import DATASET, LIST, REPLICATED, STREAM, TENSOR
from memstore.placement import key_shard
from memstore.server.admin_ops import AdminOps
from memstore.server.data_ops import DataOps
from memstore.server.executor import Executor
from memstore.server.host import Handler
from memstore.server.model_ops import ModelOps
from memstore.server.output import OutputLimits, source_fd
from memstore.server.peers import Peers
from memstore.server.persist_ops import BEFORE_RESTORE, PersistOps
from memstore.server.store import Store
from memstore.server.stream_ops import StreamOps
from memstore.server.unix import IDENTITY_BYTES as UNIX_IDENTITY_BYTES
from memstore.server.unix import UnixListener

log = logging.getLogger(__name__)

#: Longest the loop sleeps in poll, so ``stop()`` from another thread takes effect.
_IDLE_POLL_MS = 500
_KINDS = (TENSOR, DATASET, LIST, STREAM, *REPLICATED, None)


class Shard(AdminOps, DataOps, ModelOps, PersistOps, StreamOps):
    """A shard server bound to one address (``tcp://host:port`` or ``ipc://path``).

    Its operations come from the mixins (:mod:`.admin_ops`, :mod:`.data_ops`,
    :mod:`.model_ops`, :mod:`.persist_ops`), each typed against
    :class:`~memstore.server.host.ShardHost`; :meth:`_handler_table` names them all.

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
        self.models = _model_policy(models, allow_pickle)
        self.store = Store(max_memory, max_waiters, max_client_waiters)
        self.max_message = max_message
        self.model_timeout = model_timeout
        self.executor = self._make_executor(curve, model_threads, intra_op_threads)
        self._init_streams(_peers(curve, 30.0))
        self._init_models()
        self._init_persist(restore, save_every, save_dir)
        self._init_counters()
        self._open_socket(curve, max_message)
        self._init_connections()
        self.address = self._bind_first(address)
        self.output = OutputLimits(client_output_limit, self.address)
        self.shm = _shm_area(shm, self._room)
        self.unix = self._open_unix(curve, client_output_limit)
        self._handlers = self._handler_table()

    def _make_executor(
        self, curve: auth.ServerKeys | None, model_threads: int, intra_op_threads: int
    ) -> Executor:
        """The model workers, reaching other shards as this cluster's CURVE client."""
        return Executor(
            _peers(curve, max(30.0, self.model_timeout)),
            self._owner,
            self._store_outputs,
            spill=self._output_file,
            model_threads=model_threads,
            intra_op_threads=intra_op_threads,
            allow_pickle=self.models == MODELS_ALL,
        )

    def _init_counters(self) -> None:
        """The cluster this shard is part of (none yet) and what ``info`` counts."""
        self.cluster: list[str] = []
        self.index = 0
        self.ops = 0
        self.messages = 0  # requests arrive in fewer messages when clients batch them
        self.clients = 0
        self.shm_gets = 0  # tensors a get answered with a file name: proof of the shm path
        self.started = time.time()
        self._running = False
        self._in_batch = False

    def _open_socket(self, curve: auth.ServerKeys | None, max_message: int) -> None:
        """The ROUTER socket every request comes in on, and its connection monitor."""
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
        for option, value in heartbeat_options():  # a silent client is dropped, its waits too
            self._socket.setsockopt(option, value)
        self._monitor = self._socket.get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)

    def _init_connections(self) -> None:
        """Which connection (file descriptor) each waiting client came on, so that its
        waiters go when the monitor reports that connection closed."""
        self._live_fds: set[int] = set()
        self._peer_fd: dict[bytes, int] = {}
        self._fd_peers: dict[int, set[bytes]] = {}
        self._source = None
        self._source_identity = b""

    def _open_unix(self, curve: auth.ServerKeys | None, output_limit: int) -> UnixListener | None:
        """The same-node direct path (``server/unix.py``), unless ``MEMSTORE_UNIX=0``, the
        shard is in-process (``inproc://``) or speaks CURVE: its admin rules go by the
        client's key, which a Unix socket does not carry."""
        if curve is not None or not unix_enabled() or self.address.startswith("inproc://"):
            return None
        try:
            return UnixListener(self.address, self._answer, self._client_left, MAX_FRAMES + 1,
                                self.max_message, output_limit)  # fmt: skip
        except OSError as exc:
            log.info("no Unix socket (%s): clients use ZeroMQ", exc)
            return None

    def _bind_first(self, address: str) -> str:
        """Bind the shard's own address; the address bound (a free port filled in)."""
        if address.startswith("tcp://") and address.rsplit(":", 1)[1] in ("0", "*"):
            host = address.rsplit(":", 1)[0]
            return f"{host}:{self._socket.bind_to_random_port(host)}"
        self.bind(address)
        return address

    def _handler_table(self) -> dict[str, Handler]:
        """Every operation this shard answers (docs/protocol.md), and its handler."""
        return {
            "batch": self._op_batch,
            # admin_ops.py: the shard and its cluster
            "hello": self._op_hello,
            "cluster": self._op_cluster,
            "info": self._op_info,
            "flush": self._op_flush,
            "keys": self._op_keys,
            "shutdown": self._op_shutdown,
            # data_ops.py: tensors, datasets, lists
            "put": self._op_put,
            "get": self._op_get,
            "delete": self._op_delete,
            "exists": self._op_exists,
            "delete_keys": self._op_delete_keys,
            "exists_keys": self._op_exists_keys,
            "copy": self._op_copy,
            "rename": self._op_rename,
            "put_dataset": self._op_put_dataset,
            "get_dataset": self._op_get_dataset,
            "list_push": self._op_list_push,
            "list_set": self._op_list_set,
            "list_range": self._op_list_range,
            "list_len": self._op_list_len,
            "wait": self._op_wait,
            # model_ops.py: models and scripts, and outputs staged by runs on other shards
            "set_model": self._op_set_model,
            "get_model": self._op_get_model,
            "run": self._op_run,
            "ai_info": self._op_ai_info,
            "stage": self._op_stage,
            "commit": self._op_commit,
            "abort": self._op_abort,
            # persist_ops.py: snapshots
            "save": self._op_save,
            # stream_ops.py: streams
            "stream_create": self._op_stream_create,
            "stream_append": self._op_stream_append,
            "stream_read": self._op_stream_read,
            "stream_wait": self._op_stream_wait,
            "stream_group": self._op_stream_group,
            "stream_take": self._op_stream_take,
            "stream_ack": self._op_stream_ack,
            "stream_close": self._op_stream_close,
            "stream_info": self._op_stream_info,
            "stream_trim": self._op_stream_trim,
            "stream_delete_steps": self._op_stream_delete_steps,
        }

    # -- the loop --------------------------------------------------------------------------

    def serve(self) -> None:
        """Serve until ``shutdown`` is requested, :meth:`stop` is called or KeyboardInterrupt."""
        self._running = True
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        poller.register(self.executor.wake_fd, zmq.POLLIN)
        if self.unix is not None:
            self.unix.attach(poller)
        log.info("shard %s serving (pid %d)", self.address, os.getpid())
        try:
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
                if self.unix is not None:
                    self.unix.serve(events)
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
            self._close_streams()
            self.executor.close()
            self._socket.disable_monitor()  # before closing its PAIR, or libzmq can wedge
            self._monitor.close(linger=0)
            self._socket.close(linger=self._close_linger_ms())
            if self.shm is not None:
                self._drop_all_staged()
                self.store.flush()  # its files go with the directory
                self.shm.close()
            if self._guard is not None:
                self._guard.release()
            if self.unix is not None:
                self.unix.close()
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
            frames, part_headers = self._recv()
            identity = frames[0].bytes
            self._source_identity = identity
            if len(frames) > MAX_FRAMES + 1:
                self.messages += 1
                error = ProtocolError(
                    f"a message of more than {MAX_FRAMES} frames was refused by shard "
                    f"{self.address}: send fewer tensors per request"
                )
                self._send(identity, _refusal(frames[1], part_headers, error))
            else:
                self._answer(identity, frames[1:])

    def _answer(self, identity: bytes, frames: list) -> None:
        """Handle one request message and send its reply, if it has one now (ZeroMQ and
        Unix connections alike)."""
        self.messages += 1
        reply = self._handle(identity, frames)
        if reply is not None:
            self._send(identity, reply)

    def _recv(self) -> tuple[list, list]:
        """One message's frames; past :data:`MAX_FRAMES` the rest are read and dropped, so a
        message of millions of empty frames never becomes millions of Python objects. Of a
        batch that long, the header of each part (at most MAX_FRAMES) is kept, to refuse
        each part by its id: (frames, those part headers, in order)."""
        recv = self._socket.recv
        frame = recv(copy=False)
        frames, headers, starts, at = [frame], [], None, 0
        while frame.more:
            frame = recv(copy=False)
            at += 1
            if len(frames) <= MAX_FRAMES + 1:
                frames.append(frame)
                continue
            if starts is None:
                starts = _part_starts(frames[1])
                headers = [frames[i] for i in sorted(starts) if i < len(frames)]
            if at in starts:
                headers.append(frame)
        return frames, headers

    def _send(self, identity: bytes, frames: list) -> None:
        """One reply: the routing id, then its frames (stored payloads go without a copy);
        nothing to a client disconnected for leaving too many replies unread. A Unix
        connection's reply goes to it (its routing id says so: ``server/unix.py``)."""
        if len(identity) == UNIX_IDENTITY_BYTES:
            self.unix.send(identity, frames)
            return
        source = (
            self._source if identity == self._source_identity else self._peer_fd.get(identity, -1)
        )
        evicted = self.output.evicted
        frames = self.output.admit(identity, frames, source)
        if frames is None:
            if self.output.evicted != evicted:
                self._client_left(identity)
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
                error = ProtocolError(
                    f"request of {size} bytes exceeds this shard's --max-message "
                    f"{self.max_message}: split the data or raise the limit"
                )
                if request.op == "batch" and not self._in_batch:
                    starts = _part_starts(frames[0])
                    parts = [frames[i - 1] for i in sorted(starts) if i <= len(frames)]
                    return _refusal(frames[0], parts, error)
                raise error
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
                    self._client_left(identity)

    def _client_left(self, identity: bytes) -> None:
        """A client connection closed (or was cut off): forget its waits, and give the
        stream steps delivered to it and not acked to other members."""
        dropped = self.store.drop_owner(identity)
        self._release_deliveries(identity)
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
        """Whether ``key`` lives on this shard (always, outside a cluster)."""
        n = len(self.cluster)
        return n <= 1 or key_shard(key, n) == self.index

    def _owner(self, key: str) -> str | None:
        """The address of the shard that owns ``key``; None when it is this one."""
        return None if self._owns(key) else self.cluster[key_shard(key, len(self.cluster))]

    # -- batch: requests inside a request ---------------------------------------------------

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
        if not store.max_memory:
            return float("inf")
        return store.max_memory - store.used - store.held - store.staged


def _peers(curve: auth.ServerKeys | None, timeout: float) -> Peers:
    """Requests to the other shards, as this cluster's CURVE client where it has one."""
    return Peers(timeout=timeout, curve=curve.cluster_client() if curve is not None else None)


def _model_policy(models: str | None, allow_pickle: bool) -> str:
    """The ``--models`` policy asked for (``allow_pickle``: its older spelling of "all")."""
    models = models or (MODELS_ALL if allow_pickle else DEFAULT_MODELS)
    if models not in MODEL_POLICIES:
        raise ValueError(f"models must be one of {MODEL_POLICIES}, got {models!r}")
    return models


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


def _request_id(frame: object) -> int:
    """The id of a request refused before it is parsed (-1 if it has none)."""
    try:
        return wire.unpack_header(frame)["id"]
    except ProtocolError:
        return -1


def _part_starts(header: object) -> set[int]:
    """Where each part of a batch starts, counting the message's frames after the routing
    id (the envelope's header is 1); empty unless ``header`` is a batch's with a valid ``n``.
    At most :data:`MAX_FRAMES` parts are located."""
    try:
        fields = wire.unpack_header(header)
    except ProtocolError:
        return set()
    counts = fields.get("n")
    if fields.get("op") != "batch" or not isinstance(counts, list):
        return set()
    starts, at = set(), 2
    for count in counts[:MAX_FRAMES]:
        if type(count) is not int or count < 1:
            return set()
        starts.add(at)
        at += count
    return starts


def _refusal(header: object, part_headers: list, error: MemstoreError) -> list:
    """The reply to a request refused as a whole: for a batch whose parts could be found,
    a batch reply failing each part with ``error`` under its own id (its caller fails at
    once, not after its timeout); else one error with the request's id."""
    if not part_headers:
        return wire.error_reply(_request_id(header), error)
    replies = [wire.error_reply(_request_id(part), error)[0] for part in part_headers]
    return wire.reply(0, {"n": [1] * len(replies)}, replies)
