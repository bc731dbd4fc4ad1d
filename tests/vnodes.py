"""Virtual nodes for tests: N "machines" on this one, made of Linux namespaces (root only).

Each node is a sleeping *holder* process in new network, UTS and mount namespaces: its own
hostname (``node1``..``nodeN``), its own ``/dev/shm`` (a private tmpfs, so the same-node
shared-memory path works inside a node and never across nodes), its own ``/etc/hosts``
(bind-mounted, naming every node) and two interfaces: ``eth0`` on the cluster network
(what the node's name resolves to) and ``eth1`` on a second, "fast" network (what
``--host eth1`` picks), each a veth on a bridge in the root namespace. Everything else
(``/tmp``, the worktree) is shared, like a cluster's shared filesystem.

Addresses: a /27 of 198.18.0.0/24 (the benchmarking range, and nothing else), taken under
a lock so that two test runs never share one: nodes ``.base+1..``, the root namespace's
bridge ``.base+14``; the fast network ``.base+17..`` and ``.base+30``.

:meth:`VirtualCluster.run_on` starts a process in a node (``nsenter`` into the holder's
namespaces); :meth:`VirtualCluster.mpiexec` builds an ``mpiexec -hosts node1,...`` line whose
ssh launcher is a script that does the same. :meth:`VirtualCluster.stop` kills every process
of every node, the holders, and removes every link and the temp folder, also after a failed
:meth:`start`. Not collected.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

#: The only addresses these nodes ever use.
RANGE = ipaddress.ip_network("198.18.0.0/24")
BLOCK = 32  # one cluster: a /27, two /28 networks
MAX_NODES = 13
LOCK = "/run/memstore-vnodes.lock"
TOOLS = ("ip", "nsenter", "unshare", "mount")
START_TIMEOUT = 10
STOP_TIMEOUT = 10
POLL_S = 0.05
MPIEXEC = Path(sys.executable).parent / "mpiexec"

#: What the ssh launcher runs: ``<script> [-x] HOST COMMAND...`` -> COMMAND in HOST's
#: namespaces (ssh hands its remote command to a shell, so does this).
LAUNCHER = """#!/bin/sh
while [ "${1#-}" != "$1" ]; do shift; done
host=$1; shift
pid=$(cat "%(root)s/$host.pid") || exit 255
exec nsenter -t "$pid" --net --uts --mount -- sh -c "$*"
"""

#: The holder: mounts, hostname, loopback up, then sleeps (pid = this process: no fork).
HOLDER = (
    'mount -t tmpfs -o size=256m,mode=1777 tmpfs /dev/shm && mount --bind "$1" /etc/hosts '
    '&& hostname "$2" && ip link set lo up && echo ready && exec sleep 86400'
)


class VnodesUnavailable(Exception):
    """Namespaces cannot be made here; the message says why (the tests skip with it)."""


@dataclass
class Node:
    name: str
    address: str  # eth0, what ``name`` resolves to
    fast_address: str  # eth1
    holder: subprocess.Popen
    links: tuple[str, str]  # the veths' root-namespace ends

    @property
    def pid(self) -> int:
        return self.holder.pid


def check_available() -> None:
    """Raise VnodesUnavailable unless this is root with the tools namespaces need."""
    if os.geteuid() != 0:
        raise VnodesUnavailable("virtual nodes need root (network, UTS and mount namespaces)")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        raise VnodesUnavailable(f"missing tools: {', '.join(missing)} (iproute2, util-linux)")
    if not MPIEXEC.exists():
        raise VnodesUnavailable(f"no {MPIEXEC} (pip install mpich)")


def _ip(*argv: str, node: Node | None = None) -> None:
    prefix = ["nsenter", "-t", str(node.pid), "--net"] if node else []
    done = subprocess.run([*prefix, "ip", *argv], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise VnodesUnavailable(f"ip {' '.join(argv)}: {done.stderr.strip()}")


def _net_ns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


class VirtualCluster:
    """``nodes`` virtual nodes; see the module doc. Use as a context manager."""

    def __init__(self, nodes: int = 3):
        if not 1 <= nodes <= MAX_NODES:
            raise ValueError(f"nodes must be 1..{MAX_NODES}, not {nodes}")
        self.size = nodes
        self.root = Path(tempfile.mkdtemp(prefix="memstore-vnodes-"))
        self.nodes: list[Node] = []
        self.bridges: list[str] = []
        self.started: list[subprocess.Popen] = []
        self.block = -1

    # -- addresses ---------------------------------------------------------------------------

    def _addr(self, offset: int) -> str:
        return str(RANGE.network_address + self.block * BLOCK + offset)

    @property
    def bridge(self) -> str:
        """The cluster network's bridge: what ``mpiexec -iface`` names."""
        return self.bridges[0]

    @property
    def bridge_address(self) -> str:
        return self._addr(14)

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    # -- bring up ----------------------------------------------------------------------------

    def start(self) -> VirtualCluster:
        try:
            check_available()
            with open(LOCK, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                self._make_bridges()
            hosts = self._write_hosts()
            for i in range(1, self.size + 1):
                self._make_node(i, hosts)
            (self.root / "launch.sh").write_text(LAUNCHER % {"root": self.root})
            (self.root / "launch.sh").chmod(0o755)
        except BaseException:
            self.stop()
            raise
        return self

    def _make_bridges(self) -> None:
        """Take the first /27 nobody uses (no bridge of ours, no address in it)."""
        used = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
        for block in range(RANGE.num_addresses // BLOCK):
            self.block = block
            names = (f"msv{block}a", f"msv{block}b")
            if any(Path(f"/sys/class/net/{n}").exists() for n in names) or any(
                f" {self._addr(o)}/" in used for o in range(BLOCK)
            ):
                continue
            for name, offset in zip(names, (14, 30), strict=True):
                _ip("link", "add", name, "type", "bridge")
                self.bridges.append(name)
                _ip("addr", "add", f"{self._addr(offset)}/28", "dev", name)
                _ip("link", "set", name, "up")
            return
        raise VnodesUnavailable(f"every /27 of {RANGE} is in use")

    def _write_hosts(self) -> Path:
        lines = ["127.0.0.1 localhost"]
        for i in range(1, self.size + 1):
            lines += [f"{self._addr(i)} node{i}", f"{self._addr(16 + i)} node{i}-fast"]
        hosts = self.root / "hosts"
        hosts.write_text("\n".join(lines) + "\n")
        return hosts

    def _make_node(self, i: int, hosts: Path) -> None:
        name = f"node{i}"
        holder = subprocess.Popen(
            ["unshare", "--net", "--uts", "--mount", "--", "sh", "-c", HOLDER, "sh", hosts, name],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        links = (f"msv{self.block}a{i}", f"msv{self.block}b{i}")
        node = Node(name, self._addr(i), self._addr(16 + i), holder, links)
        self.nodes.append(node)  # stop() removes it even if the rest fails
        line = _read_line(holder, START_TIMEOUT)
        if line != "ready":
            raise VnodesUnavailable(f"{name}: the namespaces could not be made: {line!r}")
        (self.root / f"{name}.pid").write_text(str(holder.pid))
        for link, inner, bridge, address in zip(
            links, ("eth0", "eth1"), self.bridges, (node.address, node.fast_address), strict=True
        ):
            _ip("link", "add", link, "type", "veth", "peer", "name", inner, "netns", str(node.pid))
            _ip("link", "set", link, "master", bridge, "up")
            _ip("addr", "add", f"{address}/28", "dev", inner, node=node)
            _ip("link", "set", inner, "up", node=node)

    # -- running things ----------------------------------------------------------------------

    def argv_on(self, node: Node | str, argv: list[str]) -> list[str]:
        """``argv`` run inside ``node``'s namespaces."""
        node = self.node(node) if isinstance(node, str) else node
        return ["nsenter", "-t", str(node.pid), "--net", "--uts", "--mount", "--", *argv]

    def run_on(self, node: Node | str, argv: list[str], env: dict | None = None, **kw):
        """Start ``argv`` in ``node`` (a Popen, stopped by :meth:`stop` if still running)."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(self.argv_on(node, argv), env=env, **kw)
        self.started.append(proc)
        return proc

    def argv_here(self, argv: list[str]) -> list[str]:
        """``argv`` run in the root namespace, but with the nodes' ``/etc/hosts`` (a mount
        namespace of its own: the machine's file is never touched)."""
        bind = 'mount --bind "$0" /etc/hosts && exec "$@"'
        return ["unshare", "--mount", "--", "sh", "-c", bind, str(self.root / "hosts"), *argv]

    def mpiexec(self, hosts: list[str], *args: str) -> list[str]:
        """An ``mpiexec -hosts ...`` line (run from the root namespace) across ``hosts``."""
        return self.argv_here([
            str(MPIEXEC), "-hosts", ",".join(hosts), "-iface", self.bridge,
            "-launcher", "ssh", "-launcher-exec", str(self.root / "launch.sh"), *args,
        ])  # fmt: skip

    # -- faults ------------------------------------------------------------------------------

    def pids(self, node: Node) -> list[int]:
        """Every process inside ``node`` but its holder."""
        ns = _net_ns(node.pid)
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != node.pid and _net_ns(int(entry)) == ns:
                found.append(int(entry))
        return found if ns else []

    def kill_node(self, node: Node | str, timeout: float = STOP_TIMEOUT) -> None:
        """SIGKILL every process of ``node`` (a crashed machine whose kernel still answers:
        its sockets are reset) and wait until none is left."""
        node = self.node(node) if isinstance(node, str) else node
        deadline = time.monotonic() + timeout
        while pids := self.pids(node):
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            for proc in self.started:
                if proc.poll() is None and proc.pid in pids:
                    proc.wait(timeout)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{node.name}: processes {pids} outlived SIGKILL")
            time.sleep(POLL_S)

    def partition(self, node: Node | str, up: bool = False) -> None:
        """Take ``node``'s links down (``up``: back up): a silent node, no FIN, no RST."""
        node = self.node(node) if isinstance(node, str) else node
        for link in node.links:
            _ip("link", "set", link, "up" if up else "down")

    def wait_reachable(self, node: Node | str, timeout: float = STOP_TIMEOUT) -> None:
        """After :meth:`partition` ``up``: forget the neighbours that failed meanwhile (else
        "No route to host" for seconds) and wait until ``node`` reaches the root namespace
        again: a connect to a closed port of the bridge is refused, not unreachable."""
        node = self.node(node) if isinstance(node, str) else node
        for inner in ("eth0", "eth1"):
            _ip("neigh", "flush", "dev", inner, node=node)
        for bridge in self.bridges:
            _ip("neigh", "flush", "dev", bridge)
        probe = ("import socket, sys; s = socket.socket(); s.settimeout(1)\n"
                 "try: s.connect((sys.argv[1], 9))\n"
                 "except ConnectionRefusedError: sys.exit(0)\n"
                 "except OSError: sys.exit(1)")  # fmt: skip
        deadline = time.monotonic() + timeout
        argv = self.argv_on(node, [sys.executable, "-c", probe, self.bridge_address])
        while subprocess.run(argv, capture_output=True, timeout=timeout).returncode != 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{node.name} unreachable {timeout}s after its links came up")
            time.sleep(POLL_S)

    # -- tear down ---------------------------------------------------------------------------

    def leftovers(self) -> list[str]:
        """What :meth:`stop` should have removed and did not (empty after a clean stop)."""
        left = [n for n in self.bridges if Path(f"/sys/class/net/{n}").exists()]
        left += [link for n in self.nodes for link in n.links
                 if Path(f"/sys/class/net/{link}").exists()]  # fmt: skip
        left += [f"pid {n.pid}" for n in self.nodes if n.holder.poll() is None]
        left += [f"pid {p.pid}" for p in self.started if p.poll() is None]
        return left + ([str(self.root)] if self.root.exists() else [])

    def stop(self) -> None:
        """Kill every node's processes and holder, delete the links; idempotent."""
        for node in self.nodes:
            if node.holder.poll() is None:
                try:
                    self.kill_node(node)
                except TimeoutError:
                    pass
                node.holder.kill()
            node.holder.wait(STOP_TIMEOUT)
            if node.holder.stdout:
                node.holder.stdout.close()
        for proc in self.started:  # nsenter processes whose node is gone
            if proc.poll() is None:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
        for name in [link for n in self.nodes for link in n.links] + self.bridges:
            if Path(f"/sys/class/net/{name}").exists():
                subprocess.run(["ip", "link", "del", name], capture_output=True, timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> VirtualCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    """The first line ``proc`` prints, within ``timeout`` (or what it printed before dying)."""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            return "(no answer)"
    return proc.stdout.readline().decode(errors="replace").strip()
