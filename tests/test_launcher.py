"""LocalCluster: real shard processes that are always stopped, over TCP or ipc://."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import memstore
from memstore.deploy.local import start_shards
from memstore.deploy.processes import stop_processes


def children() -> set[int]:
    """Living (not zombie) child processes of this test process."""
    pids: set[int] = set()
    for path in Path("/proc/self/task").glob("*/children"):
        pids.update(int(pid) for pid in path.read_text().split())
    living = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            living.add(pid)
    return living


def test_local_cluster_stops_its_processes_on_exit():
    """Leaving the with-block stops every shard process cleanly (exit status 0)."""
    with memstore.LocalCluster(shards=2) as cluster:
        processes = [shard.process for shard in cluster.shards]
        assert all(shard.alive() for shard in cluster.shards)
        assert {p.pid for p in processes} <= children()
        with cluster.client(timeout=10) as client:
            client.put_tensor("x", np.ones(3))
    assert [p.returncode for p in processes] == [0, 0]
    assert not {p.pid for p in processes} & children()


def test_local_cluster_stops_its_processes_after_an_exception():
    """An exception inside the with-block still stops every shard, and propagates."""
    processes = []
    with pytest.raises(RuntimeError, match="boom"), memstore.LocalCluster(shards=2) as cluster:
        processes = [shard.process for shard in cluster.shards]
        raise RuntimeError("boom")
    assert len(processes) == 2
    assert [p.returncode for p in processes] == [0, 0]


def test_ipc_local_cluster():
    """ipc=True listens on ipc:// sockets, which work and are gone after the block."""
    with memstore.LocalCluster(shards=2, ipc=True) as cluster:
        assert all(address.startswith("ipc://") for address in cluster.addresses)
        paths = [Path(address[len("ipc://") :]) for address in cluster.addresses]
        assert all(path.exists() for path in paths)
        with cluster.client(timeout=10) as client:
            assert client.addresses == cluster.addresses
            client.put_tensors({f"k{i}": np.full(2, i) for i in range(10)})
            assert [int(a[0]) for a in client.get_tensors([f"k{i}" for i in range(10)])] == list(
                range(10)
            )
    assert not any(path.exists() for path in paths)


def test_cluster_address_and_shard_list():
    """address is the comma-joined shard list, and every shard hands it out."""
    with memstore.LocalCluster(shards=3) as cluster:
        assert cluster.address == ",".join(cluster.addresses)
        assert len(set(cluster.addresses)) == 3
        for one in cluster.addresses:
            with memstore.Client(one, timeout=10) as client:
                assert client.addresses == cluster.addresses
        with memstore.Client(cluster.address, timeout=10) as client:
            infos = client.get_db_node_info()
        assert [info["index"] for info in infos] == [0, 1, 2]
        assert all(info["shards"] == 3 for info in infos)
        assert "serving" in cluster.logs()


def test_options_reach_the_shards():
    """max_memory and extra_args are passed to every shard."""
    with (
        memstore.LocalCluster(
            shards=2, max_memory="1MiB", extra_args=["--log-level", "DEBUG"]
        ) as cluster,
        cluster.client(timeout=10) as client,
    ):
        assert [info["max_memory"] for info in client.get_db_node_info()] == [2**20] * 2


def test_zero_shards_is_value_error():
    """A cluster needs at least one shard."""
    with pytest.raises(ValueError):
        memstore.LocalCluster(shards=0)


def test_a_shard_that_cannot_start_fails_fast_and_leaves_nothing_running(tmp_path):
    """If a shard fails to start, the error carries its log and no shard is left running."""
    before = children()
    with pytest.raises(memstore.MemstoreError, match="did not start") as info:
        start_shards(2, extra_args=["--no-such-option"], log_dir=tmp_path, timeout=30)
    assert "--no-such-option" in str(info.value)
    assert children() <= before


def test_start_and_stop_shards(tmp_path):
    """start_shards returns serving processes with logs; stop_processes ends them."""
    shards = start_shards(2, log_dir=tmp_path)
    try:
        assert all(shard.alive() for shard in shards)
        assert all(shard.log_path.parent == tmp_path for shard in shards)
        with memstore.Client(shards[0].address, timeout=10) as client:
            assert client.addresses == [shard.address for shard in shards]
    finally:
        stop_processes(shards)
    assert not any(shard.alive() for shard in shards)
    assert [shard.process.returncode for shard in shards] == [0, 0]


def test_stop_processes_tolerates_dead_shards():
    """Stopping a cluster one of whose shards was killed does not fail or hang."""
    with memstore.LocalCluster(shards=2) as cluster:
        cluster.shards[0].process.kill()
        cluster.shards[0].process.wait(timeout=10)
    assert not any(shard.alive() for shard in cluster.shards)
    assert cluster.shards[1].process.returncode == 0


def test_a_ready_line_behind_other_output_in_one_write_is_seen(tmp_path):
    """Two lines in one pipe read: a buffered readline took both, and the selector then
    waited for more output that never came."""
    import subprocess
    import sys

    from memstore.config import READY_LINE
    from memstore.deploy.processes import ChildProcess, read_ready

    program = (
        "import sys, time\n"
        f"sys.stdout.write('starting up\\n{READY_LINE}tcp://127.0.0.1:1\\n'); sys.stdout.flush()\n"
        "time.sleep(60)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE)
    try:
        child = ChildProcess(process, "", tmp_path / "log")
        assert read_ready(child, timeout=30) == "tcp://127.0.0.1:1"
    finally:
        process.kill()
        process.wait(30)


def _owner_of(key: str, shards: int) -> int:
    from memstore.placement import key_shard

    return key_shard(key, shards)


@pytest.mark.parametrize("ipc", [False, True], ids=["tcp", "ipc"])
def test_a_shard_killed_and_restarted_in_place_knows_its_cluster(ipc):
    """kill -9 of shard 1, then restart_shard(1): the new process at the same address lists
    the whole cluster in hello, refuses keys the other shards own, and a client given only its
    address finds all three shards. (A shard started again without its cluster answered
    hello with ``shards: []`` and took any key.)"""
    from memstore.deploy.admin import request_once
    from memstore.errors import MemstoreError

    with memstore.LocalCluster(shards=3, ipc=ipc) as cluster, cluster.client(timeout=10) as old:
        data = {f"k{i}": np.full(2, i) for i in range(30)}
        old.put_tensors(data)
        victim = cluster.shards[1]
        victim.process.kill()
        victim.process.wait(timeout=10)

        restarted = cluster.restart_shard(1)
        assert restarted.address == cluster.addresses[1]
        assert restarted.process.pid != victim.process.pid and restarted.alive()
        hello = request_once(cluster.addresses[1], "hello", timeout=10)
        assert hello["shards"] == cluster.addresses and hello["index"] == 1
        foreign = next(k for k in data if _owner_of(k, 3) != 1)
        with pytest.raises(MemstoreError, match="belongs to shard"):
            request_once(cluster.addresses[1], "exists", {"key": foreign}, timeout=10)
        with memstore.Client(cluster.addresses[1], timeout=10) as fresh:
            assert fresh.addresses == cluster.addresses
            for key, value in data.items():
                if _owner_of(key, 3) == 1:
                    assert not fresh.tensor_exists(key)  # it came back empty
                else:
                    np.testing.assert_array_equal(fresh.get_tensor(key), value)
            mine = next(k for k in data if _owner_of(k, 3) == 1)
            fresh.put_tensor(mine, np.full(2, -1))
            np.testing.assert_array_equal(fresh.get_tensor(mine), [-1, -1])


def test_restart_shard_index_out_of_range_is_refused():
    """restart_shard names the valid range instead of starting anything."""
    from memstore.errors import MemstoreError

    with memstore.LocalCluster(shards=1) as cluster:
        with pytest.raises(MemstoreError, match="no shard 3"):
            cluster.restart_shard(3)
        assert cluster.shards[0].alive()


def test_stopping_a_process_group_leader_ends_what_it_started(tmp_path):
    """A child in its own session (a job, ``memstore start``'s shards) is stopped with its
    whole group, as ``mpiexec`` must be with its ranks; the one stop routine does both."""
    import subprocess
    import sys
    import time

    pid_file = tmp_path / "grandchild"
    program = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    leader = subprocess.Popen([sys.executable, "-c", program], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        grandchild = int(pid_file.read_text())
        stop_processes([leader], timeout=10)
        assert leader.returncode is not None
        deadline = time.monotonic() + 10
        while _running(grandchild):  # not ours to reap: wait until it has ended
            assert time.monotonic() < deadline, f"{grandchild} outlived its group's stop"
            time.sleep(0.1)
    finally:
        if leader.poll() is None:
            leader.kill()
            leader.wait()


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and has not ended (a zombie has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_deploy_modules_import_only_the_ones_below_them():
    """memstore.deploy is layered (its __init__ lists the order): processes knows no
    launcher, gateways no local cluster, and nothing in it imports a program (cli)."""
    import ast

    order = ["processes", "admin", "curve", "schedulers", "gateways", "local", "jobs"]
    folder = Path(memstore.__file__).parent / "deploy"
    for position, name in enumerate(order):
        tree = ast.parse((folder / f"{name}.py").read_text())
        found = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        found |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        above = {f"memstore.deploy.{m}" for m in order[position:]} | {"memstore.cli"}
        bad = {m for m in found if any(m == a or m.startswith(a + ".") for a in above)}
        assert not bad, f"deploy/{name}.py imports {sorted(bad)}"
