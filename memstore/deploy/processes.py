"""Child processes a launcher starts: one type, one ready-line reader, one stop routine.

Shards, gateways and scheduler jobs (``mpiexec``, ``srun``, applications) are all programs
that print a ready line on stdout once they serve and are stopped with SIGTERM, then
SIGKILL. Everything here is shared by :mod:`memstore.deploy.local`,
:mod:`memstore.deploy.gateways` and :mod:`memstore.deploy.jobs`, and imports none of them.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from memstore.config import READY_LINE
from memstore.errors import MemstoreError

log = logging.getLogger(__name__)


@dataclass
class ChildProcess:
    """A running shard or gateway: its process, address (from its ready line) and log."""

    process: subprocess.Popen
    address: str
    log_path: Path

    def alive(self) -> bool:
        return self.process.poll() is None


def ready_line(stream: IO[bytes], timeout: float, ready: str = READY_LINE) -> str | None:
    """The first line of ``stream`` that starts with ``ready``, within ``timeout`` s.

    Reads the pipe's file descriptor itself (``os.read`` of what is there, split into lines
    here): a buffered ``readline`` after a ``select`` may pull several lines into Python's
    buffer, where the next ``select`` cannot see them. None at the deadline or end of output.
    """
    fd = stream.fileno()
    deadline = time.monotonic() + timeout
    pending = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace")
                if line.startswith(ready):
                    return line
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None  # the process closed its output (it ended)
            pending += chunk


def read_ready(
    child: ChildProcess, timeout: float, ready: str = READY_LINE, what: str = "shard"
) -> str:
    """What ``child`` prints after ``ready`` once it serves (its address, or a shard list).

    The pipe is closed afterwards: the child prints nothing more a launcher reads.

    Raises:
        MemstoreError: no ready line within ``timeout`` or before the child's output ended;
            the child is stopped and the message carries the end of its log.
    """
    stream: IO[bytes] = child.process.stdout  # type: ignore[assignment]
    line = ready_line(stream, timeout, ready)
    stream.close()
    if line is None:
        stop_processes([child])  # before reading the log: what it wrote is all there
        path = child.log_path
        tail = path.read_text(errors="replace")[-2000:] if path.exists() else ""
        raise MemstoreError(f"{what} did not start within {timeout}s (log {path}):\n{tail}")
    return line[len(ready) :].strip()


def stop_processes(
    children: Iterable[ChildProcess | subprocess.Popen], timeout: float = 10.0
) -> None:
    """SIGTERM every child, then SIGKILL each one still running after ``timeout`` s.

    A child that leads its own process group (started with ``start_new_session``: jobs,
    ``memstore start``'s shards) is signalled with its whole group, so what it started
    (``mpiexec``'s ranks) ends with it.
    """
    processes = [c.process if isinstance(c, ChildProcess) else c for c in children]
    for process in processes:
        if process.poll() is None:
            _signal(process, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("process %d ignored SIGTERM; killing it: %s", process.pid, process.args)
            _signal(process, signal.SIGKILL)
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _signal(process: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to ``process``'s group if it leads one, else to the process alone."""
    try:
        if os.getpgid(process.pid) == process.pid:
            os.killpg(process.pid, sig)
        else:
            process.send_signal(sig)
    except (ProcessLookupError, PermissionError):
        pass  # it ended already
