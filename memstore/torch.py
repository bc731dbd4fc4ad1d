"""torch datasets over memstore streams: a trainer that learns from a simulation while it
runs, through a plain ``DataLoader`` (torch is imported here only).

:class:`StreamDataset` reads a :class:`memstore.Stream` in one of two ways:

- ``mode="group"``: as members of a consumer group. Every step is trained on once across
  all ranks and DataLoader workers (each is a member; the group hands each step to one of
  them, and gives a step to another member if its taker died or did not ack it within
  ``visibility`` seconds). A step is acked when the dataset is asked for the item after
  it: once it is in a batch on its way to the training step, not after that step (a
  DataLoader collates ``batch_size`` items in a row, and its workers run
  ``prefetch_factor`` batches ahead). A reader that dies before that gets its steps
  redelivered; one that dies after loses the steps of the batches it had in hand.
  Iteration ends after the stream is closed and its last step acked.
- ``mode="replay"``: random samples from the last ``window`` steps held in the store,
  refreshed as new steps arrive (the online-learning case: the store keeps the window, the
  trainer keeps a copy and fetches only the steps it has not seen). One iteration yields
  ``samples`` items on each rank, shared by its workers, so every rank runs the same
  number of batches (what DistributedDataParallel needs).

The dataset holds what it needs to reach the stream (the shards' addresses, its name),
never a live client across a fork: in a DataLoader worker it makes its own client after
the fork, and in the process that made it, it uses the stream it was given. Steps come
back as torch tensors without a copy of their bytes (dicts of them for dict and DataSet
items), so they are read-only: copy one before changing it in place (torch's warning that
says so is silenced for memstore's tensors). ``transform(item)`` turns an item into what
the loader batches.
"""

from __future__ import annotations

import copy
import os
import socket
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch.distributed as dist
from torch.utils.data import IterableDataset, get_worker_info

from memstore.client import Client
from memstore.client.streams import Stream, StreamWriter
from memstore.errors import StepDropped, StreamClosed, Timeout

__all__ = ["StreamDataset", "StreamWriter"]

MODES = ("group", "replay")

warnings.filterwarnings(  # said once in the module docstring, not once per process
    "ignore", "The given NumPy array is not writable", UserWarning, r"memstore\.tensors"
)


class StreamDataset(IterableDataset):
    """An ``IterableDataset`` over ``stream`` (see the module).

    Args:
        stream: the :class:`memstore.Stream` to read.
        mode: ``"group"`` (each step once across all readers) or ``"replay"``.
        group: the consumer group's name (group mode).
        visibility: seconds a taken step may go unacked before another member gets it.
        window: replay mode: the newest steps sampled from (default: the stream's maxlen).
        samples: replay mode: items one iteration yields on each rank (required there).
        refresh: replay mode: every this many samples, take the new steps found by the
            look begun at the last refresh (waiting for it only if it is not back yet),
            and look again: samples are at most two refreshes behind the store.
        transform: applied to each item before it is yielded (e.g. a random crop).
        with_step: yield ``(step, item)`` rather than the item.
        rank, world_size: this reader's place among the trainers; default: from
            ``torch.distributed`` when it is initialised, else 0 and 1.
        prefetch: group mode: steps a reader asks for at once, the one in use included
            (its ack rides on the take issued once it is batched), so the next step is
            there when the training step asks for it.
        timeout: seconds to wait for a step (for the first one, in replay mode), then
            ``Timeout`` naming the stream; a replay of a closed stream that holds no step
            raises ``StreamClosed`` at once.
        seed: replay mode: the samples are drawn from ``(seed, rank, worker)``.
        client_factory: makes a worker's client (default: ``Client(stream's addresses,
            timeout=stream's timeout)``, with the CURVE keys of the environment).
    """

    def __init__(
        self,
        stream: Stream,
        mode: str = "group",
        *,
        group: str = "train",
        visibility: float = 30.0,
        window: int | None = None,
        samples: int | None = None,
        refresh: int = 16,
        transform: Callable[[Any], Any] | None = None,
        with_step: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        prefetch: int = 2,
        timeout: float = 300.0,
        seed: int = 0,
        client_factory: Callable[[], Client] | None = None,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"stream {stream.name!r}: mode must be one of {MODES}, got {mode!r}")
        self.window = stream.settings["maxlen"] if window is None else window
        if mode == "replay" and (type(samples) is not int or samples < 1):
            raise ValueError(f"stream {stream.name!r}: replay mode needs samples, an int >= 1")
        for what, value in (("window", self.window), ("refresh", refresh), ("prefetch", prefetch)):
            if type(value) is not int or value < 1:
                raise ValueError(f"stream {stream.name!r}: {what} must be an int >= 1")
        self.name, self.mode, self.group, self.visibility = stream.name, mode, group, visibility
        self.samples, self.refresh, self.transform = samples, refresh, transform
        self.with_step, self.prefetch, self.timeout, self.seed = with_step, prefetch, timeout, seed
        self.rank, self.world_size = rank, world_size
        self.addresses, self.client_timeout = stream.addresses, stream.timeout
        self.client_factory = client_factory
        self._stream: Stream | None = stream
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        """Pickled (spawned workers) without the live stream: a worker makes its own."""
        state = dict(self.__dict__)
        state["_stream"] = None
        return state

    def __iter__(self) -> Iterator[Any]:
        stream, client = self._open()
        try:
            items = self._group_items(stream) if self.mode == "group" else self._replay(stream)
            for step, item in items:
                item = self.transform(item) if self.transform is not None else item
                yield (step, item) if self.with_step else item
        finally:
            if client is not None:
                client.close()

    # -- where this reader is --------------------------------------------------------------

    def _open(self) -> tuple[Stream, Client | None]:
        """The stream to read, as torch tensors: the one given in the process that made
        the dataset, else through a new client (returned, to be closed)."""
        if self._stream is not None and os.getpid() == self._pid:
            stream = copy.copy(self._stream)  # the same client, its steps as torch tensors
            stream.as_torch = True
            return stream, None
        client = self.client_factory() if self.client_factory else self._client()
        return client.stream(self.name, as_torch=True), client

    def _client(self) -> Client:
        return Client(self.addresses, timeout=self.client_timeout)

    def _place(self) -> tuple[int, int, int, int]:
        """(rank, world size, worker, workers) of this iteration."""
        rank, world = self.rank, self.world_size
        if dist.is_available() and dist.is_initialized():
            rank = dist.get_rank() if rank is None else rank
            world = dist.get_world_size() if world is None else world
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return rank or 0, world or 1, worker, workers

    # -- group mode ------------------------------------------------------------------------

    def _group_items(self, stream: Stream) -> Iterator[tuple[int, Any]]:
        rank, _, worker, _ = self._place()
        member = f"{socket.gethostname()}:{os.getpid()}:rank{rank}:worker{worker}"
        group = stream.group(self.group, member=member, visibility=self.visibility)
        takes = deque(group.take_async(timeout=self.timeout) for _ in range(self.prefetch))
        while takes:
            try:
                got = takes.popleft().result(self.timeout + self.client_timeout)
            except StepDropped:  # dropped between its delivery and the read: the next one
                takes.append(group.take_async(timeout=self.timeout))
                continue
            if got is None:  # closed, and every step delivered and acked
                continue  # the other takes in flight end the same way
            yield got
            # batched: acked by the next take, in its request (a failed ack fails that take)
            takes.append(group.take_async(timeout=self.timeout, ack=got[0]))

    # -- replay mode -----------------------------------------------------------------------

    def _replay(self, stream: Stream) -> Iterator[tuple[int, Any]]:
        rank, _, worker, workers = self._place()
        count = self.samples // workers + (worker < self.samples % workers)
        rng = np.random.default_rng([self.seed, rank, worker])
        held = Window(self.window)
        held.add(self._first_steps(stream))
        fetch = None
        for i in range(count):
            if i % self.refresh == 0:  # take the steps the last refresh found, look again
                if fetch is not None:
                    held.add(fetch.result(self.client_timeout))  # dropped steps left out
                fetch = stream.window_async(self.window, after=held.newest)
            yield held.sample(rng)

    def _first_steps(self, stream: Stream) -> list[tuple[int, Any]]:
        """The window as it is, after waiting (on the shard) for a first step.

        A window read can come back empty while the stream holds steps: every step it found
        was dropped by a fast producer while it read them. Then it reads again; it waits
        only while the stream holds no step, and a closed stream never gets one."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            items = stream.window(self.window)
            if items:
                return items
            state = stream.info()
            if state["oldest"] < state["next"]:
                continue  # steps held: the read raced the drops
            if state["closed"]:
                raise StreamClosed(f"stream {self.name!r} is closed and holds no step to replay")
            stream.wait(state["next"], timeout=max(0.0, deadline - time.monotonic()))
        raise Timeout(f"stream {self.name!r}: no step to replay within {self.timeout}s")


class Window:
    """A replay reader's copy of the newest ``size`` steps, sampled uniformly."""

    def __init__(self, size: int):
        self.size = size
        self.items: dict[int, Any] = {}
        self.steps: list[int] = []

    @property
    def newest(self) -> int | None:
        return self.steps[-1] if self.steps else None

    def add(self, items: list[tuple[int, Any]]) -> None:
        """Take ``items`` (oldest first) and forget steps older than the newest ``size``."""
        for step, item in items:
            if self.newest is None or step > self.newest:
                self.items[step] = item
                self.steps.append(step)
        if self.steps:
            floor = self.steps[-1] - self.size
            while self.steps[0] <= floor:
                del self.items[self.steps.pop(0)]

    def sample(self, rng: np.random.Generator) -> tuple[int, Any]:
        step = self.steps[int(rng.integers(len(self.steps)))]
        return step, self.items[step]
