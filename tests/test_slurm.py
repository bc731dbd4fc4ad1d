"""The Slurm path under a real (private, single-node) Slurm: srun, sbatch, scancel.

``make test-slurm`` runs these; the default suite leaves them out (they install packages
and start root daemons; see the Makefile). They skip, with the reason, where no Slurm can
be brought up (not root, no apt-get, the daemons fail). Everything binds to 127.0.0.1.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from slurm_cluster import SlurmCluster, SlurmUnavailable

from memstore import Client, address
from memstore.deploy import Launcher
from memstore.deploy.admin import stop_addresses

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(300)]

ROOT = Path(__file__).parent.parent
JOBS = str(ROOT / "tests" / "mpi_jobs.py")
PY = sys.executable
SIZE = "from mpi4py import MPI; print('size', MPI.COMM_WORLD.size, flush=True)"


@pytest.fixture(scope="module")
def slurm():
    """A private Slurm for this module's tests; stopped (by pid) and removed afterwards."""
    cluster = SlurmCluster()
    try:
        cluster.start()
    except (SlurmUnavailable, OSError) as exc:
        pytest.skip(f"no Slurm here: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()
    assert not cluster.root.exists()


@pytest.fixture
def jobdir(slurm, tmp_path, monkeypatch):
    """SLURM_CONF for the Launcher's srun, a short TMPDIR for ipc:// sockets; after the
    test every job is gone and no job process is left."""
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    yield tmp_path
    slurm.cancel_all()
    assert slurm.jobs() == [] and slurm.job_pids() == []


def sockets_in(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_socket()]


def test_srun_needs_pmi2_for_the_mpich_wheel(slurm, jobdir):
    """The PMI facts of docs/cluster.md: without --mpi each task is a world of one."""
    plain = slurm.run("srun", "-n", "2", PY, "-c", SIZE, timeout=60)
    assert plain.returncode == 0, plain.stderr
    assert sorted(plain.stdout.split()) == ["1", "1", "size", "size"], plain.stdout
    pmi2 = slurm.run("srun", "-n", "2", "--mpi=pmi2", PY, "-c", SIZE, timeout=60)
    assert pmi2.returncode == 0, pmi2.stderr
    assert sorted(pmi2.stdout.split()) == ["2", "2", "size", "size"], pmi2.stdout


def test_init_under_srun_without_pmi_fails_naming_pmi2(slurm, jobdir):
    done = slurm.run("srun", "-n", "2", PY, JOBS, "world", timeout=60,
                     env=slurm.env(TMPDIR=str(jobdir)))  # fmt: skip
    assert done.returncode != 0, done.stdout
    assert "ok " not in done.stdout  # no rank went on with a store of its own
    assert done.stderr.count("--mpi=pmi2") >= 2, done.stderr  # every rank says so
    assert sockets_in(jobdir) == []


def test_launcher_runs_store_and_app_as_srun_jobs(slurm, jobdir):
    with Launcher("slurm", workdir=jobdir, timeout=60) as launcher:
        shards = launcher.start_store(2, host="127.0.0.1", server_args=["--log-level", "WARNING"])
        assert len(shards) == 2 and all(s.startswith("tcp://127.0.0.1:") for s in shards)
        assert "--mpi=pmi2" in launcher.jobs["store"].argv
        launcher.start_app([PY, JOBS, "hello_app"], ranks=2, name="hello")
        assert launcher.wait(timeout=90) == {"hello": 0}, (jobdir / "hello.log").read_text()
        with Client(launcher.address, timeout=10) as client:
            assert client.tensor_exists("app-0") and client.tensor_exists("app-1")
        store = launcher.jobs["store"]
    assert store.state() == "done", (jobdir / "store.log").read_text()
    assert stop_addresses(shards, timeout=1) == shards  # nobody answers any more


def submit(slurm: SlurmCluster, script: Path, workdir: Path, *options: str, **env: str) -> str:
    """sbatch from ``workdir`` (the script's SLURM_SUBMIT_DIR); ``env`` added to the job's."""
    exported = ",".join(["ALL", *(f"{k}={v}" for k, v in env.items())])
    done = slurm.run("sbatch", "--parsable", f"--chdir={workdir}", f"--export={exported}",
                     f"--output={workdir / 'job.out'}", *options, str(script),
                     env=slurm.env(TMPDIR=str(workdir)), cwd=workdir)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(";")[0]


def test_generated_sbatch_script_runs_store_and_apps(slurm, jobdir):
    plan = Launcher("slurm", workdir=jobdir, dry_run=True)
    plan.start_store(2, nodes=1, host="127.0.0.1", server_args=["--log-level", "WARNING"])
    plan.start_app([PY, JOBS, "hello_app"], ranks=2, name="hello")
    plan.start_app([PY, JOBS, "hello_app"], ranks=1, name="more")
    script = jobdir / "job.sbatch"
    plan.batch_script(script, walltime="00:05:00", nodes=1)
    job = submit(slurm, script, jobdir, "--ntasks=5")
    state = slurm.wait_job(job, timeout=180)
    out = (jobdir / "job.out").read_text()
    assert state == "COMPLETED", out
    assert out.count("ok app-") == 3, out
    assert not Path(plan.address_file).exists() or not address.read_file(plan.address_file)


def test_shipped_sbatch_on_one_node(slurm, jobdir):
    """launch/slurm.sbatch as shipped, on one node (--nodes=1), the example at tiny size."""
    out = jobdir / "output"
    env = dict(
        PYTHON=PY, EXAMPLE=str(ROOT / "examples" / "online_learning"), STORE_SHARDS="2",
        STORE_MEMORY="256MiB", STORE_HOST="127.0.0.1", SIM_RANKS="2", TRAIN_RANKS="2",
        SIM_ARGS="--ny 32 --nx 32 --steps 60 --send-every 3 --window 16",
        TRAIN_ARGS=f"--min-epochs 12 --dist-port {_free_port()}", FRAMES="3",
        OUTPUT=str(out), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
    )  # fmt: skip
    job = submit(slurm, ROOT / "launch" / "slurm.sbatch", jobdir, "--nodes=1", "--ntasks=8",
                 **env)  # fmt: skip
    state = slurm.wait_job(job, timeout=270)
    log = (jobdir / "job.out").read_text()
    assert state == "COMPLETED", log
    summary = json.loads((out / "summary.json").read_text())
    assert summary["checks"]["every snapshot appended once"], summary
    assert all(summary["checks"].values()), summary
    assert "store at tcp://127.0.0.1:" in log, log
    assert list(jobdir.glob("memstore-*.addr")) == [] and sockets_in(jobdir) == []


def test_scancel_leaves_nothing_behind(slurm, jobdir):
    """Cancelled while the store serves: no shard, socket or address file is left."""
    env = dict(
        PYTHON=PY, EXAMPLE=str(ROOT / "examples" / "online_learning"), STORE_SHARDS="2",
        STORE_MEMORY="64MiB", STORE_HOST="127.0.0.1", SIM_RANKS="1", TRAIN_RANKS="1",
        SIM_ARGS="--ny 16 --nx 16 --steps 100000000 --send-every 1000000",
        TRAIN_ARGS=f"--dist-port {_free_port()}", OUTPUT=str(jobdir / "output"),
    )  # fmt: skip
    job = submit(slurm, ROOT / "launch" / "slurm.sbatch", jobdir, "--nodes=1", "--ntasks=8",
                 **env)  # fmt: skip
    deadline = time.monotonic() + 120
    found: list[Path] = []
    while not found:  # the store is up once its address file has the shard list
        found = [p for p in jobdir.glob("memstore-*.addr") if p.stat().st_size]
        assert time.monotonic() < deadline, (jobdir / "job.out").read_text()
        assert slurm.job_state(job) in ("PENDING", "RUNNING"), (jobdir / "job.out").read_text()
        time.sleep(0.1)
    shards = address.read_file(found[0])
    with Client(shards, timeout=10) as client:
        client.put_tensor("alive", [1.0])
    assert slurm.run("scancel", job).returncode == 0
    assert slurm.wait_job(job, timeout=60) == "CANCELLED"
    deadline = time.monotonic() + 30
    while slurm.job_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert slurm.job_pids() == []
    assert list(jobdir.glob("memstore-*.addr")) == []
    assert sockets_in(jobdir) == []
    assert stop_addresses(shards, timeout=1) == shards  # no shard answers


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
