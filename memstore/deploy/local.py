"""Start, restart and stop shard processes on this machine; ``LocalCluster``.

``LocalCluster`` is the Python form (``with LocalCluster(shards=4) as c: c.client()``);
``memstore start|stop`` is the shell form. Each shard is a ``memstore-server`` process;
once all answer, each is told the full shard list so that any one address is enough for
a client.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from memstore import auth, shm
from memstore.client import Client
from memstore.config import DEFAULT_HOST, ENV_ADDRESS, ENV_CURVE_DIR, STARTUP_TIMEOUT
from memstore.deploy.admin import set_cluster
from memstore.deploy.curve import secure_args, secure_keys
from memstore.deploy.gateways import start_gateways
from memstore.deploy.processes import ChildProcess, read_ready, stop_processes
from memstore.errors import MemstoreError


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
    keys_dir: str | os.PathLike | None = None,
) -> list[ChildProcess]:
    """Start ``shards`` shard processes and wait until every one is serving.

    Ports run in sequence from ``port`` (0: free ports); with ``ipc_dir`` the shards listen
    on ``ipc://`` sockets there instead. ``detach`` puts them in their own session, so they
    outlive this process (``memstore start``). ``keys_dir`` (what ``memstore keygen`` wrote,
    made there when missing) makes them CURVE shards admitting its client key. Any failure
    stops the ones already started.
    """
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    log_dir = _log_dir(log_dir)
    shm.sweep()  # shared-memory files of dead shards and clients of this user
    started: list[ChildProcess] = []
    curve = None
    if keys_dir is not None:
        curve = secure_keys(keys_dir)
        extra_args = [*secure_args(keys_dir), *(extra_args or [])]
    try:
        for i, bind in enumerate(_bind_addresses(shards, host, port, ipc_dir)):
            log_path = log_dir / f"memstore-shard-{i}.log"
            started.append(_spawn(bind, log_path, max_memory, extra_args, detach))
        for shard in started:
            shard.address = read_ready(shard, timeout)
        set_cluster([s.address for s in started], timeout=timeout, curve=curve)
    except BaseException:
        stop_processes(started)
        raise
    return started


def restart_shard(
    shard_addresses: list[str],
    index: int,
    *,
    max_memory: str | int = 0,
    log_dir: str | os.PathLike | None = None,
    detach: bool = False,
    extra_args: list[str] | None = None,
    timeout: float = STARTUP_TIMEOUT,
) -> ChildProcess:
    """Start shard ``index`` of a cluster again at its address, knowing the whole cluster.

    The new process gets the shard list on its command line (``--cluster``), so from its
    first request on it refuses keys the other shards own and tells clients the full list.
    It starts empty: what the old process held is gone. Its log is appended to.

    Raises:
        MemstoreError: ``index`` is out of range, or the shard did not start (e.g. another
            process holds the address).
    """
    if not 0 <= index < len(shard_addresses):
        raise MemstoreError(
            f"no shard {index}: the cluster has shards 0 to {len(shard_addresses) - 1}"
        )
    log_path = _log_dir(log_dir) / f"memstore-shard-{index}.log"
    cluster = ["--cluster", ",".join(shard_addresses), "--index", str(index)]
    extra_args = [*cluster, *(extra_args or [])]
    shard = _spawn(shard_addresses[index], log_path, max_memory, extra_args, detach, append=True)
    try:
        shard.address = read_ready(shard, timeout)
    except BaseException:
        stop_processes([shard])
        raise
    return shard


def _log_dir(log_dir: str | os.PathLike | None) -> Path:
    """``log_dir``, made if missing; a new temporary folder for None."""
    path = Path(log_dir or tempfile.mkdtemp(prefix="memstore-logs-"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _bind_addresses(shards: int, host: str, port: int, ipc_dir: str | None) -> list[str]:
    if ipc_dir:
        Path(ipc_dir).mkdir(mode=0o700, parents=True, exist_ok=True)  # private sockets
        return [f"ipc://{Path(ipc_dir).resolve()}/memstore-{i}.sock" for i in range(shards)]
    return [f"tcp://{host}:{port + i if port else 0}" for i in range(shards)]


def _spawn(
    bind: str,
    log_path: Path,
    max_memory: str | int,
    extra_args: list[str] | None,
    detach: bool,
    append: bool = False,
) -> ChildProcess:
    """One ``memstore-server`` process; its address is read later (``read_ready``)."""
    argv = [sys.executable, "-m", "memstore.server", "--bind", bind,
            "--max-memory", str(max_memory), *(extra_args or [])]  # fmt: skip
    with open(log_path, "ab" if append else "wb") as log_file:
        process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=log_file,
            stdin=subprocess.DEVNULL,
            start_new_session=detach,
        )
    return ChildProcess(process, "", log_path)


def _restore_args(restore: str | os.PathLike | None) -> list[str]:
    """``memstore-server`` options that load snapshot ``restore`` (none for None)."""
    return [] if restore is None else ["--restore", os.path.abspath(os.fspath(restore))]


class LocalCluster:
    """Shard processes on this machine for the length of a ``with`` block.

    Args:
        shards: how many shard processes.
        ipc: listen on ``ipc://`` sockets in a temporary folder instead of TCP.
        max_memory: per-shard cap, e.g. ``"1GiB"`` (default unlimited).
        extra_args: more ``memstore-server`` options for every shard.
        secure: generate a key pair for the shards and one for clients (in a private
            temporary folder, ``keys_dir``) and speak CURVE; ``client()`` uses the client
            key, and ``env`` names the keys for other processes.
        restore: a snapshot directory (``Client.save``) the shards load at start, re-hashed
            onto this cluster's shard count (docs/operations.md).
        shm: offer same-node clients the shared-memory path (``False``: ``--no-shm``,
            sockets only).
        resp_port: also start ``gateways`` RESP gateways (``memstore gateway``) on ports
            ``resp_port, resp_port+1, ...`` (0: free ports), for SmartRedis's compiled
            clients; ``resp_addresses`` lists them as ``host:port`` and ``smartredis_env``
            holds the ``SSDB``/``SR_DB_TYPE`` such a client reads.
        gateways: how many gateways with ``resp_port``; more than one answer
            ``CLUSTER SLOTS`` together (SmartRedis's cluster mode).

    The shards (and gateways) are stopped on exit, also after an exception; ``address`` is
    the value for ``MEMSTORE_ADDRESS``.
    """

    def __init__(
        self,
        shards: int = 1,
        *,
        ipc: bool = False,
        host: str = DEFAULT_HOST,
        max_memory: str | int = 0,
        extra_args: list[str] | None = None,
        secure: bool = False,
        restore: str | os.PathLike | None = None,
        shm: bool = True,
        resp_port: int | None = None,
        gateways: int = 1,
    ):
        self._tmp = tempfile.mkdtemp(prefix="memstore-")  # 0700: private sockets and keys
        self._max_memory = max_memory
        self._extra_args = [*(extra_args or []), *([] if shm else ["--no-shm"])]
        self.keys_dir = os.path.join(self._tmp, "keys") if secure else None
        self.gateways: list[ChildProcess] = []
        self.resp_addresses: list[str] = []
        self.smartredis_env: dict[str, str] = {}
        try:
            self.shards = start_shards(
                shards,
                host=host,
                ipc_dir=self._tmp if ipc else None,
                max_memory=max_memory,
                log_dir=self._tmp,
                extra_args=[*self._extra_args, *_restore_args(restore)],
                keys_dir=self.keys_dir,
            )
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise
        self.addresses = [s.address for s in self.shards]
        self.address = ",".join(self.addresses)
        #: Environment that lets other processes (clients) reach this cluster.
        self.env: dict[str, str] = {ENV_ADDRESS: self.address}
        if self.keys_dir is not None:
            self.env[ENV_CURVE_DIR] = self.keys_dir
        if resp_port is not None:
            self._start_gateways(host, resp_port, gateways)

    def _start_gateways(self, host: str, port: int, count: int) -> None:
        try:
            self.gateways = start_gateways(
                self.addresses, count, host=host, port=port, log_dir=self._tmp,
                curve_dir=self.keys_dir,
            )  # fmt: skip
        except BaseException:
            self.close()
            raise
        self.resp_addresses = [g.address for g in self.gateways]
        self.smartredis_env = {
            "SSDB": ",".join(self.resp_addresses),
            "SR_DB_TYPE": "Clustered" if count > 1 else "Standalone",
        }

    def client(self, **kwargs) -> Client:
        """A :class:`memstore.Client` connected to this cluster (with its client key)."""
        if self.keys_dir is not None and "curve" not in kwargs:
            kwargs["curve"] = auth.client_keys(directory=self.keys_dir)
        return Client(self.address, **kwargs)

    def restart_shard(self, index: int, restore: str | os.PathLike | None = None) -> ChildProcess:
        """Bring shard ``index`` back at its address, knowing its cluster: empty, or with
        its keys from snapshot directory ``restore``.

        A shard still running is stopped first (its data is lost either way); the new one
        refuses keys the other shards own and lists the whole cluster in ``hello``. Clients
        reconnect by themselves.
        """
        if not 0 <= index < len(self.shards):
            raise MemstoreError(f"no shard {index}: this cluster has {len(self.shards)}")
        stop_processes([self.shards[index]])
        secure = secure_args(self.keys_dir) if self.keys_dir is not None else []
        self.shards[index] = restart_shard(
            self.addresses,
            index,
            max_memory=self._max_memory,
            log_dir=self._tmp,
            extra_args=[*secure, *self._extra_args, *_restore_args(restore)],
        )
        return self.shards[index]

    def logs(self) -> str:
        """Every shard's log, for diagnosing a failure."""
        return "\n".join(
            f"--- {s.address}\n{s.log_path.read_text(errors='replace')}"
            for s in self.shards
            if s.log_path.exists()
        )

    def close(self) -> None:
        """Stop the gateways and shards and remove the temporary folder."""
        stop_processes([*self.gateways, *self.shards])
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
