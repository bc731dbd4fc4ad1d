"""Start, watch and stop shard processes on this machine, and the address file.

``LocalCluster`` is the Python form (``with LocalCluster(shards=4) as c: c.client()``);
``memstore start|stop|status`` is the shell form. ``Launcher`` starts a store and its
applications through ``mpiexec``, Slurm or PBS too (commands built in
:mod:`memstore.schedulers`). Each shard is a ``memstore-server``
process; once all answer, each is told the full shard list so that any one address is
enough for a client.
"""

from __future__ import annotations

import logging
import os
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from memstore import address as addresses
from memstore import auth, config, schedulers, shm, wire
from memstore.config import (
    DEFAULT_HOST,
    ENV_ADDRESS,
    ENV_ADDRESS_FILE,
    ENV_CURVE_DIR,
    ENV_SSDB,
    READY_LINE,
    STARTUP_TIMEOUT,
)
from memstore.errors import AuthError, MemstoreError, Timeout

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
        Path(ipc_dir).mkdir(mode=0o700, parents=True, exist_ok=True)  # private sockets
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
    keys_dir: str | os.PathLike | None = None,
) -> list[ShardProcess]:
    """Start ``shards`` shard processes and wait until every one is serving.

    Ports run in sequence from ``port`` (0: free ports); with ``ipc_dir`` the shards listen
    on ``ipc://`` sockets there instead. ``detach`` puts them in their own session, so they
    outlive this process (``memstore start``). ``keys_dir`` (what ``memstore keygen`` wrote,
    made there when missing) makes them CURVE shards admitting its client key. Any failure
    stops the ones already started.
    """
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="memstore-logs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    shm.sweep()  # shared-memory files of dead shards and clients of this user
    started: list[ShardProcess] = []
    curve = None
    if keys_dir is not None:
        curve = secure_keys(keys_dir)
        extra_args = [*secure_args(keys_dir), *(extra_args or [])]
    try:
        for i, bind in enumerate(_bind_addresses(shards, host, port, ipc_dir)):
            started.append(
                _spawn(bind, log_dir / f"memstore-shard-{i}.log", max_memory, extra_args, detach)
            )
        for shard in started:
            shard.address = _read_ready(shard, timeout)
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
) -> ShardProcess:
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
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="memstore-logs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    cluster = ["--cluster", ",".join(shard_addresses), "--index", str(index)]
    shard = _spawn(
        shard_addresses[index],
        log_dir / f"memstore-shard-{index}.log",
        max_memory,
        [*cluster, *(extra_args or [])],
        detach,
        append=True,
    )
    try:
        shard.address = _read_ready(shard, timeout)
    except BaseException:
        stop_processes([shard])
        raise
    return shard


def _spawn(
    bind: str,
    log_path: Path,
    max_memory: str | int,
    extra_args: list[str] | None,
    detach: bool,
    append: bool = False,
) -> ShardProcess:
    """One ``memstore-server`` process; its address is read later (``_read_ready``)."""
    with open(log_path, "ab" if append else "wb") as log_file:
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
    return ShardProcess(process, "", log_path)


def _read_ready(
    shard: ShardProcess, timeout: float, ready: str = READY_LINE, what: str = "shard"
) -> str:
    """The address a starting shard (or gateway: its ``ready`` line) prints, or an error
    carrying its log."""
    stream: IO[bytes] = shard.process.stdout  # type: ignore[assignment]
    line = _ready_line(stream, timeout, ready) or ""
    stream.close()
    if not line.startswith(ready):
        shard.process.kill()
        shard.process.wait()
        tail = shard.log_path.read_text(errors="replace")[-2000:]
        raise MemstoreError(f"{what} did not start (log {shard.log_path}):\n{tail}")
    return line[len(ready) :].strip()


def _ready_line(stream: IO[bytes], timeout: float, ready: str = READY_LINE) -> str | None:
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


def secure_args(keys_dir: str | os.PathLike) -> list[str]:
    """``memstore-server`` options for CURVE with the keys in ``keys_dir``."""
    directory = Path(keys_dir)
    return [
        "--curve-secret-key",
        str(directory / f"{auth.SERVER}.key_secret"),
        "--curve-authorized-keys",
        str(directory),
    ]


def secure_keys(keys_dir: str | os.PathLike) -> auth.ClientKeys:
    """The cluster key in ``keys_dir`` as the launcher's identity; generated if missing."""
    directory = Path(keys_dir)
    if not (directory / f"{auth.SERVER}.key_secret").exists():
        auth.keygen(directory)
    return auth.load_server(directory / f"{auth.SERVER}.key_secret").cluster_client()


def _request(
    address: str,
    op: str,
    fields: dict | None = None,
    timeout: float = STARTUP_TIMEOUT,
    curve: auth.ClientKeys | None = None,
) -> dict:
    """One admin request on a fresh socket (no cluster discovery); ``curve`` (default:
    ``MEMSTORE_CURVE_*``) for secure shards."""
    import zmq

    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    curve = curve if curve is not None else auth.client_keys()
    if curve is not None:
        curve.apply(socket)
    try:
        socket.connect(address)
        socket.send_multipart(wire.request(1, op, fields))
        if not socket.poll(int(timeout * 1000)):
            raise MemstoreError(f"shard {address} did not answer {op} within {timeout}s")
        header = wire.unpack_header(socket.recv_multipart()[0])
    finally:
        socket.close()
    if not header.get("ok"):
        kind = AuthError if header.get("code") == AuthError.code else MemstoreError
        raise kind(f"shard {address} refused {op}: {header.get('msg')}")
    return header


def set_cluster(
    shard_addresses: list[str],
    timeout: float = STARTUP_TIMEOUT,
    curve: auth.ClientKeys | None = None,
) -> None:
    """Tell every shard the full shard list and its own place in it."""
    for index, address in enumerate(shard_addresses):
        fields = {"shards": shard_addresses, "index": index}
        _request(address, "cluster", fields, timeout, curve=curve)


def stop_addresses(
    shard_addresses: list[str],
    timeout: float = 5.0,
    curve: auth.ClientKeys | None = None,
    refused: list[AuthError] | None = None,
) -> list[str]:
    """Ask each shard to shut down; the addresses that did not answer. With ``refused``, a
    shard that answered but refused this key (``--admin-key``) goes there as its error
    instead (it still serves)."""
    silent = []
    for address in shard_addresses:
        try:
            _request(address, "shutdown", timeout=timeout, curve=curve)
        except AuthError as exc:
            if refused is None:
                silent.append(address)
            else:
                refused.append(exc)
        except MemstoreError:
            silent.append(address)
    return silent


def stop_processes(shards: list[ShardProcess], timeout: float = 10.0) -> None:
    """Terminate shard (or gateway) processes, killing any that outlive ``timeout``."""
    for shard in shards:
        if shard.alive():
            shard.process.terminate()
    deadline = time.monotonic() + timeout
    for shard in shards:
        try:
            shard.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s ignored SIGTERM; killing it", shard.address or shard.log_path)
            shard.process.kill()
            shard.process.wait()


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
        extra_args = [*(extra_args or []), *([] if shm else ["--no-shm"])]
        self._max_memory, self._extra_args = max_memory, extra_args
        self.keys_dir = os.path.join(self._tmp, "keys") if secure else None
        #: Environment that lets other processes (clients) reach this cluster.
        self.env: dict[str, str] = {}
        try:
            self.shards = start_shards(
                shards,
                host=host,
                ipc_dir=self._tmp if ipc else None,
                max_memory=max_memory,
                log_dir=self._tmp,
                extra_args=[*(extra_args or []), *_restore_args(restore)],
                keys_dir=self.keys_dir,
            )
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise
        self.addresses = [s.address for s in self.shards]
        self.address = ",".join(self.addresses)
        self.env[ENV_ADDRESS] = self.address
        if self.keys_dir is not None:
            self.env[ENV_CURVE_DIR] = self.keys_dir
        self.gateways: list = []
        self.resp_addresses: list[str] = []
        self.smartredis_env: dict[str, str] = {}
        if resp_port is not None:
            self._start_gateways(host, resp_port, gateways)

    def _start_gateways(self, host: str, port: int, count: int) -> None:
        from memstore.gateway.processes import start_gateways

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

    def client(self, **kwargs):
        """A :class:`memstore.Client` connected to this cluster (with its client key)."""
        from memstore.client import Client

        if self.keys_dir is not None and "curve" not in kwargs:
            kwargs["curve"] = auth.client_keys(directory=self.keys_dir)
        return Client(self.address, **kwargs)

    def restart_shard(self, index: int, restore: str | os.PathLike | None = None) -> ShardProcess:
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
            extra_args=[*secure, *(self._extra_args or []), *_restore_args(restore)],
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
        stop_processes([*getattr(self, "gateways", []), *self.shards])
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _restore_args(restore: str | os.PathLike | None) -> list[str]:
    """``memstore-server`` options that load snapshot ``restore`` (none for None)."""
    return [] if restore is None else ["--restore", os.path.abspath(os.fspath(restore))]


def write_address_file(path: str | os.PathLike, shard_addresses: list[str]) -> None:
    addresses.write_file(path, shard_addresses)


@dataclass
class Job:
    """A command the :class:`Launcher` started (or, with ``dry_run``, would start)."""

    name: str
    argv: list[str]
    processes: list[subprocess.Popen]
    log_path: Path
    store: bool = False

    def state(self) -> str:
        """``planned``, ``running``, ``done`` or ``failed (exit N)``."""
        if not self.processes:
            return "planned"
        codes = [p.poll() for p in self.processes]
        if any(c is None for c in codes):
            return "running"
        bad = [c for c in codes if c != 0]
        return f"failed (exit {bad[0]})" if bad else "done"

    def returncode(self) -> int | None:
        codes = [p.poll() for p in self.processes]
        if not codes or any(c is None for c in codes):
            return None
        return next((c for c in codes if c != 0), 0)


class Launcher:
    """Start, watch and stop a store and its applications, as SmartSim's Experiment does.

    Args:
        kind: ``"local"`` (processes on this machine), ``"mpiexec"`` (MPICH Hydra syntax),
            ``"slurm"`` (``srun`` steps in an allocation) or ``"pbs"`` (``mpiexec`` on hosts
            from ``$PBS_NODEFILE``).
        workdir: address file and logs (default: a new temporary folder).
        hosts: the allocation's node names, for ``mpiexec``/``pbs`` placement by node.
        dry_run: build the commands (``jobs``, ``batch_script``) without running them.
        python: interpreter for the store (default: this one).
        mpiexec: the ``mpiexec`` to use (default: the one next to ``python``, else PATH).
        srun_mpi: ``slurm``: the ``srun --mpi=`` plugin (default ``MEMSTORE_SRUN_MPI``, else
            ``pmi2``, which the PyPI mpich wheel needs; ``""``: the site's default).

    The store takes the first nodes it is given; each application the next ones, so
    ``start_store(4, nodes=1)`` then ``start_app(cmd, ranks=8, nodes=2)`` puts them on
    nodes 0 and 1-2. ``stop()`` (or leaving the ``with`` block) ends everything started.
    """

    def __init__(self, kind: str = "local", *, workdir: str | os.PathLike | None = None,
                 hosts: list[str] | None = None, dry_run: bool = False,
                 python: str | None = None, mpiexec: str | None = None,
                 timeout: float = STARTUP_TIMEOUT, srun_mpi: str | None = None):  # fmt: skip
        schedulers._check(kind)
        self.kind = kind
        self.dry_run = dry_run
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="memstore-launch-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.python = python or sys.executable
        self.mpiexec = mpiexec or schedulers.find_mpiexec(self.python)
        self.hosts = hosts if hosts is not None else schedulers.allocation_hosts(kind)
        self.timeout = timeout
        self.srun_mpi = config.srun_mpi() if srun_mpi is None else srun_mpi
        self.address_file = str(self.workdir / "memstore.addr")
        self.addresses: list[str] = []
        self.jobs: dict[str, Job] = {}
        self.steps: list[schedulers.Step] = []
        self._shards: list[ShardProcess] = []
        self._next_node = 0
        self._stopped = False

    @property
    def address(self) -> str:
        """The value for ``MEMSTORE_ADDRESS`` (empty before the store runs)."""
        return ",".join(self.addresses)

    def _place(self, ranks: int, nodes: int | None, per_node: int | None) -> schedulers.Placement:
        first = self._next_node
        if nodes:
            self._next_node += nodes
        where = schedulers.Placement(ranks, nodes, per_node, first)
        if self.kind in ("mpiexec", "pbs"):
            hosts = schedulers.hosts_for(where, self.hosts)
            where = schedulers.Placement(ranks, nodes, per_node, first, hosts)
        return where

    def start_store(self, shards: int = 1, nodes: int | None = None, *,
                    shards_per_node: int | None = None, max_memory: str | int = 0,
                    ipc: bool = False, host: str | None = None, port: int = 0,
                    server_args: list[str] | None = None) -> list[str]:  # fmt: skip
        """Start ``shards`` shard servers (on ``nodes`` nodes) and wait until they answer.

        Returns the shard addresses (empty with ``dry_run``); also written to
        :attr:`address_file`.
        """
        if self._shards or self._store_job() is not None:
            raise MemstoreError("this launcher already started a store")
        if self.kind == "local":
            if not self.dry_run:
                self._shards = start_shards(shards, host=host or DEFAULT_HOST, port=port,
                                            ipc_dir=str(self.workdir) if ipc else None,
                                            max_memory=max_memory, log_dir=self.workdir,
                                            extra_args=server_args)  # fmt: skip
                self.addresses = [s.address for s in self._shards]
                write_address_file(self.address_file, self.addresses)
            return self.addresses
        per_node = shards_per_node or (-(-shards // nodes) if nodes else None)
        if host is None and self.kind == "mpiexec" and not self.hosts:
            host = DEFAULT_HOST  # everything on this machine
        options = ["--max-memory", str(max_memory), *(server_args or [])]
        if host:
            options += ["--host", host]
        if port:
            options += ["--port", str(port)]
        program = schedulers.server_program(self.python, self.address_file, options)
        job = self._launch("store", program, self._place(shards, nodes, per_node), {}, store=True)
        if job.processes:
            try:
                self.addresses = _ready_addresses(job.processes[0], job.log_path, self.timeout)
            except BaseException:
                _end(job.processes, 5.0)
                raise
        return self.addresses

    def start_app(self, cmd: str | list[str], ranks: int = 1, env: dict[str, str] | None = None,
                  *, name: str | None = None, nodes: int | None = None,
                  ranks_per_node: int | None = None) -> Job:  # fmt: skip
        """Start an application with ``MEMSTORE_ADDRESS`` and ``SSDB`` set to the store's.

        ``cmd`` is a command line or an argv list. ``local`` runs ``ranks`` copies of it
        (each with ``MEMSTORE_RANK``/``MEMSTORE_RANKS``); the others run it as an MPI job.
        """
        program = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
        name = name or f"app-{len([j for j in self.jobs.values() if not j.store])}"
        if name in self.jobs:
            raise ValueError(f"a job named {name!r} was started already")
        extra = dict(env or {})
        if self.addresses:
            extra.setdefault(ENV_ADDRESS, self.address)
            extra.setdefault(ENV_SSDB, self.address)
        elif self._store_job() is not None:  # dry run: the script exports the address
            extra.setdefault(ENV_ADDRESS_FILE, self.address_file)
        return self._launch(name, program, self._place(ranks, nodes, ranks_per_node), extra)

    def _store_job(self) -> Job | None:
        return next((j for j in self.jobs.values() if j.store), None)

    def _launch(self, name: str, program: list[str], where: schedulers.Placement,
                env: dict[str, str], store: bool = False) -> Job:  # fmt: skip
        argv = schedulers.launch_argv(self.kind, program, where, mpiexec=self.mpiexec,
                                      srun_mpi=self.srun_mpi)  # fmt: skip
        self.steps.append(schedulers.Step(name, tuple(program), where, store, tuple(env.items())))
        job = Job(name, argv, [], self.workdir / f"{name}.log", store)
        self.jobs[name] = job
        if self.dry_run:
            return job
        copies = where.ranks if self.kind == "local" else 1
        with open(job.log_path, "ab") as log_file:
            for i in range(copies):
                full = {**os.environ, **env}
                if self.kind == "local":
                    full.update(MEMSTORE_RANK=str(i), MEMSTORE_RANKS=str(copies))
                job.processes.append(subprocess.Popen(
                    argv, env=full, stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE if store else log_file, stderr=log_file,
                    start_new_session=True,  # stop() signals the whole process group
                ))  # fmt: skip
        log.info("started %s: %s", name, shlex.join(argv))
        return job

    def status(self) -> dict[str, str]:
        """Each job's state by name; the store is ``store``."""
        states = {name: job.state() for name, job in self.jobs.items()}
        if self._shards:
            down = sum(not s.alive() for s in self._shards)
            state = "running" if not down else f"failed ({down} shard(s) down)"
            states = {"store": "stopped" if self._stopped else state, **states}
        return states

    def wait(self, timeout: float | None = None) -> dict[str, int]:
        """Wait for every application (not the store); their exit codes by name.

        Raises:
            Timeout: some still run after ``timeout`` seconds (they keep running).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        for job in self.jobs.values():
            for process in job.processes if not job.store else []:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    process.wait(left)
                except subprocess.TimeoutExpired:
                    raise Timeout(f"{job.name} still runs after {timeout}s (log {job.log_path})")
        return {n: j.returncode() for n, j in self.jobs.items() if not j.store and j.processes}

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the applications, then the store; kills what ignores SIGTERM."""
        for job in self.jobs.values():
            if not job.store:
                _end(job.processes, timeout)
        store = self._store_job()
        if store is not None and store.processes:
            process = store.processes[0]
            if self.addresses and process.poll() is None:
                silent = stop_addresses(self.addresses, timeout=min(timeout, 5.0))
                try:  # the servers leave their loops, shut down together and exit
                    process.wait(timeout if not silent else 0)
                except subprocess.TimeoutExpired:
                    log.warning("the store job outlived its shards' shutdown; ending it")
            _end(store.processes, timeout)
        if self._shards:
            stop_processes(self._shards, timeout)
        self._stopped = True

    def batch_script(self, path: str | os.PathLike | None = None, **options) -> str:
        """A batch script (sbatch, qsub or shell) that runs what this launcher planned.

        ``options`` go to :func:`memstore.schedulers.batch_script` (``walltime``,
        ``account``, ``queue``, ``nodes``, ``setup``, ...). Written to ``path`` if given.
        """
        kind = "mpiexec" if self.kind == "local" else self.kind
        steps = [s if s.store else schedulers.Step(
                     s.name, s.program, s.where, False,
                     tuple((k, v) for k, v in s.env if k not in (ENV_ADDRESS, ENV_SSDB,
                                                                 ENV_ADDRESS_FILE)))
                 for s in self.steps]  # fmt: skip
        options.setdefault("python", self.python)
        options.setdefault("mpiexec", self.mpiexec)
        options.setdefault("srun_mpi", self.srun_mpi)
        text = schedulers.batch_script(kind, steps, address_file=self.address_file, **options)
        if path is not None:
            Path(path).write_text(text)
            os.chmod(path, 0o755)
        return text

    def __enter__(self) -> Launcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _ready_addresses(process: subprocess.Popen, log_path: Path, timeout: float) -> list[str]:
    """The shard list a ``memstore-server --mpi`` job prints once every shard serves."""
    stream: IO[bytes] = process.stdout  # type: ignore[assignment]
    line = _ready_line(stream, timeout)
    if line is not None:
        stream.close()  # the servers print nothing more
        return addresses.parse(line[len(READY_LINE) :])
    tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
    raise MemstoreError(f"the store did not start within {timeout}s (log {log_path}):\n{tail}")


def _end(processes: list[subprocess.Popen], timeout: float) -> None:
    """SIGTERM each process group, then SIGKILL what is left after ``timeout``."""
    for process in processes:
        if process.poll() is None:
            _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
