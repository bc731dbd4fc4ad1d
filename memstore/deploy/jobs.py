"""Start, watch and stop a store and its applications: ``Launcher`` and its ``Job``s.

``Launcher("local")`` runs processes on this machine (the shards through
:func:`memstore.deploy.local.start_shards`); ``mpiexec``, ``slurm`` and ``pbs`` run the store
as one ``memstore-server --mpi`` job and each application as a job of its own, with the
command lines :mod:`memstore.deploy.schedulers` builds.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from memstore import address as addresses
from memstore import config
from memstore.config import (
    DEFAULT_HOST,
    ENV_ADDRESS,
    ENV_ADDRESS_FILE,
    ENV_SSDB,
    STARTUP_TIMEOUT,
)
from memstore.deploy import schedulers
from memstore.deploy.admin import stop_addresses
from memstore.deploy.local import start_shards
from memstore.deploy.processes import ChildProcess, read_ready, stop_processes
from memstore.errors import MemstoreError, Timeout

log = logging.getLogger(__name__)


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
        """The first failing exit code, else 0; None while a process runs or none started."""
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
        schedulers.check_kind(kind)
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
        self._shards: list[ChildProcess] = []
        self._next_node = 0
        self._stopped = False

    @property
    def address(self) -> str:
        """The value for ``MEMSTORE_ADDRESS`` (empty before the store runs)."""
        return ",".join(self.addresses)

    def _place(self, ranks: int, nodes: int | None, per_node: int | None) -> schedulers.Placement:
        """The next step's place: the nodes after those given out so far."""
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
                self._start_local_store(shards, max_memory, ipc, host, port, server_args)
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
            store = ChildProcess(job.processes[0], "", job.log_path)
            try:  # the lowest rank prints the whole shard list once every shard serves
                found = read_ready(store, self.timeout, what="the store")
            except BaseException:
                stop_processes(job.processes, 5.0)
                raise
            self.addresses = addresses.parse(found)
        return self.addresses

    def _start_local_store(self, shards: int, max_memory: str | int, ipc: bool,
                           host: str | None, port: int,
                           server_args: list[str] | None) -> None:  # fmt: skip
        """The ``local`` store: shard processes of this launcher, and the address file."""
        self._shards = start_shards(shards, host=host or DEFAULT_HOST, port=port,
                                    ipc_dir=str(self.workdir) if ipc else None,
                                    max_memory=max_memory, log_dir=self.workdir,
                                    extra_args=server_args)  # fmt: skip
        self.addresses = [s.address for s in self._shards]
        addresses.write_file(self.address_file, self.addresses)

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
        """The store's job (None before ``start_store`` or with a ``local`` store)."""
        return next((j for j in self.jobs.values() if j.store), None)

    def _launch(self, name: str, program: list[str], where: schedulers.Placement,
                env: dict[str, str], store: bool = False) -> Job:  # fmt: skip
        """Record ``program`` as a step at ``where`` and, unless a dry run, start it."""
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
        stop_processes([p for j in self.jobs.values() if not j.store for p in j.processes],
                       timeout)  # fmt: skip
        store = self._store_job()
        if store is not None and store.processes:
            self._stop_store_job(store.processes[0], timeout)
        if self._shards:
            stop_processes(self._shards, timeout)
        self._stopped = True

    def _stop_store_job(self, process: subprocess.Popen, timeout: float) -> None:
        """Ask the shards to shut down together, then end the job's processes."""
        if self.addresses and process.poll() is None:
            silent = stop_addresses(self.addresses, timeout=min(timeout, 5.0))
            try:  # the servers leave their loops, shut down together and exit
                process.wait(timeout if not silent else 0)
            except subprocess.TimeoutExpired:
                log.warning("the store job outlived its shards' shutdown; ending it")
        stop_processes([process], timeout)

    def batch_script(self, path: str | os.PathLike | None = None, **options) -> str:
        """A batch script (sbatch, qsub or shell) that runs what this launcher planned.

        ``options`` go to :func:`memstore.deploy.schedulers.batch_script` (``walltime``,
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
