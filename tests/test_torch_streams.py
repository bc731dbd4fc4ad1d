"""memstore.torch on real shards and real torch: StreamDataset in group and replay mode,
with DataLoader workers and several ranks, and StreamWriter from several processes.
Every wait has a timeout; no sleeps."""

from __future__ import annotations

import multiprocessing
import pickle
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.utils.data import DataLoader  # noqa: E402

import memstore  # noqa: E402
from memstore.torch import StreamDataset, StreamWriter  # noqa: E402


@pytest.fixture(scope="module")
def store():
    with memstore.LocalCluster(shards=2) as cluster:
        yield cluster


@pytest.fixture
def client(store):
    with store.client(timeout=30) as client:
        yield client


def _fill(stream: memstore.Stream, count: int) -> None:
    for t in range(count):
        stream.append({"x": np.full(4, float(t), dtype=np.float32), "t": np.array(t)})


def _values(batches) -> list[int]:
    return sorted(int(t) for batch in batches for t in batch["t"])


def test_group_mode_trains_on_each_step_once_across_ranks(client, request):
    name = request.node.name
    stream = client.stream(name, maxlen=64)
    _fill(stream, 20)
    stream.close()
    seen: dict[int, list] = {0: [], 1: [], "errors": []}

    def rank(r: int) -> None:
        try:
            ds = StreamDataset(stream, "group", rank=r, world_size=2, with_step=True, timeout=10)
            for step, item in ds:
                assert isinstance(item["x"], torch.Tensor)
                assert item["x"].tolist() == [float(step)] * 4 and int(item["t"]) == step
                seen[r].append(step)
        except BaseException as exc:  # reported by the test thread
            seen["errors"].append(exc)

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive()
    assert seen["errors"] == []
    assert sorted(seen[0] + seen[1]) == list(range(20))
    stats = stream.group("train").stats()
    assert stats["acked"] == 20 and stats["pending"] == 0


def test_a_reader_that_stops_early_leaves_its_steps_to_the_others(client, request):
    """Steps it took ahead and never trained on go to another member after visibility."""
    stream = client.stream(request.node.name, maxlen=16)
    _fill(stream, 6)
    stream.close()
    early = StreamDataset(stream, "group", with_step=True, visibility=0.5, timeout=10)
    first = []
    for pair in early:
        first.append(pair[0])
        if len(first) == 2:
            break
    rest = [s for s, _ in StreamDataset(stream, "group", with_step=True, timeout=30)]
    assert sorted(first[:1] + rest) == list(range(6))  # step 1 was yielded, never acked
    assert set(first) - set(rest) == {first[0]}


def test_group_mode_with_dataloader_workers_is_exactly_once(client, request):
    name = request.node.name
    stream = client.stream(name, maxlen=128)
    _fill(stream, 40)
    stream.close()
    ds = StreamDataset(stream, "group", timeout=20)
    loader = DataLoader(ds, batch_size=4, num_workers=2, multiprocessing_context="fork")
    assert _values(loader) == list(range(40))  # each step once, over both workers
    assert stream.group("train").stats()["acked"] == 40


def test_group_mode_waits_for_steps_appended_while_it_reads(client, request):
    name = request.node.name
    stream = client.stream(name, maxlen=16)
    ds = StreamDataset(stream, "group", with_step=True, timeout=20)
    items = iter(ds)
    _fill(stream, 3)
    assert [next(items)[0] for _ in range(3)] == [0, 1, 2]
    stream.close()
    assert list(items) == []


def test_replay_samples_only_held_steps_and_sees_new_ones(client, request):
    name = request.node.name
    stream = client.stream(name, maxlen=8)
    _fill(stream, 12)  # steps 4..11 held
    ds = StreamDataset(stream, "replay", samples=200, refresh=1, with_step=True, timeout=10)
    first = list(ds)
    assert len(first) == 200
    assert {step for step, _ in first} == set(range(4, 12))  # uniform over the window
    assert all(item["x"].tolist() == [float(step)] * 4 for step, item in first)
    _fill(stream, 6)  # 12..17 appended: 10..17 held
    newer = [step for step, _ in StreamDataset(stream, "replay", samples=200, with_step=True)]
    assert set(newer) == set(range(10, 18))


def test_replay_refreshes_during_one_iteration(client, request):
    name = request.node.name
    stream = client.stream(name, maxlen=4)
    _fill(stream, 4)
    ds = StreamDataset(stream, "replay", samples=400, refresh=1, with_step=True)
    steps = []
    for i, (step, _) in enumerate(ds):
        steps.append(step)
        if i == 100:
            _fill(stream, 4)  # 4..7 replace 0..3 in the store
    late = set(steps[-100:])
    assert late <= set(range(4, 8)) and late, late  # the old window was forgotten


def test_replay_splits_samples_over_workers_and_returns_torch(client, request):
    name = request.node.name
    stream = client.stream(name, maxlen=16)
    _fill(stream, 16)
    ds = StreamDataset(stream, "replay", samples=30, transform=lambda item: item["x"])
    loader = DataLoader(ds, batch_size=5, num_workers=2, multiprocessing_context="fork")
    batches = list(loader)
    assert sum(len(b) for b in batches) == 30
    assert all(isinstance(b, torch.Tensor) and b.shape[1:] == (4,) for b in batches)


def test_replay_waits_for_a_first_step_then_times_out_clearly(client, request):
    stream = client.stream(request.node.name, maxlen=4)
    with pytest.raises(memstore.Timeout, match=request.node.name):
        list(StreamDataset(stream, "replay", samples=1, timeout=0.5))


class _RacedStream(memstore.Stream):
    """Its first window read comes back empty, as one does when a fast producer dropped
    every step it found while it read them (a race too narrow to hit on purpose)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reads: list[int] = []  # shared with the dataset's copy of this handle

    def window(self, k, after=None):
        self.reads.append(k)
        return [] if len(self.reads) == 1 else super().window(k, after)


def test_replay_reads_again_when_its_first_window_raced_the_drops(client, request):
    """The stream holds steps and is closed by the time the reader looks again: it samples
    them (it used to wait for a step a closed stream never gets, and raise Timeout)."""
    stream = client.stream(request.node.name, maxlen=4)
    _fill(stream, 6)
    stream.close()
    raced = _RacedStream(client, request.node.name)
    ds = StreamDataset(raced, "replay", samples=20, with_step=True, timeout=300)
    assert {step for step, _ in ds} == {2, 3, 4, 5}
    assert len(raced.reads) >= 2


def test_replay_of_a_closed_stream_without_steps_fails_at_once(client, request):
    stream = client.stream(request.node.name, maxlen=4)
    stream.close()
    with pytest.raises(memstore.StreamClosed, match=request.node.name):
        list(StreamDataset(stream, "replay", samples=1, timeout=300))  # not after 300 s


def test_a_dataset_pickles_without_a_live_client(client, request):
    stream = client.stream(request.node.name, maxlen=4)
    _fill(stream, 2)
    ds = StreamDataset(stream, "replay", samples=3, with_step=True)
    copy = pickle.loads(pickle.dumps(ds))
    assert copy._stream is None and copy.addresses == client.addresses
    assert {step for step, _ in copy} <= {0, 1}  # it made a client of its own


def _in_forked_child(stream, dataset, results) -> None:
    """The parent's stream fails at once; the parent's dataset reads through its own client."""
    try:
        stream.read(0)
        results.put("the inherited stream answered")
    except memstore.MemstoreError as exc:
        results.put(str(exc))
    try:
        results.put(sorted(step for step, _ in dataset))
    except BaseException as exc:  # reported by the test
        results.put(repr(exc))


def test_a_fork_inherited_client_fails_clearly_and_the_dataset_makes_its_own(client, request):
    stream = client.stream(request.node.name, maxlen=8)
    _fill(stream, 3)
    stream.close()
    dataset = StreamDataset(stream, "group", with_step=True, timeout=10)
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_in_forked_child, args=(stream, dataset, results))
    child.start()
    try:
        inherited, read = results.get(timeout=30), results.get(timeout=30)
    finally:
        child.join(10)
        if child.exitcode is None:
            child.kill()
            child.join(10)
    assert "before a fork" in inherited and "make a new Client" in inherited, inherited
    assert read == [0, 1, 2]  # each step once, through the child's own client
    assert child.exitcode == 0
    assert stream.info()["next"] == 3  # the parent's client still works


def test_bad_settings_are_refused_naming_the_stream(client, request):
    stream = client.stream(request.node.name, maxlen=4)
    with pytest.raises(ValueError, match="mode"):
        StreamDataset(stream, "shuffle")
    with pytest.raises(ValueError, match="samples"):
        StreamDataset(stream, "replay")
    with pytest.raises(ValueError, match=request.node.name):
        StreamDataset(stream, "group", prefetch=0)


def _produce(address: list, name: str, rank: int, count: int) -> None:
    with memstore.Client(address, timeout=30) as client:
        writer = StreamWriter(client.stream(name), max_in_flight=3)
        for t in range(count):
            writer.append({"t": np.array(t), "rank": np.array(rank)})
        writer.close(end=False)
        assert writer.appended == count


def test_stream_writer_from_two_processes_gives_dense_steps(client, store, request):
    name = request.node.name
    stream = client.stream(name, maxlen=64)
    context = multiprocessing.get_context("spawn")
    producers = [
        context.Process(target=_produce, args=(store.addresses, name, r, 15)) for r in range(2)
    ]
    for p in producers:
        p.start()
    for p in producers:
        p.join(60)
        assert p.exitcode == 0
    items = stream.window(64)
    assert [step for step, _ in items] == list(range(30))
    for rank in range(2):  # each rank's steps in its own order
        mine = [int(item["t"]) for _, item in items if int(item["rank"]) == rank]
        assert mine == list(range(15))


def test_stream_writer_raises_a_failed_append_and_ends_the_stream(client, request):
    stream = client.stream(request.node.name, maxlen=8)
    with StreamWriter(stream) as writer:
        writer.append(np.ones(2))
    assert writer.last_step == 0 and stream.info()["closed"]
    late = StreamWriter(stream)
    late.append(np.ones(2))  # the stream is closed: raised by a later call
    with pytest.raises(memstore.StreamClosed):
        late.flush()
    with pytest.raises(ValueError, match="max_in_flight"):
        StreamWriter(stream, max_in_flight=0)


@pytest.mark.parametrize(
    ("shm", "unix"), [(True, "1"), (False, "0"), (False, "1")], ids=["shm", "zmq", "unix"]
)
def test_steps_reach_the_loop_as_torch_without_a_copy(store, request, shm, unix, monkeypatch):
    """8 MiB of steps read through the dataset are not copied in Python, whichever path
    carries them: tracemalloc sees any bytes or numpy copy (not torch's allocator: the
    tensors wrap the arrays through ``torch.from_numpy``, memstore/tensors.py). Over shared
    memory and ZeroMQ the bytes live outside Python (a mapping, libzmq's message); the Unix
    socket receives each step into one buffer of its own, which the tensor then wraps: the
    two steps' buffers and nothing more."""
    tracemalloc = pytest.importorskip("tracemalloc")
    monkeypatch.setenv("MEMSTORE_UNIX", unix)
    with store.client(timeout=30, shm=shm) as client:
        stream = client.stream(request.node.name, maxlen=4)
        big = np.arange(2**20, dtype=np.float32)  # 4 MiB a step
        stream.append({"x": big})
        stream.append({"x": big + 1})
        stream.close()
        assert set(client.paths()) - {"unasked"} == {"unix" if unix == "1" else "zmq"}
        tracemalloc.start()
        try:
            got = list(StreamDataset(stream, "group", with_step=True, timeout=10))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    received = 2 * big.nbytes if (unix == "1" and not shm) else 0
    assert peak < received + 2**20, f"{peak} bytes allocated while reading two 4 MiB steps"
    assert [step for step, _ in got] == [0, 1]
    for step, item in got:
        assert isinstance(item["x"], torch.Tensor) and item["x"].dtype == torch.float32
        assert torch.equal(item["x"], torch.from_numpy(big + step))
