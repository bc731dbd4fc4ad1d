"""Commands and batch scripts the Launcher builds for mpiexec, Slurm and PBS.

Slurm and PBS are not here, so their commands are checked as text (and the scripts with
``bash -n``); the ``mpiexec`` script is also run for real when ``mpiexec`` is present.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from memstore.deploy import schedulers
from memstore.deploy.jobs import Launcher
from memstore.deploy.schedulers import Placement, launch_argv

PY = sys.executable
JOBS = str(Path(__file__).parent / "mpi_jobs.py")
UNDER_MPI = any(v in os.environ for v in ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK"))


def bash_syntax_ok(text: str, tmp_path: Path) -> None:
    script = tmp_path / "job.sh"
    script.write_text(text)
    checked = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_launch_argv_per_kind():
    where = Placement(ranks=8, nodes=2, per_node=4, first_node=1)
    assert launch_argv("local", ["app"], where) == ["app"]
    assert launch_argv("mpiexec", ["app"], where) == ["mpiexec", "-n", "8", "-ppn", "4", "app"]
    assert launch_argv("slurm", ["app", "-x"], where) == [
        "srun", "--ntasks=8", "--nodes=2", "--relative=1", "--ntasks-per-node=4",
        "--exact", "--kill-on-bad-exit=1", "app", "-x",
    ]  # fmt: skip
    hosted = Placement(ranks=2, hosts=("n1", "n2"))
    assert launch_argv("pbs", ["app"], hosted, mpiexec="/x/mpiexec") == [
        "/x/mpiexec", "-n", "2", "-hosts", "n1,n2", "app",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="unknown launcher kind"):
        launch_argv("lsf", ["app"], where)
    with pytest.raises(ValueError, match="at least one rank"):
        Placement(ranks=0)


def slurm_plan(tmp_path: Path) -> Launcher:
    launcher = Launcher("slurm", workdir=tmp_path, dry_run=True, python="python3", srun_mpi="pmi2")
    assert launcher.start_store(4, nodes=1, max_memory="8GiB") == []
    launcher.start_app("python sim.py --steps 100", ranks=8, nodes=2, name="sim")
    launcher.start_app(["python", "train.py"], ranks=2, nodes=1, name="train")
    return launcher


def test_slurm_store_on_its_own_node_then_apps(tmp_path):
    launcher = slurm_plan(tmp_path)
    store, sim, train = (launcher.jobs[n].argv for n in ("store", "sim", "train"))
    assert store == [
        "srun", "--ntasks=4", "--nodes=1", "--relative=0", "--ntasks-per-node=4", "--mpi=pmi2",
        "--exact",
        "--kill-on-bad-exit=1", "python3", "-m", "memstore.server", "--mpi",
        "--address-file", launcher.address_file, "--max-memory", "8GiB",
    ]  # fmt: skip
    assert sim[:6] == ["srun", "--ntasks=8", "--nodes=2", "--relative=1", "--mpi=pmi2", "--exact"]
    assert sim[-4:] == ["python", "sim.py", "--steps", "100"]
    assert train[:6] == ["srun", "--ntasks=2", "--nodes=1", "--relative=3", "--mpi=pmi2", "--exact"]
    site = Launcher("slurm", workdir=tmp_path, dry_run=True, srun_mpi="")
    site.start_store(1)
    assert not any(w.startswith("--mpi=") for w in site.jobs["store"].argv)
    assert launcher.status() == {"store": "planned", "sim": "planned", "train": "planned"}
    assert launcher.wait() == {}
    launcher.stop()  # nothing ran: nothing to stop


def test_slurm_batch_script(tmp_path):
    text = slurm_plan(tmp_path).batch_script(
        walltime="01:00:00", account="proj42", queue="gpu", setup=["module load python"]
    )
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    for wanted in ("#SBATCH --nodes=4", "#SBATCH --time=01:00:00", "#SBATCH --account=proj42",
                   "#SBATCH --partition=gpu", "module load python"):  # fmt: skip
        assert wanted in lines, wanted
    store_line = next(line for line in lines if "memstore.server" in line)
    assert store_line.startswith("srun --ntasks=4 --nodes=1 --relative=0")
    assert store_line.endswith(" &")
    order = [i for i, line in enumerate(lines) if line.startswith("srun")]
    assert [lines[i].split()[3] for i in order] == ["--relative=0", "--relative=1", "--relative=3"]
    assert 'export MEMSTORE_ADDRESS="$(head -n 1 "$MEMSTORE_ADDRESS_FILE")"' in lines
    assert any(line.startswith("python3 -m memstore.cli stop") for line in lines)
    bash_syntax_ok(text, tmp_path)


def test_pbs_hosts_from_the_node_file(tmp_path, monkeypatch):
    nodefile = tmp_path / "nodes"
    nodefile.write_text("n0\nn0\nn1\nn1\nn2\nn2\nn3\n")  # one line per core, as PBS writes
    monkeypatch.setenv("PBS_NODEFILE", str(nodefile))
    launcher = Launcher("pbs", workdir=tmp_path, dry_run=True, mpiexec="mpiexec")
    assert launcher.hosts == ["n0", "n1", "n2", "n3"]
    launcher.start_store(2, nodes=1)
    launcher.start_app("python sim.py", ranks=4, nodes=2, ranks_per_node=2, name="sim")
    assert launcher.jobs["store"].argv[:7] == ["mpiexec", "-n", "2", "-ppn", "2", "-hosts", "n0"]
    assert launcher.jobs["sim"].argv == [
        "mpiexec", "-n", "4", "-ppn", "2", "-hosts", "n1,n2", "python", "sim.py",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="allocation has 4"):
        launcher.start_app("python more.py", ranks=2, nodes=2)


def test_pbs_batch_script(tmp_path):
    launcher = Launcher("pbs", workdir=tmp_path, dry_run=True, mpiexec="mpiexec")
    launcher.start_store(2, nodes=1)
    launcher.start_app("python sim.py", ranks=4, nodes=2, name="sim")
    text = launcher.batch_script(cores_per_node=32, queue="workq", walltime="00:10:00")
    lines = text.splitlines()
    for wanted in ("#PBS -l select=3:ncpus=32:mpiprocs=32", "#PBS -l walltime=00:10:00",
                   "#PBS -q workq", 'cd "${PBS_O_WORKDIR:-.}"'):  # fmt: skip
        assert wanted in lines, wanted
    sim = next(line for line in lines if "sim.py" in line)
    assert sim == 'mpiexec -n 4 -hosts "$(hosts 1 2)" python sim.py &'
    bash_syntax_ok(text, tmp_path)


def test_batch_script_needs_a_batch_kind():
    with pytest.raises(ValueError, match="batch script"):
        schedulers.batch_script("local", [], address_file="x")


def test_shipped_launch_scripts_parse(tmp_path):
    folder = Path(__file__).parent.parent / "launch"
    scripts = sorted(p for p in folder.iterdir() if p.suffix in (".sh", ".sbatch", ".qsub"))
    assert {p.name for p in scripts} >= {
        "mpiexec_spmd.sh", "mpiexec_mpmd.sh", "slurm.sbatch", "pbs.qsub",
    }  # fmt: skip
    for script in scripts:
        bash_syntax_ok(script.read_text(), tmp_path)


@pytest.mark.mpi
@pytest.mark.skipif(UNDER_MPI, reason="pytest itself runs under mpiexec")
def test_generated_mpiexec_script_runs(tmp_path):
    """The script Launcher writes for mpiexec really starts, uses and stops a store."""
    launcher = Launcher("mpiexec", workdir=tmp_path, dry_run=True)
    if not os.path.exists(launcher.mpiexec):
        pytest.skip("no mpiexec (pip install mpich)")
    launcher.start_store(2, server_args=["--log-level", "WARNING"])
    launcher.start_app([PY, JOBS, "hello_app"], ranks=2, name="hello")
    script = tmp_path / "job.sh"
    launcher.batch_script(script)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMSTORE_")}
    done = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, timeout=120, env=env,
        start_new_session=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("ok app-") == 2, done.stdout
    assert not os.path.exists(launcher.address_file), shlex.quote(launcher.address_file)
