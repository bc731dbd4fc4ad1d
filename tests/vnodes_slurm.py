"""A private Slurm across virtual nodes (tests/vnodes.py): one slurmd per node, root only.

``munged`` and ``slurmctld`` run in the root namespace (slurmctld on the cluster bridge's
address), ``slurmd -N nodeK`` inside each node; the munge socket is shared through /tmp.
Jobs are submitted from inside a node (a login node), so that every slurmd can reach the
submitter at a 198.18.0.0/24 address. :meth:`NodesSlurm.stop` stops the daemons by pid,
node daemons first; the nodes' own cleanup kills whatever job process is left. Not
collected.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

from slurm_cluster import (
    SlurmUnavailable,
    daemon_path,
    ensure_installed,
    free_port,
    stop_daemon,
)
from vnodes import VirtualCluster

START_TIMEOUT = 60
POLL_S = 0.2

#: slurm.conf, less the lines that name this cluster's paths, ports and nodes.
SETTINGS = """ClusterName=memstore-vnodes
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
SchedulerParameters=sched_interval=1
SlurmdParameters=config_overrides
KillWait=5
InactiveLimit=0
"""


class NodesSlurm:
    """Slurm with one compute node per virtual node of ``vc``; ``cpus`` claimed each."""

    def __init__(self, vc: VirtualCluster, cpus: int = 4):
        self.vc, self.cpus = vc, cpus
        self.root = vc.root / "slurm"
        self.conf = self.root / "slurm.conf"
        self.daemons: list[subprocess.Popen] = []

    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MEMSTORE_"))}
        return {**base, "SLURM_CONF": str(self.conf)}

    def start(self) -> NodesSlurm:
        ensure_installed()
        try:
            self._write_config()
            r = self.root
            self._spawn(daemon_path("munged"), "--foreground", "--force",
                        f"--socket={r / 'munge.sock'}", f"--key-file={r / 'munge.key'}",
                        f"--log-file={r / 'munged.log'}", f"--pid-file={r / 'munged.pid'}",
                        f"--seed-file={r / 'munged.seed'}")  # fmt: skip
            self._until(lambda: (r / "munge.sock").exists(), "munged made no socket")
            self._spawn(daemon_path("slurmctld"), "-D", "-i", "-f", str(self.conf))
            for node in self.vc.nodes:
                self._spawn(daemon_path("slurmd"), "-D", "-f", str(self.conf), "-N", node.name,
                            node=node.name)  # fmt: skip
            self._until(self._all_idle, "the nodes never became idle")
        except BaseException:
            self.stop()
            raise
        return self

    def _write_config(self) -> None:
        r = self.root
        shutil.rmtree(r, ignore_errors=True)  # an earlier test's cluster: start afresh
        for sub in ("state", *(f"spool-{n.name}" for n in self.vc.nodes)):
            (r / sub).mkdir(parents=True)
        key = r / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        host = socket.gethostname().split(".")[0]  # slurmctld checks it is the named host
        lines = [
            f"SlurmctldHost={host}({self.vc.bridge_address})",
            f"SlurmctldPort={free_port()}",
            "SlurmdPort=6818",  # each node has a network of its own: no clash
            f"AuthInfo=socket={r / 'munge.sock'}",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r}/spool-%n",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r}/slurmd-%n.pid",
            f"SlurmctldLogFile={r / 'slurmctld.log'}",
            f"SlurmdLogFile={r}/slurmd-%n.log",
            *(f"NodeName={n.name} NodeAddr={n.address} CPUs={self.cpus} State=UNKNOWN"
              for n in self.vc.nodes),
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        ]  # fmt: skip
        self.conf.write_text(SETTINGS + "\n".join(lines) + "\n")

    def _spawn(self, *argv: str, node: str | None = None) -> None:
        with open(self.root / f"daemon-{len(self.daemons)}.out", "wb") as log:
            kw = {"env": self.env(), "stdout": log, "stderr": subprocess.STDOUT}
            if node:
                self.daemons.append(self.vc.run_on(node, list(argv), **kw))
            else:
                self.daemons.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, **kw))

    def _all_idle(self) -> bool:
        listed = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=self.env(),
                                capture_output=True, text=True, timeout=10)  # fmt: skip
        return listed.stdout.split() == ["idle"] * len(self.vc.nodes)

    def _until(self, ready, why: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not ready():
            if any(d.poll() is not None for d in self.daemons) or time.monotonic() > deadline:
                raise SlurmUnavailable(f"{why}:\n{self.logs()}")
            time.sleep(POLL_S)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1200:]}"
                         for p in sorted(self.root.glob("*.log")))  # fmt: skip

    def stop(self) -> None:
        """Stop the daemons by pid (slurmd first, munged last); idempotent."""
        for daemon in reversed(self.daemons):
            stop_daemon(daemon)
