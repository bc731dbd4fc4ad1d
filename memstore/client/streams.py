"""``client.stream(name)``: a bounded stream of steps, with readers and consumer groups.

A step is a tensor, a dict of tensors or a :class:`~memstore.DataSet`, stored as an
ordinary value under a data key of its own (so steps spread over the shards, and large
ones take the shared-memory path). :meth:`Stream.append` asks the stream's home shard (the
owner of its name) to append that key, carrying the tensor when the home shard owns the
key too (one request), else after putting it: the home shard numbers the step then, so
steps are numbered 0, 1, 2, ... in the order appends reach it, whichever producer sent
them. A group's take is one request when the home shard holds the step's tensor, and
carries the previous step's ack. Readers ask the home shard which data keys hold the
steps they want, then get the data from the shards that hold it: ``window(k)`` is one
request home and one request per shard. See docs/design.md, "Streams".

Stream names are stored keys as they are: no ensemble prefix (producers and consumers of
one stream must agree on its key). :class:`Stream` and :class:`Group` are parts of the
client, using what :class:`~memstore.client.base.ClientBase` declares, as its mixins do.
"""

from __future__ import annotations

import concurrent.futures
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from memstore import tensors
from memstore.client.base import ClientBase
from memstore.client.blocking import blocking
from memstore.client.shm import STALE
from memstore.config import MAX_WAIT_TIMEOUT
from memstore.dataset import DataSet
from memstore.errors import ConnectionLost, KeyNotFound, StepDropped, Timeout
from memstore.futures import DoneFuture, Future, Gathered, InlineResult, chain

#: Data keys of steps (the shards hide them from key listings); no hash tag.
DATA_PREFIX = "\x00step\x00"
TENSOR_ITEM, DATASET_ITEM, DICT_ITEM = "tensor", "dataset", "dict"
#: The largest step number a range names (msgpack's and a shard's int64).
MAX_STEP = 2**63 - 1


def _fields(header: dict, payload: list) -> dict:
    return {k: v for k, v in header.items() if k not in ("v", "id", "ok")}


def _default_member() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def _is_future(value: Any) -> bool:
    return isinstance(value, concurrent.futures.Future)


class Stream:
    """A stream of steps in the store (see the module); made by :meth:`Client.stream`.

    Args:
        client: the :class:`memstore.Client` to use.
        name: the stream's key.
        maxlen: steps kept (>= 1). None: those of the existing stream (a stream made with
            none has 1024, until a create that names its settings replaces them).
        policy: ``"drop_oldest"`` (an append past ``maxlen`` drops the oldest step),
            ``"block"`` (it waits on the shard until every group acked the oldest step)
            or ``"latest"`` (``maxlen`` 1, ``drop_oldest``). None: as ``maxlen``.
        as_torch: steps' tensors come back as torch tensors rather than numpy arrays.

    Creating one creates the stream, or attaches to it (``ProtocolError`` if it exists
    with other settings). With ``create=False`` it sends nothing: a handle on a stream
    that may not exist, whose calls raise ``KeyNotFound`` while it does not (the RESP
    gateway's ``XLEN`` and ``XRANGE`` must not make streams). Thread-safe, like the client.
    """

    def __init__(
        self,
        client: ClientBase,
        name: str,
        maxlen: int | None = None,
        policy: str | None = None,
        *,
        as_torch: bool = False,
        create: bool = True,
    ):
        if not isinstance(name, str) or not name:
            raise TypeError(f"a stream name must be a non-empty string, got {name!r}")
        self.name = self.key = name
        self.as_torch = as_torch
        #: The store's shards and the client's timeout: enough to reach this stream from a
        #: new client (a DataLoader worker's, after the fork; :mod:`memstore.torch`).
        self.addresses, self.timeout = list(client.addresses), client.timeout
        self._requests = client._requests
        self._shm = client._shm
        self._keys = client.keys
        self._timeout = client.timeout
        self._order = InOrder()
        fields = {"maxlen": maxlen, "policy": policy}
        #: The settings the home shard answered with: maxlen, policy, oldest, next, closed
        #: (None for a handle made with ``create=False``).
        self.settings = self._sync(self._home, "stream_create", fields) if create else None

    def __repr__(self) -> str:
        return f"Stream({self.name!r})"

    def _sync(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self._requests.inline.run(method, *args, **kwargs)

    def _home(
        self, op: str, fields: dict | None = None, decode: Callable = _fields, wait: float = 0.0
    ) -> Future | InlineResult:
        """One request to the stream's home shard."""
        return self._requests.to_key(op, self.key, fields, decode=decode, wait=wait)

    # -- appends ---------------------------------------------------------------------------

    def append_async(self, item: Any, timeout: float | None = None) -> Future:
        """Append ``item`` (a tensor, a dict of tensors or a DataSet); its step number.

        Appends made through one Stream object are numbered in the order they were made,
        async ones too; those of several objects or processes in the order they reach the
        home shard. ``timeout``: seconds a ``block`` stream's append may wait for acks
        (default: the client's timeout), then ``Timeout`` naming the stream and the slow
        group. An append that fails deletes the data it put."""
        data_key = DATA_PREFIX + uuid.uuid4().hex
        seconds = self._timeout if timeout is None else float(timeout)
        home = self._requests.shard_of(self.key)
        if not isinstance(item, dict | DataSet) and self._requests.shard_of(data_key) == home:
            out = Future()
            if self._order.call_now(self._append_carrying, out, home, data_key, item, seconds):
                return out
        return self._append_after_put(data_key, item, seconds)

    def _append_carrying(
        self, out: Future, home: int, data_key: str, item: Any, seconds: float
    ) -> None:
        """A tensor whose data key is on the home shard: one request stores and appends
        it (its bytes in the payload, or its shared-memory file), settling ``out``."""
        meta, buffer = tensors.encode(item, data_key)
        nbytes = memoryview(buffer).nbytes
        fields = {"key": self.key, "keys": [data_key], "metas": [meta], "data": data_key,
                  "kind": TENSOR_ITEM, "nbytes": nbytes, "timeout": seconds}  # fmt: skip
        sent = self._shm.put(home, "stream_append", fields, [buffer], [item],
                             ("append", self.key), lambda h, p: h["step"], seconds)  # fmt: skip

        def failed(error: BaseException) -> None:
            self._discard(data_key)  # the shard deletes it too; this covers a lost reply
            out.settle(error=error)

        _when_done(sent, out.settle, failed)

    def _append_after_put(self, data_key: str, item: Any, seconds: float) -> Future:
        """Put the step's data, then (in the order appends were made) append its key."""
        kind, nbytes, stored = self._put_item(data_key, item)
        fields = {"data": data_key, "kind": kind, "nbytes": nbytes, "timeout": seconds}
        ticket, out = self._order.ticket(), Future()
        inline = InlineAgain(stored)

        def failed(error: BaseException) -> None:
            self._discard(data_key)
            out.settle(error=error)

        def send(error: BaseException | None) -> None:  # in ticket order
            if error is not None:
                return failed(error)
            try:
                inline.grant(self._requests.inline)
                sent = self._home("stream_append", fields, lambda h, p: h["step"], seconds)
            except Exception as exc:
                return failed(exc)
            _when_done(sent, out.settle, failed)

        _when_done(stored, lambda _: self._order.ready(ticket, send, None),
                   lambda exc: self._order.ready(ticket, send, exc))  # fmt: skip
        inline.over()
        return out

    def _put_item(self, data_key: str, item: Any) -> tuple[str, int, Any]:
        """Store ``item`` under ``data_key``: (kind, bytes, the put's future)."""
        if isinstance(item, dict):
            dataset = DataSet(self.name)
            for name, value in item.items():
                dataset.add_tensor(name, value)
            return DICT_ITEM, *self._put_dataset(data_key, dataset)
        if isinstance(item, DataSet):
            return DATASET_ITEM, *self._put_dataset(data_key, item)
        meta, buffer = tensors.encode(item, data_key)
        shard = self._requests.shard_of(data_key)
        fields = {"keys": [data_key], "metas": [meta]}
        stored = self._shm.put(shard, "put", fields, [buffer], [item], ("append", self.key))
        return TENSOR_ITEM, memoryview(buffer).nbytes, stored

    def _put_dataset(self, data_key: str, dataset: DataSet) -> tuple[int, Any]:
        _, buffers = dataset.to_wire()
        nbytes = sum(memoryview(b).nbytes for b in buffers)
        return nbytes, self._keys.put_dataset_async(data_key, dataset)

    def _discard(self, data_key: str) -> None:
        """Delete the data of an append that failed (its answer is not waited for)."""
        try:
            self._requests.to_key("delete", data_key, {})
        except Exception:  # the shard may be the reason the append failed
            pass

    # -- reads -----------------------------------------------------------------------------

    def read_async(self, step: int) -> Future:
        """The item of ``step``; ``StepDropped`` (a ``KeyNotFound``) if it is no longer
        held, naming the oldest step held."""
        if type(step) is not int:
            raise TypeError(f"stream {self.name!r}: a step is an int, got {step!r}")
        return chain(
            self._home("stream_read", {"steps": [step]}),
            lambda reply: chain(self._fetch(reply), lambda got: got[0][1]),
        )

    def latest_async(self) -> Future:
        """``(step, item)`` of the newest step held, or ``(None, None)``."""
        return chain(
            self._home("stream_read", {"last": 1}),
            lambda reply: chain(self._fetch(reply), lambda got: got[0] if got else (None, None)),
        )

    def window_async(self, k: int, after: int | None = None) -> Future:
        """The last ``k`` steps held, oldest first, as ``[(step, item)]``: one request to
        the home shard, then one per shard holding them. ``after``: only the steps of
        those later than it (a reader that keeps the window fetches only what is new).
        Steps dropped while the window is fetched (a producer appending faster than the
        read) are left out: the window is the newest steps that could be read."""
        if type(k) is not int or k < 0:
            raise ValueError(f"stream {self.name!r}: window size must be an int >= 0, got {k!r}")
        if after is not None and type(after) is not int:
            raise TypeError(f"stream {self.name!r}: after is a step (an int), got {after!r}")

        def newer(reply: dict) -> Any:
            if after is not None:
                reply = {**reply, "items": [i for i in reply["items"] if i[0] > after]}
            return _on_dropped(lambda: self._fetch(reply), lambda: self._fetch_held(reply))

        return chain(self._home("stream_read", {"last": k}), newer)

    def _fetch_held(self, reply: dict) -> Future:
        """A window's steps one by one, those dropped meanwhile left out (a producer
        appends faster than the window is read: the oldest go while it is fetched)."""

        def one(item: list) -> Any:
            return _on_dropped(lambda: self._fetch({**reply, "items": [item]}), lambda: [])

        parts = [_as_future(one(item)) for item in reply["items"]]
        return Gathered(parts, lambda got: [pair for pairs in got for pair in pairs])

    def _fetch(self, reply: dict) -> Any:
        """``[(step, item)]`` of a ``stream_read`` reply's items, fetched from their shards
        (tensors: one ``get`` per shard; datasets go together, batched by the pump)."""
        items = reply["items"]
        per_shard: dict[int, list[int]] = {}
        calls: list[Callable[[], Any]] = []
        for i, (_, data_key, kind) in enumerate(items):
            if kind == TENSOR_ITEM:
                per_shard.setdefault(self._requests.shard_of(data_key), []).append(i)
            else:
                calls.append(lambda i=i: chain(self._get_dataset(items[i]), lambda v, i=i: {i: v}))
        for shard, positions in per_shard.items():
            calls.append(lambda s=shard, pos=positions: self._get_tensors(s, items, pos))

        def combine(parts: list[dict]) -> list:
            got = {i: v for part in parts for i, v in part.items()}
            return [(items[i][0], got[i]) for i in range(len(items))]

        if not calls:
            return DoneFuture([])
        oldest = max(reply.get("oldest", 0), items[-1][0] + 1)
        return _dropped_as(lambda: self._requests.fan_out(calls, combine), self.name, items, oldest)

    def _get_tensors(self, shard: int, items: list, positions: list[int]) -> Any:
        keys = [items[i][1] for i in positions]

        def build(header: dict, payload: list) -> dict:
            return {
                i: tensors.decode(m, f, as_torch=self.as_torch, name=self.name)
                for i, m, f in zip(positions, header["metas"], payload, strict=True)
            }

        return self._shm.get(shard, "get", {"keys": keys}, build, ("get", self.key))

    def _get_dataset(self, item: list) -> Any:
        _, data_key, kind = item

        def unpack(dataset: DataSet) -> Any:
            if kind != DICT_ITEM:
                return dataset
            names = dataset.get_tensor_names()
            return {n: dataset.get_tensor(n, as_torch=self.as_torch) for n in names}

        return chain(self._keys.get_dataset_async(data_key, self.name), unpack)

    def range_async(
        self, first: int, last: int | None = None, count: int | None = None, newest: bool = False
    ) -> Future:
        """The steps held from ``first`` to ``last`` (inclusive; None: the newest), oldest
        first, at most ``count`` (the oldest such, or with ``newest`` the newest), as
        ``[(step, item)]``; steps dropped or deleted are left out, as ``XRANGE`` does. One
        request home, then one per shard holding them."""
        bounds = [first, MAX_STEP if last is None else last, MAX_STEP if count is None else count]
        if any(type(b) is not int for b in bounds) or first < 0 or bounds[2] < 0:
            raise ValueError(
                f"stream {self.name!r}: range needs int steps >= 0 and a count >= 0, got "
                f"first={first!r}, last={last!r}, count={count!r}"
            )
        fields = {"span": bounds, "newest": bool(newest)}
        return chain(self._home("stream_read", fields), self._fetch)

    def wait_async(self, step: int, timeout: float | None = None) -> Future:
        """True as soon as ``step`` has been appended; False after ``timeout`` seconds
        (default: the client's timeout) or once the stream is closed without it. The home
        shard waits; the client does not poll."""
        seconds = self._timeout if timeout is None else float(timeout)
        return self._home(
            "stream_wait",
            {"step": step, "timeout": seconds},
            lambda h, p: h["next"] > step,
            seconds,
        )

    def iter(
        self, start: int = 0, skip_dropped: bool = False, timeout: float | None = None
    ) -> Iterator[tuple[int, Any]]:
        """``(step, item)`` from ``start`` on, waiting on the shard for each new step;
        ends once the stream is closed and its last step was read. A dropped step raises
        ``StepDropped``, or with ``skip_dropped`` is skipped (on to the oldest held).
        ``timeout``: seconds to wait for one step (None: no limit), then ``Timeout``."""
        step, known_next = start, 0
        while True:
            if step >= known_next:
                state = self._sync(self._wait_state, step, timeout)
                known_next = state["next"]
                if step >= known_next:
                    if state["closed"]:
                        return
                    continue  # a wait of no limit goes on in chunks
            try:
                item = self.read(step)
            except StepDropped as exc:
                if not skip_dropped:
                    raise
                step = max(step + 1, exc.oldest or 0)
                continue
            yield step, item
            step += 1

    def _wait_state(self, step: int, timeout: float | None) -> Any:
        seconds = MAX_WAIT_TIMEOUT if timeout is None else float(timeout)

        def decode(header: dict, payload: list) -> dict:
            if header["next"] <= step and not header["closed"] and timeout is not None:
                raise Timeout(f"stream {self.name!r}: step {step} not appended within {seconds}s")
            return header

        fields = {"step": step, "timeout": seconds}
        return self._home("stream_wait", fields, decode, seconds)

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        return self.iter()

    # -- the stream ------------------------------------------------------------------------

    def close_async(self) -> Future:
        """End the stream: appends fail with ``StreamClosed``; readers, iterators and group
        members finish after the last step."""
        return self._home("stream_close", {}, lambda h, p: None)

    def info_async(self) -> Future:
        """maxlen, policy, oldest, next, closed, steps, bytes, groups (each group's stats)."""
        return self._home("stream_info")

    def trim_async(self, maxlen: int) -> Future:
        """Drop the oldest steps until at most ``maxlen`` are held; how many were dropped."""
        return self._home("stream_trim", {"maxlen": maxlen}, lambda h, p: h["dropped"])

    def delete_steps_async(self, steps: list[int]) -> Future:
        """Drop these steps (those held); how many were."""
        return self._home("stream_delete_steps", {"steps": list(steps)}, lambda h, p: h["deleted"])

    def group(
        self,
        name: str,
        member: str | None = None,
        visibility: float = 30.0,
        start: str | int = "oldest",
        create: bool = True,
    ) -> Group:
        """Consumer group ``name`` (made if new, from ``start``: "oldest", "next" or a step),
        as the member ``member`` (default: host, process and thread). Each step goes to one
        member of a group; one taken and not acked within ``visibility`` seconds, or whose
        member's connection closed, goes to another. ``create=False`` sends nothing: takes
        and acks of a group that does not exist raise ``ProtocolError``."""
        return Group(self, name, member or _default_member(), visibility, start, create)

    append = blocking(append_async)
    read = blocking(read_async)
    range = blocking(range_async)
    latest = blocking(latest_async)
    window = blocking(window_async)
    wait = blocking(wait_async)
    close = blocking(close_async)
    info = blocking(info_async)
    trim = blocking(trim_async)
    delete_steps = blocking(delete_steps_async)


class Group:
    """One member's handle on a consumer group of a :class:`Stream` (see ``Stream.group``)."""

    def __init__(
        self,
        stream: Stream,
        name: str,
        member: str,
        visibility: float,
        start: Any,
        create: bool = True,
    ):
        self.stream, self.name, self.member = stream, name, member
        self.visibility = float(visibility)
        if create:
            stream._sync(stream._home, "stream_group", {"group": name, "start": start})

    def __repr__(self) -> str:
        return f"Group({self.stream.name!r}, {self.name!r}, member={self.member!r})"

    def _sync(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self.stream._sync(method, *args, **kwargs)

    def take_async(
        self, timeout: float | None = None, ack: int | list[int] | None = None
    ) -> Future:
        """The next step for this member, ``(step, item)``, waiting on the shard up to
        ``timeout`` seconds (None: no limit) then ``Timeout``; None at the end of the
        stream (closed, every step delivered and acked). Ack it when done with it: by
        ``ack`` (a step or a list) on the next take, which acks them first, in the same
        request, whatever the take then answers; the last one by :meth:`ack`.

        One request: the home shard answers with the step's tensor when it holds it (its
        shared-memory file when this process shares memory with it), else the data is
        fetched from its shard."""
        seconds = MAX_WAIT_TIMEOUT if timeout is None else float(timeout)
        stream = self.stream
        home = stream._requests.shard_of(stream.key)
        files = stream._shm.maps(home)
        fields = {"group": self.name, "member": self.member, "visibility": self.visibility,
                  "timeout": seconds, "with_data": True, "shm": files}  # fmt: skip
        if ack is not None:
            fields["ack"] = _steps(ack)

        def decode(header: dict, payload: list) -> dict:
            got = _fields(header, payload)
            if "metas" in header:
                got["payload"] = stream._shm.mapped(home, header, payload) if files else payload
            return got

        sent = stream._home("stream_take", fields, decode, wait=seconds)
        inline = InlineAgain(sent)

        def delivered(reply: dict) -> Any:
            if reply.get("end"):
                return None
            if "step" not in reply:
                raise Timeout(
                    f"group {self.name!r} of stream {stream.name!r}: no step within {seconds}s"
                )
            if reply.get("payload", STALE) is not STALE:
                item = tensors.decode(reply["metas"][0], reply["payload"][0],
                                      as_torch=stream.as_torch, name=stream.name)  # fmt: skip
                return reply["step"], item
            items = {"items": [[reply["step"], reply["data"], reply["kind"]]], "oldest": 0}
            inline.grant(stream._requests.inline)
            return chain(stream._fetch(items), lambda got: got[0])

        result = chain(sent, delivered)
        inline.over()
        return result

    def ack_async(self, step: int | list[int]) -> Future:
        """Mark ``step`` (or a list of steps) done for this group; how many were pending.
        ``ProtocolError`` for a step never delivered to the group."""
        fields = {"group": self.name, "steps": _steps(step)}
        return self.stream._home("stream_ack", fields, lambda h, p: h["acked"])

    def stats_async(self) -> Future:
        """This group's counters: delivered, acked, redelivered, pending, lag (steps
        appended and not yet delivered to the group)."""
        return chain(self.stream.info_async(), lambda info: info["groups"][self.name])

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        """Takes until the end of the stream (steps dropped before they were read are
        skipped); the caller acks each step."""
        while True:
            try:
                got = self.take()
            except StepDropped:
                continue
            if got is None:
                return
            yield got

    take = blocking(take_async)
    ack = blocking(ack_async)
    stats = blocking(stats_async)


class StreamWriter:
    """A producer's appends from a solver's step loop: one call per step, never a full wait.

    ``append`` sends the step without waiting for it; at most ``max_in_flight`` appends
    are unanswered (beyond that the oldest is waited for), so the producer's memory stays
    bounded and a failed append is raised by a later ``append``, ``flush`` or ``close``.
    Every MPI rank may hold a writer on the same stream: steps are numbered in the order
    the appends reach the stream's home shard, so ranks interleave (put the rank in the
    item if consumers need it). With ``comm`` (an mpi4py communicator of the producer
    ranks), ``close()`` is collective: once every rank's appends are answered, rank 0
    ends the stream, and consumers finish after its last step. Thread-safe.

    Example (each solver rank)::

        writer = memstore.StreamWriter(client.stream("sim", maxlen=64), comm=comm)
        for t in range(steps):
            solve()
            writer.append({"u": u, "rank": np.array(rank)})
        writer.close()
    """

    def __init__(self, stream: Stream, max_in_flight: int = 8, comm: Any = None):
        if type(max_in_flight) is not int or max_in_flight < 1:
            raise ValueError(f"stream {stream.name!r}: max_in_flight must be an int >= 1")
        self.stream, self.comm = stream, comm
        self.max_in_flight = max_in_flight
        #: Appends answered so far, and the step the newest of them was given.
        self.appended, self.last_step = 0, None
        self._lock = threading.Lock()
        self._in_flight: list[Future] = []

    def __repr__(self) -> str:
        return f"StreamWriter({self.stream.name!r}, appended={self.appended})"

    def append(self, item: Any) -> None:
        """Send ``item`` (a tensor, a dict of tensors or a DataSet) as the next step."""
        future = self.stream.append_async(item)
        with self._lock:
            self._in_flight.append(future)
            over = self._take(len(self._in_flight) - self.max_in_flight)
        self._settle(over, None)

    def flush(self, timeout: float | None = None) -> int | None:
        """Wait until every append made so far is answered (``timeout`` seconds each,
        default the client's); the newest step, or None if none was appended."""
        with self._lock:
            pending = self._take(len(self._in_flight))
        self._settle(pending, timeout)
        return self.last_step

    def close(self, end: bool = True) -> None:
        """Flush; with ``end``, end the stream: with ``comm``, after every rank flushed,
        by rank 0 alone, else by this writer."""
        self.flush()
        if not end:
            return
        if self.comm is not None:
            self.comm.Barrier()
            if self.comm.Get_rank() != 0:
                return
        self.stream.close()

    def __enter__(self) -> StreamWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close(end=exc[0] is None)

    def _take(self, count: int) -> list[Future]:
        taken, self._in_flight = self._in_flight[: max(count, 0)], self._in_flight[max(count, 0) :]
        return taken

    def _settle(self, futures: list[Future], timeout: float | None) -> None:
        """Wait for ``futures`` in order (outside the lock: other threads append meanwhile)."""
        seconds = self.stream.timeout if timeout is None else timeout
        for i, future in enumerate(futures):
            try:
                step = future.result(seconds)
            except BaseException:
                with self._lock:  # the later ones stay tracked: their errors are not lost
                    self._in_flight[:0] = futures[i + 1 :]
                raise
            with self._lock:
                self.appended += 1
                self.last_step = step if self.last_step is None else max(self.last_step, step)


class InlineAgain:
    """Whether a blocking call's second request may take the fast path too.

    A blocking call's first request alone goes inline (``InlineTurn``); the next one, sent
    from a callback, goes through the pump, whose thread hand-off costs about a round trip.
    When the first was answered inline, the callback runs right here on the caller's
    thread, still inside the blocking call, so the second may go inline as well: the
    transport takes the fast path only with nothing of this client in flight to that shard,
    which keeps requests in order. Anywhere else (later, another thread, the pump) it
    goes through the pump as before.
    """

    def __init__(self, first: Any, allowed: bool = True):
        self._thread = threading.get_ident()
        self._now = allowed and isinstance(first, InlineResult)

    def grant(self, turn: Any) -> None:
        """Give this thread the inline turn again, if still inside the call."""
        if self._now and threading.get_ident() == self._thread:
            self._now = False
            turn.granted = True

    def over(self) -> None:
        """The call returned: later callbacks go through the pump."""
        self._now = False


class InOrder:
    """Calls made in the order tickets were given, each once its own work is ready: the
    appends of one Stream reach the home shard in the order they were made.

    One thread at a time makes the calls (the one whose ticket completed the sequence),
    outside the lock: a call may send inline and wait for the answer, and a thread that
    only hands its call over (the pump, settling a put) never waits for that."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._given = self._next = 0
        self._ready: dict[int, tuple[Callable[..., None], tuple]] = {}
        self._calling = False  # a thread is making the ready calls

    def ticket(self) -> int:
        with self._lock:
            self._given += 1
            return self._given - 1

    def call_now(self, call: Callable[..., None], *args: Any) -> bool:
        """``call(*args)`` here and now, in its turn, if no earlier call is still to be
        made (else False, nothing called): a call that must run before its caller returns
        (it snapshots the caller's array)."""
        with self._lock:
            if self._calling or self._next != self._given:
                return False
            self._given += 1
            self._next += 1
            self._calling = True
        try:
            call(*args)
        finally:
            self._make_ready_calls()
        return True

    def ready(self, ticket: int, call: Callable[..., None], *args: Any) -> None:
        """``call(*args)`` once every earlier ticket's call was made."""
        with self._lock:
            self._ready[ticket] = (call, args)
            if self._calling:  # that thread makes this call when its turn comes
                return
            self._calling = True
        self._make_ready_calls()

    def _make_ready_calls(self) -> None:
        """On the thread that set ``_calling``: the calls whose turn came, in order."""
        try:
            while True:
                with self._lock:
                    if self._next not in self._ready:
                        self._calling = False
                        return
                    call, args = self._ready.pop(self._next)
                    self._next += 1
                call(*args)
        except BaseException:
            with self._lock:
                self._calling = False
            raise


def _steps(step: int | list[int]) -> list:
    return list(step) if isinstance(step, list | tuple) else [step]


def _on_dropped(make: Callable[[], Any], instead: Callable[[], Any]) -> Any:
    """``make()``'s result, or ``instead()``'s if it fails with ``StepDropped``."""
    try:
        result = make()
    except StepDropped:
        return instead()
    if not _is_future(result):
        return result
    out = Future()

    def dropped(error: BaseException) -> None:
        if not isinstance(error, StepDropped):
            return out.settle(error=error)
        try:
            _when_done(instead(), out.settle, lambda exc: out.settle(error=exc))
        except Exception as exc:  # handed to the waiting caller
            out.settle(error=exc)

    _when_done(result, out.settle, dropped)
    return out


def _as_future(result: Any) -> Any:
    """A future of ``result`` (a future already, an inline answer, or a value)."""
    if _is_future(result):
        return result
    return DoneFuture(result.value if isinstance(result, InlineResult) else result)


def _when_done(
    result: Any, on_value: Callable[[Any], Any], on_error: Callable[[BaseException], Any]
) -> None:
    """``on_value(value)`` or ``on_error(error)`` once ``result`` (a future, or a value the
    fast path already has) is done."""
    if not _is_future(result):
        on_value(result.result() if isinstance(result, InlineResult) else result)
        return

    def done(f: concurrent.futures.Future) -> None:
        if f.cancelled():
            on_error(ConnectionLost("the request was cancelled"))
        elif f.exception(0) is not None:
            on_error(f.exception(0))
        else:
            on_value(f.result(0))

    result.add_done_callback(done)


def _dropped_as(fetch: Callable[[], Any], stream: str, items: list, oldest: int) -> Any:
    """``fetch()``, a data key gone (its step dropped since it was listed) reported as
    ``StepDropped`` of the first listed step."""

    def dropped(error: BaseException) -> BaseException:
        if isinstance(error, KeyNotFound) and not isinstance(error, StepDropped):
            return StepDropped.of(stream, items[0][0], oldest)
        return error

    try:
        result = fetch()
    except KeyNotFound as exc:
        raise dropped(exc) from None
    if not _is_future(result):
        return result
    out = Future()
    _when_done(result, out.settle, lambda error: out.settle(error=dropped(error)))
    return out
