"""Snapshots and restore, against real shard processes: every kind of value comes back
bit-identical, onto the same or another shard count; a save under concurrent writes is
consistent; torn, altered and incomplete snapshots are refused naming the file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

import memstore
from memstore.kinds import LIST, TENSOR
from memstore.placement import key_shard
from memstore.server.store import Entry, Store

SCRIPT = "def twice(x):\n    return x * 2\n"


class PlusOne(torch.nn.Module):
    def forward(self, x):
        return x + 1


def _values() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    values = {f"t{i}": rng.standard_normal(i * 37).astype(np.float32) for i in range(40)}
    values["big"] = rng.integers(0, 255, 4 << 20, dtype=np.uint8)
    values["scalar"] = np.array(3.5, dtype=np.float64)
    values["empty"] = np.zeros((0, 3), dtype=np.int16)
    values["{tag}.fortran"] = np.asfortranarray(np.arange(12, dtype=np.int64).reshape(3, 4))
    return values


def _fill(client: memstore.Client) -> dict[str, np.ndarray]:
    values = _values()
    for key, value in values.items():
        client.put_tensor(key, value)
    dataset = memstore.DataSet("ds")
    dataset.add_tensor("u", np.arange(5, dtype=np.int32))
    dataset.add_meta_string("note", "hello")
    client.put_dataset(dataset)
    for i in range(3):
        item = memstore.DataSet(f"item{i}")
        item.add_tensor("x", np.full(2, i, dtype=np.float32))
        client.append_to_list("queue", item)
    client.set_script("double", SCRIPT)
    client.set_model("plus1", torch.jit.script(PlusOne()))
    client.set_model("plus1.batched", torch.jit.script(PlusOne()), batch_size=8)
    return values


def _check(client: memstore.Client, values: dict[str, np.ndarray]) -> None:
    for key, value in values.items():
        got = client.get_tensor(key)
        assert got.dtype == value.dtype and got.shape == value.shape, key
        assert got.tobytes() == np.ascontiguousarray(value).tobytes(), key
    dataset = client.get_dataset("ds")
    assert dataset.get_tensor("u").tolist() == [0, 1, 2, 3, 4]
    assert dataset.get_meta_strings("note") == ["hello"]
    items = client.get_datasets_from_list("queue")
    assert [d.get_tensor("x").tolist() for d in items] == [[i, i] for i in range(3)]
    assert client.get_script("double") == SCRIPT
    _run_everywhere(client)


def _run_everywhere(client: memstore.Client) -> None:
    """The restored model, batched model and script run at once on every shard (each
    takes its run on the shard of its first input), with the right outputs."""
    shards = len(client.get_db_node_info())
    for shard in range(shards):
        key = next(f"in{i}" for i in range(10_000) if key_shard(f"in{i}", shards) == shard)
        client.put_tensor(key, np.arange(3, dtype=np.float32))
        client.run_script("double", "twice", [key], [f"{key}.twice"])
        client.run_model("plus1", [key], [f"{key}.plus1"])
        client.run_model("plus1.batched", [key], [f"{key}.batched"])
        assert client.get_tensor(f"{key}.twice").tolist() == [0, 2, 4], shard
        assert client.get_tensor(f"{key}.plus1").tolist() == [1, 2, 3], shard
        assert client.get_tensor(f"{key}.batched").tolist() == [1, 2, 3], shard


def test_save_and_restore_every_kind_bit_identical(tmp_path):
    with memstore.LocalCluster(shards=3) as cluster, cluster.client(timeout=30) as client:
        values = _fill(client)
        results = client.save(tmp_path)
        keys = sorted(client.get_db_node_info(), key=lambda i: i["index"])
    names = [os.path.basename(r["file"]) for r in results]
    assert [n.split("-")[:2] for n in names] == [["shard", str(i)] for i in range(3)]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["shards"] == cluster.addresses
    for i, result in enumerate(results):
        entry = manifest["files"][str(i)]
        assert entry["sha256"] == result["sha256"] and entry["bytes"] == result["bytes"]
        assert os.path.getsize(result["file"]) == result["bytes"]
        assert result["keys"] == keys[i]["keys"]
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]  # renamed into place
    with (
        memstore.LocalCluster(shards=3, restore=tmp_path) as cluster,
        cluster.client(timeout=30) as client,
    ):
        _check(client, values)


def test_restore_three_shards_onto_two_rehashes_keys(tmp_path):
    with memstore.LocalCluster(shards=3) as cluster, cluster.client(timeout=30) as client:
        values = _fill(client)
        client.save(tmp_path)
    with (
        memstore.LocalCluster(shards=2, restore=tmp_path) as cluster,
        cluster.client(timeout=30) as client,
    ):
        infos = sorted(client.get_db_node_info(), key=lambda i: i["index"])
        stored = [*values, "ds", "queue", "item0", "item1", "item2"]  # list items are datasets
        owned = [key_shard(k, 2) for k in stored]
        # Each shard holds the keys it owns under 2 shards, plus the script and the two
        # models (replicated).
        assert [i["keys"] for i in infos] == [owned.count(0) + 3, owned.count(1) + 3]
        _check(client, values)


def test_restore_one_shard_onto_three(tmp_path):
    with memstore.LocalCluster(shards=1) as cluster, cluster.client(timeout=30) as client:
        values = _fill(client)
        client.save(tmp_path)
    with (
        memstore.LocalCluster(shards=3, restore=tmp_path) as cluster,
        cluster.client(timeout=30) as client,
    ):
        _check(client, values)


def test_snapshot_under_concurrent_puts_is_consistent(tmp_path):
    """Writers overwrite keys with arrays filled with one version number and push to a
    list while the save runs: each restored key is one whole version, no older than the
    last acknowledged before the save began and no newer than the last sent before it
    ended; the restored list is a prefix of what was pushed."""
    keys = [f"k{i}" for i in range(16)]
    size = 256 * 1024  # floats: 1 MiB per value
    with memstore.LocalCluster(shards=2) as cluster:
        acked = dict.fromkeys(keys, -1)
        sent = dict.fromkeys(keys, -1)
        pushed = []
        stop = threading.Event()
        errors = []

        def writer(mine: list[str]) -> None:
            try:
                with cluster.client(timeout=30) as client:
                    version = 0
                    while not stop.is_set():
                        for key in mine:
                            sent[key] = version
                            client.put_tensor(key, np.full(size, version, dtype=np.float32))
                            acked[key] = version
                        client.append_to_list("log", memstore.DataSet(f"v{version}"))
                        pushed.append(f"v{version}")
                        version += 1
            except Exception as exc:  # reported by the test, not lost in a thread
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(keys[i::2],)) for i in range(2)]
        with cluster.client(timeout=30) as client:
            for key in keys:
                client.put_tensor(key, np.full(size, -1, dtype=np.float32))
            for thread in threads:
                thread.start()
            time.sleep(0.5)
            for _ in range(10):  # a save that overlapped at least one write (bounded tries)
                before = dict(acked)
                client.save(tmp_path)
                after = dict(sent)
                if any(after[k] > before[k] for k in keys):
                    break
            time.sleep(0.2)
            stop.set()
            for thread in threads:
                thread.join(30)
            # The shard's order of the two writers' appends, not the order they noted them.
            final = [d.name for d in client.get_datasets_from_list("log")]
        assert not errors and not any(t.is_alive() for t in threads)
        assert sorted(final) == sorted(pushed)
        assert any(after[k] > before[k] for k in keys), "no save overlapped a write"
    with (
        memstore.LocalCluster(shards=2, restore=tmp_path) as cluster,
        cluster.client(timeout=30) as client,
    ):
        changed = 0
        for key in keys:
            value = client.get_tensor(key)
            assert value.shape == (size,)
            version = value[0]
            assert (value == version).all(), f"{key} is torn"
            assert before[key] <= version <= after[key], key
            changed += version != before[key]
        names = [d.name for d in client.get_datasets_from_list("log")]
        assert names == final[: len(names)]


def test_torn_file_is_refused_naming_it(tmp_path):
    with memstore.LocalCluster(shards=2) as cluster, cluster.client(timeout=30) as client:
        _fill(client)
        results = client.save(tmp_path)
    torn = results[1]["file"]
    with open(torn, "r+b") as file:
        file.truncate(os.path.getsize(torn) // 2)
    with pytest.raises(memstore.MemstoreError, match=r"shard-1-[0-9a-f]+\.msnap.*torn"):
        memstore.LocalCluster(shards=2, restore=tmp_path)


def test_altered_file_is_refused_naming_it(tmp_path):
    with memstore.LocalCluster(shards=2) as cluster, cluster.client(timeout=30) as client:
        _fill(client)
        results = client.save(tmp_path)
    altered = results[0]["file"]
    with open(altered, "r+b") as file:
        file.seek(os.path.getsize(altered) - 1000)  # inside tensor bytes: still parses
        byte = file.read(1)
        file.seek(-1, os.SEEK_CUR)
        file.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(memstore.MemstoreError, match=r"shard-0-[0-9a-f]+\.msnap fails its SHA-256"):
        memstore.LocalCluster(shards=1, restore=tmp_path)


def test_incomplete_or_missing_snapshot_is_refused(tmp_path):
    with memstore.LocalCluster(shards=2) as cluster, cluster.client(timeout=30) as client:
        _fill(client)
        client.save(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    del manifest["files"]["1"]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(memstore.MemstoreError, match="no file for shard 1 of 2"):
        memstore.LocalCluster(shards=2, restore=tmp_path)
    server = [sys.executable, "-m", "memstore.server", "--port", "0"]
    empty = tmp_path / "empty"
    empty.mkdir()
    done = subprocess.run(
        [*server, "--restore", str(empty)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "manifest.json not found" in done.stderr


def test_memstore_save_cli_and_server_restore(tmp_path):
    with memstore.LocalCluster(shards=2) as cluster, cluster.client(timeout=30) as client:
        values = _fill(client)
        done = subprocess.run(
            [sys.executable, "-m", "memstore.cli", "save", "--address", cluster.address,
             str(tmp_path)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "saved 2 shard(s)" in done.stdout and "MB/s" in done.stdout
    server = subprocess.Popen(
        [sys.executable, "-m", "memstore.server", "--port", "0", "--restore", str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stdout.readline()  # the ready line: the shard serves on its own
        address = line.rsplit(" ", 1)[1].strip()
        with memstore.Client(address, timeout=30) as client:
            _check(client, values)
    finally:
        server.terminate()
        server.wait(30)


def test_save_every_writes_snapshots_and_a_dead_shard_comes_back(tmp_path):
    args = ["--save-dir", str(tmp_path), "--save-every", "0.5"]
    cluster = memstore.LocalCluster(shards=2, extra_args=args)
    with cluster, cluster.client(timeout=30) as client:
        values = _fill(client)
        deadline = time.monotonic() + 30
        while True:  # the manifest's generation holds every key (counts only grew)
            infos = sorted(client.get_db_node_info(), key=lambda i: i["index"])
            path = tmp_path / "manifest.json"
            manifest = json.loads(path.read_text()) if path.exists() else {"files": {}}
            saved = [manifest["files"].get(str(i), {}).get("keys") for i in range(2)]
            if saved == [i["keys"] for i in infos]:
                break
            assert time.monotonic() < deadline, (infos, manifest)
            time.sleep(0.2)
        cluster.shards[1].process.kill()  # a node dies
        cluster.shards[1].process.wait(30)
        cluster.restart_shard(1, restore=tmp_path)
        with cluster.client(timeout=30) as fresh:  # the old one saw the shard down
            _check(fresh, values)


def test_save_without_a_directory_needs_save_dir(tmp_path):
    with (
        memstore.LocalCluster(shards=1) as cluster,
        cluster.client(timeout=30) as client,
        pytest.raises(memstore.SnapshotError, match="no --save-dir"),
    ):
        client.save()
    args = ["--save-dir", str(tmp_path)]
    with (
        memstore.LocalCluster(shards=1, extra_args=args) as cluster,
        cluster.client(timeout=30) as client,
    ):
        client.put_tensor("a", np.ones(3))
        (result,) = client.save()
        assert os.path.dirname(result["file"]) == str(tmp_path) and result["keys"] == 1
        assert os.path.basename(result["file"]).startswith("shard-0-")


# -- the store's side of a save: what a snapshot holds while the loop writes on --------------


def _tensor(key: str, n: int) -> Entry:
    meta = {"dtype": "uint8", "shape": [n]}
    return Entry.of(TENSOR, meta, [bytes(n)], key)


def test_values_replaced_during_a_save_count_against_max_memory():
    store = Store(max_memory=100_000)
    store.put("a", _tensor("a", 30_000))
    held = store.snapshot()
    assert [k for k, _ in held] == ["a"]
    store.put("a", _tensor("a", 30_000))  # the old value stays alive in the snapshot
    assert store.held > 30_000
    with pytest.raises(memstore.StoreFull, match="replaced during the running save"):
        store.put("b", _tensor("b", 40_000))
    store.end_snapshot()
    assert store.held == 0
    store.put("b", _tensor("b", 40_000))
    store.put("a", _tensor("a", 10))  # replaced outside a save: freed at once
    assert store.held == 0


def test_a_list_pushed_during_a_save_is_copied_not_changed():
    store = Store()
    store.list_push("l", ["a", "b"])
    held = dict(store.snapshot())
    store.list_push("l", ["c"])
    assert held["l"].meta == ["a", "b"]
    assert store.get("l", LIST).meta == ["a", "b", "c"]
    store.list_push("l", ["d"])  # the copy is this save's own: extended in place
    assert held["l"].meta == ["a", "b"] and len(store.get("l").meta) == 4
    store.end_snapshot()


def test_a_pickled_model_restored_under_models_all_runs(tmp_path):
    """A model stored with --models all (an eager nn.Module, cloudpickled) comes back from a
    snapshot runnable on every shard of a --models all store; a store that does not allow
    pickles leaves it out (restoring never bypasses --models)."""
    before, after = 1, 2  # also re-placed onto another shard count
    every = ["--models", "all"]
    with (
        memstore.LocalCluster(shards=before, extra_args=every) as cluster,
        cluster.client(timeout=30) as client,
    ):
        client.set_model("eager", PlusOne())  # not scripted: a pickle
        client.save(tmp_path)
    with (
        memstore.LocalCluster(shards=after, extra_args=every, restore=tmp_path) as cluster,
        cluster.client(timeout=30) as client,
    ):
        for shard in range(after):
            key = next(f"e{i}" for i in range(10_000) if key_shard(f"e{i}", after) == shard)
            client.put_tensor(key, np.arange(3, dtype=np.float32))
            client.run_model("eager", [key], [f"{key}.out"])
            assert client.get_tensor(f"{key}.out").tolist() == [1, 2, 3], shard
    with (
        memstore.LocalCluster(shards=after, restore=tmp_path) as cluster,
        cluster.client(timeout=30) as client,
    ):
        assert not client.model_exists("eager")
        with pytest.raises(memstore.MemstoreError):
            client.run_model("eager", ["x"], ["y"])
