"""Defaults and the environment variables that override them, in one place.

| variable | meaning | default |
| --- | --- | --- |
| ``MEMSTORE_ADDRESS`` | shard addresses, comma-separated (``tcp://h:p``, ``ipc://p``) | — |
| ``SSDB`` | the SmartRedis variable, same format, read when ``MEMSTORE_ADDRESS`` is unset | — |
| ``MEMSTORE_ADDRESS_FILE`` | file whose first line holds the addresses | — |
| ``MEMSTORE_TIMEOUT`` | seconds a client waits for a shard's answer | 30 |
| ``MEMSTORE_HEARTBEAT`` | seconds within which a silent peer (dead node, cut link) is dropped | 3 |
| ``MEMSTORE_CLIENT_SOCKETS`` | fast-path sockets per client and shard | 8 |
| ``MEMSTORE_CLIENT_MAX_INFLIGHT`` | most unanswered async requests per client (0: no cap) | 10000 |
| ``MEMSTORE_MPI_TIMEOUT`` | seconds all ranks have to reach ``memstore.mpi.init/connect`` | 120 |
| ``MEMSTORE_MPI_GRACE`` | seconds a failed rank waits for the others before ``MPI_Abort`` | 10 |
| ``MEMSTORE_SHM`` | ``0`` turns the same-node shared-memory path off | on |
| ``MEMSTORE_SHM_DIR`` | where shards and clients keep shared-memory files | /dev/shm |
| ``MEMSTORE_SHM_THRESHOLD`` | smallest tensor (bytes) sent through shared memory | 256 KiB |
| ``MEMSTORE_SHM_POOL`` | bytes of upload files a client allocates ahead of its puts | 256 MiB |
| ``MEMSTORE_SHM_SPARE`` | bytes of freed files a shard keeps for clients' next puts | 256 MiB |
| ``MEMSTORE_SHM_SPARE_TTL`` | seconds a spare file waits for a put before it is freed | 30 |
| ``MEMSTORE_CURVE_DIR`` | a ``memstore keygen`` folder: CURVE keys for clients | — |
| ``MEMSTORE_CURVE_SERVER_KEY`` | the shards' CURVE public key (``.key`` file or Z85 text) | — |
| ``MEMSTORE_CURVE_CLIENT_KEY`` | this client's CURVE secret key file (``.key_secret``) | — |
| ``SSKEYIN`` / ``SSKEYOUT`` | ensemble key prefixes for reads / writes (SmartRedis) | — |
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

DEFAULT_PORT = 6780
DEFAULT_HOST = "127.0.0.1"
#: ``memstore gateway``'s port (Redis's) and the line it prints once it listens.
DEFAULT_RESP_PORT = 6379
GATEWAY_READY_LINE = "memstore gateway ready at "
DEFAULT_ADDRESS_FILE = "memstore.addr"

#: Seconds a client waits for any one answer before raising ``ConnectionLost``, unless
#: ``MEMSTORE_TIMEOUT`` says otherwise when the client is made (see :func:`client_timeout`).
DEFAULT_TIMEOUT = 30.0
ENV_TIMEOUT = "MEMSTORE_TIMEOUT"
#: Seconds within which a silent peer is dropped (:func:`heartbeat`).
DEFAULT_HEARTBEAT = 3.0
ENV_HEARTBEAT = "MEMSTORE_HEARTBEAT"
#: Seconds ``set_model`` & co. wait beyond the client's timeout: every shard loads the model
#: (a large TorchScript file or a model moved to a GPU takes a while).
MODEL_LOAD_WAIT = 300.0
#: Seconds a ``run_model`` waits beyond the client's timeout before ``ConnectionLost``: the
#: shard's own ``--model-timeout`` (default :data:`MODEL_TIMEOUT`) answers first.
MODEL_RUN_WAIT = 300.0
#: Seconds a model run may take on a shard before its caller gets ``ModelError``.
MODEL_TIMEOUT = 300.0
#: Seconds ``memstore start`` / ``LocalCluster`` wait for a new shard to answer.
STARTUP_TIMEOUT = 30.0
#: Longest key accepted, in bytes (UTF-8); a longer one is refused with ``ProtocolError``.
MAX_KEY_BYTES = 64 * 1024
#: Most frames in one request message (header + payload); the shard reads and drops the
#: rest of a longer one and refuses it with ``ProtocolError`` (each kept frame costs ~200 B).
MAX_FRAMES = 100_000
#: Most bytes of replies one client may leave unread before its shard disconnects it
#: (``--client-output-limit``, 0: no limit); one reply larger than it still goes.
DEFAULT_CLIENT_OUTPUT_LIMIT = 1 << 30
#: Most requests a client has queued or unanswered on its pump (``*_async`` calls) before a
#: submit waits for room; ``MEMSTORE_CLIENT_MAX_INFLIGHT`` overrides it (0: no cap).
DEFAULT_CLIENT_MAX_INFLIGHT = 10_000
ENV_CLIENT_MAX_INFLIGHT = "MEMSTORE_CLIENT_MAX_INFLIGHT"
#: Longest a wait (poll) may park on a shard, in seconds (30 days); a longer one is refused.
MAX_WAIT_TIMEOUT = 30 * 24 * 3600.0
#: Default caps on parked waits per shard and per client connection (``--max-waiters``,
#: ``--max-client-waiters``): each costs the shard about 1 KiB until answered.
DEFAULT_MAX_WAITERS = 100_000
DEFAULT_MAX_CLIENT_WAITERS = 10_000
#: Most shards one cluster may list (the ``cluster`` op refuses longer lists).
MAX_SHARDS = 65_536

#: Which client code a shard runs (``memstore-server --models``): none at all, TorchScript
#: only, or also cloudpickled Python (arbitrary code). See docs/security.md.
MODELS_NONE, MODELS_TORCHSCRIPT, MODELS_ALL = "none", "torchscript", "all"
MODEL_POLICIES = (MODELS_NONE, MODELS_TORCHSCRIPT, MODELS_ALL)
DEFAULT_MODELS = MODELS_TORCHSCRIPT

#: The line a shard prints on stdout once it serves; launchers read the address from it.
READY_LINE = "memstore shard ready at "

#: Shared memory (``memstore/shm.py``): the variables, where files live, the smallest
#: tensor worth a file (docs/design.md, "Shared memory", for the measurement), and how often
#: a shard removes what dead shards and clients left behind (the bound on a leak).
ENV_SHM = "MEMSTORE_SHM"
ENV_SHM_DIR = "MEMSTORE_SHM_DIR"
SHM_ROOT = "/dev/shm"
SHM_SWEEP_INTERVAL = 2.0
#: Smallest freed file kept as a spare: below it the lookup and lease cost what fresh pages
#: would (1 MiB: a write into allocated pages 111 us, into new ones 249 us with the unlink).
SHM_SPARE_MIN = 4 << 20

#: The same-node direct path: a shard's Unix stream socket (``memstore/server/unix.py``).
ENV_UNIX = "MEMSTORE_UNIX"

#: CURVE keys of clients (``memstore/auth.py``, docs/security.md).
ENV_CURVE_DIR = "MEMSTORE_CURVE_DIR"
ENV_CURVE_SERVER_KEY = "MEMSTORE_CURVE_SERVER_KEY"
ENV_CURVE_CLIENT_KEY = "MEMSTORE_CURVE_CLIENT_KEY"

ENV_ADDRESS = "MEMSTORE_ADDRESS"
ENV_SSDB = "SSDB"
ENV_ADDRESS_FILE = "MEMSTORE_ADDRESS_FILE"
ENV_KEY_IN = "SSKEYIN"
ENV_KEY_OUT = "SSKEYOUT"


# -- settings from the environment ---------------------------------------------------------
# Each is read by a function, when the object that uses it is made (a Client, a shard, a
# Launcher), never copied at import: a program or a test that sets a variable after importing
# memstore is obeyed, and a bad value fails there with the variable's name.


def _setting(name: str, default: Any, parse: Callable[[str], Any], what: str) -> Any:
    """``name`` from the environment now, parsed, else ``default``."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        return parse(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} must be {what}") from None


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise ValueError(text)
    return value


def _seconds_or_off(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise ValueError(text)
    return value


def _count(text: str) -> int:
    if not text.isdigit():
        raise ValueError(text)
    return int(text)


def client_timeout() -> float:
    """Seconds a client waits for an answer: ``MEMSTORE_TIMEOUT``, else 30."""
    return _setting(ENV_TIMEOUT, DEFAULT_TIMEOUT, _seconds, "a positive number of seconds")


def heartbeat() -> float:
    """Seconds within which a silent peer (a crashed node, a cut link: no FIN, no RST) is
    noticed and its connection dropped: ``MEMSTORE_HEARTBEAT``, else 3; 0 turns it off
    (then only the request's own timeout ends a wait on such a peer)."""
    return _setting(ENV_HEARTBEAT, DEFAULT_HEARTBEAT, _seconds_or_off, "seconds (0: off)")


def heartbeat_options() -> list[tuple[int, int]]:
    """ZeroMQ socket options that make :func:`heartbeat` so, for every socket to a peer.

    ZMTP pings every quarter of it and drops a connection that is silent for half of it
    (``HEARTBEAT_TTL`` asks the peer to do the same), so a silence is noticed after 3/4 of
    it at most; a connection whose handshake stalls (the TCP connect answered by a stopped
    peer's kernel) is dropped after the whole of it.
    Pings and pongs are answered by libzmq's I/O thread, never by Python, so a busy shard
    or client still answers them.
    """
    seconds = heartbeat()
    if not seconds:
        return []
    import zmq  # here: config is read by code that never touches a socket

    ping_ms, silent_ms = max(1, round(seconds * 250)), max(2, round(seconds * 500))
    return [
        (zmq.HEARTBEAT_IVL, ping_ms),
        (zmq.HEARTBEAT_TIMEOUT, silent_ms),
        (zmq.HEARTBEAT_TTL, max(100, silent_ms)),  # deciseconds on the wire
        (zmq.HANDSHAKE_IVL, max(1, round(seconds * 1000))),
    ]


def client_max_inflight() -> int:
    """Most unanswered async requests per client: ``MEMSTORE_CLIENT_MAX_INFLIGHT`` (0: no cap)."""
    return _setting(
        ENV_CLIENT_MAX_INFLIGHT, DEFAULT_CLIENT_MAX_INFLIGHT, _count, "a count (0: no cap)"
    )


def client_sockets() -> int:
    """Fast-path sockets a client keeps per shard (threads beyond them share the pump)."""
    return _setting("MEMSTORE_CLIENT_SOCKETS", 8, _count, "a count of sockets")


def save_timeout() -> float:
    """Seconds a client waits, beyond its timeout, for every shard to write a snapshot."""
    return _setting("MEMSTORE_SAVE_TIMEOUT", 3600.0, _seconds, "a positive number of seconds")


def mpi_timeout() -> float:
    """Seconds every rank of an MPI job has to reach the memstore bootstrap."""
    return _setting("MEMSTORE_MPI_TIMEOUT", 120.0, _seconds, "a positive number of seconds")


def mpi_abort_grace() -> float:
    """Seconds a rank that failed waits at shutdown for the others before aborting the job."""
    return _setting("MEMSTORE_MPI_GRACE", 10.0, _seconds, "a positive number of seconds")


def srun_mpi() -> str:
    """The ``srun --mpi=`` plugin the slurm Launcher asks for: pmi2 is what the PyPI mpich
    wheel speaks; ``MEMSTORE_SRUN_MPI=""`` leaves it to the site (``MpiDefault``)."""
    return os.environ.get("MEMSTORE_SRUN_MPI", "pmi2")


def shm_threshold() -> int:
    """Smallest tensor, in bytes, sent through shared memory (at least 1)."""
    return max(1, _setting("MEMSTORE_SHM_THRESHOLD", 256 << 10, parse_size, "a size"))


def shm_pool_bytes() -> int:
    """Bytes of upload files a client keeps allocated ahead of its puts (0: none)."""
    return _setting("MEMSTORE_SHM_POOL", 256 << 20, parse_size, "a size (0: none)")


def shm_spare_bytes() -> int:
    """Bytes of freed files a shard keeps for clients' next puts (0: none)."""
    return _setting("MEMSTORE_SHM_SPARE", 256 << 20, parse_size, "a size (0: none)")


def unix_enabled() -> bool:
    """Whether clients and shards on one node talk over the shard's Unix stream socket
    (``memstore/client/unix.py``): ``MEMSTORE_UNIX=0`` keeps them on ZeroMQ."""
    return os.environ.get(ENV_UNIX, "1").strip().lower() not in ("0", "false", "no", "off")


def shm_spare_ttl() -> float:
    """Seconds a spare file waits for a put before it is freed."""
    return _setting("MEMSTORE_SHM_SPARE_TTL", 30.0, float, "a number of seconds")


#: The constants these functions replaced, kept one release for code that imported them.
_RENAMED = {
    "MPI_TIMEOUT": mpi_timeout,
    "MPI_ABORT_GRACE": mpi_abort_grace,
    "SAVE_TIMEOUT": save_timeout,
    "SRUN_MPI": srun_mpi,
    "CLIENT_SOCKETS": client_sockets,
    "SHM_THRESHOLD": shm_threshold,
    "SHM_POOL_BYTES": shm_pool_bytes,
    "SHM_SPARE_BYTES": shm_spare_bytes,
    "SHM_SPARE_TTL": shm_spare_ttl,
}


def __getattr__(name: str) -> Any:
    if name in _RENAMED:
        function = _RENAMED[name]
        warnings.warn(
            f"memstore.config.{name} is deprecated: call memstore.config.{function.__name__}()",
            DeprecationWarning,
            stacklevel=2,
        )
        return function()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def parse_size(text: str | int) -> int:
    """Parse ``2GiB``, ``512M``, ``1e9`` or ``0`` (unlimited) into bytes."""
    if isinstance(text, int):
        return text
    units = {
        "": 1, "b": 1,
        "k": 10**3, "kb": 10**3, "kib": 2**10,
        "m": 10**6, "mb": 10**6, "mib": 2**20,
        "g": 10**9, "gb": 10**9, "gib": 2**30,
        "t": 10**12, "tb": 10**12, "tib": 2**40,
    }  # fmt: skip
    s = text.strip().lower()
    number = s.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = s[len(number) :].strip()
    if unit not in units or not number:
        raise ValueError(f"cannot read size {text!r}: use e.g. 2GiB, 512MiB, 1G or a byte count")
    try:
        size = int(float(number) * units[unit])
    except ValueError:
        raise ValueError(f"cannot read size {text!r}: use e.g. 2GiB, 512MiB, 1G or a byte count")
    if size < 0:
        raise ValueError(f"size {text!r} is negative: use 0 for unlimited")
    return size
