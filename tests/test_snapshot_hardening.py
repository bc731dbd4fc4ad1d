"""Snapshots under crashes, failed saves, hostile files and other local users (issue 25,
items 5, 10, 11 and 12), on real shard processes.

Crashes and failures at a given point of a save come from the test-only fault hook
(``snapdir.FAULT_ENV``: a file naming the point and the shard), which the shard reads at
each save: ``exit`` ends the shard with SIGKILL (kill -9) at that point.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import stat
import subprocess
import sys
import time

import msgpack
import numpy as np
import pytest

import memstore
from memstore.placement import key_shard
from memstore.server import snapdir, snapshot

KEYS = [f"k{i}" for i in range(12)]
SERVER = [sys.executable, "-m", "memstore.server", "--port", "0"]


def _put(client: memstore.Client, version: int) -> None:
    for key in KEYS:
        client.put_tensor(key, np.full(1000, version, dtype=np.int32))


def _versions(client: memstore.Client) -> dict[str, int]:
    return {key: int(client.get_tensor(key)[0]) for key in KEYS}


def _restored(directory, shards: int = 2) -> dict[str, int]:
    with (
        memstore.LocalCluster(shards=shards, restore=directory) as cluster,
        cluster.client(timeout=30) as client,
    ):
        return _versions(client)


@pytest.fixture
def fault(tmp_path, monkeypatch):
    """Arm the fault hook for shards started after it: ``fault("exit-after-rename 1")``."""
    path = tmp_path / "fault"
    monkeypatch.setenv(snapdir.FAULT_ENV, str(path))
    return lambda line: path.write_text(line)


def _listing(directory) -> list[str]:
    return sorted(os.listdir(directory))


# -- item 5: generations, crashes, failed saves, leftovers, a second store ------------------


def test_a_crash_between_rename_and_manifest_leaves_the_previous_snapshot(tmp_path, fault):
    snap = tmp_path / "snap"
    with memstore.LocalCluster(shards=2) as cluster, cluster.client(timeout=10) as client:
        assert {key_shard(k, 2) for k in KEYS} == {0, 1}
        _put(client, 1)
        client.save(snap)
        _put(client, 2)
        fault("exit-after-rename 1")  # shard 1 dies with its new file in place
        with pytest.raises(memstore.MemstoreError):
            client.save(snap)
        assert cluster.shards[1].process.wait(30) == -signal.SIGKILL
    # The manifest still names generation 1 whole: every key comes back as version 1.
    assert _restored(snap) == dict.fromkeys(KEYS, 1)


def test_a_failed_shard_save_never_mixes_generations(tmp_path, fault):
    snap = tmp_path / "snap"
    with memstore.LocalCluster(shards=2) as cluster, cluster.client(timeout=10) as client:
        _put(client, 1)
        client.save(snap)
        _put(client, 2)
        fault("fail-before-rename 1")
        with pytest.raises(memstore.SnapshotError, match="test fault"):
            client.save(snap)
    assert _restored(snap) == dict.fromkeys(KEYS, 1)  # not shard 0's keys at version 2
    manifest = json.loads((snap / "manifest.json").read_text())
    assert sorted(manifest["pending"]["files"]) == ["0"]  # waits for shard 1's next save
    assert not [n for n in _listing(snap) if n.startswith(".tmp-")]  # the failed temp went


def test_only_some_shards_saved_is_refused_not_mixed(tmp_path):
    snap = tmp_path / "snap"
    with memstore.LocalCluster(shards=2) as cluster, cluster.client(timeout=10) as client:
        _put(client, 1)
        client.save(snap, cluster.addresses[:1])
    with pytest.raises(memstore.MemstoreError, match=r"no complete generation.*shard\(s\) 0"):
        memstore.LocalCluster(shards=2, restore=snap)


def test_leftovers_of_dead_saves_are_cleaned_by_the_next_save(tmp_path, fault):
    """One shard, so that no other shard's save cleans up before the test looks."""
    snap = tmp_path / "snap"
    with memstore.LocalCluster(shards=1) as cluster:
        with cluster.client(timeout=10) as client:
            _put(client, 1)
            client.save(snap)
        first = set(_listing(snap))
        for point, left in [("before-rename", ".tmp-"), ("after-rename", "shard-0-")]:
            fault(f"exit-{point} 0")  # killed mid-save: a temp file, then an unrecorded file
            with cluster.client(timeout=10) as client, pytest.raises(memstore.MemstoreError):
                client.save(snap)
            assert cluster.shards[0].process.wait(30) == -signal.SIGKILL
            assert [n for n in set(_listing(snap)) - first if n.startswith(left)], point
            fault("")
            cluster.restart_shard(0, restore=snap)
        with cluster.client(timeout=10) as client:
            assert _versions(client) == dict.fromkeys(KEYS, 1)
            (result,) = client.save(snap)
    manifest = json.loads((snap / "manifest.json").read_text())
    assert manifest["files"]["0"]["file"] == os.path.basename(result["file"])
    assert "pending" not in manifest and manifest["generation"] == 2
    assert [n for n in _listing(snap) if not n.startswith(".")] == sorted(
        [os.path.basename(result["file"]), "manifest.json"]
    )
    assert not [n for n in _listing(snap) if n.startswith(".tmp-")]


def _reached(path, timeout: float = 30) -> None:
    """Wait until ``path`` exists (the fault hook's mark that a shard waits), bounded."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def test_a_second_store_saving_into_the_same_directory_is_refused(tmp_path, fault, monkeypatch):
    snap = tmp_path / "snap"
    with memstore.LocalCluster(shards=1) as first, first.client(timeout=30) as one:
        monkeypatch.delenv(snapdir.FAULT_ENV)  # the second store saves without faults
        with memstore.LocalCluster(shards=1) as second, second.client(timeout=10) as two:
            one.put_tensor("a", np.ones(3))
            two.put_tensor("b", np.ones(3))
            os.mkfifo(tmp_path / "fault.go")
            fault("wait-before-rename 0")  # the first store waits mid-save, its lock held
            saving = one.save_async(snap)
            try:
                _reached(tmp_path / "fault.reached")
                with pytest.raises(memstore.SnapshotError, match="in use: another store"):
                    two.save(snap)
            finally:
                fault("")
                with open(tmp_path / "fault.go", "w"):  # lets the first store go on
                    pass
            (result,) = saving.result(30)
            manifest = json.loads((snap / "manifest.json").read_text())
            assert manifest["shards"] == first.addresses
            assert manifest["files"]["0"]["sha256"] == result["sha256"]
            two.save(snap)  # once the first store's save ended, the directory is free
            manifest = json.loads((snap / "manifest.json").read_text())
            assert manifest["shards"] == second.addresses


# -- item 10: sizes beyond the file, FIFOs, and a failed --restore ---------------------------


def _hostile_snapshot(directory, declared: int) -> str:
    """A 2 MiB snapshot whose one entry declares a frame of ``declared`` bytes."""
    directory.mkdir(mode=0o700)
    shards = ["tcp://127.0.0.1:1"]
    body = bytearray(snapshot.MAGIC)
    for record in (
        {"format": 1, "index": 0, "shards": shards, "created": 0.0, "entries": 1},
        {"k": "x", "t": "tensor", "m": {"dtype": "uint8", "shape": [4]}, "s": [declared]},
    ):
        packed = msgpack.packb(record)
        body += len(packed).to_bytes(4, "big") + packed
    body += bytes(2 << 20)
    digest = hashlib.sha256(body).digest()
    (directory / "shard-0-hostile.msnap").write_bytes(bytes(body) + digest)
    manifest = {"format": 1, "shards": shards, "files": {"0": {
        "file": "shard-0-hostile.msnap", "sha256": digest.hex()}}}  # fmt: skip
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return "shard-0-hostile.msnap"


def _serve_and_touch(directory) -> tuple[subprocess.Popen, Exception]:
    """A lone ``memstore-server --restore`` and the error its first data request gets."""
    server = subprocess.Popen(
        [*SERVER, "--restore", str(directory)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    line = server.stdout.readline().decode()
    address = line.rsplit(" ", 1)[1].strip()
    with (
        memstore.Client(address, timeout=10) as client,
        pytest.raises(memstore.MemstoreError) as caught,
    ):
        client.get_tensor("x")
    return server, caught.value


def _refused(error: Exception, stderr: str, *words: str) -> None:
    """The caller got SnapshotError saying ``words`` (or lost the connection, when the
    stopping shard's close reached the client before its answer did), and the server's
    stderr says them too."""
    assert isinstance(error, (memstore.SnapshotError, memstore.ConnectionLost)), error
    for word in words:
        assert word in stderr, stderr
        assert isinstance(error, memstore.ConnectionLost) or word in str(error), error


@pytest.mark.parametrize("declared", [3 << 30, 10**11, -1], ids=["3GiB", "1e11", "-1"])
def test_a_frame_larger_than_the_file_is_refused_before_allocating(tmp_path, declared):
    name = _hostile_snapshot(tmp_path / "snap", declared)
    # Linux keeps a process's peak RSS across fork and exec: a child of this test process
    # starts from the test's own peak (torch imported by earlier tests: ~700 MiB), so the
    # shard may use at most 400 MiB beyond that (a 3 GiB allocation could not hide in it).
    inherited = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    server, error = _serve_and_touch(tmp_path / "snap")
    try:
        _, status, usage = os.wait4(server.pid, 0)  # the shard's peak RSS (VmHWM), in KiB
        server.returncode = os.waitstatus_to_exitcode(status)
        assert usage.ru_maxrss < inherited + (400 << 10), f"peak RSS {usage.ru_maxrss} KiB"
        # A failed --restore exits non-zero and says why on stderr.
        assert server.returncode == 1
        stderr = server.stderr.read().decode()
        assert "memstore-server: --restore failed" in stderr
        _refused(error, stderr, name, "declares")
    finally:
        if server.returncode is None:
            server.kill()
            server.wait(30)


def test_a_fifo_in_place_of_a_snapshot_file_or_manifest_is_refused(tmp_path):
    snap = tmp_path / "snap"
    with memstore.LocalCluster(shards=1) as cluster, cluster.client(timeout=10) as client:
        client.put_tensor("x", np.ones(3))
        (result,) = client.save(snap)
    os.unlink(result["file"])
    os.mkfifo(result["file"])
    server, error = _serve_and_touch(snap)
    try:
        assert server.wait(30) == 1
        stderr = server.stderr.read().decode()
        _refused(error, stderr, os.path.basename(result["file"]), "not a regular file")
    finally:
        if server.returncode is None:
            server.kill()
            server.wait(30)
    os.unlink(snap / "manifest.json")
    os.mkfifo(snap / "manifest.json")
    done = subprocess.run(
        [*SERVER, "--restore", str(snap)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "manifest.json is not a regular file" in done.stderr


# -- items 11 and 12: who may write the directory, symlinks, modes ---------------------------


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o770, 0o720, 0o702])
def test_save_refuses_a_directory_others_may_write(tmp_path, mode):
    snap = tmp_path / "snap"
    snap.mkdir()
    snap.chmod(mode)
    with memstore.LocalCluster(shards=1) as cluster, cluster.client(timeout=10) as client:
        client.put_tensor("x", np.ones(3))
        with pytest.raises(memstore.SnapshotError, match=f"{snap} is writable by other users"):
            client.save(snap)
    assert _listing(snap) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the directory away")
def test_save_refuses_a_directory_of_another_user(tmp_path):
    snap = tmp_path / "snap"
    snap.mkdir(mode=0o700)
    os.chown(snap, 65534, 65534)  # nobody
    with memstore.LocalCluster(shards=1) as cluster, cluster.client(timeout=10) as client:
        client.put_tensor("x", np.ones(3))
        with pytest.raises(memstore.SnapshotError, match=f"{snap} belongs to uid 65534"):
            client.save(snap)
    assert _listing(snap) == []


def test_planted_symlinks_never_redirect_a_write(tmp_path):
    snap = tmp_path / "snap"
    snap.mkdir(mode=0o700)
    victims = {}
    with memstore.LocalCluster(shards=1) as cluster, cluster.client(timeout=10) as client:
        client.put_tensor("x", np.ones(3))
        pid = client.get_db_node_info()[0]["pid"]
        cluster_hash = hashlib.sha256(json.dumps(cluster.addresses).encode()).hexdigest()[:16]
        names = [  # what the old code wrote, what this code writes, and guesses
            f".shard-0.msnap.tmp-{pid}", f"manifest.json.tmp-{pid}", "shard-0.msnap",
            ".manifest.lock", "manifest.json", f".tmp-{pid}", "shard-0-0.msnap",
        ]  # fmt: skip
        for i, name in enumerate(names):
            victims[name] = tmp_path / f"victim{i}"
            victims[name].write_bytes(b"precious")
            os.symlink(victims[name], snap / name)
        (result,) = client.save(snap)  # written beside them, through none of them
        assert {n: v.read_bytes() for n, v in victims.items()} == dict.fromkeys(
            victims, b"precious"
        )
        assert snapshot.read_manifest(str(snap))["files"]["0"]["sha256"] == result["sha256"]
        for name in [".lock", f".saving-{cluster_hash}-0.lock"]:  # the locks: refused
            victims[name] = tmp_path / f"victim-{name}"
            victims[name].write_bytes(b"precious")
            if os.path.lexists(snap / name):
                os.unlink(snap / name)
            os.symlink(victims[name], snap / name)
            with pytest.raises(memstore.SnapshotError, match="symbolic link"):
                client.save(snap)
            os.unlink(snap / name)
    for name, victim in victims.items():
        assert victim.read_bytes() == b"precious", name
    with (
        memstore.LocalCluster(shards=1, restore=snap) as again,
        again.client(timeout=10) as client,
    ):
        assert client.get_tensor("x").tolist() == [1, 1, 1]


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_snapshots_are_private_whatever_the_umask(tmp_path, umask):
    snap = tmp_path / "new" / "snap"
    old = os.umask(umask)
    try:  # the shards inherit the umask
        cluster = memstore.LocalCluster(shards=2)
    finally:
        os.umask(old)
    with cluster, cluster.client(timeout=10) as client:
        _put(client, 1)
        client.save(snap)
        client.save(snap)
    assert stat.S_IMODE(os.stat(snap).st_mode) == 0o700
    listed = _listing(snap)
    assert "manifest.json" in listed and len([n for n in listed if n.endswith(".msnap")]) == 2
    for name in listed:
        assert stat.S_IMODE(os.lstat(snap / name).st_mode) == 0o600, name
