"""CURVE authentication and encryption, admin policy, private sockets: real shard processes."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import zmq

import memstore
from memstore import auth, cli, tensors, wire
from memstore.config import (
    ENV_CURVE_CLIENT_KEY,
    ENV_CURVE_DIR,
    ENV_CURVE_SERVER_KEY,
    READY_LINE,
)
from memstore.deploy import LocalCluster
from memstore.deploy.admin import request_once
from memstore.deploy.processes import ready_line

TIMEOUT = 3.0


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(autouse=True)
def no_curve_env(monkeypatch):
    for name in (ENV_CURVE_DIR, ENV_CURVE_SERVER_KEY, ENV_CURVE_CLIENT_KEY):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module", params=["tcp", "ipc"])
def secure(request):
    with LocalCluster(2, ipc=request.param == "ipc", secure=True) as cluster:
        with cluster.client(timeout=10) as client:
            client.put_tensor("secret", np.arange(8))
        yield cluster


def _strangers(cluster) -> dict[str, auth.ClientKeys | None]:
    good = auth.client_keys(directory=cluster.keys_dir)
    other = auth.generate()
    return {
        "no key": None,
        "unknown client key": auth.ClientKeys(good.server_public, other.public, other.secret),
        "wrong server key": auth.ClientKeys(other.public, good.public, good.secret),
    }


def test_keygen_writes_private_key_pairs(tmp_path, capsys):
    folder = tmp_path / "keys"
    assert cli.main(["keygen", str(folder)]) == 0
    assert ENV_CURVE_DIR in capsys.readouterr().out
    assert _mode(folder) == 0o700
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["client.key", "client.key_secret", "server.key", "server.key_secret"]
    assert all(_mode(folder / n) == 0o600 for n in names)
    assert cli.main(["keygen", str(folder)]) == 1  # keys there: kept unless --force
    assert cli.main(["keygen", "--force", str(folder)]) == 0


def test_right_key_works(secure):
    with secure.client(timeout=10) as client:
        assert client.get_tensor("secret").tolist() == list(range(8))
        client.put_tensor("new", np.ones(4))
        futures = [client.get_tensor_async("new") for _ in range(10)]  # the pump path
        memstore.wait(futures, timeout=10)
        assert all(f.result().sum() == 4 for f in futures)
        client.delete_tensor("new")


@pytest.mark.parametrize("who", ["no key", "unknown client key", "wrong server key"])
def test_wrong_or_no_key_gets_auth_error_naming_the_shard(secure, who):
    curve = _strangers(secure)[who]
    start = time.monotonic()
    with pytest.raises(memstore.AuthError) as caught:
        memstore.Client(secure.address, timeout=TIMEOUT, curve=curve)
    assert time.monotonic() - start < TIMEOUT
    assert any(a in str(caught.value) for a in secure.addresses), caught.value


def test_a_refused_client_stores_and_reads_nothing(secure):
    """Raw DEALERs without the right key send a put and a get: nothing arrives, nothing is
    answered, nothing is stored."""
    context = zmq.Context.instance()
    meta, buffer = tensors.encode(np.ones(2), "intruder")
    put = wire.request(1, "put", {"keys": ["intruder"], "metas": [meta]}, [buffer])
    for who, curve in _strangers(secure).items():
        for address in secure.addresses:
            socket = context.socket(zmq.DEALER)
            socket.setsockopt(zmq.LINGER, 0)
            if curve is not None:
                curve.apply(socket)
            socket.connect(address)
            try:
                socket.send_multipart(put)
                socket.send_multipart(wire.request(2, "get", {"keys": ["secret"]}))
                assert not socket.poll(500), f"{who}: {address} answered"
            finally:
                socket.close()
    with secure.client(timeout=10) as client:
        assert not client.tensor_exists("intruder")
        # The same raw request with the right key is answered: the refusal was the key's.
        socket = context.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        auth.client_keys(directory=secure.keys_dir).apply(socket)
        socket.connect(secure.addresses[0])
        try:
            socket.send_multipart(wire.request(2, "get", {"keys": ["secret"]}))
            assert socket.poll(10_000), "the right key got no answer"
        finally:
            socket.close()
        assert client.get_tensor("secret").tolist() == list(range(8))


def test_client_keys_from_the_environment(secure, monkeypatch):
    monkeypatch.setenv(ENV_CURVE_DIR, secure.keys_dir)
    with memstore.Client(secure.address, timeout=10) as client:
        assert client.tensor_exists("secret")
    monkeypatch.delenv(ENV_CURVE_DIR)
    monkeypatch.setenv(ENV_CURVE_SERVER_KEY, os.path.join(secure.keys_dir, "server.key"))
    monkeypatch.setenv(ENV_CURVE_CLIENT_KEY, os.path.join(secure.keys_dir, "client.key_secret"))
    with memstore.Client(secure.address, timeout=10) as client:
        assert client.tensor_exists("secret")
    monkeypatch.delenv(ENV_CURVE_CLIENT_KEY)
    with pytest.raises(memstore.MemstoreError, match=ENV_CURVE_CLIENT_KEY):
        memstore.Client(secure.address, timeout=TIMEOUT)


def test_key_files_readable_by_others_are_refused(tmp_path):
    made = auth.keygen(tmp_path / "keys")
    os.chmod(made["client"], 0o644)
    with pytest.raises(memstore.MemstoreError, match="chmod 600"):
        auth.client_keys(directory=tmp_path / "keys")
    os.chmod(made["server"], 0o640)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "memstore.server",
            "--port",
            "0",
            "--curve-secret-key",
            made["server"],
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "chmod 600" in result.stderr, result.stderr


@pytest.mark.parametrize("policy", ["--no-admin", "--admin-key"])
def test_admin_operations_need_the_admin_key(tmp_path, policy):
    admin_dir = tmp_path / "admin"
    admin = auth.keygen(admin_dir)
    extra = (
        ["--no-admin"] if policy == "--no-admin" else ["--admin-key", str(admin["client_public"])]
    )
    with LocalCluster(2, secure=True, extra_args=extra) as cluster:
        with cluster.client(timeout=10) as client:
            client.put_tensor("kept", np.ones(3))
            for call in (client.flush_db, client.shutdown):
                with pytest.raises(memstore.AuthError, match=r"refused (flush|shutdown)") as e:
                    call()
                assert any(a in str(e.value) for a in cluster.addresses)
            plain = auth.client_keys(directory=cluster.keys_dir)
            with pytest.raises(memstore.MemstoreError, match="refused cluster"):
                request_once(
                    cluster.addresses[0],
                    "cluster",
                    {"shards": cluster.addresses, "index": 0},
                    timeout=10,
                    curve=plain,
                )
            assert client.tensor_exists("kept")
            if policy == "--admin-key":
                server = plain.server_public
                holder = auth.client_keys(str(server.decode()), admin["client"])
                with memstore.Client(cluster.address, timeout=10, curve=holder) as boss:
                    boss.flush_db()
                assert not client.tensor_exists("kept")
        assert all(s.alive() for s in cluster.shards)  # nobody stopped them


def _memstore(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    memstore_bin = os.path.join(os.path.dirname(sys.executable), "memstore")
    return subprocess.run(
        [memstore_bin, *args],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("how", ["processes", pytest.param("mpi", marks=pytest.mark.mpi)])
def test_memstore_start_secure_admin_key(tmp_path, how):
    """``memstore start --secure --admin-key``: the client key reads and writes but may not
    flush, save or stop; the admin key may. ``--mpi``: the same through memstore-server --mpi."""
    if how == "mpi":
        pytest.importorskip("mpi4py")
        if not os.path.exists(os.path.join(os.path.dirname(sys.executable), "mpiexec")):
            pytest.skip("no mpiexec (pip install mpich)")
    admin = auth.keygen(tmp_path / "admin")
    address_file, keys_dir = tmp_path / "store.addr", tmp_path / "keys"
    start = ["start", "--secure", "--keys-dir", str(keys_dir), "--shards", "2", "--port", "0"]
    start += ["--address-file", str(address_file), "--log-dir", str(tmp_path / "logs")]
    start += ["--admin-key", str(admin["client_public"])] + (["--mpi"] if how == "mpi" else [])
    started = _memstore(*start)
    assert started.returncode == 0, started.stderr
    user = {ENV_CURVE_DIR: str(keys_dir)}
    boss = {ENV_CURVE_SERVER_KEY: str(keys_dir / "server.key"),
            ENV_CURVE_CLIENT_KEY: str(admin["client"])}  # fmt: skip
    try:
        assert f"export {ENV_CURVE_DIR}={keys_dir}" in started.stdout, started.stdout
        addresses = address_file.read_text().strip().split(",")
        client_keys = auth.client_keys(directory=keys_dir)
        with memstore.Client(addresses, timeout=10, curve=client_keys) as client:
            client.put_tensor("kept", np.arange(5))
            for call in (client.flush_db, lambda: client.save(str(tmp_path / "snap"))):
                with pytest.raises(memstore.AuthError, match="admin key"):
                    call()
            assert client.get_tensor("kept").tolist() == list(range(5))
            refused = _memstore("stop", "--address-file", str(address_file), env=user)
            assert refused.returncode == 1 and "admin key" in refused.stderr, refused
            assert client.tensor_exists("kept")  # still serving
            holder = auth.client_keys(str(keys_dir / "server.key"), admin["client"])
            with memstore.Client(addresses, timeout=10, curve=holder) as admin_client:
                admin_client.flush_db()
            assert not client.tensor_exists("kept")
        stopped = _memstore("stop", "--address-file", str(address_file), env=boss)
        assert stopped.returncode == 0, stopped.stderr
    finally:
        if address_file.exists():
            with open(keys_dir / "server.key_secret") as f:  # the cluster key stops them
                assert "secret-key" in f.read()
            cluster = {ENV_CURVE_SERVER_KEY: str(keys_dir / "server.key"),
                       ENV_CURVE_CLIENT_KEY: str(keys_dir / "server.key_secret")}  # fmt: skip
            _memstore("stop", "--address-file", str(address_file), env=cluster)


def test_memstore_start_admin_key_needs_secure(tmp_path):
    result = _memstore("start", "--port", "0", "--admin-key", str(tmp_path / "x.key"))
    assert result.returncode == 1 and "need --secure" in result.stderr, result.stderr


def test_admin_options_need_curve():
    result = subprocess.run(
        [sys.executable, "-m", "memstore.server", "--port", "0", "--no-admin"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "--curve-secret-key" in result.stderr


def test_binding_beyond_loopback_without_curve_warns(tmp_path):
    assert auth.exposure_warning("tcp://127.0.0.1:5", False) is None
    assert auth.exposure_warning("tcp://0.0.0.0:5", True) is None
    assert auth.exposure_warning("ipc:///tmp/x", False) is None
    err = tmp_path / "err"
    with open(err, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "memstore.server", "--host", "0.0.0.0", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
        )
    try:
        line = ready_line(process.stdout, 30)
        assert line and line.startswith(READY_LINE)
    finally:
        process.terminate()
        process.wait(timeout=30)
        process.stdout.close()
    text = err.read_text()
    assert "WITHOUT authentication" in text and "0.0.0.0" in text, text


def test_ipc_socket_and_its_directory_are_private(tmp_path):
    from memstore.server.shard import Shard

    path = tmp_path / "new" / "sub" / "s.sock"
    shard = Shard(f"ipc://{path}")
    try:
        assert _mode(path.parent) == 0o700
        assert _mode(path) & 0o077 == 0
    finally:
        shard.close()
    with LocalCluster(1, ipc=True) as cluster:
        assert _mode(os.path.dirname(cluster.addresses[0][len("ipc://") :])) == 0o700


_MPI_JOB = """
import glob, os, numpy as np, memstore
from memstore import mpi
with mpi.init(secure=True, timeout=60, grace=5, client_timeout=10) as store:
    if store.is_server:
        store.serve()
    else:
        store.client.put_tensor(f"r{store.rank}", np.ones(3))
        store.comm.Barrier()
        assert all(store.client.tensor_exists(f"r{r}") for r in range(store.comm.Get_size()))
        tcp = [a for a in store.addresses if a.startswith("tcp://")]
        try:
            memstore.Client(tcp, timeout=3)
        except memstore.AuthError as exc:
            assert tcp[0] in str(exc), exc
        else:
            raise AssertionError("a client without the key was served")
        assert not glob.glob(os.path.join(os.environ["TMPDIR"], "**", "*key*"), recursive=True)
        os.write(1, f"ok {store.rank}\\n".encode())
"""


def test_mpi_init_secure_broadcasts_the_key(tmp_path):
    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which(
        "mpiexec"
    )
    if mpiexec is None:
        pytest.skip("no mpiexec (pip install mpich)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMSTORE_", "PMI_"))}
    env["TMPDIR"] = str(tmp_path)
    result = subprocess.run(
        [mpiexec, "-n", "3", sys.executable, "-c", _MPI_JOB],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert sorted(line for line in result.stdout.splitlines() if line.startswith("ok ")) == [
        "ok 0",
        "ok 1",
    ], out
