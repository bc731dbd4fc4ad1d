"""Pure placement decisions for the MPI bootstrap: who serves, where it binds.

Nothing here talks to MPI, so the rules are unit-tested without a job: the bootstrap
gathers one :class:`Member` per rank and every rank runs :func:`assign_roles` on the same
list, so every rank reaches the same answer without another message.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import socket
import struct
import tempfile
from dataclasses import dataclass

#: A rank's request: run by ``memstore-server --mpi`` (always serves), ``mpi.init``
#: (serves if the per-node rule picks it) or ``mpi.connect`` (never serves).
SERVER, INIT, CONNECT = "server", "init", "connect"

#: Longest ``ipc://`` path most kernels accept (``sun_path`` is 108 bytes with its NUL).
_MAX_IPC_PATH = 100
#: The ioctl that reads an interface's IPv4 address (linux/sockios.h).
_SIOCGIFADDR = 0x8915


@dataclass(frozen=True)
class Member:
    """What one rank tells the others before roles are decided."""

    rank: int  # in the bootstrap communicator
    node: int  # the lowest rank on the same shared-memory node: the node's name
    mode: str  # SERVER, INIT or CONNECT
    shards_per_node: int  # INIT ranks only; 0 otherwise
    appnum: int  # which program of an MPMD command line (0 when there is one)


@dataclass(frozen=True)
class Role:
    """What one rank does: serve (a server rank) and/or run shards in threads."""

    is_server: bool
    shards: int  # shards this rank runs; an app rank alone on its node may run some
    first_local: int  # index of its first shard among the node's shards (for fixed ports)


def assign_roles(members: list[Member]) -> list[Role]:
    """Roles for every member, in the order given.

    * ``memstore-server --mpi`` ranks are the servers, one shard each, if there are any.
    * Otherwise the ``init`` ranks decide per node: the last ``shards_per_node`` of them
      serve, but at least one application rank stays on every node that has two ranks or
      more; a rank alone on its node stays an application rank and runs its node's shards
      in threads of its own process (so ``python app.py`` without ``mpiexec`` works).
    * ``connect`` ranks never serve.

    Raises:
        ValueError: ``init`` ranks asked for different ``shards_per_node``.
    """
    wanted = {m.shards_per_node for m in members if m.mode == INIT}
    if len(wanted) > 1:
        raise ValueError(
            f"memstore.mpi.init: ranks disagree on shards_per_node ({sorted(wanted)}); "
            "every rank must pass the same value"
        )
    roles = {m.rank: Role(False, 0, 0) for m in members}
    nodes: dict[int, list[Member]] = {}
    for m in members:
        nodes.setdefault(m.node, []).append(m)
    dedicated = any(m.mode == SERVER for m in members)
    for node_members in nodes.values():
        if dedicated:
            servers = [m for m in node_members if m.mode == SERVER]
            for i, m in enumerate(servers):
                roles[m.rank] = Role(True, 1, i)
            continue
        candidates = [m for m in node_members if m.mode == INIT]
        if not candidates:
            continue
        k = candidates[0].shards_per_node
        if len(node_members) == 1:
            roles[candidates[0].rank] = Role(False, k, 0)
            continue
        count = min(k, len(candidates), len(node_members) - 1)
        for i, m in enumerate(candidates[len(candidates) - count :]):
            roles[m.rank] = Role(True, 1, i)
    return [roles[m.rank] for m in members]


def bind_host(host: str | None, nodes: int, external: bool = False) -> str:
    """The IP address shards bind and advertise.

    ``host`` (an IP address, an interface name such as ``ib0``, or a host name) wins: an
    interface name means the same network on every node, where one address could not.
    Without it a job on one node stays on loopback, unless it serves ``external`` clients
    (it writes an address file for other jobs, which may run on other nodes); otherwise
    shards use this node's address: its host name's, or the address of the interface with
    the default route when the name maps to loopback (as Debian's ``127.0.1.1`` entry does).
    """
    if host:
        return _resolve(host)
    if nodes <= 1 and not external:
        return "127.0.0.1"
    found = _resolve(socket.gethostname())
    if ipaddress.ip_address(found).is_loopback:
        found = _default_route_ip() or found
    return found


def _resolve(host: str) -> str:
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    if host in {name for _, name in socket.if_nameindex()}:
        return interface_ip(host)
    return socket.gethostbyname(host)


def interface_ip(name: str) -> str:
    """The IPv4 address of this node's interface ``name`` (``SIOCGIFADDR``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            answer = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()))
        except OSError as exc:
            raise OSError(f"interface {name!r} has no IPv4 address ({exc.strerror})") from None
    return socket.inet_ntoa(answer[20:24])  # the ifreq's sockaddr_in: family, port, address


def _default_route_ip() -> str | None:
    """The local address the kernel would use to reach the outside (no packet is sent)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1: routing lookup only
        return probe.getsockname()[0]
    except OSError:
        return None
    finally:
        probe.close()


def ipc_path(token: str, rank: int, index: int) -> str:
    """A node-local socket path, unique to the job (``token``), rank and shard."""
    name = f"memstore-{token}-{rank}-{index}.sock"
    folder = tempfile.gettempdir()
    if len(os.path.join(folder, name)) > _MAX_IPC_PATH:
        folder = "/tmp"
    return os.path.join(folder, name)
