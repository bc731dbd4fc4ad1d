"""Silent peers noticed in seconds (MEMSTORE_HEARTBEAT), against real shard processes.

A SIGSTOPped process is a silent peer: it answers no heartbeat while its kernel keeps the
socket open and even accepts new connections, which is what a crashed node or a cut link
looks like from the other side (no FIN, no RST). SIGCONT heals it. Clients here wait 30 s
for an answer and heartbeats are 1.5 s, so "failed before the timeout" is what is checked,
with bounds far from both on a busy machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest

import memstore
from memstore import config
from memstore.placement import key_shard

HEARTBEAT = 1.5  # seconds: pings every 0.375 s, a peer silent for 0.75 s is dropped
TIMEOUT = 30.0  # the client's timeout, which a silent shard must not cost
#: Longest a request to a silent shard may take to fail: detection (<= HEARTBEAT) plus
#: slack for a loaded 2-core machine, and still far under TIMEOUT.
DETECTED = 8.0
SHARDS = 3


@pytest.fixture
def cluster(monkeypatch):
    monkeypatch.setenv(config.ENV_HEARTBEAT, str(HEARTBEAT))  # shards and clients alike
    # ZeroMQ's heartbeats: the same-node Unix path has none (a peer that dies on the node
    # closes its socket; docs/design.md), so these clients are kept on ZeroMQ.
    monkeypatch.setenv(config.ENV_UNIX, "0")
    with memstore.LocalCluster(shards=SHARDS) as cluster:
        yield cluster


def _keys(shards: int = SHARDS, prefix: str = "k") -> list[str]:
    """One key per shard, by shard index."""
    return [next(f"{prefix}{i}" for i in range(10_000) if key_shard(f"{prefix}{i}", shards) == s)
            for s in range(shards)]  # fmt: skip


@contextmanager
def _stopped(process: subprocess.Popen):
    """The process stopped (silent, its sockets open) inside the block, running after."""
    os.kill(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(process.pid, signal.SIGCONT)


def _fails_naming(call, address: str, error=memstore.ConnectionLost) -> float:
    """Seconds ``call`` took to raise ``error`` naming ``address``."""
    started = time.monotonic()
    with pytest.raises(error) as caught:
        call()
    assert address in str(caught.value)
    return time.monotonic() - started


def _fill(client, keys: list[str]) -> None:
    for key in keys:
        client.put_tensor(key, np.array([1.0, 2.0], dtype=np.float32))


def _healthy_reader(client, keys: list[str], stop: threading.Event, report: dict) -> None:
    """Reads the healthy shards' keys until told to stop: the worst latency, any error."""
    worst, reads = 0.0, 0
    try:
        while not stop.is_set() and reads < 100_000:
            for key in keys:
                started = time.monotonic()
                assert client.get_tensor(key).tolist() == [1.0, 2.0]
                worst = max(worst, time.monotonic() - started)
                reads += 1
            time.sleep(0.01)
    except Exception as exc:  # reported to the test thread
        report["error"] = exc
    report["worst"], report["reads"] = worst, reads


def test_silent_shard_fails_fast_other_shards_serve_and_it_comes_back(cluster):
    keys = _keys()
    silent, address = cluster.shards[1].process, cluster.addresses[1]
    with cluster.client(timeout=TIMEOUT) as client:
        _fill(client, keys)
        parked: dict = {}

        def park() -> None:  # a poll parked on the shard when it goes silent
            parked["took"] = _fails_naming(
                lambda: client.poll_tensor(_keys(prefix="never")[1], 100, 60_000), address
            )

        poller = threading.Thread(target=park)
        poller.start()
        deadline = time.monotonic() + 10
        while sum(i["parked"] for i in client.get_db_node_info()) < 1:
            assert time.monotonic() < deadline, "the poll never parked"
            time.sleep(0.05)
        stop, report = threading.Event(), {}
        reader = threading.Thread(
            target=_healthy_reader, args=(client, [keys[0], keys[2]], stop, report)
        )
        reader.start()
        try:
            with _stopped(silent):
                first = _fails_naming(lambda: client.get_tensor(keys[1]), address)
                poller.join(DETECTED)
                later = [_fails_naming(lambda: client.get_tensor(keys[1]), address)
                         for _ in range(5)]  # fmt: skip
                put = _fails_naming(lambda: client.put_tensor(keys[1], np.zeros(2)), address)
            healed = time.monotonic()
            while True:  # the same client reads again, without being made anew
                try:
                    value = client.get_tensor(keys[1])
                    break
                except memstore.ConnectionLost:
                    assert time.monotonic() - healed < DETECTED, "no recovery"
                    time.sleep(0.05)
            recovered = time.monotonic() - healed
        finally:
            stop.set()
            reader.join(30)
            poller.join(30)
        assert first < DETECTED, first
        assert parked.get("took", TIMEOUT) < DETECTED + HEARTBEAT, parked
        assert max(later) < 1.0, later  # while it is gone: at once, as for a dead shard
        assert put < 1.0, put
        assert value.tolist() == [1.0, 2.0]  # nothing lost, and no ghost write of the put
        assert recovered < 5.0, recovered
        assert "error" not in report, report
        assert report["reads"] > 0 and report["worst"] < 2.0, report
        for key in keys:
            assert client.get_tensor(key).tolist() == [1.0, 2.0]


def test_several_threads_see_the_silent_shard_fail_fast(cluster):
    keys = _keys()
    silent, address = cluster.shards[2].process, cluster.addresses[2]
    with cluster.client(timeout=TIMEOUT) as client:
        _fill(client, keys)
        took: list[float] = []
        errors: list[BaseException] = []

        def ask() -> None:
            try:
                for _ in range(3):
                    took.append(_fails_naming(lambda: client.get_tensor(keys[2]), address))
            except BaseException as exc:  # reported to the test thread
                errors.append(exc)

        with _stopped(silent):
            threads = [threading.Thread(target=ask) for _ in range(6)]
            for thread in threads:
                thread.start()
            asynchronous = _fails_naming(lambda: client.get_tensor_async(keys[2]).result(), address)
            for thread in threads:
                thread.join(TIMEOUT)
            assert client.get_tensor(keys[0]).tolist() == [1.0, 2.0]
        assert not errors, errors
        assert len(took) == 18 and max(took) < DETECTED, took
        assert asynchronous < DETECTED, asynchronous
        deadline = time.monotonic() + DETECTED
        while True:
            try:
                assert client.get_tensor(keys[2]).tolist() == [1.0, 2.0]
                break
            except memstore.ConnectionLost:
                assert time.monotonic() < deadline, "no recovery"
                time.sleep(0.05)


def test_model_run_with_an_input_on_a_silent_shard_is_a_model_error(monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setenv(config.ENV_HEARTBEAT, str(HEARTBEAT))
    with memstore.LocalCluster(shards=2) as cluster, cluster.client(timeout=TIMEOUT) as client:
        here, there = _keys(2)  # the run goes to the first input's shard, 0
        beside = f"{{{here}}}.sum"  # an output on shard 0 too
        client.set_script("add", "def add(a, b):\n    return a + b\n")
        client.put_tensor(here, np.ones(2, dtype=np.float32))
        client.put_tensor(there, np.ones(2, dtype=np.float32))
        client.run_script("add", "add", [here, there], [beside])
        client.delete_tensor(beside)
        with _stopped(cluster.shards[1].process):
            stage = _fails_naming(  # an output the silent shard owns
                lambda: client.run_script("add", "add", [here, here], [_keys(2, "out")[1]]),
                cluster.addresses[1],
                memstore.ModelError,
            )
            fetch = _fails_naming(  # an input it holds
                lambda: client.run_script("add", "add", [here, there], [beside]),
                cluster.addresses[1],
                memstore.ModelError,
            )
            assert not client.tensor_exists(beside)  # all or nothing
        assert fetch < DETECTED and stage < DETECTED, (fetch, stage)


_PARKED_CLIENT = """
import sys, memstore
client = memstore.Client(sys.argv[1], timeout=120)
print("parking", flush=True)
client.poll_tensor(sys.argv[2], 100, 100_000)
"""


def test_shard_drops_the_waits_of_a_silent_client(cluster):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with cluster.client(timeout=TIMEOUT) as watcher:
        child = subprocess.Popen(
            [sys.executable, "-c", _PARKED_CLIENT, cluster.address, _keys(prefix="never")[0]],
            stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        try:
            assert child.stdout.readline().strip() == "parking"

            def parked() -> int:
                return watcher.get_db_node_info([cluster.addresses[0]])[0]["parked"]

            deadline = time.monotonic() + 20
            while parked() < 1:
                assert time.monotonic() < deadline, "the child's poll never parked"
                time.sleep(0.05)
            with _stopped(child):
                stopped = time.monotonic()
                while parked() > 0:
                    assert time.monotonic() - stopped < DETECTED, "the wait was kept"
                    time.sleep(0.05)
        finally:
            child.kill()
            child.wait(30)
