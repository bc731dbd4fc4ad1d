"""What a shard's op mixins may use of the :class:`~memstore.server.shard.Shard` hosting them.

The shard's operations live in mixins, one module per family (``data_ops``, ``admin_ops``,
``model_ops``, ``persist_ops``, ``stream_ops``). Each is typed against :class:`ShardHost`, so
the names one of them takes from the shard, or from a sibling mixin, are written down here,
once, rather than found by reading the shard. A name not declared here is not theirs to use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from memstore import wire

if TYPE_CHECKING:
    import threading

    from memstore import shm
    from memstore.server.executor import Executor
    from memstore.server.output import OutputLimits
    from memstore.server.store import Entry, Store
    from memstore.server.unix import UnixListener

#: An operation's handler: the request and the caller's routing id in, the reply's frames
#: out (None: answered later, e.g. a parked ``wait`` or a model run).
Handler = Callable[[wire.Request, bytes], "list | None"]


class ShardHost:
    """The shard as its op mixins see it: state, request checks, replies.

    Every method here is implemented by :class:`~memstore.server.shard.Shard` or by one
    of its mixins (named in each docstring); this class only declares them, and sits last
    in the shard's method resolution order, so the real ones always win.
    """

    # -- set by Shard.__init__ ---------------------------------------------------------------
    address: str
    store: Store
    executor: Executor
    models: str  # the --models policy
    model_timeout: float
    max_message: int
    cluster: list[str]  # every shard's address; [] until the shard joins a cluster
    index: int  # this shard's place in ``cluster``
    ops: int
    messages: int
    clients: int
    started: float  # time.time() at start
    output: OutputLimits
    shm: shm.ShardArea | None
    unix: UnixListener | None  # the same-node direct path (server/unix.py)
    shm_gets: int  # tensors a get answered with a shared-memory file name
    _running: bool  # False ends the loop after this turn

    # -- set by PersistOps._init_persist -----------------------------------------------------
    saves: int
    last_save: dict | None
    _saver: threading.Thread | None  # the running save, if any

    # -- the shard: replies and request checks -----------------------------------------------

    def _send(self, identity: bytes, frames: list) -> None:
        """Shard: send a reply now (a handler that returned None answers this way)."""
        raise NotImplementedError

    def _key(self, request: wire.Request, name: str = "key", kind: str | None = None) -> str:
        """Shard: the request's key field ``name``, checked (owned here unless replicated)."""
        raise NotImplementedError

    def _check_key(self, key: object, op: str, owned: bool = True) -> str:
        """Shard: ``key`` if it is a valid key (and, ``owned``, this shard's)."""
        raise NotImplementedError

    def _kind(self, request: wire.Request) -> str | None:
        """Shard: the request's ``kind`` field, checked."""
        raise NotImplementedError

    def _owns(self, key: str) -> bool:
        """Shard: whether ``key`` lives on this shard under the current cluster."""
        raise NotImplementedError

    def _owner(self, key: str) -> str | None:
        """Shard: the address of the shard that owns ``key``; None when it is this one."""
        raise NotImplementedError

    def _waiting_client_is_connected(self, identity: bytes) -> bool:
        """Shard: whether a client about to park a wait is still connected."""
        raise NotImplementedError

    # -- sibling mixins ----------------------------------------------------------------------

    def _tensor_entries(self, request: wire.Request) -> list[tuple[str, Entry]]:
        """DataOps: a put's (or a stage's) tensors as store entries, checked."""
        raise NotImplementedError

    def _store_all(self, entries: list[tuple[str, Entry]]) -> None:
        """DataOps: store every entry or none (``StoreFull``: their files unlinked)."""
        raise NotImplementedError

    def _name_files(self, fields: dict, names: list, frames: list) -> list:
        """DataOps: a reply names shared-memory files instead of sending their bytes."""
        raise NotImplementedError

    def _check_allowed(self, kind: str, key: str, form: object) -> None:
        """ModelOps: refuse code the ``--models`` policy does not run."""
        raise NotImplementedError

    def _drop_all_staged(self) -> None:
        """ModelOps: forget every staged output and unlink its files."""
        raise NotImplementedError

    def _restore_if_pending(self) -> None:
        """PersistOps: restore the snapshot given at start, once."""
        raise NotImplementedError

    def _stream_totals(self) -> dict:
        """StreamOps: ``info``'s fields about the streams this shard holds."""
        raise NotImplementedError

    def _freeze_streams(self, entries: list) -> list:
        """StreamOps: a snapshot's entries with each stream's state as plain data."""
        raise NotImplementedError

    def _restore_stream(self, key: str, entry: Entry) -> None:
        """StreamOps: store a stream read from a snapshot."""
        raise NotImplementedError
