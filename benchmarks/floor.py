"""The floor: the least any Python store on ZeroMQ can cost, and memory bandwidth.

A *floor server* is a raw pyzmq ROUTER loop in its own process, like a memstore shard but
with nothing in it: ``put`` keeps the received frame under its key and answers ``ok``;
``get`` sends the kept frame back (``copy=False``). Clients are raw DEALER sockets. So the
floor carries the same bytes in the same direction as memstore's put and get, without
memstore's header encoding, validation, futures or routing.

Run one with ``python -m benchmarks.floor --bind tcp://127.0.0.1:0``; it prints
``floor ready at <address>`` and serves until terminated. ``--bind unix:///path`` serves
the plain-socket floor instead (:mod:`benchmarks.unix_floor`: the same-node path's floor).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
import zlib

import numpy as np
import zmq

from benchmarks import unix_floor

READY = "floor ready at "
PUT, GET = b"p", b"g"
OK = b"ok"


def serve(bind: str) -> None:
    """The floor server's loop: one ROUTER, one thread, frames kept as received."""
    context = zmq.Context.instance()
    socket = context.socket(zmq.ROUTER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.SNDHWM, 0)
    socket.setsockopt(zmq.RCVHWM, 0)
    if bind.startswith("tcp://") and bind.endswith(":0"):
        host = bind.rsplit(":", 1)[0]
        bind = f"{host}:{socket.bind_to_random_port(host)}"
    else:
        socket.bind(bind)
    print(READY + bind, flush=True)
    store: dict[bytes, zmq.Frame] = {}
    empty = zmq.Frame(b"")
    while True:
        frames = socket.recv_multipart(copy=False)
        identity, op, key = frames[0], frames[1].bytes, frames[2].bytes
        if op == PUT:
            store[key] = frames[3]
            socket.send_multipart([identity, OK], copy=False)
        else:
            socket.send_multipart([identity, store.get(key, empty)], copy=False)


def start(bind: str = "tcp://127.0.0.1:0", timeout: float = 30.0) -> tuple[subprocess.Popen, str]:
    """Start a floor server process; its process and address."""
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.floor", "--bind", bind],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        line = _read_line(process, timeout)
        if not line.startswith(READY):
            raise RuntimeError(f"floor server did not start: {line!r}")
    except BaseException:
        stop(process)
        raise
    return process, line[len(READY) :].strip()


def _read_line(process: subprocess.Popen, timeout: float) -> str:
    import selectors

    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            return ""
    return process.stdout.readline().decode()  # type: ignore[union-attr]


def stop(process: subprocess.Popen, timeout: float = 5.0) -> None:
    """Terminate a floor server (kill it if it lingers)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout:
        process.stdout.close()


class FloorClient:
    """Raw DEALER sockets to one or more floor servers; keys pick a server by hash."""

    def __init__(self, addresses: list[str], timeout: float = 60.0):
        self._context = zmq.Context.instance()
        self._sockets = []
        self._timeout_ms = int(timeout * 1000)
        for address in addresses:
            socket = self._context.socket(zmq.DEALER)
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.SNDHWM, 0)
            socket.setsockopt(zmq.RCVHWM, 0)
            socket.connect(address)
            self._sockets.append(socket)

    def _socket(self, key: bytes) -> zmq.Socket:
        # crc32, not hash(): placement must agree across processes
        return self._sockets[zlib.crc32(key) % len(self._sockets)]

    def _recv(self, socket: zmq.Socket) -> list:
        if not socket.poll(self._timeout_ms):
            raise TimeoutError("the floor server did not answer in time")
        return socket.recv_multipart(copy=False)

    def put(self, key: str, array: np.ndarray) -> None:
        k = key.encode()
        socket = self._socket(k)
        socket.send_multipart([PUT, k, array], copy=False)
        self._recv(socket)

    def get(self, key: str, dtype: np.dtype) -> np.ndarray:
        k = key.encode()
        socket = self._socket(k)
        socket.send_multipart([GET, k], copy=False)
        return np.frombuffer(self._recv(socket)[0].buffer, dtype=dtype)

    def put_many(self, keys: list[str], array: np.ndarray) -> None:
        """Pipelined puts: send them all, then collect every answer."""
        counts = [0] * len(self._sockets)
        for key in keys:
            k = key.encode()
            socket = self._socket(k)
            socket.send_multipart([PUT, k, array], copy=False)
            counts[self._sockets.index(socket)] += 1
        for socket, count in zip(self._sockets, counts, strict=True):
            for _ in range(count):
                self._recv(socket)

    def close(self) -> None:
        for socket in self._sockets:
            socket.close(linger=0)
        self._sockets = []


def memcpy_seconds(size: int, reps: int, budget_s: float) -> list[float]:
    """Seconds per ``numpy.copyto`` of ``size`` bytes: at most ``reps``, within ``budget_s``."""
    src = np.ones(size // 4, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # first touch of dst's pages is not a copy's cost
    samples: list[float] = []
    end = time.perf_counter() + budget_s
    for _ in range(reps):
        start = time.perf_counter()
        np.copyto(dst, src)
        samples.append(time.perf_counter() - start)
        if time.perf_counter() > end:
            break
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floor", description=__doc__)
    parser.add_argument("--bind", default="tcp://127.0.0.1:0")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the suite stops us, also after Ctrl-C
    if args.bind.startswith(unix_floor.SCHEME):
        unix_floor.serve(
            args.bind[len(unix_floor.SCHEME) :], lambda at: print(READY + at, flush=True)
        )
    else:
        serve(args.bind)
    return 0


if __name__ == "__main__":
    sys.exit(main())
