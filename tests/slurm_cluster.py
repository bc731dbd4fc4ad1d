"""A private single-node Slurm for tests: munged, slurmctld and slurmd, all under a temp dir.

``SlurmCluster.start()`` installs Debian's ``slurm-wlm`` and ``munge`` with apt-get when
they are missing and this is root, writes a key and a ``slurm.conf`` into a new temporary
folder, starts the three daemons in the foreground (so their pids are ours), and waits
until ``sinfo`` shows the node idle. ``stop()`` cancels every job, waits for them to end,
stops the daemons by pid (SIGTERM, then SIGKILL) and removes the folder; it runs also
when ``start()`` fails half-way. Commands run with :meth:`env` (``SLURM_CONF``) talk to
this cluster only. Everything listens on 127.0.0.1 and on free ports. Not collected.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

#: Daemons the cluster needs, and the Debian packages that ship them.
BINARIES = ("munged", "slurmctld", "slurmd", "sinfo", "srun", "sbatch", "squeue", "scancel")
PACKAGES = ("slurm-wlm", "munge")
#: Seconds apt-get may take (an `apt-get update` first on a fresh machine).
INSTALL_TIMEOUT = 600
#: Seconds the daemons get to come up (node idle), and to stop.
START_TIMEOUT = 60
STOP_TIMEOUT = 15
#: CPUs the node claims: store and application steps run side by side even on 2 cores.
NODE_CPUS = 8
POLL_S = 0.1


class SlurmUnavailable(Exception):
    """Slurm cannot be brought up here; the message says why (the tests skip with it)."""


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None and not _sbin(b)]


def _sbin(name: str) -> str | None:
    for folder in ("/usr/sbin", "/sbin"):
        if os.access(f"{folder}/{name}", os.X_OK):
            return f"{folder}/{name}"
    return None


def daemon_path(name: str) -> str:
    return shutil.which(name) or _sbin(name) or name


def ensure_installed() -> None:
    """apt-get install slurm-wlm munge when missing and root; else SlurmUnavailable."""
    if not missing_binaries():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SlurmUnavailable(
            f"Slurm is not installed ({', '.join(missing_binaries())} missing) and this is "
            "not root with apt-get: apt-get install slurm-wlm munge"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", *PACKAGES]
    deadline = time.monotonic() + INSTALL_TIMEOUT
    done = subprocess.run(install, env=env, capture_output=True, text=True,
                          timeout=INSTALL_TIMEOUT)  # fmt: skip
    if done.returncode != 0:  # a fresh machine has no package lists yet
        left = max(1.0, deadline - time.monotonic())
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=left)
        left = max(1.0, deadline - time.monotonic())
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=left)
    if done.returncode != 0 or missing_binaries():
        raise SlurmUnavailable(f"apt-get could not install {' '.join(PACKAGES)}: "
                               f"{done.stderr.strip()[-500:]}")  # fmt: skip


def stop_daemon(daemon: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT; nothing if it has ended."""
    if daemon.poll() is not None:
        return
    daemon.send_signal(signal.SIGTERM)
    try:
        daemon.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait(STOP_TIMEOUT)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SlurmCluster:
    """One node, one partition (``debug``), root as the Slurm user; see the module doc."""

    def __init__(self, cpus: int = NODE_CPUS):
        self.cpus = cpus
        self.root = Path(tempfile.mkdtemp(prefix="memstore-slurm-"))
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.socket = self.root / "munge.sock"
        self.daemons: dict[str, subprocess.Popen] = {}

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for Slurm commands that talk to this cluster."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MEMSTORE_"))}
        return {**base, "SLURM_CONF": str(self.conf), **extra}

    def run(self, *argv: str, timeout: float = 30, **kwargs) -> subprocess.CompletedProcess:
        """A Slurm command against this cluster (text output captured)."""
        kwargs.setdefault("env", self.env())
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)

    # -- bring up ----------------------------------------------------------------------------

    def start(self) -> SlurmCluster:
        if os.geteuid() != 0:
            raise SlurmUnavailable("a private slurmd must run as root (it starts jobs as users)")
        ensure_installed()
        try:
            self._write_config()
            self._spawn("munged", daemon_path("munged"), "--foreground", "--force",
                        f"--socket={self.socket}", f"--key-file={self.root / 'munge.key'}",
                        f"--log-file={self.root / 'munged.log'}",
                        f"--pid-file={self.root / 'munged.pid'}",
                        f"--seed-file={self.root / 'munged.seed'}")  # fmt: skip
            self._until(self.socket.exists, "munged made no socket", "munged")
            self._spawn("slurmctld", daemon_path("slurmctld"), "-D", "-i", "-f", str(self.conf))
            self._spawn(
                "slurmd", daemon_path("slurmd"), "-D", "-f", str(self.conf), "-N", self.node
            )
            self._until(self._idle, "the node never became idle", "slurmctld", "slurmd")
        except BaseException:
            self.stop()
            raise
        return self

    def _write_config(self) -> None:
        key = self.root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        for sub in ("state", "spool"):
            (self.root / sub).mkdir()
        r = self.root
        self.conf.write_text(
            "\n".join([
                "ClusterName=memstore-test",
                f"SlurmctldHost={self.node}(127.0.0.1)",
                f"SlurmctldPort={free_port()}",
                f"SlurmdPort={free_port()}",
                "SlurmUser=root",
                "SlurmdUser=root",
                "AuthType=auth/munge",
                "CredType=cred/munge",
                f"AuthInfo=socket={self.socket}",
                f"StateSaveLocation={r / 'state'}",
                f"SlurmdSpoolDir={r / 'spool'}",
                f"SlurmctldPidFile={r / 'slurmctld.pid'}",
                f"SlurmdPidFile={r / 'slurmd.pid'}",
                f"SlurmctldLogFile={r / 'slurmctld.log'}",
                f"SlurmdLogFile={r / 'slurmd.log'}",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core",
                "MpiDefault=none",  # what most sites without a default have: see docs/cluster.md
                "JobCompType=jobcomp/none",
                "JobAcctGatherType=jobacct_gather/none",
                "AccountingStorageType=accounting_storage/none",
                "ReturnToService=2",
                "SchedulerParameters=sched_interval=1",
                "SlurmdParameters=config_overrides",  # the node may claim more CPUs than it has
                "KillWait=5",
                "InactiveLimit=0",
                f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} State=UNKNOWN",
                "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
                "",
            ])
        )  # fmt: skip

    def _spawn(self, name: str, *argv: str) -> None:
        log = open(self.root / f"{name}.out", "wb")  # noqa: SIM115  (the daemon keeps it)
        with log:
            self.daemons[name] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env(), start_new_session=True,
            )  # fmt: skip

    def _idle(self) -> bool:
        state = self.run("sinfo", "-h", "-N", "-o", "%T", timeout=10)
        return state.returncode == 0 and state.stdout.strip() == "idle"

    def _until(self, ready, why: str, *watched: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            dead = [n for n in watched if self.daemons[n].poll() is not None]
            if dead or time.monotonic() > deadline:
                raise SlurmUnavailable(f"{why} ({', '.join(dead) or 'timeout'}):\n{self.logs()}")
            time.sleep(POLL_S)

    def logs(self) -> str:
        """The tail of every daemon's log, for a failure message."""
        out = []
        for path in sorted(self.root.glob("*.log")) + sorted(self.root.glob("*.out")):
            text = path.read_text(errors="replace")[-1500:]
            out.append(f"--- {path.name}\n{text}")
        return "\n".join(out)

    # -- jobs --------------------------------------------------------------------------------

    def jobs(self) -> list[str]:
        """Ids of the jobs slurmctld still knows as pending or running."""
        listed = self.run("squeue", "-h", "-o", "%i", timeout=10)
        return listed.stdout.split() if listed.returncode == 0 else []

    def job_state(self, job_id: str) -> str:
        """``PENDING``/``RUNNING``/``COMPLETED``/``FAILED``/``CANCELLED``/... (scontrol)."""
        shown = self.run("scontrol", "-o", "show", "job", job_id, timeout=10)
        for word in shown.stdout.split():
            if word.startswith("JobState="):
                return word.split("=", 1)[1]
        return "UNKNOWN"

    def wait_job(self, job_id: str, timeout: float) -> str:
        """Poll until the job has ended; its final state."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.job_state(job_id)
            if state not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED"):
                return state
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {state} after {timeout}s")
            time.sleep(POLL_S * 2)

    def job_pids(self) -> list[int]:
        """Pids of every process of every job on the node (``scontrol listpids``)."""
        listed = self.run("scontrol", "listpids", timeout=10)
        pids = []
        for line in listed.stdout.splitlines()[1:]:
            word = line.split()[0] if line.split() else ""
            if word.isdigit():
                pids.append(int(word))
        return pids

    def cancel_all(self, timeout: float = STOP_TIMEOUT) -> None:
        """Cancel every job and wait (bounded) until none is left and no job process runs."""
        deadline = time.monotonic() + timeout
        while self.jobs() or self.job_pids():
            for job_id in self.jobs():
                self.run("scancel", job_id, timeout=10)
            if time.monotonic() > deadline:
                break
            time.sleep(POLL_S * 2)

    # -- tear down ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Cancel the jobs, stop the daemons (by pid) and remove every file; idempotent."""
        if "slurmd" in self.daemons and self.daemons["slurmd"].poll() is None:
            try:
                self.cancel_all()
            except (OSError, subprocess.SubprocessError):
                pass
        for name in ("slurmd", "slurmctld", "munged"):  # the order they depend on each other
            if name in self.daemons:
                stop_daemon(self.daemons[name])
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
