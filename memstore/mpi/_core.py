"""The MPI bootstrap and the :class:`MPIStore` it hands every rank.

Bootstrap (collective over the communicator, same sequence on every rank, so ranks that
call ``init``, ``connect`` or run ``memstore-server --mpi`` meet in the same collectives):

1. rendezvous: a non-blocking barrier with a deadline, so a rank that never arrives aborts
   the job instead of hanging it;
2. ``Split_type(COMM_TYPE_SHARED)`` names each node; one ``allgather`` of every rank's
   request lets every rank compute the same roles (:func:`_plan.assign_roles`);
3. serving ranks bind their shards (TCP, plus ``ipc://`` for node-local clients); a second
   ``allgather`` carries the addresses, or the error a rank hit, so that every rank raises
   the same error together instead of leaving the others in a collective;
   with a RESP port asked for, the first rank with shards on each node starts a gateway
   and a third ``allgather`` gives every gateway the full list (:mod:`._gateway`);
4. ``Split`` gives the application ranks of each program their communicator; a private
   ``Dup`` carries the shutdown protocol; shards start serving in threads.

Shutdown is one non-blocking ``Iallreduce`` of failure flags on the private communicator:
it completes when every rank has called ``shutdown``. Server ranks keep serving while
they wait. A rank that failed waits ``grace`` seconds for the others, then aborts the job
(``MPI_Abort``) — the others may be stuck in a collective of their own waiting for it.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
import uuid
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from memstore import address as addresses
from memstore import auth
from memstore.config import ENV_ADDRESS, mpi_abort_grace, mpi_timeout
from memstore.errors import MemstoreError
from memstore.mpi import _gateway, _plan

if TYPE_CHECKING:
    from memstore.client import Client
    from memstore.server.shard import Shard

log = logging.getLogger(__name__)

#: How often a rank waiting on a non-blocking MPI request tests it. MPI has no timed wait,
#: and a blocking wait spins a core that an oversubscribed node (servers + apps) lacks.
_POLL_S = 0.02
#: Seconds a shard thread gets to leave its loop once asked (the loop wakes every 0.5 s).
_STOP_S = 5.0


def mpi() -> Any:
    """``mpi4py.MPI``, imported on first use (importing it initialises MPI)."""
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError) as exc:
        raise ImportError(
            f"memstore.mpi could not load MPI ({exc}); install mpi4py and an MPI library "
            "with: pip install 'memstore[mpi]'"
        ) from exc
    return MPI


def _wait(request: Any, deadline: float | None, check: Callable[[], None] | None = None) -> bool:
    """Test ``request`` until it completes (True) or ``deadline`` passes (False).

    ``check`` runs between tests and may raise (a crashed shard) or return a new deadline.
    """
    while not request.Test():
        if check is not None:
            new = check()
            if new is not None:
                deadline = new if deadline is None else min(deadline, new)
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)
    return True


def _abort(message: str) -> None:
    """Last resort: end every rank of the job (a peer may sit in a collective forever)."""
    log.critical("%s; aborting the MPI job", message)
    print(f"memstore.mpi: {message}; aborting the MPI job (MPI_Abort)", file=sys.stderr)
    sys.stderr.flush()
    mpi().COMM_WORLD.Abort(1)


class _ShardThread(threading.Thread):
    """Runs one shard's loop; remembers the exception that ended it, if any."""

    def __init__(self, shard: Shard, local: str | None):
        super().__init__(name=f"memstore-shard {shard.address}", daemon=True)
        self.shard = shard
        self.local = local  # its node-local alias (ipc:// or inproc://), if any
        self.error: BaseException | None = None
        self.reported = False

    def run(self) -> None:
        try:
            self.shard.serve()
        except BaseException as exc:  # reported by the rank's main thread
            self.error = exc
            log.exception("shard %s crashed", self.shard.address)

    def stop(self, timeout: float = _STOP_S) -> bool:
        """Ask the loop to leave and wait for it; False if it would not.

        ``stop()`` is repeated because a loop that had not started yet when first asked
        would otherwise start afterwards and serve on.
        """
        deadline = time.monotonic() + timeout
        while self.is_alive() and time.monotonic() < deadline:
            self.shard.stop()
            self.join(0.25)
        if self.is_alive():
            return False
        self.shard.close()
        self.shard.store.flush()  # free the data now; an app rank may live on
        if self.local and self.local.startswith("ipc://"):
            try:
                os.unlink(self.local[len("ipc://") :])
            except OSError:
                pass
        return True


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

    ``mode`` is what this rank asks for (:data:`_plan.SERVER`, ``INIT`` or ``CONNECT``).
    ``secure`` on any rank makes the store CURVE: rank 0 makes a cluster key and broadcasts
    it (over MPI; it is never written to a file), shards admit only it, clients use it.
    ``curve`` (``memstore-server --mpi --curve-secret-key ...``) are given keys instead: the
    lowest rank holding them broadcasts them, with their authorized keys and admin policy;
    a serving rank given other keys fails the bootstrap.
    ``resp_port`` (0: a free port) starts one RESP gateway per node, on its first rank with
    shards, each answering ``CLUSTER SLOTS`` with every node's gateway.
    Raises :class:`MemstoreError` on every rank alike when any rank failed to start.
    """
    MPI = mpi()
    comm = MPI.COMM_WORLD if comm is None else comm
    if comm == MPI.COMM_WORLD:
        _check_not_singleton(comm.Get_size())
    _rendezvous(comm, mpi_timeout() if timeout is None else timeout)
    meeting = _meet(comm, mode, shards_per_node, address_file, secure, curve is not None, resp_port)
    keys = None
    if meeting.secure:
        keys = _share_keys(comm, meeting.keys_from, curve)
        if make_shard is not None:
            make_shard = (
                partial(make_shard, curve=keys)
                if curve is None or curve == keys
                else partial(_other_keys, comm.Get_rank(), meeting.keys_from)
            )
    threads, shard_list, aliases = _start(comm, meeting, make_shard, host, port, ipc)
    gateway, gateways = None, []
    if meeting.resp:
        try:
            own = threads[0].shard.address if threads else None
            gateway, gateways = _gateway.start(
                comm, meeting.members, meeting.roles, resp_port, own, shard_list, aliases,
                meeting.secure,
            )  # fmt: skip
        except MemstoreError:
            for t in threads:
                t.stop()
            raise
    rank, role = comm.Get_rank(), meeting.roles[comm.Get_rank()]
    app_comm = comm.Split(MPI.UNDEFINED if role.is_server else meeting.appnum, key=rank)
    ctl = comm.Dup()  # the shutdown protocol's own channel, apart from the user's traffic
    for t in threads:
        t.shard.cluster = shard_list
        t.shard.index = shard_list.index(t.shard.address)
        t.start()
    wrote = None
    if shard_list and meeting.writer == rank:
        wrote = meeting.address_file
        addresses.write_file(wrote, shard_list)
    return MPIStore(
        comm=comm,
        ctl=ctl,
        app_comm=None if app_comm == MPI.COMM_NULL else app_comm,
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


@dataclass
class _Meeting:
    """What the first exchange told every rank (the same on all of them)."""

    members: list[_plan.Member]
    roles: list[_plan.Role]
    local_rank: int
    appnum: int
    token: str  # names this job's ipc:// sockets
    writer: int | None  # the rank that writes the address file
    address_file: str
    secure: bool = False  # some rank asked for CURVE
    keys_from: int | None = None  # the lowest rank that was given CURVE keys
    resp: bool = False  # some rank asked for RESP gateways


def _share_keys(comm: Any, root: int | None, given: auth.ServerKeys | None) -> auth.ServerKeys:
    """The store's CURVE keys on every rank: ``root``'s given ones, else fresh from rank 0."""
    if root is None:
        return comm.bcast(auth.generate() if comm.Get_rank() == 0 else None, root=0)
    return comm.bcast(given if comm.Get_rank() == root else None, root=root)


def _other_keys(rank: int, root: int | None, address: str) -> Shard:
    """The shard factory of a rank given other CURVE keys than ``root``: it fails to bind."""
    raise MemstoreError(
        f"rank {rank} was given other CURVE keys than rank {root}: every memstore-server "
        "--mpi rank must get the same --curve-secret-key, --curve-authorized-keys and "
        "--admin-key"
    )


def _meet(
    comm: Any,
    mode: str,
    shards_per_node: int,
    address_file: Any,
    secure: bool = False,
    has_keys: bool = False,
    resp_port: int | None = None,
) -> _Meeting:
    """Name each node, share every rank's request, decide the roles (two collectives)."""
    MPI = mpi()
    rank = comm.Get_rank()
    node_comm = comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
    node = node_comm.bcast(rank, root=0)
    local_rank = node_comm.Get_rank()
    node_comm.Free()
    appnum = MPI.COMM_WORLD.Get_attr(MPI.APPNUM) or 0
    token = uuid.uuid4().hex[:8] if rank == 0 else ""
    asked = str(address_file) if address_file else ""
    mine = (rank, node, mode, shards_per_node, appnum, token, asked, secure, has_keys,
            resp_port)  # fmt: skip
    first = comm.allgather(mine)
    members = [_plan.Member(*entry[:5]) for entry in first]
    try:
        roles = _plan.assign_roles(members)
    except ValueError as exc:  # every rank sees the same list, so every rank raises
        raise MemstoreError(str(exc)) from None
    writers = [(r, entry[6]) for r, entry in enumerate(first) if entry[6]]
    writer, path = writers[0] if writers else (None, "")
    keyed = [r for r, entry in enumerate(first) if entry[8]]
    secured = bool(keyed) or any(entry[7] for entry in first)
    keys_from = keyed[0] if keyed else None
    resp = any(entry[9] is not None for entry in first)
    return _Meeting(
        members, roles, local_rank, appnum, first[0][5], writer, path, secured, keys_from, resp
    )


def _start(
    comm: Any,
    meeting: _Meeting,
    make_shard: Callable[[str], Shard] | None,
    host: str | None,
    port: int,
    ipc: bool,
) -> tuple[list[_ShardThread], list[str], dict[str, str]]:
    """Bind this rank's shards and exchange addresses (one collective).

    Returns the shard threads (not started), the shard list and this rank's node-local
    aliases. A rank that fails sends its error instead, and every rank raises it.
    """
    rank = comm.Get_rank()
    role, members = meeting.roles[rank], meeting.members
    threads: list[_ShardThread] = []
    try:
        if role.shards:
            nodes = len({m.node for m in members})
            ip = _plan.bind_host(host, nodes, external=meeting.writer is not None)
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
    if not _wait(comm.Ibarrier(), time.monotonic() + timeout):
        _abort(
            f"rank {comm.Get_rank()}: not every rank reached the memstore bootstrap "
            f"(memstore.mpi.init, memstore.mpi.connect or memstore-server --mpi) within "
            f"{timeout:.0f}s; every rank of the job must call it (MEMSTORE_MPI_TIMEOUT "
            "raises the limit)"
        )


def _bind(role: _plan.Role, make_shard: Callable[[str], Shard] | None, ip: str, port: int,
          ipc: bool, token: str, rank: int) -> list[_ShardThread]:  # fmt: skip
    """This rank's shards, bound to TCP and to a node-local alias, not yet serving."""
    if make_shard is None:
        raise MemstoreError(f"rank {rank} was chosen to serve but has no shard factory")
    threads: list[_ShardThread] = []
    try:
        for i in range(role.shards):
            shard = make_shard(f"tcp://{ip}:{port + role.first_local + i if port else 0}")
            threads.append(_ShardThread(shard, None))
            if not role.is_server:  # shards in an app rank: its client reaches them in-process
                threads[-1].local = f"inproc://memstore-{token}-{rank}-{i}"
            elif ipc:
                threads[-1].local = "ipc://" + _plan.ipc_path(token, rank, i)
            if threads[-1].local:
                shard.bind(threads[-1].local)
    except BaseException:
        for t in threads:
            t.stop()
        raise
    return threads


class MPIStore:
    """This rank's part in an MPI job's memstore: its role, its client, the shutdown.

    Attributes:
        is_server: this rank serves a shard: call :meth:`serve`, not application code.
        client: a connected :class:`memstore.Client` (made on first use), preferring the
            node-local ``ipc://`` address of shards on this node.
        comm: the application ranks of this rank's program (``None`` on server ranks).
        appnum: which program of an MPMD command line this rank runs (0 for SPMD).
        rank, size: this rank in the bootstrap communicator, and its size.
        node, nodes: this rank's node (0-based, in rank order) and the number of nodes.
        local_rank: this rank's place among the ranks of its node.
        addresses: every shard's address, in placement order (as ``MEMSTORE_ADDRESS``).
        servers: the ranks that serve.
        shards: the :class:`Shard` objects this rank runs (threads of this process).
        gateways: every RESP gateway's ``host:port``, one per node (``resp_port``), in
            the order each answers ``CLUSTER SLOTS`` with; empty without gateways.
    """

    def __init__(self, *, comm, ctl, app_comm, roles, members, local_rank, shard_list,
                 aliases, threads, address_file, grace, client_timeout,
                 curve=None, gateway=None, gateways=()):  # fmt: skip
        me = members[comm.Get_rank()]
        self.rank = me.rank
        self.size = len(members)
        self.appnum = me.appnum
        self.is_server = roles[me.rank].is_server
        self.comm = app_comm
        self.local_rank = local_rank
        leaders = sorted({m.node for m in members})
        self.node = leaders.index(me.node)
        self.nodes = len(leaders)
        self.addresses = list(shard_list)
        self.servers = [m.rank for m, r in zip(members, roles, strict=True) if r.is_server]
        self._has_apps = any(not r.is_server for r in roles)
        self._aliases = aliases
        self._threads = threads
        self.shards = [t.shard for t in threads]
        self.gateways = list(gateways)
        self._gateway = gateway  # this rank's gateway thread, if it runs one
        self._ctl = ctl
        self._grace = grace
        self._client_timeout = client_timeout
        self._curve = curve  # the cluster key of a secure store, for this rank's clients
        self._client: Client | None = None
        self._address_file = address_file
        self._request = None
        self._flags = (array("i", [0]), array("i", [0]))
        self._closed = False
        self.failures = 0
        self._exported = os.environ.get(ENV_ADDRESS) is None
        if self._exported:  # plain memstore.Client() now finds this job's store
            os.environ[ENV_ADDRESS] = ",".join(self.addresses)
        self._previous_hook = sys.excepthook
        sys.excepthook = self._excepthook
        atexit.register(self._at_exit)

    def __repr__(self) -> str:
        role = "server" if self.is_server else f"app (program {self.appnum})"
        return f"<MPIStore rank {self.rank}/{self.size} {role}, {len(self.addresses)} shards>"

    # -- clients ---------------------------------------------------------------------------

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = self.new_client()
        return self._client

    def new_client(self, **kwargs: Any) -> Client:
        """Another client of this store (e.g. for a thread); ``Client`` keyword arguments."""
        from memstore.client import Client

        kwargs.setdefault("timeout", self._client_timeout)
        if self._curve is not None:
            kwargs.setdefault("curve", self._curve)
        return Client(self.addresses, aliases=self._aliases, **kwargs)

    @property
    def client_addresses(self) -> list[str]:
        """The addresses this rank's clients connect to (node-local aliases applied)."""
        return [self._aliases.get(a, a) for a in self.addresses]

    # -- serving and shutdown --------------------------------------------------------------

    def serve(self) -> None:
        """Serve until the store's work is over, then return (call :meth:`shutdown` next).

        The work is over when every application rank has called :meth:`shutdown`; in a job
        without application ranks (a store for other jobs) when this rank's shards have been
        stopped (``memstore stop``, ``client.shutdown()``).

        Raises:
            MemstoreError: a shard of this rank crashed (the traceback is logged).
        """
        if self._closed:
            return
        if not self._has_apps:
            while any(t.is_alive() for t in self._threads):
                self._check_shards()
                self._threads[0].join(_POLL_S * 10)
            self._check_shards()
        self._post(failed=False)
        _wait(self._request, None, self._check_shards)

    def shutdown(self, error: BaseException | None = None, *, timeout: float | None = None) -> int:
        """Collective: wait for every rank, then stop this rank's shards; idempotent.

        Args:
            error: why this rank stops early, if it does: the others then get ``grace``
                seconds to reach shutdown before the job is aborted.
            timeout: longest wait for the others when this rank did not fail (None: as
                long as they work); past it the job is aborted.

        Returns:
            How many ranks reported a failure.
        """
        if self._closed:
            return self.failures
        failed = error is not None or any(t.error for t in self._threads)
        if error is not None and not isinstance(error, KeyboardInterrupt):
            log.error("rank %d failed (%s); shutting the memstore job down", self.rank, error)
        if self._client is not None:
            self._client.close()
        self._post(failed)
        start = time.monotonic()
        limit = self._grace if failed else timeout
        deadline = None if limit is None else start + limit

        def watch() -> float | None:
            try:
                self._check_shards()
            except MemstoreError:
                return time.monotonic() + self._grace
            return None

        try:
            done = _wait(self._request, deadline, watch)
        except KeyboardInterrupt:
            done = False
        if not done:
            why = f"failed ({error})" if failed else "finished"
            _abort(
                f"rank {self.rank} {why}, but not every rank reached shutdown within "
                f"{time.monotonic() - start:.0f}s"
            )
        self.failures = self._flags[1][0]
        self._close()
        return self.failures

    def _post(self, failed: bool) -> None:
        """Contribute to the shutdown collective (once)."""
        if self._request is None:
            self._flags[0][0] = int(failed)
            self._request = self._ctl.Iallreduce(self._flags[0], self._flags[1], op=mpi().SUM)

    def _check_shards(self) -> None:
        """Raise if one of this rank's shards crashed; log (once) one that was stopped."""
        for t in self._threads:
            if t.is_alive() or t.reported:
                continue
            t.reported = True
            if t.error is not None:
                raise MemstoreError(
                    f"shard {t.shard.address} on rank {self.rank} crashed: "
                    f"{type(t.error).__name__}: {t.error}"
                ) from t.error
            log.info("shard %s on rank %d was stopped", t.shard.address, self.rank)

    def _close(self) -> None:
        self._closed = True
        if self._gateway is not None and not self._gateway.stop():
            log.error("the RESP gateway on rank %d did not stop", self.rank)
        for t in self._threads:
            if not t.stop():
                log.error("shard %s did not stop within %ss", t.shard.address, _STOP_S)
        if self._address_file:
            try:
                os.unlink(self._address_file)
            except OSError:
                pass
        if self._exported and os.environ.get(ENV_ADDRESS) == ",".join(self.addresses):
            del os.environ[ENV_ADDRESS]
        if sys.excepthook == self._excepthook:
            sys.excepthook = self._previous_hook
        atexit.unregister(self._at_exit)
        self._ctl.Free()

    def _excepthook(self, kind, value, tb) -> None:
        """An uncaught exception: print it, then shut down as a failed rank."""
        self._previous_hook(kind, value, tb)
        self.shutdown(error=value)

    def _at_exit(self) -> None:
        """A program that ends without ``shutdown()`` still takes part in it."""
        self.shutdown()

    def __enter__(self) -> MPIStore:
        return self

    def __exit__(self, kind, value, tb) -> None:
        self.shutdown(error=value)
