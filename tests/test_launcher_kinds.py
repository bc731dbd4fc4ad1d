"""``memstore.deploy.Launcher`` running for real: ``local`` processes and ``mpiexec`` jobs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from memstore import Client
from memstore.deploy.jobs import Launcher
from memstore.deploy.schedulers import find_mpiexec
from memstore.errors import MemstoreError, Timeout

JOBS = str(Path(__file__).parent / "mpi_jobs.py")
PY = sys.executable
HAVE_MPIEXEC = os.path.exists(find_mpiexec(PY))
UNDER_MPI = any(v in os.environ for v in ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK"))


def test_local_store_and_apps(tmp_path):
    with Launcher("local", workdir=tmp_path) as launcher:
        shards = launcher.start_store(2)
        assert len(shards) == 2
        assert Path(launcher.address_file).read_text().strip() == ",".join(shards)
        launcher.start_app([PY, JOBS, "hello_app"], ranks=2, name="hello")
        assert launcher.wait(timeout=60) == {"hello": 0}
        assert launcher.status() == {"store": "running", "hello": "done"}
        with Client(launcher.address, timeout=10) as client:
            assert client.tensor_exists("app-0") and client.tensor_exists("app-1")
        log = (tmp_path / "hello.log").read_text()
        assert "ok app-0" in log and "ok app-1" in log
    assert launcher.status()["store"] == "stopped"
    assert not any(shard.alive() for shard in launcher._shards)


def test_local_failed_app_and_wait_timeout(tmp_path):
    with Launcher("local", workdir=tmp_path) as launcher:
        launcher.start_store(1)
        launcher.start_app([PY, "-c", "raise SystemExit(3)"], name="bad")
        launcher.start_app([PY, "-c", "import time; time.sleep(60)"], name="slow")
        with pytest.raises(Timeout, match="slow"):
            launcher.wait(timeout=2)
        assert launcher.status()["bad"] == "failed (exit 3)"
        assert launcher.status()["slow"] == "running"
        slow = launcher.jobs["slow"].processes[0]
    assert slow.poll() is not None  # stop() ended it


def test_app_gets_the_store_address(tmp_path):
    code = "import os; print(os.environ['MEMSTORE_ADDRESS'] == os.environ['SSDB'])"
    with Launcher("local", workdir=tmp_path) as launcher:
        launcher.start_store(1)
        launcher.start_app([PY, "-c", code], name="env", env={"EXTRA": "1"})
        assert launcher.wait(timeout=30) == {"env": 0}
    assert (tmp_path / "env.log").read_text().strip() == "True"


def test_one_store_per_launcher(tmp_path):
    with Launcher("local", workdir=tmp_path) as launcher:
        launcher.start_store(1)
        with pytest.raises(MemstoreError, match="already"):
            launcher.start_store(1)


@pytest.mark.mpi
@pytest.mark.skipif(not HAVE_MPIEXEC, reason="no mpiexec (pip install mpich)")
@pytest.mark.skipif(UNDER_MPI, reason="pytest itself runs under mpiexec")
def test_mpiexec_store_and_app(tmp_path):
    with Launcher("mpiexec", workdir=tmp_path, timeout=60) as launcher:
        shards = launcher.start_store(2, server_args=["--log-level", "WARNING"])
        assert len(shards) == 2
        assert launcher.jobs["store"].argv[:3] == [launcher.mpiexec, "-n", "2"]
        launcher.start_app([PY, JOBS, "hello_app"], ranks=2, name="hello")
        assert launcher.wait(timeout=60) == {"hello": 0}
        assert launcher.status() == {"store": "running", "hello": "done"}
        with Client(launcher.address, timeout=10) as client:
            assert client.tensor_exists("app-0") and client.tensor_exists("app-1")
        store = launcher.jobs["store"]
    assert store.state() == "done"  # the shards were told to stop and the job ended cleanly


@pytest.mark.mpi
@pytest.mark.skipif(not HAVE_MPIEXEC, reason="no mpiexec (pip install mpich)")
@pytest.mark.skipif(UNDER_MPI, reason="pytest itself runs under mpiexec")
def test_memstore_start_mpi(tmp_path):
    """``memstore start --mpi``: a detached mpiexec store job that ``memstore stop`` ends."""
    import subprocess

    from memstore import address
    from memstore.deploy.admin import stop_addresses

    path = tmp_path / "store.addr"
    cli = [PY, "-m", "memstore.cli"]
    common = ["--address-file", str(path)]
    started = subprocess.run(
        [*cli, "start", "--mpi", "--shards", "2", "--port", "0", "--log-level", "WARNING",
         *common],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    shards = address.read_file(path) if path.exists() else []
    try:
        assert started.returncode == 0, started.stderr
        assert len(shards) == 2 and started.stdout.strip().endswith(",".join(shards))
        with Client(timeout=10, address=shards[0]) as client:  # one address is enough
            client.put_tensor("x", [1.0, 2.0])
            assert client.get_tensor("x").tolist() == [1.0, 2.0]
        stopped = subprocess.run([*cli, "stop", *common], capture_output=True, timeout=60)
        assert stopped.returncode == 0, stopped.stderr
    finally:
        stop_addresses(shards, timeout=2)  # whatever happened above
    log = (tmp_path / "store.log").read_text()
    assert "Traceback" not in log, log
