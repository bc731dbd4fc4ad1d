"""Command lines and batch scripts for ``mpiexec``, Slurm and PBS, built but not run.

:class:`memstore.deploy.jobs.Launcher` runs what these build; ``Launcher.batch_script`` and
the files in ``launch/`` use the same shapes. ``mpiexec`` means MPICH's Hydra syntax
(``-n``, ``-ppn``, ``-hosts``), which Intel MPI and the PyPI ``mpich`` wheel share; PBS
jobs run ``mpiexec`` on host lists cut from ``$PBS_NODEFILE``; Slurm jobs run ``srun``
steps placed with ``--relative`` inside the allocation, so no host names are needed.
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

KINDS = ("local", "mpiexec", "slurm", "pbs")
#: Seconds a batch script waits for the store's address file before giving up.
SCRIPT_STORE_TIMEOUT = 300


@dataclass(frozen=True)
class Placement:
    """Where one step runs.

    Args:
        ranks: processes in all.
        nodes: how many nodes (None: wherever the launcher puts them).
        per_node: processes per node (None: the launcher's choice).
        first_node: index of its first node in the allocation; the store takes the first
            nodes and each application the next ones, so they do not share nodes.
        hosts: explicit host names (``mpiexec``/PBS), overriding ``first_node``/``nodes``.
    """

    ranks: int
    nodes: int | None = None
    per_node: int | None = None
    first_node: int = 0
    hosts: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.ranks < 1:
            raise ValueError(f"a step needs at least one rank, got {self.ranks}")
        if self.nodes is not None and self.nodes < 1:
            raise ValueError(f"nodes must be at least 1, got {self.nodes}")


@dataclass(frozen=True)
class Step:
    """One command of a job: the store (``store=True``) or an application."""

    name: str
    program: tuple[str, ...]
    where: Placement
    store: bool = False
    env: tuple[tuple[str, str], ...] = ()


def server_program(python: str, address_file: str, options: Sequence[str] = ()) -> list[str]:
    """The store's program: every rank serves one shard and the lowest writes the file."""
    return [python, "-m", "memstore.server", "--mpi", "--address-file", address_file, *options]


def launch_argv(kind: str, program: Sequence[str], where: Placement, *, mpiexec: str = "mpiexec",
                host_list: str | None = None,
                srun_mpi: str | None = None) -> list[str]:  # fmt: skip
    """The command that starts ``program`` on ``where.ranks`` processes.

    ``host_list`` replaces the ``-hosts`` value with shell text (batch scripts);
    ``srun_mpi`` is the ``srun --mpi=`` plugin (None or "": the site's default).
    """
    check_kind(kind)
    if kind == "local":
        return list(program)
    if kind == "slurm":
        argv = ["srun", f"--ntasks={where.ranks}"]
        if where.nodes:
            argv += [f"--nodes={where.nodes}", f"--relative={where.first_node}"]
        if where.per_node:
            argv.append(f"--ntasks-per-node={where.per_node}")
        if srun_mpi:  # without a PMI the MPI library speaks, every task is a world of one
            argv.append(f"--mpi={srun_mpi}")
        # --exact: steps share the allocation side by side; a dead rank ends its step
        return [*argv, "--exact", "--kill-on-bad-exit=1", *program]
    argv = [mpiexec, "-n", str(where.ranks)]
    if where.per_node:
        argv += ["-ppn", str(where.per_node)]
    if host_list is not None:
        argv += ["-hosts", host_list]
    elif where.hosts:
        argv += ["-hosts", ",".join(where.hosts)]
    return [*argv, *program]


def hosts_for(where: Placement, allocation: Sequence[str] | None) -> tuple[str, ...] | None:
    """The host names ``where`` gets from an allocation's host list (None: any)."""
    if where.hosts:
        return where.hosts
    if not allocation or where.nodes is None:
        return None
    chosen = tuple(allocation[where.first_node : where.first_node + where.nodes])
    if len(chosen) < where.nodes:
        raise ValueError(
            f"nodes {where.first_node}..{where.first_node + where.nodes - 1} asked for, but the "
            f"allocation has {len(allocation)}: {', '.join(allocation)}"
        )
    return chosen


def nodes_needed(steps: Sequence[Step]) -> int:
    """Nodes a job of ``steps`` needs: up to the last node any step was given."""
    return max([s.where.first_node + (s.where.nodes or 1) for s in steps] or [1])


def batch_script(kind: str, steps: Sequence[Step], *, address_file: str, python: str = "python",
                 mpiexec: str = "mpiexec", job_name: str = "memstore", nodes: int | None = None,
                 walltime: str = "00:30:00", account: str | None = None,
                 queue: str | None = None, cores_per_node: int | None = None,
                 setup: Sequence[str] = (), srun_mpi: str | None = None) -> str:  # fmt: skip
    """A batch script that starts the store, runs the applications, then stops the store.

    ``kind`` ``"slurm"`` gives an ``sbatch`` script, ``"pbs"`` a ``qsub`` script and
    ``"mpiexec"`` a plain shell script. ``setup`` lines run first (``module load``, venv).
    """
    check_kind(kind)
    if kind == "local":
        raise ValueError("kind 'local' runs processes directly; a batch script needs "
                         "'mpiexec', 'slurm' or 'pbs'")  # fmt: skip
    nodes = nodes or nodes_needed(steps)
    lines = ["#!/bin/bash", *_header(kind, job_name, nodes, walltime, account, queue,
                                     cores_per_node)]  # fmt: skip
    lines += _preamble(kind, setup, address_file)
    for step in steps:
        lines += _step_lines(kind, step, mpiexec, srun_mpi)
    lines += _ending(python, stops_store=any(s.store for s in steps))
    return "\n".join(lines)


def _preamble(kind: str, setup: Sequence[str], address_file: str) -> list[str]:
    """Shell options, ``setup``, PBS's node list and the trap that cleans up on any exit."""
    lines = [
        "# Generated by memstore.deploy.Launcher.batch_script: the store starts first, the",
        "# applications find it through MEMSTORE_ADDRESS, and the store stops when they end.",
        "set -euo pipefail",
    ]
    if kind == "pbs":
        lines.append('cd "${PBS_O_WORKDIR:-.}"')
    lines += list(setup)
    if kind == "pbs":
        lines += [
            "# one line per node, in allocation order",
            "mapfile -t NODES < <(awk '!seen[$0]++' \"$PBS_NODEFILE\")",
            'hosts() { local IFS=,; echo "${NODES[*]:$1:$2}"; }',
        ]
    return [
        *lines,
        f"export MEMSTORE_ADDRESS_FILE={shlex.quote(address_file)}",
        'rm -f "$MEMSTORE_ADDRESS_FILE"',
        'PIDS=() STORE_PID=""',
        "cleanup() {  # on any exit: nothing started here outlives the script",
        '    for p in ${PIDS[@]+"${PIDS[@]}"} $STORE_PID; do kill "$p" 2>/dev/null || true; done',
        "}",
        "trap cleanup EXIT",
        "trap 'exit 143' TERM  # scancel / qdel / timeout: still clean up",
        "trap 'exit 130' INT",
    ]


def _step_lines(kind: str, step: Step, mpiexec: str, srun_mpi: str | None) -> list[str]:
    """One step started in the background; the store's is followed by the wait for it."""
    host_list = None
    if kind == "pbs" and not step.where.hosts and step.where.nodes:
        host_list = f'"$(hosts {step.where.first_node} {step.where.nodes})"'
    argv = launch_argv(kind, step.program, step.where, mpiexec=mpiexec, host_list=host_list,
                       srun_mpi=srun_mpi)  # fmt: skip
    words = [w if host_list is not None and w == host_list else shlex.quote(w) for w in argv]
    envs = [f"{k}={shlex.quote(v)}" for k, v in step.env]
    lines = ["", "# the store" if step.store else f"# application: {step.name}"]
    lines.append(" ".join(["env", *envs, *words] if envs else words) + " &")
    if not step.store:
        return [*lines, "PIDS+=($!)"]
    return [
        *lines,
        "STORE_PID=$!",
        f"for _ in $(seq {SCRIPT_STORE_TIMEOUT}); do  # wait for the store, at most "
        f"{SCRIPT_STORE_TIMEOUT} s",
        '    [ -s "$MEMSTORE_ADDRESS_FILE" ] && break',
        '    kill -0 "$STORE_PID" 2>/dev/null || { echo "the store failed" >&2; exit 1; }',
        "    sleep 1",
        "done",
        '[ -s "$MEMSTORE_ADDRESS_FILE" ] || { echo "no store after all" >&2; exit 1; }',
        'export MEMSTORE_ADDRESS="$(head -n 1 "$MEMSTORE_ADDRESS_FILE")"',
        'export SSDB="$MEMSTORE_ADDRESS"  # for SmartRedis clients',
    ]


def _ending(python: str, stops_store: bool) -> list[str]:
    """Wait for the applications, then stop the store (if the script started one)."""
    lines = [
        "",
        "# wait for the applications, then stop the store",
        "status=0",
        'for p in ${PIDS[@]+"${PIDS[@]}"}; do wait "$p" || status=1; done',  # bash 4.2 + set -u
        "PIDS=()",
    ]
    if stops_store:
        lines += [
            f'{shlex.quote(python)} -m memstore.cli stop --address-file "$MEMSTORE_ADDRESS_FILE" '
            "|| true",
            'wait "$STORE_PID" || true',
            'STORE_PID=""',
        ]
    return [*lines, 'exit "$status"', ""]


def _header(kind: str, job_name: str, nodes: int, walltime: str, account: str | None,
            queue: str | None, cores_per_node: int | None) -> list[str]:  # fmt: skip
    """The scheduler's ``#SBATCH`` / ``#PBS`` lines (none for a plain shell script)."""
    if kind == "slurm":
        out = [f"#SBATCH --job-name={job_name}", f"#SBATCH --nodes={nodes}",
               f"#SBATCH --time={walltime}"]  # fmt: skip
        if account:
            out.append(f"#SBATCH --account={account}")
        if queue:
            out.append(f"#SBATCH --partition={queue}")
        return out
    if kind == "pbs":
        select = f"select={nodes}"
        if cores_per_node:
            select += f":ncpus={cores_per_node}:mpiprocs={cores_per_node}"
        out = [f"#PBS -N {job_name}", f"#PBS -l {select}", f"#PBS -l walltime={walltime}",
               "#PBS -j oe"]  # fmt: skip
        if account:
            out.append(f"#PBS -A {account}")
        if queue:
            out.append(f"#PBS -q {queue}")
        return out
    return []


def find_mpiexec(python: str) -> str:
    """The ``mpiexec`` next to ``python`` (a venv with the ``mpich`` wheel), else PATH's."""
    beside = Path(python).parent / "mpiexec"
    return str(beside) if beside.exists() else (shutil.which("mpiexec") or "mpiexec")


def allocation_hosts(kind: str) -> list[str] | None:
    """The job's nodes, in order, from ``$PBS_NODEFILE`` (PBS); None elsewhere."""
    nodefile = os.environ.get("PBS_NODEFILE")
    if kind != "pbs" or not nodefile or not os.path.exists(nodefile):
        return None
    lines = [line.strip() for line in Path(nodefile).read_text().splitlines() if line.strip()]
    return list(dict.fromkeys(lines))


def check_kind(kind: str) -> None:
    """Refuse a launcher kind this module cannot build commands for.

    Raises:
        ValueError: ``kind`` is not one of :data:`KINDS`.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown launcher kind {kind!r}: use one of {', '.join(KINDS)}")
