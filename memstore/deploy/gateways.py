"""Start ``memstore gateway`` processes next to shards (``LocalCluster(resp_port=...)``).

Each gateway is its own process (its own GIL) in front of the whole store. With several,
every one is told the full gateway list (``MEMSTORE.GATEWAYS``, as their admin user, whose
password only this launcher knows) once all listen, so each answers ``CLUSTER SLOTS``
alike and a SmartRedis client in cluster mode spreads over them. In front of a CURVE store
(``curve_dir``) the gateways require a password, written to ``curve_dir/gateway.password``.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

from memstore.config import DEFAULT_HOST, ENV_CURVE_DIR, GATEWAY_READY_LINE, STARTUP_TIMEOUT
from memstore.deploy.processes import ChildProcess, read_ready, stop_processes
from memstore.errors import MemstoreError
from memstore.gateway.access import ADMIN_USER, ENV_ADMIN_PASSWORD
from memstore.gateway.resp import encode

#: Where ``start_gateways`` writes the password of gateways in front of a CURVE store.
PASSWORD_FILE = "gateway.password"


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
    admin = secrets.token_urlsafe(32)
    env = {**os.environ, ENV_ADMIN_PASSWORD: admin}
    options = []
    if curve_dir is not None:
        env[ENV_CURVE_DIR] = curve_dir
        options = ["--requirepass-file", str(write_password(Path(curve_dir) / PASSWORD_FILE))]
    try:
        for i in range(count):
            gateway_port = port + i if port else 0
            log_path = Path(log_dir) / f"memstore-gateway-{i}.log"
            argv = [*_argv(shard_addresses, host, gateway_port), *options]
            started.append(_spawn(argv, log_path, env))
        for gateway in started:
            gateway.address = read_ready(gateway, timeout, GATEWAY_READY_LINE, "gateway")
        if count > 1:
            peers = [g.address for g in started]
            for gateway in started:
                command(gateway.address, "MEMSTORE.GATEWAYS", *peers, admin_password=admin)
    except BaseException:
        stop_processes(started)
        raise
    return started


def write_password(path: Path) -> Path:
    """A fresh random password in ``path`` (created 0600, never through a link)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(secrets.token_urlsafe(32) + "\n")
    return path


def _argv(shard_addresses: list[str], host: str, port: int) -> list[str]:
    cluster = ",".join(shard_addresses)
    return [sys.executable, "-m", "memstore.cli", "gateway",
            "--address", cluster, "--host", host, "--port", str(port)]  # fmt: skip


def _spawn(argv: list[str], log_path: Path, env: dict) -> ChildProcess:
    """One ``memstore gateway`` process; its address is read later (``read_ready``)."""
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=log_file, stdin=subprocess.DEVNULL, env=env
        )
    return ChildProcess(process, "", log_path)


def command(
    address: str, *args: str, timeout: float = STARTUP_TIMEOUT, admin_password: str | None = None
) -> bytes:
    """Send one RESP command to ``host:port`` (after ``AUTH admin`` with
    ``admin_password``); its reply's first line (``+OK``).

    Raises:
        MemstoreError: an error reply, or none within ``timeout``.
    """
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            if admin_password is not None:
                _check(address, "AUTH", _ask(sock, ["AUTH", ADMIN_USER, admin_password]))
            reply = _ask(sock, list(args))
    except OSError as exc:
        raise MemstoreError(f"gateway {address} did not answer {args[0]}: {exc}") from None
    return _check(address, args[0], reply)


def _ask(sock: socket.socket, args: list[str]) -> bytes:
    """Send one command, read its reply's first line."""
    sock.sendall(b"".join(encode(args)))
    reply = b""
    while not reply.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        reply += chunk
    return reply


def _check(address: str, name: str, reply: bytes) -> bytes:
    if not reply.startswith((b"+", b":", b"*", b"$")):
        raise MemstoreError(f"gateway {address} refused {name}: {reply.strip()[:200]!r}")
    return reply.strip()
