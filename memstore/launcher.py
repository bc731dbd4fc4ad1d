"""Start, watch and stop shard processes on this machine, and the address file.

``LocalCluster`` is the Python form (``with LocalCluster(shards=4) as c: c.client()``);
``memstore start|stop|status`` is the shell form. Each shard is a ``memstore-server``
process; once all answer, each is told the full shard list so that any one address is
enough for a client.
"""

from __future__ import annotations

import logging
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from memstore import address as addresses
from memstore import wire
from memstore.config import DEFAULT_HOST, READY_LINE, STARTUP_TIMEOUT
from memstore.errors import MemstoreError

log = logging.getLogger(__name__)


@dataclass
class ShardProcess:
    """A running shard: its process, address and log file."""

    process: subprocess.Popen
    address: str
    log_path: Path

    def alive(self) -> bool:
        return self.process.poll() is None


def _bind_addresses(shards: int, host: str, port: int, ipc_dir: str | None) -> list[str]:
    if ipc_dir:
        Path(ipc_dir).mkdir(parents=True, exist_ok=True)
        return [f"ipc://{Path(ipc_dir).resolve()}/memstore-{i}.sock" for i in range(shards)]
    return [f"tcp://{host}:{port + i if port else 0}" for i in range(shards)]


def start_shards(
    shards: int = 1,
    *,
    host: str = DEFAULT_HOST,
    port: int = 0,
    ipc_dir: str | None = None,
    max_memory: str | int = 0,
    log_dir: str | os.PathLike | None = None,
    detach: bool = False,
    extra_args: list[str] | None = None,
    timeout: float = STARTUP_TIMEOUT,
) -> list[ShardProcess]:
    """Start ``shards`` shard processes and wait until every one is serving.

    Ports run in sequence from ``port`` (0: free ports); with ``ipc_dir`` the shards listen
    on ``ipc://`` sockets there instead. ``detach`` puts them in their own session, so they
    outlive this process (``memstore start``). Any failure stops the ones already started.
    """
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="memstore-logs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    started: list[ShardProcess] = []
    try:
        for i, bind in enumerate(_bind_addresses(shards, host, port, ipc_dir)):
            log_path = log_dir / f"memstore-shard-{i}.log"
            with open(log_path, "wb") as log_file:
                cmd = [
                    sys.executable,
                    "-m",
                    "memstore.server",
                    "--bind",
                    bind,
                    "--max-memory",
                    str(max_memory),
                    *(extra_args or []),
                ]
                process = subprocess.Popen(
                    cmd,
                    stdout=subprocess.PIPE,
                    stderr=log_file,
                    stdin=subprocess.DEVNULL,
                    start_new_session=detach,
                )
            started.append(ShardProcess(process, "", log_path))
        for shard in started:
            shard.address = _read_ready(shard, timeout)
        set_cluster([s.address for s in started], timeout=timeout)
    except BaseException:
        stop_processes(started)
        raise
    return started


def _read_ready(shard: ShardProcess, timeout: float) -> str:
    """The address a starting shard prints, or an error carrying its log."""
    stream: IO[bytes] = shard.process.stdout  # type: ignore[assignment]
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        ready = selector.select(timeout)
    line = stream.readline().decode() if ready else ""
    stream.close()
    if not line.startswith(READY_LINE):
        shard.process.kill()
        shard.process.wait()
        tail = shard.log_path.read_text(errors="replace")[-2000:]
        raise MemstoreError(f"shard did not start (log {shard.log_path}):\n{tail}")
    return line[len(READY_LINE) :].strip()


def _request(
    address: str, op: str, fields: dict | None = None, timeout: float = STARTUP_TIMEOUT
) -> dict:
    """One admin request on a fresh socket (no cluster discovery)."""
    import zmq

    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    try:
        socket.connect(address)
        socket.send_multipart(wire.request(1, op, fields))
        if not socket.poll(int(timeout * 1000)):
            raise MemstoreError(f"shard {address} did not answer {op} within {timeout}s")
        header = wire.unpack_header(socket.recv_multipart()[0])
    finally:
        socket.close()
    if not header.get("ok"):
        raise MemstoreError(f"shard {address} refused {op}: {header.get('msg')}")
    return header


def set_cluster(shard_addresses: list[str], timeout: float = STARTUP_TIMEOUT) -> None:
    """Tell every shard the full shard list and its own place in it."""
    for index, address in enumerate(shard_addresses):
        _request(address, "cluster", {"shards": shard_addresses, "index": index}, timeout)


def stop_addresses(shard_addresses: list[str], timeout: float = 5.0) -> list[str]:
    """Ask each shard to shut down; the addresses that did not answer."""
    silent = []
    for address in shard_addresses:
        try:
            _request(address, "shutdown", timeout=timeout)
        except MemstoreError:
            silent.append(address)
    return silent


def stop_processes(shards: list[ShardProcess], timeout: float = 10.0) -> None:
    """Terminate shard processes, killing any that outlive ``timeout``."""
    for shard in shards:
        if shard.alive():
            shard.process.terminate()
    deadline = time.monotonic() + timeout
    for shard in shards:
        try:
            shard.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("shard %s ignored SIGTERM; killing it", shard.address)
            shard.process.kill()
            shard.process.wait()


class LocalCluster:
    """Shard processes on this machine for the length of a ``with`` block.

    Args:
        shards: how many shard processes.
        ipc: listen on ``ipc://`` sockets in a temporary folder instead of TCP.
        max_memory: per-shard cap, e.g. ``"1GiB"`` (default unlimited).
        extra_args: more ``memstore-server`` options for every shard.

    The shards are stopped on exit, also after an exception; ``address`` is the value for
    ``MEMSTORE_ADDRESS``.
    """

    def __init__(
        self,
        shards: int = 1,
        *,
        ipc: bool = False,
        host: str = DEFAULT_HOST,
        max_memory: str | int = 0,
        extra_args: list[str] | None = None,
    ):
        self._tmp = tempfile.mkdtemp(prefix="memstore-")
        try:
            self.shards = start_shards(
                shards,
                host=host,
                ipc_dir=self._tmp if ipc else None,
                max_memory=max_memory,
                log_dir=self._tmp,
                extra_args=extra_args,
            )
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise
        self.addresses = [s.address for s in self.shards]
        self.address = ",".join(self.addresses)

    def client(self, **kwargs):
        """A :class:`memstore.Client` connected to this cluster."""
        from memstore.client import Client

        return Client(self.address, **kwargs)

    def logs(self) -> str:
        """Every shard's log, for diagnosing a failure."""
        return "\n".join(
            f"--- {s.address}\n{s.log_path.read_text(errors='replace')}"
            for s in self.shards
            if s.log_path.exists()
        )

    def close(self) -> None:
        stop_processes(self.shards)
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_address_file(path: str | os.PathLike, shard_addresses: list[str]) -> None:
    addresses.write_file(path, shard_addresses)
