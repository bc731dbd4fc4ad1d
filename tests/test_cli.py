"""The shell commands: `memstore start|status|info|stop` and `memstore-server`, run as real
subprocesses with a timeout on every call."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import memstore
from memstore.config import READY_LINE

BIN = Path(sys.executable).parent
MEMSTORE = str(BIN / "memstore")
SERVER = str(BIN / "memstore-server")
TIMEOUT = 60


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command to completion (or fail the test after TIMEOUT seconds)."""
    return subprocess.run(
        list(args),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, **(env or {})},
    )


def gone(pid: int) -> bool:
    """The process has exited (a zombie counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def wait_gone(pids: list[int], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(gone(pid) for pid in pids):
            return True
        time.sleep(0.05)  # waiting on processes we do not own: nothing to block on
    return False


@pytest.fixture
def started(tmp_path):
    """`memstore start --shards 2 --port 0` with an address file; always stopped after."""
    address_file = tmp_path / "memstore.addr"
    result = run(
        MEMSTORE, "start", "--shards", "2", "--port", "0", "--address-file", str(address_file)
    )
    pids: list[int] = []
    try:
        assert result.returncode == 0, result.stderr
        addresses = address_file.read_text().strip().split(",")
        with memstore.Client(addresses, timeout=10) as client:
            pids = [info["pid"] for info in client.get_db_node_info()]
        yield address_file, result, pids
    finally:
        if address_file.exists():
            run(MEMSTORE, "stop", "--address-file", str(address_file))
        for pid in pids:
            if not wait_gone([pid], timeout=5):
                os.kill(pid, signal.SIGKILL)


def test_start_status_info_client_stop(started, monkeypatch):
    """start writes the address file and prints the export line; status and info report both
    shards; a client finds them through MEMSTORE_ADDRESS_FILE; stop ends them."""
    address_file, result, pids = started
    addresses = address_file.read_text().strip().split(",")
    assert len(addresses) == 2 and all(a.startswith("tcp://127.0.0.1:") for a in addresses)
    assert f"export MEMSTORE_ADDRESS={','.join(addresses)}" in result.stdout
    assert not any(gone(pid) for pid in pids)

    for name in ("MEMSTORE_ADDRESS", "SSDB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MEMSTORE_ADDRESS_FILE", str(address_file))
    with memstore.Client(timeout=10) as client:
        assert client.addresses == addresses
        client.put_tensors({f"k{i}": np.full(3, i) for i in range(10)})
        np.testing.assert_array_equal(client.get_tensor("k7"), [7, 7, 7])
        sim = client.stream("sim", maxlen=4)
        for t in range(6):
            sim.append(np.full(2, t))

    status = run(MEMSTORE, "status", "--address-file", str(address_file))
    assert status.returncode == 0, status.stderr
    lines = status.stdout.strip().splitlines()
    assert lines[0].split() == ["address", "keys", "streams", "steps", "bytes", "clients", "uptime"]
    assert [line.split()[0] for line in lines[1:]] == addresses
    # keys counts entries: the 10 tensors, the stream's state and its 4 held steps' data
    assert sum(int(line.split()[1]) for line in lines[1:]) == 15
    assert sum(int(line.split()[2]) for line in lines[1:]) == 1
    assert sum(int(line.split()[3]) for line in lines[1:]) == 4

    info = run(MEMSTORE, "info", "--address-file", str(address_file))
    assert info.returncode == 0, info.stderr
    infos = json.loads(info.stdout)
    assert [i["address"] for i in infos] == addresses
    assert sum(i["streams"] for i in infos) == 1
    assert all({"bytes", "clients", "uptime", "ops"} <= set(i) for i in infos)

    stop = run(MEMSTORE, "stop", "--address-file", str(address_file))
    assert stop.returncode == 0, stop.stderr
    assert "stopped 2 of 2" in stop.stdout
    assert not address_file.exists()
    assert wait_gone(pids)


def test_commands_find_the_address_file_through_the_environment(started):
    """status uses MEMSTORE_ADDRESS_FILE when --address-file is not given."""
    address_file, _, _ = started
    status = run(MEMSTORE, "status", env={"MEMSTORE_ADDRESS_FILE": str(address_file)})
    assert status.returncode == 0, status.stderr
    assert len(status.stdout.strip().splitlines()) == 3


def test_status_without_a_store_explains(tmp_path):
    """status with no address file and no address fails with a message, not a traceback."""
    env = {"MEMSTORE_ADDRESS": "", "SSDB": "", "MEMSTORE_ADDRESS_FILE": ""}
    result = subprocess.run(
        [MEMSTORE, "status", "--address-file", str(tmp_path / "none.addr")],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, **env},
    )
    assert result.returncode == 1
    assert "MEMSTORE_ADDRESS" in result.stderr and "Traceback" not in result.stderr


def test_stop_of_a_stopped_store_reports_it(tmp_path):
    """stop against shards that are not running says so and exits 1."""
    address_file = tmp_path / "dead.addr"
    address_file.write_text("tcp://127.0.0.1:1\n")
    result = run(MEMSTORE, "stop", "--address-file", str(address_file), "--timeout", "0.5")
    assert result.returncode == 1
    assert "did not answer" in result.stderr


def test_start_on_ipc(tmp_path):
    """start --ipc-dir serves on ipc:// sockets."""
    address_file = tmp_path / "ipc.addr"
    result = run(
        MEMSTORE,
        "start",
        "--shards",
        "2",
        "--ipc-dir",
        str(tmp_path / "sockets"),
        "--address-file",
        str(address_file),
    )
    try:
        assert result.returncode == 0, result.stderr
        addresses = address_file.read_text().strip().split(",")
        assert all(a.startswith("ipc://") for a in addresses)
        with memstore.Client(addresses[1], timeout=10) as client:
            client.put_tensor("x", np.ones(2))
            assert client.addresses == addresses
    finally:
        stop = run(MEMSTORE, "stop", "--address-file", str(address_file))
    assert stop.returncode == 0, stop.stderr


# -- memstore-server -------------------------------------------------------------------------


def start_server(*args: str, module: bool = False) -> tuple[subprocess.Popen, str]:
    """Start one shard in the foreground; return it and the address it printed."""
    command = [sys.executable, "-m", "memstore.server"] if module else [SERVER]
    process = subprocess.Popen(
        [*command, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        ready = selector.select(TIMEOUT)
    line = process.stdout.readline() if ready else ""
    if not line.startswith(READY_LINE):
        process.kill()
        _, err = process.communicate(timeout=TIMEOUT)
        pytest.fail(f"shard did not start: {line!r}\n{err}")
    return process, line[len(READY_LINE) :].strip()


def finish(process: subprocess.Popen, sig: int) -> tuple[int, str]:
    """Send ``sig`` and collect the exit status and stderr."""
    try:
        process.send_signal(sig)
        _, err = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=TIMEOUT)
    return process.returncode, err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_server_prints_its_address_serves_and_exits_cleanly(sig):
    """memstore-server --port 0 prints the address it bound, serves it, and exits 0 on
    SIGTERM / SIGINT."""
    process, address = start_server("--port", "0", "--max-memory", "2MiB")
    assert address.startswith("tcp://127.0.0.1:") and not address.endswith(":0")
    with memstore.Client(address, timeout=10) as client:
        client.put_tensor("x", np.arange(3))
        np.testing.assert_array_equal(client.get_tensor("x"), np.arange(3))
        assert client.get_db_node_info()[0]["max_memory"] == 2 * 2**20
    code, err = finish(process, sig)
    assert code == 0, err
    assert "Traceback" not in err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_server_exits_cleanly_on_a_signal_right_after_starting(sig):
    """A signal sent the moment the ready line is read still gives a clean exit 0."""
    for _ in range(3):
        process, _ = start_server("--port", "0")
        code, err = finish(process, sig)
        assert code == 0, err


def test_python_m_memstore_server():
    """python -m memstore.server works like memstore-server."""
    process, address = start_server("--port", "0", "--log-level", "WARNING", module=True)
    with memstore.Client(address, timeout=10) as client:
        client.put_tensor("x", np.ones(1))
        assert client.tensor_exists("x")
    code, err = finish(process, signal.SIGTERM)
    assert code == 0, err


def test_server_on_ipc(tmp_path):
    """--bind ipc://path serves on that socket."""
    bind = f"ipc://{tmp_path}/one.sock"
    process, address = start_server("--bind", bind)
    assert address == bind
    with memstore.Client(address, timeout=10) as client:
        client.put_tensor("x", np.ones(1))
    code, err = finish(process, signal.SIGTERM)
    assert code == 0, err


def test_server_on_a_busy_port_fails_with_a_message():
    """A port already in use gives exit status 1 and a message naming the address."""
    process, address = start_server("--port", "0")
    try:
        port = address.rsplit(":", 1)[1]
        result = run(SERVER, "--port", port)
        assert result.returncode == 1
        assert "cannot bind" in result.stderr and port in result.stderr
    finally:
        finish(process, signal.SIGTERM)


def test_server_refuses_a_bad_size():
    """--max-memory that is not a size is a usage error (exit status 2)."""
    result = run(SERVER, "--port", "0", "--max-memory", "lots")
    assert result.returncode == 2
    assert "max-memory" in result.stderr


def test_restart_shard_after_kill_9_knows_its_cluster(started):
    """`memstore start --restart-shard 1` after kill -9 of shard 1 brings it back at its
    address knowing both shards: it refuses shard 0's keys and lists the cluster in hello.
    A shard that still answers is not restarted."""
    from memstore.deploy.admin import request_once
    from memstore.placement import key_shard

    address_file, _, pids = started
    addresses = address_file.read_text().strip().split(",")
    os.kill(pids[1], signal.SIGKILL)
    assert wait_gone([pids[1]])
    result = run(MEMSTORE, "start", "--restart-shard", "1", "--address-file", str(address_file))
    assert result.returncode == 0, result.stderr
    hello = request_once(addresses[1], "hello", timeout=10)
    pids.append(hello["pid"])  # the fixture ends it too
    assert hello["shards"] == addresses and hello["index"] == 1
    foreign = next(f"k{i}" for i in range(100) if key_shard(f"k{i}", 2) == 0)
    with pytest.raises(memstore.MemstoreError, match="belongs to shard"):
        request_once(addresses[1], "exists", {"key": foreign}, timeout=10)
    with memstore.Client(addresses[1], timeout=10) as client:
        assert client.addresses == addresses

    again = run(MEMSTORE, "start", "--restart-shard", "0", "--address-file", str(address_file))
    assert again.returncode == 1 and "still answers" in again.stderr
    assert not gone(pids[0])


def test_server_refuses_a_cluster_list_without_its_address():
    """--cluster must list the shard's own address (or --index must name it)."""
    result = run(SERVER, "--bind", "tcp://127.0.0.1:0", "--cluster", "127.0.0.1:1,127.0.0.1:2")
    assert result.returncode == 2 and "not in the cluster list" in result.stderr
    result = run(SERVER, "--port", "0", "--index", "0")
    assert result.returncode == 2 and "--index needs --cluster" in result.stderr


def test_server_refuses_allow_pickle_with_a_narrower_models_setting():
    """--allow-pickle means --models all; asking for both all and none is an error."""
    result = run(SERVER, "--port", "0", "--allow-pickle", "--models", "none")
    assert result.returncode != 0 and "contradicts --models none" in result.stderr


def test_every_shard_keyword_is_a_server_option():
    """memstore-server builds its Shard from the options named like Shard's keywords
    (server.options.shard_options, which the --mpi program can share): a keyword without
    an option of its name would silently keep its default."""
    import inspect

    from memstore.cli.server import parser
    from memstore.server.options import shard_options
    from memstore.server.shard import Shard

    args = parser().parse_args(["--no-shm", "--max-memory", "1KiB", "--save-every", "5"])
    options = shard_options(args)
    assert options["shm"] is False and options["max_memory"] == 1024
    assert options["save_every"] == 5.0
    keywords = set(inspect.signature(Shard).parameters) - {"address", "curve"}
    assert set(options) == keywords
    assert "shm" not in shard_options(parser().parse_args([]))
