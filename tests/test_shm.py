"""The same-node shared-memory path: round trips, semantics, fallback, leaks, a hostile
client and the memory cap, all against real shard processes in a private directory."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import memstore
from memstore import wire
from memstore.client import shm as shm_client
from memstore.errors import StoreFull
from memstore.shm import AREA_KEY, REAPING, SPARE

DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
          "float16", "float32", "float64", "complex64", "complex128"]  # fmt: skip


@pytest.fixture(scope="module")
def shm_root(tmp_path_factory):
    """A private shared-memory root for this module's shards and clients."""
    root = tmp_path_factory.mktemp("shm")
    root.chmod(0o700)
    old = os.environ.get("MEMSTORE_SHM_DIR")
    os.environ["MEMSTORE_SHM_DIR"] = str(root)
    yield root
    if old is None:
        os.environ.pop("MEMSTORE_SHM_DIR", None)
    else:
        os.environ["MEMSTORE_SHM_DIR"] = old


@pytest.fixture(scope="module")
def cluster(shm_root):
    with memstore.LocalCluster(shards=1) as running:
        yield running


@pytest.fixture
def client(cluster):
    with cluster.client(timeout=10) as connected:
        connected.flush_db()
        connected._shm.threshold = 1  # every non-empty tensor takes the shm path
        yield connected


def _shard_dir(client) -> str:
    return client.get_db_node_info()[0]["shm_dir"]


def _stored_files(client, count: int | None = None) -> list[str]:
    """The shard's files; with ``count``: once there are that many (a shard unlinks the
    files of overwritten and deleted entries in a background thread), 5 s at most."""
    directory = _shard_dir(client)

    def files():
        return sorted(n for n in os.listdir(directory) if n not in ("probe", SPARE, REAPING))

    if count is not None:
        _wait_until(lambda: len(files()) == count, 5.0)
    return files()


def _mapped(array) -> bool:
    owner = array
    while isinstance(owner, np.ndarray):
        owner = owner.base
    if isinstance(owner, memoryview):
        owner = owner.obj
    return type(owner).__name__ == "mmap"


def test_negotiated_and_used(same_node_path, client, shm_root):
    assert client._shm.links[0] is not None
    assert os.path.dirname(_shard_dir(client)) == str(shm_root)
    assert os.stat(_shard_dir(client)).st_mode & 0o777 == 0o700
    client.put_tensor("x", np.arange(100_000, dtype=np.float64))
    (name,) = _stored_files(client)
    assert os.stat(os.path.join(_shard_dir(client), name)).st_mode & 0o777 == 0o400
    got = client.get_tensor("x")
    assert _mapped(got)
    np.testing.assert_array_equal(got, np.arange(100_000, dtype=np.float64))
    assert client.paths() == [same_node_path]  # the hand-off went over that path


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    array=st.sampled_from(DTYPES).flatmap(
        lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=4, max_side=9))
    ),
    order=st.sampled_from(["C", "F", "strided"]),
)
def test_round_trips_over_shm(client, array, order):
    if order == "F":
        array = np.asfortranarray(array)
    elif order == "strided" and array.ndim:
        array = array[::2]
    client.put_tensor("t", array)
    got = client.get_tensor("t")
    assert got.dtype == array.dtype and got.shape == array.shape
    np.testing.assert_array_equal(got, array)
    if order == "F" and array.ndim > 1 and array.size > 1:
        assert got.flags.f_contiguous
    assert got.flags.writeable


def test_caller_writes_after_put_do_not_reach_the_store(client):
    data = np.ones(50_000)
    client.put_tensor("a", data)
    data[:] = 7
    future = client.put_tensor_async("b", data)
    data[:] = 9  # the async put already wrote its file
    future.result()
    assert client.get_tensor("a")[0] == 1 and client.get_tensor("b")[0] == 7


def test_writes_into_a_got_array_stay_private(client):
    client.put_tensor("a", np.zeros(50_000))
    got = client.get_tensor("a")
    got[:] = 5
    assert client.get_tensor("a").sum() == 0
    assert got.sum() == 5 * 50_000


def test_overwrite_and_delete_while_a_reader_holds_the_old_array(client):
    client.put_tensor("a", np.full(50_000, 1.0))
    old = client.get_tensor("a")
    client.put_tensor("a", np.full(50_000, 2.0))
    assert len(_stored_files(client, 1)) == 1  # the old file was unlinked
    assert old.min() == old.max() == 1.0  # ... and the reader's snapshot is intact
    held = client.get_tensor("a")
    client.delete_tensor("a")
    assert _stored_files(client, 0) == []
    assert held.min() == held.max() == 2.0
    client.put_tensor("c", np.ones(40_000))
    client.rename_tensor("c", "d")
    assert _mapped(client.get_tensor("d")) and len(_stored_files(client, 1)) == 1
    client.flush_db()
    assert _stored_files(client, 0) == []


@contextlib.contextmanager
def _capped(max_memory: int):
    """A client of a new shard started with this --max-memory."""
    with (
        memstore.LocalCluster(shards=1, max_memory=max_memory) as small,
        small.client(timeout=10) as client,
    ):
        yield client


def test_info_and_cap_count_shm_bytes(shm_root):
    with _capped(3 << 20) as client:
        client.put_tensor("a", np.ones(1 << 18))  # 2 MiB
        info = client.get_db_node_info()[0]
        assert info["shm_bytes"] == info["bytes"] >= 2 << 20
        assert info["shm_gets"] == 0
        client.get_tensor("a")
        assert client.get_db_node_info()[0]["shm_gets"] == 1  # answered with the file's name
        with pytest.raises(StoreFull):
            client.put_tensor("b", np.ones(1 << 18))
        assert len(_stored_files(client, 1)) == 1  # the refused file was not kept
        assert _upload_files(shm_root) == []
        client.delete_tensor("a")
        assert client.get_db_node_info()[0]["shm_bytes"] == 0


def test_disabled_by_the_client(cluster, monkeypatch):
    monkeypatch.setenv("MEMSTORE_SHM", "0")
    with cluster.client(timeout=10) as client:
        client._shm.threshold = 1
        client.put_tensor("a", np.ones(50_000))
        assert _stored_files(client, 0) == []
        got = client.get_tensor("a")
        assert not _mapped(got) and got.sum() == 50_000
        assert client._shm.links == [None]


def test_disabled_by_the_shard(shm_root, monkeypatch):
    monkeypatch.setenv("MEMSTORE_SHM", "0")
    with memstore.LocalCluster(shards=1) as plain:
        monkeypatch.delenv("MEMSTORE_SHM")
        with plain.client(timeout=10) as client:
            client._shm.threshold = 1
            client.put_tensor("a", np.ones(50_000))
            assert client.get_db_node_info()[0]["shm_dir"] is None
            assert client.get_tensor("a").sum() == 50_000


def test_a_node_without_its_shm_directory_uses_the_sockets(shm_root, monkeypatch, tmp_path):
    """A container without /dev/shm (here: a root that does not exist, then one the shard
    cannot write): the shard starts without the path and everything works by socket."""
    for root in (tmp_path / "missing", tmp_path / "read-only"):
        if root.name == "read-only":
            root.mkdir(mode=0o500)
            if os.access(root, os.W_OK):  # root ignores modes: a file in its place
                root.rmdir()
                root.write_text("not a directory")
        monkeypatch.setenv("MEMSTORE_SHM_DIR", str(root))
        with memstore.LocalCluster(shards=1) as plain, plain.client(timeout=10) as client:
            client._shm.threshold = 1
            client.put_tensor("a", np.ones(50_000))
            assert client.get_db_node_info()[0]["shm_dir"] is None
            got = client.get_tensor("a")
            assert not _mapped(got) and got.sum() == 50_000


def test_other_node_or_other_dev_shm_is_refused(client):
    hello = client._requests.transport.try_fast(0, "hello", {}, [], lambda h, p: h, 5.0, "hello")
    offer = hello["shm"]
    assert shm_client.Link.negotiate(offer) is not None
    assert shm_client.Link.negotiate({**offer, "boot_id": "another-node"}) is None
    # the same path, but another /dev/shm: the probe token differs
    assert shm_client.Link.negotiate({**offer, "probe": "0" * 32}) is None
    assert shm_client.Link.negotiate({**offer, "dir": "/nonexistent/dir"}) is None
    assert shm_client.Link.negotiate(None) is None


def _hostile_put(address: str, fields: dict) -> dict:
    context = zmq.Context.instance()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    try:
        meta = {"dtype": "<u1", "shape": [6], "order": "C"}
        sock.send_multipart(
            wire.request(1, "put", {"keys": ["h"], "metas": [meta], **fields}, [b""])
        )
        assert sock.poll(10_000), "the shard did not answer"
        return wire.unpack_header(sock.recv_multipart()[0])
    finally:
        sock.close()


def test_hostile_client_cannot_make_the_shard_adopt_foreign_files(client, shm_root, tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"secret")
    area = shm_client._uploads_in(str(shm_root))
    os.symlink(secret, os.path.join(area.path, "aa"))
    os.link(secret, os.path.join(area.path, "bb"))
    os.mkdir(os.path.join(area.path, "cc"))
    shard_dir = os.path.basename(_shard_dir(client))
    attempts = [
        (area.name, "../../secret"),
        (area.name, str(secret)),
        (area.name, "aa"),  # a symlink to a file outside
        (area.name, "bb"),  # a hard link to one
        (area.name, "cc"),  # a directory
        (shard_dir, "probe"),  # the shard's own directory
        ("..", "secret"),
        (str(tmp_path), "secret"),
        (area.name.replace(area.name[-32:], "0" * 32), "1"),  # an area that is not there
    ]
    for area_name, file in attempts:
        reply = _hostile_put(client.addresses[0], {"area": area_name, "files": [file]})
        assert not reply["ok"], (area_name, file)
    assert secret.read_bytes() == b"secret"
    assert _stored_files(client, 0) == []
    assert not client.key_exists("h")
    assert os.path.islink(os.path.join(area.path, "aa"))  # the symlink was never followed
    for planted in ("aa", "bb"):
        os.unlink(os.path.join(area.path, planted))
    os.rmdir(os.path.join(area.path, "cc"))


_KILLED_CLIENT = """
import sys, numpy as np
from memstore.client import shm as shm_client
link = shm_client.Link(sys.argv[1])
area, name = link.upload(memoryview(np.ones(100_000)))
print(area, flush=True)
sys.stdin.read()
"""


def _wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_a_killed_clients_uploads_are_removed(client, shm_root):
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_CLIENT, _shard_dir(client)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "MEMSTORE_SHM_POOL": "0"},  # its one upload, no pool files
    )  # fmt: skip
    try:
        area = shm_root / child.stdout.readline().strip()
        assert len(set(os.listdir(area)) - {AREA_KEY}) == 1  # killed after writing, unsent
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    assert _wait_until(lambda: not area.exists(), 2 * memstore.config.SHM_SWEEP_INTERVAL + 2)


def test_a_shard_removes_its_directory_and_a_killed_shards_is_swept(shm_root):
    with memstore.LocalCluster(shards=1) as one, one.client(timeout=10) as client:
        closed = _shard_dir(client)
    assert not os.path.exists(closed)
    killed = memstore.LocalCluster(shards=1)
    try:
        with killed.client(timeout=10) as client:
            client._shm.threshold = 1
            client.put_tensor("a", np.ones(1000))
            dead = _shard_dir(client)
        killed.shards[0].process.send_signal(signal.SIGKILL)
        killed.shards[0].process.wait(10)
        assert os.path.exists(dead)
    finally:
        killed.close()
    with memstore.LocalCluster(shards=1):
        assert not os.path.exists(dead)  # removed by the launcher or the new shard


def _upload_files(shm_root) -> list[str]:
    """Files in upload areas, but for those the pool keeps ready for later puts."""
    pooled = set()
    for uploads in list(shm_client._uploads.values()):
        if uploads.pool is not None:
            with uploads.pool.cond:
                pooled |= {name for files in uploads.pool.ready.values() for name, _ in files}
                pooled.add(uploads.pool.making)
    return [
        f
        for d in os.listdir(shm_root)
        if d.startswith("memstore-client-")
        for f in os.listdir(shm_root / d)
        if f not in pooled and f != AREA_KEY  # the area's secret, not an upload
    ]


@pytest.mark.parametrize("order", ["C", "F"])
def test_empty_is_adopted_without_a_copy_and_the_put_is_a_snapshot(client, shm_root, order):
    array = client.empty("e", (300, 70), np.float32, order=order)
    assert _mapped(array) and array.flags.writeable and array.shape == (300, 70)
    assert array.flags.f_contiguous if order == "F" else array.flags.c_contiguous
    array[:] = np.arange(300 * 70, dtype=np.float32).reshape(300, 70)
    expected = array.copy()
    view = array[10:20]  # a view made before the put is sealed with it
    assert len(_upload_files(shm_root)) == 1
    client.put_tensor("e", array)
    assert _upload_files(shm_root) == [] and len(_stored_files(client, 1)) == 1
    array[:] = -1  # the caller's later writes stay private
    view[:] = -2
    got = client.get_tensor("e")
    np.testing.assert_array_equal(got, expected)
    assert (array[:10] == -1).all() and (array[10:20] == -2).all()
    client.put_tensor("e2", array)  # a second put copies as any other array
    np.testing.assert_array_equal(client.get_tensor("e2"), array)
    np.testing.assert_array_equal(client.get_tensor("e"), expected)


def test_empty_async_put_and_put_tensors_adopt_it(same_node_path, client, shm_root):
    a, b = client.empty("a", 50_000), client.empty("b", (100, 100), np.int16)
    a[:], b[:] = 1.5, 7
    future = client.put_tensor_async("a", a)
    a[:] = 0  # after the call returned: private already
    future.result()
    client.put_tensors({"b": b, "c": np.ones(40_000)})
    b[:] = 0
    assert client.get_tensor("a").min() == 1.5 and client.get_tensor("b").min() == 7
    got_a, got_b, got_c = client.get_tensors(["a", "b", "c"])
    assert all(_mapped(x) for x in (got_a, got_b, got_c))
    assert got_a.max() == 1.5 and got_b.max() == 7 and got_c.sum() == 40_000
    assert _upload_files(shm_root) == []
    assert client.paths() == [same_node_path]


def test_an_empty_array_dropped_unput_leaves_no_file(client, shm_root):
    array = client.empty("d", 100_000)
    assert len(_upload_files(shm_root)) == 1
    view = array[::2]
    del array
    assert len(_upload_files(shm_root)) == 1  # a view still holds it
    del view
    assert _upload_files(shm_root) == []


def test_empty_refused_by_a_full_shard_keeps_the_callers_data(shm_root):
    with _capped(1 << 20) as client:
        array = client.empty("big", 1 << 18)  # 2 MiB
        array[:] = 3
        with pytest.raises(StoreFull):
            client.put_tensor("big", array)
        assert array.sum() == 3 * (1 << 18) and _upload_files(shm_root) == []


def test_empty_without_shm_is_a_plain_array(cluster, monkeypatch):
    monkeypatch.setenv("MEMSTORE_SHM", "0")
    with cluster.client(timeout=10) as client:
        array = client.empty("p", (4, 5), np.int64, order="F")
        assert not _mapped(array) and array.flags.f_contiguous and array.dtype == np.int64
        array[:] = 2
        client.put_tensor("p", array)
        np.testing.assert_array_equal(client.get_tensor("p"), array)
    with cluster.client(timeout=10) as client:  # below the threshold: plain too
        assert not _mapped(client.empty("q", 10))


def _sockets_only(client) -> None:
    client._shm.threshold = 1
    client.put_tensor("a", np.ones(50_000))
    assert client.get_db_node_info()[0]["shm_dir"] is None and client._shm.links == [None]
    got = client.get_tensor("a")
    assert not _mapped(got) and got.sum() == 50_000
    assert not _mapped(client.empty("e", 50_000))


def test_local_cluster_without_shm(shm_root):
    before = set(os.listdir(shm_root))
    with memstore.LocalCluster(shards=1, shm=False) as plain, plain.client(timeout=10) as client:
        _sockets_only(client)
        made = set(os.listdir(shm_root)) - before
        assert not [d for d in made if d.startswith("memstore-shard-")]


@pytest.mark.parametrize("flags", [[], ["--no-shm"]])
def test_memstore_start_offers_shm_unless_told_not_to(shm_root, tmp_path, flags):
    memstore_cli = os.path.join(os.path.dirname(sys.executable), "memstore")
    address_file = tmp_path / "addr"
    start = [memstore_cli, "start", "--port", "0", "--address-file", str(address_file)]
    result = subprocess.run([*start, *flags], capture_output=True, text=True, timeout=60)
    try:
        assert result.returncode == 0, result.stderr
        with memstore.Client(address_file.read_text().strip(), timeout=10) as client:
            if flags:
                _sockets_only(client)
            else:
                client._shm.threshold = 1
                client.put_tensor("a", np.ones(50_000))
                assert _mapped(client.get_tensor("a"))
                assert client.get_db_node_info()[0]["shm_bytes"] >= 400_000
    finally:
        stop = [memstore_cli, "stop", "--address-file", str(address_file)]
        assert subprocess.run(stop, capture_output=True, timeout=60).returncode == 0


def test_client_shm_argument_overrides_the_environment(cluster, monkeypatch):
    with cluster.client(timeout=10, shm=False) as client:
        client._shm.threshold = 1
        client.put_tensor("a", np.ones(50_000))
        assert client._shm.links == [None] and not _mapped(client.get_tensor("a"))
    monkeypatch.setenv("MEMSTORE_SHM", "0")
    with cluster.client(timeout=10, shm=True) as client:
        client._shm.threshold = 1
        client.put_tensor("a", np.ones(50_000))
        assert _mapped(client.get_tensor("a"))


def test_puts_take_files_the_pool_allocated_ahead(client, shm_root):
    client.put_tensor("p", np.ones(70_000))  # 560,000 bytes: the 1 MiB class is wanted now
    pool = shm_client._uploads[str(shm_root)].pool

    def ready() -> list:
        with pool.cond:
            return list(pool.ready.get(1 << 20, []))

    assert _wait_until(lambda: len(ready()) == pool.PER_CLASS, 10.0)
    taken = {name for name, _ in ready()}
    data = np.arange(100_000, dtype=np.float64)  # 800,000 bytes: the same class
    client.put_tensor("p", data)
    (name,) = _stored_files(client, 1)
    assert os.stat(os.path.join(_shard_dir(client), name)).st_size == data.nbytes
    assert taken - {n for n, _ in ready()}  # one of them went into the put
    got = client.get_tensor("p")
    data[:] = 0  # a put is a snapshot whichever file it took
    np.testing.assert_array_equal(got, np.arange(100_000, dtype=np.float64))
    np.testing.assert_array_equal(client.get_tensor("p"), got)
    assert _upload_files(shm_root) == []


def _dataset(name: str, fill: float) -> memstore.DataSet:
    dataset = memstore.DataSet(name)
    dataset.add_tensor("big", np.full((200, 300), fill))
    dataset.add_tensor("small", np.arange(5, dtype=np.int32))
    dataset.add_meta_scalar("step", 3)
    return dataset


def test_datasets_over_shm_round_trip_and_stay_snapshots(client):
    client._shm.threshold = 64 * 1024  # "small" goes as a frame, "big" as a file
    source = _dataset("ds", 1.0)
    big = source.get_tensor("big")
    client.put_dataset(source)
    big[:] = 9  # the put copied it into its file already
    (name,) = _stored_files(client, 1)
    held = client.get_dataset("ds")
    assert _mapped(held.get_tensor("big")) and not _mapped(held.get_tensor("small"))
    assert held.get_tensor("big").max() == 1.0 and held.get_meta_scalars("step")[0] == 3
    np.testing.assert_array_equal(held.get_tensor("small"), np.arange(5, dtype=np.int32))
    held.get_tensor("big")[:] = 5  # private to the reader
    client.put_dataset(_dataset("ds", 2.0))  # overwrite while the old one is held
    assert name not in _stored_files(client, 1)
    assert (
        held.get_tensor("big").max() == 5 and client.get_dataset("ds").get_tensor("big").max() == 2
    )
    client.rename_dataset("ds", "ds2")
    assert client.get_dataset("ds2").get_tensor("big").min() == 2
    client.copy_dataset("ds2", "ds3")
    client.delete_dataset("ds2")
    assert client.get_dataset("ds3").get_tensor("big").min() == 2
    client.delete_dataset("ds3")
    assert _stored_files(client, 0) == []
    client.append_to_list("runs", _dataset("ds4", 4.0))
    (got,) = client.get_datasets_from_list("runs")
    assert _mapped(got.get_tensor("big")) and got.get_tensor("big").min() == 4.0


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    arrays=st.lists(
        st.sampled_from(DTYPES).flatmap(
            lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3, max_side=7))
        ),
        min_size=1,
        max_size=4,
    )
)
def test_dataset_round_trips_over_shm(client, arrays):
    dataset = memstore.DataSet("h")
    for i, array in enumerate(arrays):
        dataset.add_tensor(f"t{i}", array)
    client.put_dataset(dataset)
    got = client.get_dataset("h")
    for i, array in enumerate(arrays):
        out = got.get_tensor(f"t{i}")
        assert out.dtype == array.dtype and out.shape == array.shape
        np.testing.assert_array_equal(out, array)


def test_hostile_put_dataset_cannot_adopt_foreign_files(client, shm_root, tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"secret")
    area = shm_client._uploads_in(str(shm_root))
    os.symlink(secret, os.path.join(area.path, "dd"))
    context = zmq.Context.instance()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(client.addresses[0])
    try:
        layout = {"tensors": [{"name": "t", "meta": {"dtype": "<u1", "shape": [6]}}]}
        for file in ("dd", "../../secret", str(secret)):
            fields = {"key": "hd", "dataset": layout, "area": area.name, "files": [file]}
            sock.send_multipart(wire.request(1, "put_dataset", fields, [b""]))
            assert sock.poll(10_000), "the shard did not answer"
            assert not wire.unpack_header(sock.recv_multipart()[0])["ok"], file
    finally:
        sock.close()
        os.unlink(os.path.join(area.path, "dd"))
    assert secret.read_bytes() == b"secret" and not client.dataset_exists("hd")
    assert _stored_files(client, 0) == []  # the last test's, flushed, go in the background


# -- spares: freed files nobody has open, recycled into the next puts ------------------------


@pytest.fixture
def fresh(shm_root):
    """A client of a new shard: no spares from earlier tests."""
    with memstore.LocalCluster(shards=1) as one, one.client(timeout=10) as connected:
        connected._shm.threshold = 1
        yield connected


def _spares(client) -> dict[str, int]:
    """The shard's spare files now: name -> inode."""
    directory = os.path.join(_shard_dir(client), SPARE)
    return {name: os.stat(os.path.join(directory, name)).st_ino for name in os.listdir(directory)}


def _reaped(client, stored: int) -> bool:
    """Whether the reaper is done: ``stored`` files in place, none being checked."""
    directory = _shard_dir(client)
    return len(_stored_files(client)) == stored and not os.listdir(os.path.join(directory, REAPING))


#: Elements of a float64 tensor just over the smallest size kept as a spare.
_SPARE = memstore.config.SHM_SPARE_MIN // 8 + 1000


def test_an_overwritten_file_nobody_holds_becomes_the_next_puts_file(fresh, shm_root):
    fresh.put_tensor("s", np.full(_SPARE, 1.0))
    fresh.put_tensor("s", np.full(_SPARE, 2.0))
    assert _wait_until(lambda: len(_spares(fresh)) == 1, 5.0)
    ((spare, inode),) = _spares(fresh).items()
    assert spare.startswith(f"{8 * _SPARE:x}-")
    assert fresh.get_db_node_info()[0]["shm_spare_bytes"] == 8 * _SPARE
    fresh.put_tensor("s", np.full(_SPARE, 3.0))  # writes into the spare's pages
    (name,) = _stored_files(fresh, 1)
    stored = os.stat(os.path.join(_shard_dir(fresh), name))
    assert stored.st_ino == inode and stored.st_mode & 0o777 == 0o400
    np.testing.assert_array_equal(fresh.get_tensor("s"), np.full(_SPARE, 3.0))
    assert _upload_files(shm_root) == []


def test_small_freed_files_are_not_kept(fresh):
    small = memstore.config.SHM_SPARE_MIN // 16
    fresh.put_tensor("s", np.ones(small))
    fresh.put_tensor("s", np.ones(small))
    assert _wait_until(lambda: _reaped(fresh, 1), 5.0)
    assert _spares(fresh) == {}


def test_a_file_a_reader_still_maps_is_never_recycled(fresh):
    fresh.put_tensor("r", np.full(_SPARE, 1.0))
    held = fresh.get_tensor("r")  # maps the file
    inode = os.stat(os.path.join(_shard_dir(fresh), _stored_files(fresh)[0])).st_ino
    fresh.put_tensor("r", np.full(_SPARE, 2.0))
    assert _wait_until(lambda: _reaped(fresh, 1), 5.0)
    assert inode not in _spares(fresh).values()  # unlinked: the reader keeps its pages
    for value in range(3, 9):  # later puts take spares, never the reader's file
        fresh.put_tensor("r", np.full(_SPARE, float(value)))
        np.testing.assert_array_equal(fresh.get_tensor("r"), np.full(_SPARE, float(value)))
    assert held.min() == held.max() == 1.0


def test_readers_racing_overwrites_always_get_a_snapshot(fresh):
    """One thread overwrites a key with constant arrays while another gets it: each got
    array is one version whole, and stays it while the writer goes on (files recycle)."""
    import threading

    stop = threading.Event()

    def writer() -> None:
        value = 0.0
        while not stop.is_set() and value < 1000:
            value += 1
            fresh.put_tensor("race", np.full(_SPARE, value))

    def unchanged(kept: list) -> list:
        return [(v, a.min(), a.max()) for a, v in kept if not a.min() == a.max() == v]

    fresh.put_tensor("race", np.full(_SPARE, 0.0))
    thread = threading.Thread(target=writer)
    thread.start()
    kept, errors, gets, seen = [], [], 0, set()
    try:
        deadline = time.monotonic() + 10.0
        # 100 gets, and on until the writer got a turn (a busy machine may starve it)
        while time.monotonic() < deadline and (gets < 100 or len(seen) < 2):
            got = fresh.get_tensor("race")
            gets += 1
            seen.add(float(got[0]))
            kept.append((got, got[0]))
            errors += unchanged(kept[-1:])  # one version whole
            if len(kept) > 8:
                kept.pop(0)  # dropped arrays let their files be recycled
            if gets % 10 == 0:
                errors += unchanged(kept)  # ... and still that version
    finally:
        stop.set()
        thread.join(30)
    assert not errors + unchanged(kept), errors[:5]
    assert gets >= 10 and len(seen) > 1  # the writer did overwrite while we read


def test_spares_stay_within_the_room_under_max_memory(shm_root):
    spare = np.ones(_SPARE)
    with _capped(12 * spare.nbytes // 5) as client:  # room for 2.4 of them
        client._shm.threshold = 1
        client.put_tensor("a", spare)
        client.put_tensor("b", spare)
        client.put_tensor("a", spare)  # frees one; the room left is 0.4 of one
        assert _wait_until(lambda: _reaped(client, 2), 5.0)
        assert _spares(client) == {}
        client.delete_tensor("b")
        client.put_tensor("a", spare)  # now one fits beside what is stored

        def one_spare_counted() -> bool:  # the file named as a spare, not still on its way
            counted = client.get_db_node_info()[0]["shm_spare_bytes"]
            return len(_spares(client)) == 1 and counted == spare.nbytes

        assert _wait_until(one_spare_counted, 5.0)
        info = client.get_db_node_info()[0]
        assert info["bytes"] + info["shm_spare_bytes"] <= info["max_memory"]
        client.put_tensor("c", np.ones(_SPARE * 9 // 20))  # too small to take the spare
        sweep = 2 * memstore.config.SHM_SWEEP_INTERVAL + 2  # the room left is 0.95 of one
        assert _wait_until(lambda: _spares(client) == {}, sweep)
        info = client.get_db_node_info()[0]
        assert info["shm_spare_bytes"] == 0 and info["bytes"] <= info["max_memory"]


def test_spares_no_put_takes_are_freed(shm_root, monkeypatch):
    monkeypatch.setenv("MEMSTORE_SHM_SPARE_TTL", "0.5")
    with memstore.LocalCluster(shards=1) as one, one.client(timeout=10) as client:
        client._shm.threshold = 1
        client.put_tensor("t", np.ones(_SPARE))
        client.put_tensor("t", np.ones(_SPARE))
        assert _wait_until(lambda: len(_spares(client)) == 1, 5.0)
        sweep = 2 * memstore.config.SHM_SWEEP_INTERVAL + 2
        assert _wait_until(lambda: _spares(client) == {}, sweep)
        assert client.get_db_node_info()[0]["shm_spare_bytes"] == 0


# -- outputs of run_model / run_script ---------------------------------------------------------

#: A run's output of 512 KiB (4 float32 tiled 32768 times): over the default threshold.
_OPS = """
def tile(x):
    return x.repeat(32768)

def tile_big(x):
    return x.repeat(262144)

def head(x):
    return x[:2] * 3

def pair(x):
    return x.repeat(32768) + 1, x * 2
"""
_X = np.arange(4, dtype=np.float32)
_TILED = np.tile(_X, 32768)


def _with_ops(client) -> None:
    """Inputs under the default threshold (frames: only outputs make files) and the script."""
    client._shm.threshold = memstore.config.shm_threshold()
    assert _TILED.nbytes >= memstore.config.shm_threshold() > _X.nbytes
    client.set_script("ops", _OPS)
    client.put_tensor("x", _X)


def _shm_bytes(client) -> int:
    return client.get_db_node_info()[0]["shm_bytes"]


def test_a_run_output_is_a_file_and_its_get_maps_it(same_node_path, client):
    _with_ops(client)
    assert _stored_files(client, 0) == [] and _shm_bytes(client) == 0
    client.run_script("ops", "tile", ["x"], ["y"])
    (name,) = _stored_files(client, 1)
    path = os.path.join(_shard_dir(client), name)
    assert os.stat(path).st_mode & 0o777 == 0o400 and os.stat(path).st_size == _TILED.nbytes
    assert _shm_bytes(client) >= _TILED.nbytes  # the entry's bytes, counted as for a put
    got = client.get_tensor("y")
    assert _mapped(got)  # the file, mapped: not a frame off the socket
    assert got.dtype == np.float32 and got.shape == _TILED.shape
    np.testing.assert_array_equal(got, _TILED)
    assert _mapped(client.get_tensors(["y"])[0])
    assert client.paths() == [same_node_path]


def test_a_got_run_output_is_writable_and_private(client):
    _with_ops(client)
    client.run_script("ops", "tile", "x", "y")
    got = client.get_tensor("y")
    assert _mapped(got) and got.flags.writeable
    got[:] = -1
    np.testing.assert_array_equal(client.get_tensor("y"), _TILED)
    assert (got == -1).all()


def test_overwriting_and_deleting_a_run_output_frees_its_file(client):
    _with_ops(client)
    client.run_script("ops", "tile", "x", "y")
    (first,) = _stored_files(client, 1)
    held = client.get_tensor("y")
    used = _shm_bytes(client)
    client.run_script("ops", "pair", "x", ["y", "small"])  # a run overwrites it
    (second,) = _stored_files(client, 1)
    assert second != first and _shm_bytes(client) == used
    np.testing.assert_array_equal(client.get_tensor("y"), _TILED + 1)
    np.testing.assert_array_equal(client.get_tensor("small"), _X * 2)
    np.testing.assert_array_equal(held, _TILED)  # the reader's snapshot is intact
    client.put_tensor("y", np.zeros(3))  # a put overwrites it
    assert _stored_files(client, 0) == [] and _shm_bytes(client) == 0
    client.run_script("ops", "tile", "x", "z")
    assert len(_stored_files(client, 1)) == 1
    client.delete_tensor("z")
    assert _stored_files(client, 0) == [] and _shm_bytes(client) == 0


def test_a_small_run_output_stays_in_memory(client):
    _with_ops(client)
    client.run_script("ops", "head", "x", "h")
    assert _stored_files(client, 0) == [] and _shm_bytes(client) == 0
    got = client.get_tensor("h")
    assert not _mapped(got)
    np.testing.assert_array_equal(got, _X[:2] * 3)


def test_a_run_output_without_shm_on_either_side(shm_root, cluster):
    with memstore.LocalCluster(shards=1, shm=False) as plain, plain.client(timeout=10) as client:
        _with_ops(client)
        client.run_script("ops", "tile", "x", "y")
        assert _shm_bytes(client) == 0 and _shard_dir(client) is None
        got = client.get_tensor("y")
        assert not _mapped(got)
        np.testing.assert_array_equal(got, _TILED)
    with cluster.client(timeout=10, shm=False) as client:  # a file there, got by socket
        client.flush_db()
        _with_ops(client)
        client.run_script("ops", "tile", "x", "y")
        assert len(_stored_files(client, 1)) == 1
        got = client.get_tensor("y")
        assert not _mapped(got)
        np.testing.assert_array_equal(got, _TILED)
        client.flush_db()
        assert _stored_files(client, 0) == []


def test_a_run_output_refused_for_room_leaves_no_file(shm_root):
    with _capped(2 << 20) as client:
        _with_ops(client)
        client.run_script("ops", "tile", "x", "y")
        (kept,) = _stored_files(client, 1)
        used = _shm_bytes(client)
        with pytest.raises(StoreFull):
            client.run_script("ops", "tile_big", "x", "big")  # 4 MiB: over the cap
        assert _stored_files(client, 1) == [kept] and _shm_bytes(client) == used
        assert not client.key_exists("big")
        np.testing.assert_array_equal(client.get_tensor("y"), _TILED)


def _slow_tile(x):
    import time  # not TorchScript: run as pickled Python (--allow-pickle)

    time.sleep(1.5)
    return x.repeat(32768)


def test_a_timed_out_runs_output_leaves_no_file(shm_root):
    args = ["--allow-pickle", "--model-timeout", "1"]
    with (
        memstore.LocalCluster(shards=1, extra_args=args) as slow,
        slow.client(timeout=10) as client,
    ):
        _with_ops(client)
        client.set_function("slow", _slow_tile)
        with pytest.raises(memstore.errors.ModelError, match="did not finish"):
            client.run_script("slow", "_slow_tile", "x", "late")
        # the shard's one model worker finishes the late run (and writes its file) first
        client.run_script("ops", "tile", "x", "y")
        assert len(_stored_files(client, 1)) == 1 and not client.key_exists("late")
        assert _shm_bytes(client) < 2 * _TILED.nbytes


@pytest.mark.parametrize("batch_size", [0, 4])
def test_a_torchscript_models_output_goes_over_shm(client, batch_size):
    torch = pytest.importorskip("torch")

    class Tile(torch.nn.Module):
        def forward(self, x):
            return x.repeat(32768)

    _with_ops(client)
    client.set_model("tile", torch.jit.script(Tile()), batch_size=batch_size)
    client.run_model("tile", "x", "y")  # batched: delivered by the batcher's thread
    assert len(_stored_files(client, 1)) == 1
    got = client.get_tensor("y")
    assert _mapped(got)
    np.testing.assert_array_equal(got, _TILED)


def test_a_run_output_is_written_into_a_spare(fresh):
    _with_ops(fresh)
    tiled = np.tile(_X, 262144)  # tile_big's output: 4 MiB, a spare's size
    assert tiled.nbytes >= memstore.config.SHM_SPARE_MIN
    fresh.put_tensor("old", tiled + 1)
    fresh.delete_tensor("old")  # its file, held by nobody, becomes a spare
    assert _wait_until(lambda: len(_spares(fresh)) == 1, 5.0)
    ((_, inode),) = _spares(fresh).items()
    fresh.run_script("ops", "tile_big", "x", "y")
    (name,) = _stored_files(fresh, 1)
    stored = os.stat(os.path.join(_shard_dir(fresh), name))
    assert stored.st_ino == inode and stored.st_size == tiled.nbytes
    assert _spares(fresh) == {}
    np.testing.assert_array_equal(fresh.get_tensor("y"), tiled)


def test_a_large_put_writes_a_spare_through_a_mapping(fresh):
    """From _MAPPED_WRITE bytes a spare is written through a populated mapping."""
    count = shm_client._MAPPED_WRITE // 8 + 3
    fresh.put_tensor("big", np.zeros(count))
    fresh.put_tensor("big", np.ones(count))
    assert _wait_until(lambda: len(_spares(fresh)) == 1, 5.0)
    ((_, inode),) = _spares(fresh).items()
    data = np.arange(count, dtype=np.float64)
    fresh.put_tensor("big", data)
    (name,) = _stored_files(fresh, 1)
    assert os.stat(os.path.join(_shard_dir(fresh), name)).st_ino == inode
    np.testing.assert_array_equal(fresh.get_tensor("big"), data)


def test_no_spares_with_a_zero_budget(shm_root, monkeypatch):
    monkeypatch.setenv("MEMSTORE_SHM_SPARE", "0")
    with memstore.LocalCluster(shards=1) as one, one.client(timeout=10) as client:
        client._shm.threshold = 1
        for value in range(3):
            client.put_tensor("t", np.full(_SPARE, float(value)))
        assert _wait_until(lambda: _reaped(client, 1), 5.0)
        assert _spares(client) == {} and client.get_db_node_info()[0]["shm_spare_bytes"] == 0
        np.testing.assert_array_equal(client.get_tensor("t"), np.full(_SPARE, 2.0))


@pytest.mark.parametrize("kind", ["tensor", "dataset"])
def test_a_file_overwritten_before_it_is_mapped_is_fetched_again(
    client, cluster, monkeypatch, kind
):
    """The race made real: between the shard's answer and the client's mapping another
    client overwrites the key and the shard drops the old file; the get asks again by
    socket and returns the new value (never the old file, never an error)."""
    put = client.put_tensor if kind == "tensor" else client.put_dataset

    def value(fill: float):
        return np.full(50_000, fill) if kind == "tensor" else _dataset("d", fill)

    put(*(("k", value(1.0)) if kind == "tensor" else (value(1.0),)))
    real_map, raced = shm_client.Link.map, []

    def map_after_an_overwrite(link, name):
        if not raced:
            raced.append(name)
            with cluster.client(timeout=10) as other:
                other._shm.threshold = 1
                if kind == "tensor":
                    other.put_tensor("k", value(2.0))
                else:
                    other.put_dataset(value(2.0))
            path = os.path.join(link.dir, name)
            assert _wait_until(lambda: not os.path.exists(path), 5.0)
        return real_map(link, name)

    monkeypatch.setattr(shm_client.Link, "map", map_after_an_overwrite)
    got = client.get_tensor("k") if kind == "tensor" else client.get_dataset("d").get_tensor("big")
    assert raced  # the shm answer came first, and lost the race
    assert not _mapped(got)  # ... so the value came by socket
    assert got.min() == got.max() == 2.0
