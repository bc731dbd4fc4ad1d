"""The Redis baseline: a real ``redis-server`` on loopback, driven by redis-py.

The server is found, in order, at ``--redis-server`` / ``MEMSTORE_BENCH_REDIS_SERVER``, on
``PATH`` (Debian's ``redis-server`` package), in the PyPI ``redis-server`` wheel (importable
``redis_server``, or unpacked by ``make bench`` into ``<venv>/redis-server-wheel``). It runs
with persistence off (``--save "" --appendonly no``) on a free port of 127.0.0.1 and is
stopped when the suite ends.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV_SERVER = "MEMSTORE_BENCH_REDIS_SERVER"
#: where ``make bench`` unpacks the PyPI wheel when neither apt nor pip can install it
WHEEL_DIR = "redis-server-wheel"


def find_server(explicit: str | None = None) -> str | None:
    """Path of a ``redis-server`` binary, or None."""
    for candidate in (explicit, os.environ.get(ENV_SERVER)):
        if candidate:
            return candidate if os.access(candidate, os.X_OK) else None
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redis_server  # the PyPI wheel

        return redis_server.REDIS_SERVER_PATH
    except ImportError:
        pass
    unpacked = Path(sys.prefix) / WHEEL_DIR / "redis_server" / "bin" / "redis-server"
    return str(unpacked) if os.access(unpacked, os.X_OK) else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A ``redis-server`` process on 127.0.0.1 for the length of a ``with`` block.

    Raises ``RuntimeError`` (with the reason) if redis-py or the server is missing or the
    server does not answer within ``timeout`` seconds.
    """

    def __init__(self, binary: str | None = None, timeout: float = 15.0):
        try:
            import redis
        except ImportError:
            raise RuntimeError("redis-py is not installed (pip install redis)") from None
        path = find_server(binary)
        if path is None:
            raise RuntimeError(
                "no redis-server found: install Debian's redis-server, or run `make bench`, "
                f"or point {ENV_SERVER} at one"
            )
        self.binary = path
        self.port = _free_port()
        self._dir = tempfile.mkdtemp(prefix="memstore-bench-redis-")
        options = {
            "bind": "127.0.0.1",
            "port": str(self.port),
            "save": "",
            "appendonly": "no",
            "protected-mode": "yes",
            "daemonize": "no",
            "dir": self._dir,
            "loglevel": "warning",
        }
        self.process = subprocess.Popen(
            [path, *(arg for name, value in options.items() for arg in (f"--{name}", value))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        try:
            self.version = self._wait_ready(redis, timeout)
        except BaseException:
            self.close()
            raise

    def _wait_ready(self, redis, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        client = redis.Redis(host="127.0.0.1", port=self.port)
        try:
            while True:
                if self.process.poll() is not None:
                    err = self.process.stderr.read().decode(errors="replace")[-500:]  # type: ignore[union-attr]
                    raise RuntimeError(f"redis-server exited at start: {err.strip()}")
                try:
                    return str(client.info("server")["redis_version"])
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"redis-server did not answer within {timeout}s"
                        ) from None
                    time.sleep(0.05)
        finally:
            client.close()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def client_info() -> dict:
    """redis-py's version and whether it parses with hiredis."""
    try:
        import redis
        from redis.utils import HIREDIS_AVAILABLE
    except ImportError:
        return {}
    return {"redis-py": redis.__version__, "hiredis": bool(HIREDIS_AVAILABLE)}
