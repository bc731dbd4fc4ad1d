"""This rank's part in an MPI job's store (:class:`MPIStore`) and the threads its shards run in.

Shutdown is one non-blocking ``Iallreduce`` of failure flags on the store's private
communicator: it completes when every rank has called ``shutdown``. Server ranks keep
serving while they wait. A rank that failed waits ``grace`` seconds for the others, then
aborts the job (``MPI_Abort``): the others may be stuck in a collective of their own
waiting for it. A rank that waits also watches the other ranks' shards (:mod:`._watch`):
one lost (a silent node) means its rank may never arrive, and the grace applies as well.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
import time
from array import array
from typing import TYPE_CHECKING, Any

from memstore.config import ENV_ADDRESS
from memstore.errors import MemstoreError
from memstore.mpi._comm import POLL_S, abort_job, load_mpi, wait_for
from memstore.mpi._watch import PeerWatch

if TYPE_CHECKING:
    from memstore.client import Client
    from memstore.server.shard import Shard

log = logging.getLogger(__name__)

#: Seconds a shard thread gets to leave its loop once asked (the loop wakes every 0.5 s).
STOP_S = 5.0


class ShardThread(threading.Thread):
    """Runs one shard's loop; remembers the exception that ended it, if any."""

    def __init__(self, shard: Shard, local: str | None):
        super().__init__(name=f"memstore-shard {shard.address}", daemon=True)
        self.shard = shard
        self.local = local  # its node-local alias (ipc:// or inproc://), if any
        self.error: BaseException | None = None
        self.reported = False
        self.cluster: list[str] = []

    def serve(self, cluster: list[str]) -> None:
        """Start the thread: its shard joins ``cluster`` (every shard of the job), then serves.

        The join runs on the thread because it restores the shard's snapshot, if it was
        given one: a restore that fails is then a crashed shard, reported at shutdown like
        any other, rather than an error on one rank after the others left the bootstrap.
        """
        self.cluster = cluster
        self.start()

    def run(self) -> None:
        try:
            self.shard.join(self.cluster, self.cluster.index(self.shard.address))
            self.shard.serve()
        except BaseException as exc:  # reported by the rank's main thread
            self.error = exc
            log.exception("shard %s crashed", self.shard.address)

    def stop(self, timeout: float = STOP_S) -> bool:
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
        mine = {t.shard.address for t in threads}
        others = [a for a in self.addresses if a not in mine] if self._has_apps else []
        self._watch = PeerWatch(self.new_client, others)
        self._lost: list[str] = []  # why a peer's shard was lost while waiting, if it was
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
            MemstoreError: a shard of this rank crashed (the traceback is logged), or, while
                waiting for the application ranks, another rank's shard was lost for
                ``grace`` seconds (memstore.mpi._watch).
        """
        if self._closed:
            return
        if not self._has_apps:
            while any(t.is_alive() for t in self._threads):
                self._check_shards()
                self._threads[0].join(POLL_S * 10)
            self._check_shards()
        self._post(failed=False)

        def watch() -> float | None:
            self._check_shards()  # a crashed shard raises: this rank fails
            return self._peer_deadline()

        if not wait_for(self._request, None, watch):
            raise MemstoreError(f"rank {self.rank}: {self._lost[0]}; it cannot reach shutdown")

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
            return self._peer_deadline()

        try:
            done = wait_for(self._request, deadline, watch)
        except KeyboardInterrupt:
            done = False
        if not done:
            why = f"failed ({type(error).__name__}: {error})" if failed else "finished"
            why += f" and {self._lost[0]}" if self._lost else ""
            abort_job(
                f"rank {self.rank} {why}, but not every rank reached shutdown within "
                f"{time.monotonic() - start:.0f}s"
            )
        self.failures = self._flags[1][0]
        self._close()
        if self._lost:  # its node's process manager is cut off too: MPI_Finalize would hang
            abort_job(f"rank {self.rank}: {self._lost[0]}; MPI_Finalize would wait for it")
        return self.failures

    def _post(self, failed: bool) -> None:
        """Contribute to the shutdown collective (once)."""
        if self._request is None:
            self._flags[0][0] = int(failed)
            self._request = self._ctl.Iallreduce(self._flags[0], self._flags[1], op=load_mpi().SUM)

    def _peer_deadline(self) -> float | None:
        """While waiting at shutdown: a deadline ``grace`` away once another rank's shard is
        lost (that rank may never join; the first reason goes into ``_lost``), else None."""
        why = self._watch.lost()
        if why is None:
            return None
        if not self._lost:
            log.error("rank %d waits at shutdown, but %s", self.rank, why)
            self._lost.append(why)
        return time.monotonic() + self._grace

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
        self._watch.close()
        if self._gateway is not None and not self._gateway.stop():
            log.error("the RESP gateway on rank %d did not stop", self.rank)
        for t in self._threads:
            if not t.stop():
                log.error("shard %s did not stop within %ss", t.shard.address, STOP_S)
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
        """An uncaught exception: print it, then shut down as a failed rank.

        Both to the process's own stderr: a hook wrapping this one (torch.distributed's)
        swaps ``sys.stderr`` for a buffer that it writes out only once this returns, and
        after an abort nothing returns."""
        with contextlib.redirect_stderr(sys.__stderr__ or sys.stderr):
            self._previous_hook(kind, value, tb)
            self.shutdown(error=value)

    def _at_exit(self) -> None:
        """A program that ends without ``shutdown()`` still takes part in it."""
        self.shutdown()

    def __enter__(self) -> MPIStore:
        return self

    def __exit__(self, kind, value, tb) -> None:
        self.shutdown(error=value)
