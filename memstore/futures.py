"""The futures a client hands out, and how they combine.

A :class:`Future` is a ``concurrent.futures.Future`` that its client's pump thread completes;
:class:`Gathered` and :class:`Chained` build one future out of several requests.

One name per meaning:

* :class:`DoneFuture` is a Future that is already done (a call answered without a round trip).
* :class:`InlineResult` is *not* a Future: the value of a request a blocking call sent and
  received on its own thread (the transport's fast path). Blocking methods take its
  ``result()`` at once, so it never reaches users; it has just enough of the Future protocol
  for :class:`Gathered` and :class:`Chained` to take it as a part.

These types know nothing of sockets. The one thing they need from a transport is a way not to
deadlock: a callback on the pump thread that waits for a future cannot wait for the pump (it
*is* the pump), so the pump marks its thread (:func:`mark_pump_thread`) and a wait there turns
the pump inline instead.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from memstore.errors import ConnectionLost, MemstoreError, Timeout


class Pump(Protocol):
    """What a future waited on from a pump thread needs of the pump."""

    def pump_until(self, future: Future, timeout: float | None) -> None:
        """Turn the pump on the calling thread until ``future`` is done or time is up."""


_pump_thread = threading.local()  # .pump: set on a pump thread


class _Process:
    """This process's id, kept by ``os.register_at_fork`` (no system call per request)."""

    pid = os.getpid()

    @classmethod
    def forked(cls) -> None:
        cls.pid = os.getpid()


os.register_at_fork(after_in_child=_Process.forked)


def this_process() -> int:
    """This process's id (a forked child's own, once it is one)."""
    return _Process.pid


def mark_pump_thread(pump: Pump) -> None:
    """Make the calling thread ``pump``'s own: futures waited on here turn the pump inline."""
    _pump_thread.pump = pump


def pump_of_this_thread() -> Pump | None:
    """The pump whose thread this is (see :func:`mark_pump_thread`), or None."""
    return getattr(_pump_thread, "pump", None)


class Future(concurrent.futures.Future):
    """A ``concurrent.futures.Future`` completed by its client's pump thread.

    ``result(timeout)`` raises :class:`memstore.Timeout` (a ``TimeoutError``) when the
    caller's timeout passes first; the request itself stays pending until its own deadline.
    Only single requests can be cancelled; composite futures return False. A future
    waited on in a process forked from the one that made it raises ``MemstoreError`` at
    once unless it was done before the fork: no pump will ever complete it there.
    """

    def __init__(self) -> None:
        super().__init__()
        self._made_in = _Process.pid

    def result(self, timeout: float | None = None) -> Any:
        self._await(timeout)
        return super().result(0)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._await(timeout)
        return super().exception(0)

    def cancel(self) -> bool:
        return False

    def _await(self, timeout: float | None) -> None:
        if self.done():
            return
        if self._made_in != _Process.pid:
            raise MemstoreError(
                f"this future was made in process {self._made_in} before a fork: it is never "
                f"completed in the child (process {_Process.pid}); make a new Client there"
            )
        pump = pump_of_this_thread()
        if pump is not None:  # a callback blocking on the pump thread: pump inline
            pump.pump_until(self, timeout)
        elif concurrent.futures.wait([self], timeout).done:
            return
        if not self.done():
            raise Timeout(f"no result within {timeout}s (the request is still pending)")

    def settle(self, value: Any = None, error: BaseException | None = None) -> None:
        """Complete with ``value`` or ``error``, unless cancelled meanwhile (then the answer
        is dropped: a late reply must not raise on the thread that brings it)."""
        try:
            if error is None:
                self.set_result(value)
            else:
                self.set_exception(error)
        except concurrent.futures.InvalidStateError:
            pass


class DoneFuture(Future):
    """A Future that is already done, for calls answered without a round trip."""

    def __init__(self, value: Any = None):
        super().__init__()
        self.set_result(value)


class InlineResult:
    """The value of a request answered inline (the fast path): no future, no lock.

    Never handed to users: blocking methods call ``result()`` on it at once.
    """

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def result(self, timeout: float | None = None) -> Any:
        return self.value

    # Enough of the Future protocol for Gathered and Chained to take one as a part.
    def done(self) -> bool:
        return True

    def cancelled(self) -> bool:
        return False

    def exception(self, timeout: float | None = None) -> None:
        return None

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        fn(self)


class Gathered(Future):
    """Done when all ``parts`` are; its result is ``combine([part results])``."""

    def __init__(self, parts: list, combine: Callable[[list], Any] = list):
        super().__init__()
        self._parts, self._combine = parts, combine
        self._left = len(parts)
        self._lock = threading.Lock()
        if not parts:
            self.settle(combine([]))
        for part in parts:
            part.add_done_callback(self._part_done)

    def _part_done(self, part: Future) -> None:
        with self._lock:
            self._left -= 1
            last = self._left == 0
        error = _error_of(part)
        if error is not None:
            self.settle(error=error)  # the first error wins
        elif last and not self.done():
            try:
                self.settle(self._combine([p.result(0) for p in self._parts]))
            except Exception as exc:
                self.settle(error=exc)


class Chained(Future):
    """``first``, then ``step(first's result)``, which returns a value or another future."""

    def __init__(self, first: Future, step: Callable[[Any], Any]):
        super().__init__()
        self._step = step
        first.add_done_callback(self._first_done)

    def _first_done(self, first: Future) -> None:
        error = _error_of(first)
        if error is not None:
            self.settle(error=error)
            return
        try:
            nxt = self._step(first.result(0))
        except Exception as exc:
            self.settle(error=exc)
            return
        if isinstance(nxt, InlineResult):
            self.settle(nxt.value)
        elif isinstance(nxt, concurrent.futures.Future):
            nxt.add_done_callback(self._copy_from)
        else:
            self.settle(nxt)

    def _copy_from(self, source: Future) -> None:
        error = _error_of(source)
        if error is not None:
            self.settle(error=error)
        else:
            self.settle(source.result(0))


def _error_of(future: concurrent.futures.Future) -> BaseException | None:
    """A done future's error; a cancelled part is an error of the whole."""
    if future.cancelled():
        return ConnectionLost("a part of this request was cancelled")
    return future.exception(0)


def chain(first: Future | InlineResult, step: Callable[[Any], Any]) -> Future | InlineResult:
    """``Chained(first, step)``, or, when ``first`` was answered inline (a blocking call on
    the fast path), ``step`` run right here."""
    if not isinstance(first, InlineResult):
        return Chained(first, step)
    nxt = step(first.value)
    return nxt if isinstance(nxt, (InlineResult, concurrent.futures.Future)) else InlineResult(nxt)


def wait(futures: list, timeout: float | None = None) -> None:
    """Wait until all ``futures`` are done; ``Timeout`` if ``timeout`` seconds pass first."""
    deadline = None if timeout is None else time.monotonic() + timeout
    for future in futures:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if isinstance(future, Future):
            future._await(left)
        elif concurrent.futures.wait([future], left).not_done:
            raise Timeout(f"not all futures were done within {timeout}s")
