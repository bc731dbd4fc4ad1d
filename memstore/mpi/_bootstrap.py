"""The MPI bootstrap: the collective start that hands every rank its :class:`MPIStore`.

Collective over the communicator, the same sequence on every rank, so ranks that call
``init``, ``connect`` or run ``memstore-server --mpi`` meet in the same collectives:

1. rendezvous: a non-blocking barrier with a deadline, so a rank that never arrives aborts
   the job instead of hanging it;
2. ``Split_type(COMM_TYPE_SHARED)`` names each node; one ``allgather`` of every rank's
   :class:`Greeting` lets every rank compute the same roles (:func:`~memstore.mpi.assign_roles`);
3. serving ranks bind their shards (TCP, plus ``ipc://`` for node-local clients); a second
   ``allgather`` carries the addresses, or the error a rank hit, so that every rank raises
   the same error together instead of leaving the others in a collective;
   with a RESP port asked for, the first rank with shards on each node starts a gateway
   and a third ``allgather`` gives every gateway the full list (:mod:`._gateway`);
4. ``Split`` gives the application ranks of each program their communicator; a private
   ``Dup`` carries the shutdown protocol (:mod:`._store`); shards join the cluster and
   start serving in threads.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from memstore import address as addresses
from memstore import auth
from memstore.config import mpi_abort_grace, mpi_timeout
from memstore.errors import MemstoreError
from memstore.mpi._comm import abort_job, load_mpi, wait_for
from memstore.mpi._gateway import start_gateways
from memstore.mpi._plan import Member, Role, assign_roles, bind_host, ipc_path
from memstore.mpi._store import MPIStore, ShardThread

if TYPE_CHECKING:
    from memstore.server.shard import Shard


@dataclass(frozen=True)
class Greeting:
    """What one rank tells every other in the bootstrap's first exchange."""

    member: Member  # what the roles are decided on
    token: str  # names this job's ipc:// sockets: rank 0's is used, the others send ""
    address_file: str  # where this rank asks for the shard list to be written ("": nowhere)
    secure: bool  # this rank asks for CURVE
    has_keys: bool  # this rank was given CURVE keys (memstore-server --mpi --curve-...)
    resp_port: int | None  # this rank asks for RESP gateways (0: free ports)


@dataclass
class Meeting:
    """What the first exchange told every rank (the same on all of them)."""

    members: list[Member]
    roles: list[Role]
    local_rank: int
    appnum: int
    token: str  # names this job's ipc:// sockets
    writer: int | None  # the rank that writes the address file
    address_file: str
    secure: bool = False  # some rank asked for CURVE
    keys_from: int | None = None  # the lowest rank that was given CURVE keys
    resp: bool = False  # some rank asked for RESP gateways


def bootstrap(
    comm: Any,
    mode: str,
    *,
    shards_per_node: int = 0,
    make_shard: Callable[[str], Shard] | None = None,
    host: str | None = None,
    port: int = 0,
    ipc: bool = True,
    address_file: str | os.PathLike | None = None,
    timeout: float | None = None,
    grace: float | None = None,
    client_timeout: float | None = None,
    secure: bool = False,
    curve: auth.ServerKeys | None = None,
    resp_port: int | None = None,
) -> MPIStore:
    """Collective over ``comm``: decide roles, start shards, hand out addresses.

    ``mode`` is what this rank asks for (:mod:`._plan`: ``SERVER``, ``INIT`` or ``CONNECT``).
    ``secure`` on any rank makes the store CURVE (:func:`_secure`); ``curve`` are keys
    given to this rank (``memstore-server --mpi --curve-secret-key ...``). ``resp_port``
    (0: a free port) starts one RESP gateway per node, on its first rank with shards, each
    answering ``CLUSTER SLOTS`` with every node's gateway.

    Raises:
        MemstoreError: on every rank alike, when any rank failed to start.
    """
    MPI = load_mpi()
    comm = MPI.COMM_WORLD if comm is None else comm
    if comm == MPI.COMM_WORLD:
        _check_not_singleton(comm.Get_size())
    _rendezvous(comm, mpi_timeout() if timeout is None else timeout)
    meeting = _meet(comm, mode, shards_per_node, address_file, secure, curve is not None, resp_port)
    keys, make_shard = _secure(comm, meeting, curve, make_shard)
    threads, shard_list, aliases = _start(comm, meeting, make_shard, host, port, ipc)
    gateway, gateways = _gateways(comm, meeting, resp_port, threads, shard_list, aliases)
    app_comm, ctl = _split(comm, meeting)
    wrote = _serve(comm, meeting, threads, shard_list)
    return MPIStore(
        comm=comm,
        ctl=ctl,
        app_comm=app_comm,
        roles=meeting.roles,
        members=meeting.members,
        local_rank=meeting.local_rank,
        shard_list=shard_list or addresses.resolve(None),
        aliases=aliases,
        threads=threads,
        address_file=wrote,
        grace=mpi_abort_grace() if grace is None else grace,
        client_timeout=client_timeout,
        curve=keys.cluster_client() if keys is not None else None,
        gateway=gateway,
        gateways=gateways,
    )


def _check_not_singleton(size: int) -> None:
    """Refuse a world of one inside a many-task ``srun`` step (no PMI: one store per rank).

    ``srun`` sets ``SLURM_STEP_NUM_TASKS`` in every task of a step (not in the batch
    script itself); without a PMI plugin that the MPI library speaks each task
    initialises MPI as a singleton, so every rank would silently start a store of its own.
    A launcher inside the step that set up its own PMI (``mpiexec -n 1``) is left alone.
    """
    tasks = os.environ.get("SLURM_STEP_NUM_TASKS", "")
    launched = any(v in os.environ for v in ("PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE"))
    if size == 1 and tasks.isdigit() and int(tasks) > 1 and not launched:
        raise MemstoreError(
            f"memstore.mpi: this srun step has {tasks} tasks but MPI.COMM_WORLD has 1 rank: "
            "srun started them without a PMI the MPI library speaks, so each would run a "
            "store of its own. Add --mpi=pmi2 to srun (the PyPI mpich wheel and most MPICH "
            "builds; --mpi=pmix for PMIx builds of Open MPI; `srun --mpi=list` shows what "
            "this Slurm offers), or set SLURM_MPI_TYPE=pmi2"
        )


def _rendezvous(comm: Any, timeout: float) -> None:
    """Wait (bounded) until every rank is in the bootstrap; abort the job otherwise."""
    if not wait_for(comm.Ibarrier(), time.monotonic() + timeout):
        abort_job(
            f"rank {comm.Get_rank()}: not every rank reached the memstore bootstrap "
            f"(memstore.mpi.init, memstore.mpi.connect or memstore-server --mpi) within "
            f"{timeout:.0f}s; every rank of the job must call it (MEMSTORE_MPI_TIMEOUT "
            "raises the limit)"
        )


def _meet(
    comm: Any,
    mode: str,
    shards_per_node: int,
    address_file: Any,
    secure: bool = False,
    has_keys: bool = False,
    resp_port: int | None = None,
) -> Meeting:
    """Name each node, share every rank's :class:`Greeting`, decide the roles."""
    MPI = load_mpi()
    rank = comm.Get_rank()
    node_comm = comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
    node = node_comm.bcast(rank, root=0)
    local_rank = node_comm.Get_rank()
    node_comm.Free()
    appnum = MPI.COMM_WORLD.Get_attr(MPI.APPNUM) or 0
    mine = Greeting(
        member=Member(rank, node, mode, shards_per_node, appnum),
        token=uuid.uuid4().hex[:8] if rank == 0 else "",
        address_file=str(address_file) if address_file else "",
        secure=secure,
        has_keys=has_keys,
        resp_port=resp_port,
    )
    greetings: list[Greeting] = comm.allgather(mine)
    members = [g.member for g in greetings]
    try:
        roles = assign_roles(members)
    except ValueError as exc:  # every rank sees the same list, so every rank raises
        raise MemstoreError(str(exc)) from None
    writers = [(r, g.address_file) for r, g in enumerate(greetings) if g.address_file]
    writer, path = writers[0] if writers else (None, "")
    keyed = [r for r, g in enumerate(greetings) if g.has_keys]
    return Meeting(
        members,
        roles,
        local_rank,
        appnum,
        greetings[0].token,
        writer,
        path,
        secure=bool(keyed) or any(g.secure for g in greetings),
        keys_from=keyed[0] if keyed else None,
        resp=any(g.resp_port is not None for g in greetings),
    )


def _secure(
    comm: Any,
    meeting: Meeting,
    given: auth.ServerKeys | None,
    make_shard: Callable[[str], Shard] | None,
) -> tuple[auth.ServerKeys | None, Callable[[str], Shard] | None]:
    """The store's CURVE keys (None: a plain store) and the shard factory that uses them.

    Rank 0 makes a cluster key and broadcasts it (over MPI; it is never written to a
    file), shards admit only it, clients use it. Keys given to ranks instead: the lowest
    rank holding them broadcasts them, with their authorized keys and admin policy; a
    serving rank given other keys fails the bootstrap.
    """
    if not meeting.secure:
        return None, make_shard
    root, rank = meeting.keys_from, comm.Get_rank()
    if root is None:
        keys = comm.bcast(auth.generate() if rank == 0 else None, root=0)
    else:
        keys = comm.bcast(given if rank == root else None, root=root)
    if make_shard is not None:
        make_shard = (
            partial(make_shard, curve=keys)
            if given is None or given == keys
            else partial(_other_keys, rank, root)
        )
    return keys, make_shard


def _other_keys(rank: int, root: int | None, address: str) -> Shard:
    """The shard factory of a rank given other CURVE keys than ``root``: it fails to bind."""
    raise MemstoreError(
        f"rank {rank} was given other CURVE keys than rank {root}: every memstore-server "
        "--mpi rank must get the same --curve-secret-key, --curve-authorized-keys and "
        "--admin-key"
    )


def _start(
    comm: Any,
    meeting: Meeting,
    make_shard: Callable[[str], Shard] | None,
    host: str | None,
    port: int,
    ipc: bool,
) -> tuple[list[ShardThread], list[str], dict[str, str]]:
    """Bind this rank's shards and exchange addresses (one collective).

    Returns the shard threads (not started), the shard list and this rank's node-local
    aliases. A rank that fails sends its error instead, and every rank raises it.
    """
    rank = comm.Get_rank()
    role, members = meeting.roles[rank], meeting.members
    threads: list[ShardThread] = []
    try:
        if role.shards:
            nodes = len({m.node for m in members})
            ip = bind_host(host, nodes, external=meeting.writer is not None)
            threads = _bind(role, make_shard, ip, port, ipc, meeting.token, rank)
        elif not any(r.shards for r in meeting.roles):
            addresses.resolve(None)  # no shards in this job: the configured store, if any
        mine: list | str = [(t.shard.address, t.local) for t in threads]
    except Exception as exc:
        mine = f"{type(exc).__name__}: {exc}"
    found = comm.allgather(mine)
    failed = [(r, why) for r, why in enumerate(found) if isinstance(why, str)]
    if failed:
        for t in threads:
            t.stop()
        detail = "; ".join(f"rank {r}: {why}" for r, why in failed)
        raise MemstoreError(f"memstore.mpi could not start the store: {detail}")
    shard_list = [address for listed in found for address, _ in listed]
    aliases = {  # this node's shards, by a path that skips TCP
        address: local
        for r, listed in enumerate(found)
        if members[r].node == members[rank].node
        for address, local in listed
        if local and (r == rank or not local.startswith("inproc://"))
    }
    return threads, shard_list, aliases


def _bind(role: Role, make_shard: Callable[[str], Shard] | None, ip: str, port: int,
          ipc: bool, token: str, rank: int) -> list[ShardThread]:  # fmt: skip
    """This rank's shards, bound to TCP and to a node-local alias, not yet serving."""
    if make_shard is None:
        raise MemstoreError(f"rank {rank} was chosen to serve but has no shard factory")
    threads: list[ShardThread] = []
    try:
        for i in range(role.shards):
            shard = make_shard(f"tcp://{ip}:{port + role.first_local + i if port else 0}")
            threads.append(ShardThread(shard, None))
            if not role.is_server:  # shards in an app rank: its client reaches them in-process
                threads[-1].local = f"inproc://memstore-{token}-{rank}-{i}"
            elif ipc:
                threads[-1].local = "ipc://" + ipc_path(token, rank, i)
            if threads[-1].local:
                shard.bind(threads[-1].local)
    except BaseException:
        for t in threads:
            t.stop()
        raise
    return threads


def _gateways(
    comm: Any,
    meeting: Meeting,
    resp_port: int | None,
    threads: list[ShardThread],
    shard_list: list[str],
    aliases: dict[str, str],
) -> tuple[Any, list[str]]:
    """The RESP gateways, where some rank asked for them (one collective; see
    :mod:`._gateway`): this rank's gateway thread, if any, and every gateway's address."""
    if not meeting.resp:
        return None, []
    try:
        own = threads[0].shard.address if threads else None
        return start_gateways(
            comm, meeting.members, meeting.roles, resp_port, own, shard_list, aliases,
            meeting.secure,
        )  # fmt: skip
    except MemstoreError:
        for t in threads:
            t.stop()
        raise


def _split(comm: Any, meeting: Meeting) -> tuple[Any, Any]:
    """This program's application ranks (None on a server rank) and the shutdown
    protocol's own channel, apart from the user's traffic (two collectives)."""
    MPI = load_mpi()
    rank = comm.Get_rank()
    color = MPI.UNDEFINED if meeting.roles[rank].is_server else meeting.appnum
    app_comm = comm.Split(color, key=rank)
    ctl = comm.Dup()
    return (None if app_comm == MPI.COMM_NULL else app_comm), ctl


def _serve(
    comm: Any, meeting: Meeting, threads: list[ShardThread], shard_list: list[str]
) -> str | None:
    """Start this rank's shards on the whole cluster; write the address file if this rank
    is its writer. The file written, if any."""
    for t in threads:
        t.serve(shard_list)
    if shard_list and meeting.writer == comm.Get_rank():
        addresses.write_file(meeting.address_file, shard_list)
        return meeting.address_file
    return None
