"""memstore.mpi under real ``mpiexec`` jobs, started from pytest with deadlines.

Each test runs a scenario of tests/mpi_jobs.py as a whole MPI job in its own process
group, killed if it outlives its deadline (a hang fails the test, it does not stall it).
Under ``mpiexec -n N python -m pytest tests/test_mpi.py`` the job tests skip (no nested
jobs) and ``test_world_in_process`` runs the bootstrap across the N pytest ranks instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mpi4py")

pytestmark = pytest.mark.mpi

HERE = Path(__file__).parent
JOBS = str(HERE / "mpi_jobs.py")
PY = sys.executable
MPIEXEC = (
    str(Path(PY).parent / "mpiexec")
    if (Path(PY).parent / "mpiexec").exists()
    else shutil.which("mpiexec")
)
SERVER = [PY, "-m", "memstore.server", "--mpi", "--log-level", "WARNING"]
#: Set by mpiexec (Hydra / PMIx / Open MPI) in every rank it starts.
UNDER_MPI = any(v in os.environ for v in ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK"))

needs_mpiexec = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install mpich)")
not_nested = pytest.mark.skipif(UNDER_MPI, reason="pytest itself runs under mpiexec")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMSTORE_")}
    env.pop("SSDB", None)
    env.update(extra)
    return env


@pytest.fixture(autouse=True)
def job_tmpdir(monkeypatch):
    """A short TMPDIR per test: ipc:// sockets of aborted jobs stay there, not in /tmp."""
    folder = tempfile.mkdtemp(prefix="ms-")
    monkeypatch.setenv("TMPDIR", folder)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def run_job(args: list[str], timeout: float, **env: str) -> tuple[int, str, float]:
    """Run a command (an ``mpiexec`` line) to its end: exit code, output, seconds."""
    start = time.monotonic()
    process = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=_env(**env),
        start_new_session=True,
    )
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, _ = process.communicate()
        pytest.fail(f"{' '.join(args)} hung past {timeout}s:\n{out.decode(errors='replace')}")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode, out.decode(errors="replace"), time.monotonic() - start


def oks(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("ok ")]


@needs_mpiexec
@not_nested
@pytest.mark.parametrize("shards_per_node", [1, 2])
def test_spmd_every_rank_reads_every_other(shards_per_node):
    rc, out, _ = run_job([MPIEXEC, "-n", "4", PY, JOBS, "spmd", str(shards_per_node)], 60)
    assert rc == 0, out
    assert len(oks(out)) == 4 - shards_per_node, out


@not_nested
def test_world_of_one_runs_shards_in_threads():
    """Without mpiexec (a singleton MPI world) the one rank is an app with its shard."""
    rc, out, _ = run_job([PY, JOBS, "world"], 60)
    assert rc == 0, out
    assert oks(out) == ["ok 0"], out


@not_nested
def test_world_of_one_in_a_many_task_srun_step_is_refused():
    """What ``srun -n 2`` without ``--mpi=pmi2`` gives each task (tests/test_slurm.py runs
    the real thing): a world of one in a 2-task step would start one store per rank."""
    rc, out, _ = run_job([PY, JOBS, "world"], 60, SLURM_STEP_NUM_TASKS="2")
    assert rc != 0 and not oks(out), out
    assert "--mpi=pmi2" in out and "2 tasks" in out, out
    rc, out, _ = run_job(SERVER, 60, SLURM_STEP_NUM_TASKS="2")
    assert rc == 1 and "--mpi=pmi2" in out, out


@not_nested
def test_in_process_shards_do_not_alias_the_callers_memory():
    """Over inproc:// a put is a snapshot and a got array belongs to the caller."""
    rc, out, _ = run_job([PY, JOBS, "snapshots"], 60)
    assert rc == 0, out
    assert oks(out) == ["ok snapshots"], out


@pytest.mark.skipif(not UNDER_MPI, reason="runs across the ranks of `mpiexec pytest`")
def test_world_in_process():
    """``mpiexec -n N python -m pytest tests/test_mpi.py``: bootstrap over the N ranks."""
    sys.path.insert(0, str(HERE))
    try:
        import mpi_jobs
    finally:
        sys.path.remove(str(HERE))
    mpi_jobs.world()


@needs_mpiexec
@not_nested
def test_shards_offer_their_nodes_ranks_shared_memory():
    """Shards of ``mpi.init`` and of ``memstore-server --mpi`` (issue 12): large tensors of
    the app ranks on their node go through /dev/shm files."""
    rc, out, _ = run_job([MPIEXEC, "-n", "3", PY, JOBS, "shm_init"], 60)
    assert rc == 0 and len(oks(out)) == 2, out
    args = [MPIEXEC, "-n", "1", *SERVER, ":", "-n", "2", PY, JOBS, "shm_connect"]
    rc, out, _ = run_job(args, 60)
    assert rc == 0 and len(oks(out)) == 2, out


@needs_mpiexec
@not_nested
def test_mpmd_programs_know_their_appnum():
    args = [MPIEXEC, "-n", "1", *SERVER, ":", "-n", "2", PY, JOBS, "mpmd"]
    rc, out, _ = run_job([*args, ":", "-n", "1", PY, JOBS, "mpmd"], 60)
    assert rc == 0, out
    found = sorted(line.split(" ", 2)[2] for line in oks(out))
    assert found == ["appnum 1 of 2", "appnum 1 of 2", "appnum 2 of 1"], out


@needs_mpiexec
@not_nested
def test_stream_writer_appends_from_every_rank_and_closes_once():
    """One ``writer.append`` per solver step on 3 app ranks next to 2 shard ranks."""
    args = [MPIEXEC, "-n", "2", *SERVER, ":", "-n", "3", PY, JOBS, "stream_writer", "20"]
    rc, out, _ = run_job(args, 90)
    assert rc == 0, out
    assert len([line for line in oks(out) if line.endswith("stream_writer")]) == 3, out


@needs_mpiexec
@not_nested
@pytest.mark.parametrize("variant", ["with", "uncaught"])
def test_failing_rank_lets_the_others_finish(variant):
    rc, out, _ = run_job([MPIEXEC, "-n", "4", PY, JOBS, "fail", variant], 60)
    assert rc != 0, out
    assert "failing on purpose" in out
    assert len(oks(out)) == 2, out  # app ranks 0 and 2 finished their work and exited


@needs_mpiexec
@not_nested
def test_failing_rank_aborts_peers_stuck_waiting_for_it():
    rc, out, seconds = run_job([MPIEXEC, "-n", "4", PY, JOBS, "fail", "stuck", "2"], 60)
    # The peers sit in a barrier that can never complete: only MPI_Abort ends this job.
    # (Not asserted: the "aborting the MPI job" line itself, which mpiexec may drop while
    # it tears the ranks down.)
    assert rc != 0, out
    assert oks(out) == [], out
    assert seconds < 30, f"aborted only after {seconds:.0f}s (grace is 2s)"


@needs_mpiexec
@not_nested
def test_a_rank_failing_under_torch_distributed_still_prints_its_error():
    """torch.distributed's excepthook swaps sys.stderr for a buffer around the hook it
    wraps (memstore's) and writes it out only when that returns; an abort never returns,
    so the failed rank's traceback used to vanish and the job ended in a bare MPI_Abort."""
    pytest.importorskip("torch.distributed")
    rc, out, _ = run_job([MPIEXEC, "-n", "4", PY, JOBS, "fail", "torch_stuck", "2"], 60)
    assert rc != 0, out
    assert "RuntimeError: failing on purpose" in out, out


@needs_mpiexec
@not_nested
def test_crashed_shard_is_reported_and_the_job_ends():
    rc, out, _ = run_job([MPIEXEC, "-n", "3", PY, JOBS, "crash"], 60)
    assert rc != 0, out
    assert "crashed: RuntimeError: shard bug on purpose" in out, out


@needs_mpiexec
@not_nested
def test_address_file_hands_the_store_to_a_second_job(tmp_path):
    from memstore import launcher
    from memstore.config import READY_LINE

    address_file = tmp_path / "store.addr"
    store = subprocess.Popen(
        [MPIEXEC, "-n", "2", *SERVER, "--host", "127.0.0.1", "--address-file", str(address_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=_env(),
        start_new_session=True,
    )
    try:
        line = _ready_line(store, 60)
        assert line.startswith(READY_LINE), line
        shards = line[len(READY_LINE) :].strip().split(",")
        assert address_file.read_text().split() == [",".join(shards)]
        rc, out, _ = run_job(
            [MPIEXEC, "-n", "2", PY, JOBS, "handoff"], 60, MEMSTORE_ADDRESS_FILE=str(address_file)
        )
        assert rc == 0, out
        assert len(oks(out)) == 2, out
        assert launcher.stop_addresses(shards, timeout=10) == []
        assert store.wait(30) == 0
        assert not address_file.exists()  # the store removed it on the way out
    finally:
        if store.poll() is None:
            os.killpg(store.pid, signal.SIGKILL)
            store.wait()
        store.stdout.close()


@pytest.fixture
def keys(tmp_path, monkeypatch):
    """``memstore keygen`` keys (server and client) and a separate admin key pair."""
    from memstore import auth
    from memstore.config import ENV_CURVE_CLIENT_KEY, ENV_CURVE_DIR, ENV_CURVE_SERVER_KEY

    for name in (ENV_CURVE_DIR, ENV_CURVE_SERVER_KEY, ENV_CURVE_CLIENT_KEY):
        monkeypatch.delenv(name, raising=False)
    return auth.keygen(tmp_path / "keys"), auth.keygen(tmp_path / "admin")


def _store_job(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=_env(),
        start_new_session=True,
    )


@contextlib.contextmanager
def _store_of_two(args: list[str]):
    """An MPI store job of two shards: (its output up to the ready line, the shard list).
    Stopped by request at the end of the block, which must end it cleanly; killed if the
    block fails."""
    from memstore import launcher
    from memstore.config import READY_LINE

    store = _store_job(args)
    try:
        lines = _lines_to_ready(store, 60)
        shards = lines[-1][len(READY_LINE) :].strip().split(",")
        assert len(shards) == 2, lines
        yield lines, shards
        assert launcher.stop_addresses(shards, timeout=10) == []
        assert store.wait(30) == 0
    finally:
        _end_store_job(store)


def _end_store_job(store: subprocess.Popen) -> None:
    if store.poll() is None:
        os.killpg(store.pid, signal.SIGKILL)
        store.wait()
    store.stdout.close()


@needs_mpiexec
@not_nested
def test_server_mpi_honours_curve_options(tmp_path, keys):
    """``mpiexec -n 2 memstore-server --mpi --curve-secret-key --curve-authorized-keys
    --admin-key``: both shards refuse strangers, serve the client key, keep admin
    operations for the admin key."""
    import memstore
    from memstore import auth, launcher
    from memstore.config import READY_LINE

    made, admin = keys
    secure = ["--curve-secret-key", str(made["server"]), "--curve-authorized-keys"]
    secure += [str(made["client"].parent), "--admin-key", str(admin["client_public"])]
    address_file = tmp_path / "store.addr"
    store = _store_job(
        [MPIEXEC, "-n", "2", *SERVER, "--host", "127.0.0.1", "--address-file",
         str(address_file), *secure]
    )  # fmt: skip
    try:
        line = _ready_line(store, 60)
        shards = line[len(READY_LINE) :].strip().split(",")
        assert len(shards) == 2, line
        for address in shards:
            with pytest.raises(memstore.AuthError, match=address):
                memstore.Client(address, timeout=3)
        client_keys = auth.client_keys(directory=made["client"].parent)
        with memstore.Client(shards, timeout=10, curve=client_keys) as client:
            data = np.arange(1000, dtype=np.float64)
            for i in range(8):  # spread over both shards
                client.put_tensor(f"k{i}", data + i)
            assert all(client.get_tensor(f"k{i}")[0] == i for i in range(8))
            with pytest.raises(memstore.AuthError, match="refused flush"):
                client.flush_db()
            assert launcher.stop_addresses(shards, timeout=5, curve=client_keys) == shards
            server = client_keys.server_public.decode()
            boss = auth.client_keys(server, admin["client"])
            with memstore.Client(shards, timeout=10, curve=boss) as admin_client:
                admin_client.flush_db()
            assert not client.tensor_exists("k0")
        assert launcher.stop_addresses(shards, timeout=10, curve=boss) == []
        assert store.wait(30) == 0
    finally:
        _end_store_job(store)


@needs_mpiexec
@not_nested
def test_server_mpi_curve_keys_reach_the_app_ranks(keys):
    """MPMD: the app ranks of ``mpi.connect`` get the servers' cluster key over MPI."""
    made, _ = keys
    secure = ["--curve-secret-key", str(made["server"])]
    args = [MPIEXEC, "-n", "2", *SERVER, *secure, ":", "-n", "2", PY, JOBS, "secure_mpmd"]
    rc, out, _ = run_job(args, 60)
    assert rc == 0, out
    assert sorted(oks(out)) == ["ok 2 secure", "ok 3 secure"], out


@not_nested
def test_server_mpi_refuses_bad_curve_options_before_the_bootstrap(keys):
    made, _ = keys
    rc, out, _ = run_job([*SERVER, "--no-admin"], 60)
    assert rc == 2 and "--curve-secret-key" in out, out
    os.chmod(made["server"], 0o644)
    rc, out, _ = run_job([*SERVER, "--curve-secret-key", str(made["server"])], 60)
    assert rc == 2 and "chmod 600" in out, out


def _jobs():
    sys.path.insert(0, str(HERE))
    try:
        import mpi_jobs
    finally:
        sys.path.remove(str(HERE))
    return mpi_jobs


@pytest.fixture(scope="module")
def snapshot_of_3(tmp_path_factory):
    """A snapshot of a 3-shard store (LocalCluster, real shard processes)."""
    import memstore

    directory = tmp_path_factory.mktemp("snap3")
    with memstore.LocalCluster(3) as cluster, cluster.client(timeout=30) as client:
        _jobs().fill_for_restore(client)
        saved = client.save(str(directory))
    assert len(saved) == 3 and all(r["keys"] > 0 for r in saved), saved
    return directory, sum(r["keys"] for r in saved)


@needs_mpiexec
@not_nested
def test_mpi_init_restores_a_snapshot_onto_another_shard_count(snapshot_of_3):
    """``mpi.init(restore=DIR)`` under ``mpiexec -n 3``: 3 saved shards onto 2."""
    directory, keys = snapshot_of_3
    args = [MPIEXEC, "-n", "3", PY, JOBS, "restore", str(directory), "2", str(keys)]
    rc, out, _ = run_job(args, 90)
    assert rc == 0, out
    assert oks(out) == ["ok 0 restored onto 2"], out


@needs_mpiexec
@not_nested
def test_server_mpi_restores_a_snapshot(tmp_path, snapshot_of_3):
    """``mpiexec -n 2 memstore-server --mpi --restore DIR``: a 3-shard snapshot re-hashed onto
    2 shards, bit-identical, each key on the one shard that owns it."""
    import memstore

    directory, keys = snapshot_of_3
    address_file = tmp_path / "store.addr"
    job = [MPIEXEC, "-n", "2", *SERVER, "--host", "127.0.0.1", "--address-file",
           str(address_file), "--restore", str(directory)]  # fmt: skip
    with _store_of_two(job) as (_, shards), memstore.Client(shards, timeout=20) as client:
        _jobs().check_restored(client)
        infos = client.get_db_node_info(shards)
        assert sum(i["keys"] for i in infos) == keys, infos  # each key on one shard
        assert all(i["keys"] > 0 for i in infos), infos


@needs_mpiexec
@not_nested
def test_server_mpi_refuses_a_tampered_snapshot_naming_the_file(tmp_path, snapshot_of_3):
    import shutil as sh

    broken = tmp_path / "broken"
    sh.copytree(snapshot_of_3[0], broken)
    victim = sorted(broken.glob("*.msnap"))[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    args = [MPIEXEC, "-n", "2", *SERVER, "--host", "127.0.0.1", "--restore", str(broken)]
    rc, out, _ = run_job(args, 60)
    assert rc != 0, out
    assert victim.name in out, out


def _ready_line(process: subprocess.Popen, timeout: float) -> str:
    """The store job's ready line (other ranks' log lines may come first)."""
    return _lines_to_ready(process, timeout)[-1]


def _lines_to_ready(process: subprocess.Popen, timeout: float) -> list[str]:
    """The store job's output up to and with its ready line (read on a thread, so a line
    already in the pipe's buffer is never waited for)."""
    import queue
    import threading

    from memstore.config import READY_LINE

    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for raw in process.stdout:
            lines.put(raw.decode(errors="replace"))
        lines.put("")  # the job ended

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if not line:
            break
        seen.append(line)
        if line.startswith(READY_LINE):
            return seen
    pytest.fail(f"no ready line from the store within {timeout}s:\n{''.join(seen)}")


@needs_mpiexec
@not_nested
def test_server_mpi_resp_port_starts_a_gateway_per_node():
    """``mpiexec -n 2 memstore-server --mpi --resp-port 0``: one node, so one gateway,
    announced before the ready line; redis-py and memstore.Client see the same entries,
    and CLUSTER SLOTS lists the gateway over all 16384 slots."""
    redis = pytest.importorskip("redis")
    import memstore
    from memstore.config import GATEWAY_READY_LINE
    from memstore.gateway.commands import parse_peer

    job = [MPIEXEC, "-n", "2", *SERVER, "--host", "127.0.0.1", "--resp-port", "0"]
    with _store_of_two(job) as (lines, shards):
        announced = [line for line in lines if line.startswith(GATEWAY_READY_LINE)]
        assert len(announced) == 1, lines
        gateways = announced[0][len(GATEWAY_READY_LINE) :].strip().split(",")
        assert len(gateways) == 1, gateways  # one node here
        host, port = parse_peer(gateways[0])
        assert host == "127.0.0.1"
        array = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
        with redis.Redis(host=host, port=port, protocol=2, socket_timeout=10) as r:
            slots = r.execute_command("CLUSTER", "SLOTS")
            assert [s[:2] for s in slots] == [[0, 16383]], slots
            assert slots[0][2][:2] == [host.encode(), port], slots
            assert r.execute_command(
                "AI.TENSORSET", "from-redis", "FLOAT", 2, 3, 4, "BLOB", array.tobytes()
            )
            with memstore.Client(shards, timeout=10) as client:
                got = client.get_tensor("from-redis")
                assert got.dtype == np.float32 and np.array_equal(got, array), got
                client.put_tensor("from-memstore", array * 2)
            assert r.execute_command("AI.TENSORGET", "from-memstore", "BLOB") == (
                (array * 2).tobytes()
            )


@needs_mpiexec
@not_nested
def test_mpi_init_resp_port_serves_the_app_ranks():
    rc, out, _ = run_job([MPIEXEC, "-n", "3", PY, JOBS, "gateway"], 60)
    assert rc == 0, out
    assert sorted(oks(out)) == ["ok 0 gateway", "ok 1 gateway"], out


@not_nested
def test_server_mpi_refuses_resp_port_with_curve(keys):
    made, _ = keys
    args = [*SERVER, "--curve-secret-key", str(made["server"]), "--resp-port", "0"]
    rc, out, _ = run_job(args, 60)
    assert rc == 2 and "no authentication" in out, out


@needs_mpiexec
@not_nested
def test_server_mpi_gateway_port_taken_fails_every_rank():
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        args = [MPIEXEC, "-n", "2", *SERVER, "--host", "127.0.0.1", "--resp-port", port]
        rc, out, _ = run_job(args, 60)
    assert rc == 1, out
    assert out.count("could not start the RESP gateways") == 2, out  # both ranks say why
