"""memstore across nodes: three virtual nodes (tests/vnodes.py), real mpiexec and shards.

``make test-cluster`` runs these (marker ``cluster``; root only, never in ``make test``).
Each node has its own network, hostname, /dev/shm and /etc/hosts; addresses are in
198.18.0.0/24. They skip, with the reason, where the namespaces cannot be made.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from cluster_jobs import TENSOR_BYTES, keys_per_shard
from slurm_cluster import SlurmUnavailable
from vnodes import VirtualCluster, VnodesUnavailable
from vnodes_slurm import NodesSlurm

from memstore import Client
from memstore.errors import ConnectionLost, MemstoreError

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

PY = sys.executable
MEMSTORE = str(Path(PY).parent / "memstore")
JOBS = str(Path(__file__).parent / "cluster_jobs.py")
NODES = ["node1", "node2", "node3"]
JOB_TIMEOUT = 120
SHARD_PORT = 7400


@pytest.fixture(scope="module")
def vc():
    """Three virtual nodes for this module; every process, link and file removed after."""
    cluster = VirtualCluster(len(NODES))
    try:
        cluster.start()
    except (VnodesUnavailable, OSError) as exc:
        pytest.skip(f"no virtual nodes here: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()
    assert cluster.leftovers() == []


@pytest.fixture
def out(vc):
    """A report file on the shared /tmp; every node's processes are gone after the test."""
    yield str(vc.root / "report.json")
    for node in vc.nodes:
        vc.kill_node(node)
    Path(vc.root / "report.json").unlink(missing_ok=True)


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MEMSTORE_", "PMI_"))}
    return {**base, **extra}


def run(argv: list[str], timeout: float = JOB_TIMEOUT, **extra: str) -> str:
    """Run to its end (killed with its group past ``timeout``); its output; fail on rc."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=env(**extra),
                            start_new_session=True)  # fmt: skip
    try:
        output = proc.communicate(timeout=timeout)[0].decode(errors="replace")
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output = proc.communicate()[0].decode(errors="replace")
        pytest.fail(f"{' '.join(argv)} hung past {timeout}s:\n{output}")
    assert proc.returncode == 0, output
    return output


def in_threads(work, count: int, timeout: float = 60) -> None:
    """``work()`` in ``count`` threads at once; the first error any raised is raised here,
    and a thread still running after ``timeout`` fails the test."""
    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            work()
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert errors == [] and not any(t.is_alive() for t in threads), errors


def oks(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("ok ")]


def ip_of(address: str) -> str:
    return address.removeprefix("tcp://").rsplit(":", 1)[0]


def check_shm_path(report: dict, vc: VirtualCluster) -> None:
    """Every app rank put one tensor on every shard and read all of them: only the tensor
    from the shard's own node went through shared memory, and only its own node's reader
    got it by file name (the others got bytes: their /dev/shm is another)."""
    for info in report["infos"]:
        assert TENSOR_BYTES <= info["shm_bytes"] < 2 * TENSOR_BYTES, info
        assert info["bytes"] >= len(report["hosts"]) * TENSOR_BYTES, info
        assert info["shm_gets"] == 1, info


# -- MPI layouts ---------------------------------------------------------------------------


def test_spmd_init_across_three_nodes(vc, out):
    """``mpi.init`` with 2 ranks per node: one shard per node, bound to the node's address;
    every rank reads every rank's 4 MiB tensors; shared memory only within a node."""
    line = vc.mpiexec(NODES, "-ppn", "2", "-n", "6", PY, JOBS, "spmd", out)
    assert len(oks(run(line))) == 3
    report = json.loads(Path(out).read_text())
    assert [ip_of(a) for a in report["addresses"]] == [n.address for n in vc.nodes]
    assert report["hosts"] == NODES
    check_shm_path(report, vc)


def test_mpmd_server_and_app_across_nodes_on_a_named_interface(vc, out):
    """``memstore-server --mpi --host eth1 : app``: each shard binds its own node's eth1
    (the second network), and the application ranks on every node reach all of them."""
    line = vc.mpiexec(NODES, "-ppn", "1", "-n", "3", PY, "-m", "memstore.server", "--mpi",
                      "--host", "eth1", ":", "-n", "3", PY, JOBS, "mpmd", out)  # fmt: skip
    assert len(oks(run(line))) == 3
    report = json.loads(Path(out).read_text())
    assert [ip_of(a) for a in report["addresses"]] == [n.fast_address for n in vc.nodes]
    assert report["hosts"] == NODES
    check_shm_path(report, vc)


def start_store_job(vc: VirtualCluster, address_file: Path) -> tuple[subprocess.Popen, str]:
    """``memstore-server --mpi`` on node1 and node2 with an address file and one RESP
    gateway per node; the job and its gateway line once it serves."""
    line = vc.mpiexec(NODES[:2], "-ppn", "1", "-n", "2", PY, "-m", "memstore.server", "--mpi",
                      "--address-file", str(address_file), "--resp-port", "0")  # fmt: skip
    job = subprocess.Popen(line, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, env=env(), text=True,
                           start_new_session=True)  # fmt: skip
    gateways, deadline = "", time.monotonic() + JOB_TIMEOUT
    for text in job.stdout:
        if text.startswith("memstore gateway ready at "):
            gateways = text.split(" at ", 1)[1].strip()
        if text.startswith("memstore shard ready at ") or time.monotonic() > deadline:
            break
    assert address_file.exists() and gateways, "the store job did not come up"
    return job, gateways


def test_separate_jobs_address_file_and_gateways(vc, out):
    """A store job on node1+node2 (address file, ``--resp-port``); a plain program on
    node3 finds it through the file; one gateway per node, each serving the whole store;
    ``memstore stop`` from node3 ends the job and removes the file."""
    address_file = vc.root / "store.addr"
    job, gateways = start_store_job(vc, address_file)
    try:
        shards = address_file.read_text().strip().split(",")
        assert [ip_of(a) for a in shards] == [n.address for n in vc.nodes[:2]]
        listed = gateways.split(",")
        assert [g.rsplit(":", 1)[0] for g in listed] == [n.address for n in vc.nodes[:2]]
        on3 = vc.argv_on("node3", [PY, JOBS, "client", out])
        assert oks(run(on3, MEMSTORE_ADDRESS_FILE=str(address_file))) == ["ok 3"]
        infos = json.loads(Path(out).read_text())["infos"]
        assert [i["shm_gets"] + i["shm_bytes"] for i in infos] == [0, 0]  # no shard on node3
        on3 = vc.argv_on("node3", [PY, JOBS, "resp", out, gateways])
        assert oks(run(on3)) == ["ok resp"]
        slots = json.loads(Path(out).read_text())["slots"]
        assert slots[0] == slots[1] and len(slots[0]) == 2, slots
        stop = vc.argv_on("node3", [MEMSTORE, "stop", "--address-file", str(address_file)])
        run(stop)
        assert job.wait(JOB_TIMEOUT) == 0
        assert not address_file.exists()
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        job.wait(JOB_TIMEOUT)
        job.stdout.close()


@pytest.fixture
def slurm(vc):
    """Slurm with a slurmd in each virtual node (installed with apt-get when missing); one
    per test: ``out`` ends every process of the nodes after a test, slurmd among them."""
    cluster = NodesSlurm(vc)
    try:
        cluster.start()
    except (SlurmUnavailable, OSError) as exc:
        pytest.skip(f"no Slurm across the nodes: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


def test_srun_pmi2_spmd_across_three_nodes(vc, slurm, out):
    """``srun -N 3 --ntasks-per-node 2 --mpi=pmi2`` from node1: ``mpi.init`` as under
    mpiexec, one shard per node on its address, shared memory only within a node."""
    line = vc.argv_on("node1", ["srun", "-N", "3", "--ntasks-per-node", "2", "--mpi=pmi2",
                                PY, JOBS, "spmd", out])  # fmt: skip
    assert len(oks(run(line, SLURM_CONF=str(slurm.conf)))) == 3
    report = json.loads(Path(out).read_text())
    assert [ip_of(a) for a in report["addresses"]] == [n.address for n in vc.nodes]
    assert report["hosts"] == NODES
    check_shm_path(report, vc)


def test_shipped_sbatch_across_three_nodes(vc, slurm):
    """``launch/slurm.sbatch`` as shipped on 3 nodes: the store on node1 (bound to its
    address), the simulation on node2, training, inference and monitor on node3; the
    example's checks all pass and the job leaves no address file."""
    root = Path(__file__).parent.parent
    workdir = vc.root / "sbatch"
    workdir.mkdir()
    exported = dict(
        PYTHON=PY, EXAMPLE=str(root / "examples" / "online_learning"), STORE_SHARDS="2",
        STORE_MEMORY="256MiB", SIM_RANKS="2", TRAIN_RANKS="2",
        SIM_ARGS="--ny 32 --nx 32 --steps 60 --send-every 3 --window 16",
        TRAIN_ARGS="--min-epochs 12 --dist-port 29511", FRAMES="3",
        OUTPUT=str(workdir / "output"), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
    )  # fmt: skip
    line = vc.argv_on("node1", [
        "sbatch", "--wait", "--nodes=3", "--ntasks-per-node=4", f"--chdir={workdir}",
        "--export=" + ",".join(["ALL", *(f"{k}={v}" for k, v in exported.items())]),
        f"--output={workdir / 'job.out'}", str(root / "launch" / "slurm.sbatch"),
    ])  # fmt: skip
    try:
        run(line, timeout=270, SLURM_CONF=str(slurm.conf))
    except BaseException:
        print((workdir / "job.out").read_text(errors="replace"))
        raise
    log = (workdir / "job.out").read_text()
    summary = json.loads((workdir / "output" / "summary.json").read_text())
    assert summary["checks"] and all(summary["checks"].values()), summary
    assert f"store at tcp://{vc.nodes[0].address}:" in log, log
    assert list(workdir.glob("memstore-*.addr")) == []


# -- faults --------------------------------------------------------------------------------


@pytest.fixture
def shards(vc, out):
    """One ``memstore-server`` per node in a 3-shard cluster (fixed port, node address);
    their addresses once every one serves."""
    addresses = [f"tcp://{n.address}:{SHARD_PORT}" for n in vc.nodes]
    procs = [
        vc.run_on(n, [PY, "-m", "memstore.server", "--bind", a, "--cluster", ",".join(addresses)],
                  env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for n, a in zip(vc.nodes, addresses, strict=True)
    ]  # fmt: skip
    for proc in procs:
        wait_ready(proc)
    yield addresses
    for node in vc.nodes:
        vc.partition(node, up=True)
    for proc in procs:
        proc.stdout.close()


def wait_ready(proc: subprocess.Popen) -> None:
    """Read a server's output (its log comes first) up to its ready line."""
    said = []
    while len(said) < 50:  # a shard logs a few lines at start, not fifty
        said.append(proc.stdout.readline())
        if said[-1].startswith("memstore shard ready at ") or not said[-1]:
            break
    assert said[-1].startswith("memstore shard ready at "), said


def fill(client: Client, count: int = 20) -> dict[int, dict[str, np.ndarray]]:
    """``count`` tensors on every shard; by shard index."""
    stored = {}
    for s in range(3):
        stored[s] = {}
        for i, key in enumerate(_keys_on(s, count)):
            stored[s][key] = np.full(1024 + i, s * 1000 + i, dtype=np.int32)
            client.put_tensor(key, stored[s][key])
    return stored


def _keys_on(shard: int, count: int) -> list[str]:
    return [keys_per_shard(f"f{i}", 3)[shard] for i in range(count)]


def read_healthy(client: Client, stored: dict, healthy: list[int]) -> None:
    for s in healthy:
        for key, value in stored[s].items():
            np.testing.assert_array_equal(client.get_tensor(key), value)


def test_node_kill_fails_its_shard_and_spares_the_others(vc, shards):
    """Every process of node3 killed: its shard's keys raise ConnectionLost (fast: the
    kernel resets the connections), the other shards keep serving from several threads and
    lose nothing; new writes to them work."""
    with Client(shards, timeout=10) as client:
        stored = fill(client)
        vc.kill_node("node3")
        lost_key = next(iter(stored[2]))
        start = time.monotonic()
        with pytest.raises(ConnectionLost, match=SHARD_PORT.__str__()):
            client.get_tensor(lost_key)
        assert time.monotonic() - start < client.timeout
        in_threads(lambda: read_healthy(client, stored, [0, 1]), 3)
        client.put_tensor(_keys_on(0, 21)[-1], np.ones(3))
        with pytest.raises(MemstoreError):
            client.put_tensor(_keys_on(2, 21)[-1], np.ones(3))


def test_partition_healthy_shards_serve_and_heal(vc, shards):
    """node3's links down (silent: no FIN, no RST), a client timeout (3 s) near the
    heartbeat's: its shard's request fails within the timeout, the other shards keep serving
    meanwhile, and once the links are back its shard serves again, same client."""
    with Client(shards, timeout=3) as client:
        stored = fill(client)
        vc.partition("node3")
        lost_key = next(iter(stored[2]))
        failed: list[BaseException] = []
        blocked = threading.Thread(target=lambda: _expect_failure(client, lost_key, failed))
        blocked.start()
        read_healthy(client, stored, [0, 1])
        blocked.join(client.timeout + 5)
        assert not blocked.is_alive() and len(failed) == 1, failed
        assert isinstance(failed[0], MemstoreError), failed
        vc.partition("node3", up=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                np.testing.assert_array_equal(client.get_tensor(lost_key), stored[2][lost_key])
                break
            except MemstoreError:
                assert time.monotonic() < deadline, "node3's shard never served again"
                time.sleep(0.05)  # a retry interval: the reconnect happens in the background
        read_healthy(client, stored, [0, 1, 2])


def _expect_failure(client: Client, key: str, failed: list) -> None:
    try:
        client.get_tensor(key)
    except MemstoreError as exc:
        failed.append(exc)


def test_silent_node_loss_detected_in_seconds(vc, shards):
    """Issue 23 item 2: node3's links down (no FIN, no RST). With the default heartbeat
    (MEMSTORE_HEARTBEAT=3) and a 10 s client timeout, a request to its shard fails with
    ConnectionLost naming it within 3 s, later ones at once, from several threads, while
    the other shards serve and lose nothing; once the links are back the same client reads
    its shard again within seconds, and a write refused meanwhile never lands."""
    with Client(shards, timeout=10) as client:
        stored = fill(client)
        lost_key = next(iter(stored[2]))
        ghost = _keys_on(2, 21)[-1]
        vc.partition("node3")
        start = time.monotonic()
        with pytest.raises(ConnectionLost, match=str(SHARD_PORT)):
            client.get_tensor(lost_key)
        detected = time.monotonic() - start
        assert detected < 3
        failures: list[float] = []

        def worker() -> None:
            for _ in range(3):
                began = time.monotonic()
                with pytest.raises(ConnectionLost):
                    client.put_tensor(ghost, np.ones(3))
                failures.append(time.monotonic() - began)
            read_healthy(client, stored, [0, 1])

        in_threads(worker, 3)
        assert len(failures) == 9 and max(failures) < 1, failures  # at once, not a timeout
        vc.partition("node3", up=True)
        healed = time.monotonic()
        while True:
            try:
                np.testing.assert_array_equal(client.get_tensor(lost_key), stored[2][lost_key])
                break
            except ConnectionLost:
                assert time.monotonic() - healed < 10, "node3's shard never served again"
                time.sleep(0.05)  # a retry interval: the reconnect happens in the background
        print(
            f"silent loss: detected in {detected:.2f} s, later failures in {max(failures):.3f} s, "
            f"served again {time.monotonic() - healed:.2f} s after heal"
        )
        assert not client.tensor_exists(ghost)  # no ghost write
        read_healthy(client, stored, [0, 1, 2])


@pytest.mark.parametrize(
    "layout, fault, mpi_over",
    [("spmd", "kill", "tcp"), ("mpmd", "kill", "tcp"), ("spmd", "partition", "tcp"),
     ("mpmd", "partition", "tcp"), ("spmd", "partition", "shm")],
)  # fmt: skip
def test_an_mpi_job_that_loses_a_node_does_not_hang(vc, out, layout, fault, mpi_over):
    """Across three nodes (``mpi.init``, or ``memstore-server --mpi : app``), node3 lost
    mid-job: every process killed, or its links taken down (silent). The job ends with a
    failure code, never a hang: a killed node ends it through hydra at once; a silent one
    leaves the survivors reading the other shards, and their shutdown aborts the job after
    the grace (memstore.mpi._watch). MPI itself runs over TCP, as between real nodes;
    ``shm``: over UCX's shared memory, which the virtual nodes share (MPI's traffic on
    another path than memstore's, as on a second fabric): the shutdown collective then
    completes, and a rank that saw node3's shard lost first aborts rather than wait in
    MPI_Finalize. docs/cluster.md, "Shutdown and failures"."""
    jobs = [JOBS, "deadnode", out, layout, *(["20", "30"] if mpi_over == "shm" else [])]
    if layout == "spmd":
        line = vc.mpiexec(NODES, "-ppn", "2", "-n", "6", PY, *jobs)
    else:
        line = vc.mpiexec(NODES, "-ppn", "1", "-n", "3", PY, "-m", "memstore.server", "--mpi",
                          ":", "-n", "3", PY, *jobs)  # fmt: skip
    ucx = {"UCX_TLS": "tcp,self"} if mpi_over == "tcp" else {}
    job = subprocess.Popen(line, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, env=env(**ucx),
                           start_new_session=True)  # fmt: skip
    ready = Path(out + ".ready")
    deadline = time.monotonic() + JOB_TIMEOUT
    while not ready.exists():
        if job.poll() is not None or time.monotonic() > deadline:
            job.kill()
            pytest.fail(f"the job never got ready:\n{job.communicate()[0].decode()[-3000:]}")
        time.sleep(0.1)  # a retry interval while the job starts
    lost_shard = json.loads(ready.read_text())["addresses"][2]  # node3's
    lost_at = time.time()
    vc.kill_node("node3") if fault == "kill" else vc.partition("node3")
    try:
        output = job.communicate(timeout=60)[0].decode(errors="replace")
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        pytest.fail(f"the job hung after node3 was lost:\n{job.communicate()[0].decode()}")
    finally:
        vc.partition("node3", up=True)
        vc.wait_reachable("node3")  # for the next job's proxy there
    ended = time.time() - lost_at
    lost = [line.split() for line in output.splitlines() if line.startswith("lost ")]
    alive = [line.split()[1:] for line in output.splitlines() if line.startswith("alive ")]
    seen = [f"{float(when) - lost_at:.2f}s" for *_, when in lost]
    print(f"{layout}, MPI over {mpi_over}, node3 {fault}: job ended after {ended:.1f}s "
          f"(rc {job.returncode}); lost shard seen after {seen}; alive: {alive}")  # fmt: skip
    ready.unlink(missing_ok=True)
    assert ended < 40 and job.returncode != 0, output  # ended, and says it failed
    assert all(shard == "2" for _, _, shard, _ in lost), lost  # only node3's shard was lost
    if fault == "partition":  # the survivors saw it, read the others, then the job ended
        assert len(alive) == 2 and all(shards == "0,1" for _, shards in alive), output
        aborts = [line for line in output.splitlines() if "aborting the MPI job" in line]
        assert aborts and all(lost_shard in line for line in aborts), output  # names it
        finalize = "MPI_Finalize would wait for it"
        assert any(finalize in line for line in aborts) == (mpi_over == "shm"), output


def test_a_node_restarted_from_a_snapshot_serves_what_was_saved(vc, shards):
    """node3 killed after a save, its shard started again on node3 from the snapshot
    (``memstore-server --cluster ... --index 2 --restore DIR``, what
    ``LocalCluster.restart_shard`` runs): the same client reads the saved keys again by
    itself; what was written after the save is gone; the other shards lost nothing."""
    snapshot = vc.root / "snapshot"
    with Client(shards, timeout=10) as client:
        stored = fill(client)
        client.save(snapshot)
        unsaved = _keys_on(2, 21)[-1]
        client.put_tensor(unsaved, np.ones(3))
        vc.kill_node("node3")
        killed = time.monotonic()
        argv = [PY, "-m", "memstore.server", "--bind", shards[2], "--cluster", ",".join(shards),
                "--index", "2", "--restore", str(snapshot)]  # fmt: skip
        proc = vc.run_on("node3", argv, env=env(), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)  # fmt: skip
        wait_ready(proc)
        started = time.monotonic() - killed
        key, value = next(iter(stored[2].items()))
        deadline = time.monotonic() + 10
        while True:  # the client reconnects by itself (backoff up to 1 s)
            try:
                np.testing.assert_array_equal(client.get_tensor(key), value)
                break
            except ConnectionLost:
                assert time.monotonic() < deadline, "the client never read the restarted shard"
                time.sleep(0.02)  # a retry interval while it reconnects
        served = time.monotonic() - killed
        print(f"node3 restarted from a snapshot: serving {started:.2f}s after the kill, "
              f"the same client read it {served:.2f}s after the kill")  # fmt: skip
        read_healthy(client, stored, [0, 1, 2])
        assert not client.tensor_exists(unsaved)  # written after the save: gone
    proc.stdout.close()
