"""Fixtures that start real shard processes and always stop them.

``cluster`` is parametrised over the paths a client takes: the same-node Unix socket and
ZeroMQ over TCP and ipc://. It is module-scoped (starting shards costs ~0.5 s) and
``client`` flushes it before each test so tests stay independent. The default suite runs
a test on the Unix path, what a same-node client uses; its ZeroMQ variants are ``slow``
(``make test-all``) unless the test is marked ``every_path``: the protocol's own cases
(parked waits, batches, cancels, bounded sockets, the frames a reply arrives in), which
run on every path always.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import time

import pytest

import memstore

os.environ.pop("MEMSTORE_ADDRESS", None)  # tests name their cluster explicitly
os.environ.pop("SSDB", None)
os.environ.pop("SSKEYIN", None)
os.environ.pop("SSKEYOUT", None)


#: The ``cluster`` paths that run in the default suite only for ``every_path`` tests.
ZMQ_ONLY_WHEN_MARKED = ("tcp", "ipc")


@pytest.hookimpl(tryfirst=True)  # before ``-m 'not slow'`` deselects
def pytest_collection_modifyitems(items):
    """A ``cluster`` test's tcp and ipc variants are ``slow`` unless it is ``every_path``."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is None or callspec.params.get("cluster") not in ZMQ_ONLY_WHEN_MARKED:
            continue
        if item.get_closest_marker("every_path") is None:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="module", params=["unix", "tcp", "ipc"])
def cluster(request):
    """A 3-shard store on loopback TCP or ipc:// sockets; ``unix``: TCP shards that the
    ``client`` fixture reaches by their Unix sockets (the same-node direct path), where
    ``tcp`` and ``ipc`` clients are kept on ZeroMQ (``MEMSTORE_UNIX=0``)."""
    with memstore.LocalCluster(shards=3, ipc=request.param == "ipc") as running:
        running.path = "unix" if request.param == "unix" else "zmq"
        yield running


@pytest.fixture
def client(cluster, monkeypatch):
    """A client of ``cluster``, on an empty store, closed after the test, on the path the
    cluster's parameter names (every client the test makes itself takes it too)."""
    monkeypatch.setenv("MEMSTORE_UNIX", "1" if cluster.path == "unix" else "0")
    with cluster.client(timeout=10) as connected:
        connected.flush_db()
        assert set(connected.paths()) == {cluster.path}
        yield connected


@pytest.fixture(params=["unix", "zmq"])
def same_node_path(request, monkeypatch):
    """The test runs twice: the clients it makes after this fixture reach same-node shards by
    their Unix sockets, then by ZeroMQ (``MEMSTORE_UNIX=0``). Name it before ``client``."""
    monkeypatch.setenv("MEMSTORE_UNIX", "1" if request.param == "unix" else "0")
    return request.param


@pytest.fixture
def single():
    """A fresh 1-shard store for tests that break or fill it."""
    with memstore.LocalCluster(shards=1) as running:
        yield running


class OtherUser:
    """A second Unix account: ``run(work)`` calls ``work()`` in a forked child of it."""

    def __init__(self, uid: int, gid: int):
        self.uid, self.gid = uid, gid

    def run(self, work, timeout_s: float = 60.0):
        """``work()`` run in a forked child as this account: its JSON result (the child is
        killed after ``timeout_s``)."""
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: drop to the other account, do the work, report, exit
            code = 1
            try:
                os.close(read_end)
                os.setgroups([])
                os.setgid(self.gid)
                os.setuid(self.uid)
                os.write(write_end, json.dumps(work()).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        deadline = time.monotonic() + timeout_s
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError("the other user's process did not finish")
            time.sleep(0.05)
        with os.fdopen(read_end, "rb") as out:
            data = out.read()
        assert data, "the other user's process failed"
        return json.loads(data)


@pytest.fixture
def other_user():
    """A second Unix account made for the test (removed after)."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("needs root and useradd to make a second Unix account")
    name = f"mst{os.getpid() % 100000}"
    subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", name], check=True, timeout=30)
    try:
        entry = pwd.getpwnam(name)
        yield OtherUser(entry.pw_uid, entry.pw_gid)
    finally:
        subprocess.run(["userdel", name], check=False, timeout=30)
