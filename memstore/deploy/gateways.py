"""Start ``memstore gateway`` processes next to shards (``LocalCluster(resp_port=...)``).

Each gateway is its own process (its own GIL) in front of the whole store. With several,
every one is told the full gateway list (``MEMSTORE.GATEWAYS``) once all listen, so each
answers ``CLUSTER SLOTS`` alike and a SmartRedis client in cluster mode spreads over them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from memstore.config import DEFAULT_HOST, ENV_CURVE_DIR, GATEWAY_READY_LINE, STARTUP_TIMEOUT
from memstore.deploy.processes import ChildProcess, read_ready, stop_processes
from memstore.errors import MemstoreError
from memstore.gateway.resp import encode


def start_gateways(
    shard_addresses: list[str],
    count: int = 1,
    *,
    host: str = DEFAULT_HOST,
    port: int = 0,
    log_dir: str | Path,
    timeout: float = STARTUP_TIMEOUT,
    curve_dir: str | None = None,
) -> list[ChildProcess]:
    """``count`` gateways on ports ``port, port+1, ...`` (0: free ports), all serving.

    Raises:
        MemstoreError: a gateway did not start (its log is in the message); the others
            are stopped.
    """
    if count < 1:
        raise ValueError(f"gateways must be at least 1, got {count}")
    started: list[ChildProcess] = []
    env = None if curve_dir is None else {**os.environ, ENV_CURVE_DIR: curve_dir}
    try:
        for i in range(count):
            gateway_port = port + i if port else 0
            log_path = Path(log_dir) / f"memstore-gateway-{i}.log"
            started.append(_spawn(shard_addresses, host, gateway_port, log_path, env))
        for gateway in started:
            gateway.address = read_ready(gateway, timeout, GATEWAY_READY_LINE, "gateway")
        if count > 1:
            for gateway in started:
                command(gateway.address, "MEMSTORE.GATEWAYS", *(g.address for g in started))
    except BaseException:
        stop_processes(started)
        raise
    return started


def _spawn(
    shard_addresses: list[str], host: str, port: int, log_path: Path, env: dict | None
) -> ChildProcess:
    """One ``memstore gateway`` process; its address is read later (``read_ready``)."""
    cluster = ",".join(shard_addresses)
    argv = [sys.executable, "-m", "memstore.cli", "gateway",
            "--address", cluster, "--host", host, "--port", str(port)]  # fmt: skip
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=log_file, stdin=subprocess.DEVNULL, env=env
        )
    return ChildProcess(process, "", log_path)


def command(address: str, *args: str, timeout: float = STARTUP_TIMEOUT) -> bytes:
    """Send one RESP command to ``host:port``; its reply's first line (``+OK``).

    Raises:
        MemstoreError: an error reply, or none within ``timeout``.
    """
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            sock.sendall(b"".join(encode(list(args))))
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
    except OSError as exc:
        raise MemstoreError(f"gateway {address} did not answer {args[0]}: {exc}") from None
    if not reply.startswith((b"+", b":", b"*", b"$")):
        raise MemstoreError(f"gateway {address} refused {args[0]}: {reply.strip()[:200]!r}")
    return reply.strip()
