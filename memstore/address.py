"""Where the shards are: address strings, the environment and address files."""

from __future__ import annotations

import os
from pathlib import Path

from memstore.config import ENV_ADDRESS, ENV_ADDRESS_FILE, ENV_SSDB
from memstore.errors import MemstoreError

_HOW = (
    "give Client(address='tcp://host:port,...'), set MEMSTORE_ADDRESS (or SmartRedis's SSDB), "
    "or point MEMSTORE_ADDRESS_FILE at the file `memstore start` wrote"
)


def normalize(address: str) -> str:
    """``host:port`` → ``tcp://host:port``; ``tcp://`` and ``ipc://`` pass unchanged."""
    address = address.strip()
    if address.startswith(("ipc://", "inproc://")):
        if address.endswith("://"):
            raise MemstoreError(f"address {address!r} has no path: use e.g. ipc:///tmp/m.sock")
        return address
    bare = address.removeprefix("tcp://")
    if "://" in bare:
        raise MemstoreError(f"address {address!r}: only tcp:// and ipc:// are supported")
    host, sep, port = bare.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise MemstoreError(f"address {address!r} is not host:port, tcp://host:port or ipc://path")
    return f"tcp://{bare}"


def parse(text: str) -> list[str]:
    """A comma-separated (or whitespace-separated) address list."""
    parts = [p for p in text.replace(",", " ").split() if p]
    return [normalize(p) for p in parts]


def read_file(path: str | os.PathLike) -> list[str]:
    """Addresses from an address file (its first non-empty line)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise MemstoreError(f"cannot read address file {str(path)!r}: {exc.strerror}") from None
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not lines:
        raise MemstoreError(f"address file {str(path)!r} is empty")
    return parse(lines[0])


def write_file(path: str | os.PathLike, addresses: list[str]) -> None:
    """Write an address file atomically, so a reader never sees half of it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(",".join(addresses) + "\n")
    tmp.replace(path)


def _mpi_hint() -> str:
    """Inside an MPI job the store usually comes from ``memstore.mpi``; say so.

    ``Client()`` never runs the (collective) MPI bootstrap itself: a client made on one
    rank only would hang the job. After ``memstore.mpi.init()``/``connect()`` it finds
    the store through ``MEMSTORE_ADDRESS``, which they set.
    """
    if not any(v in os.environ for v in ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK")):
        return ""
    return (
        "; this process runs under MPI: call memstore.mpi.connect() (next to "
        "memstore-server --mpi) or memstore.mpi.init() on every rank first"
    )


def resolve(address: str | list[str] | None = None) -> list[str]:
    """The addresses to use: the argument, else MEMSTORE_ADDRESS, SSDB, MEMSTORE_ADDRESS_FILE."""
    if isinstance(address, (list, tuple)):
        found = [normalize(a) for a in address]
    elif address:
        found = parse(address)
    elif os.environ.get(ENV_ADDRESS):
        found = parse(os.environ[ENV_ADDRESS])
    elif os.environ.get(ENV_SSDB):
        found = parse(os.environ[ENV_SSDB])
    elif os.environ.get(ENV_ADDRESS_FILE):
        found = read_file(os.environ[ENV_ADDRESS_FILE])
    else:
        raise MemstoreError(f"no memstore address: {_HOW}{_mpi_hint()}")
    if not found:
        raise MemstoreError(f"the memstore address list is empty: {_HOW}")
    return found
