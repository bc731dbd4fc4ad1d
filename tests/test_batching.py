"""Dynamic batching: what may be merged, that every queued call is answered, shutdown."""

from __future__ import annotations

import os
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import memstore  # noqa: E402
from memstore.server.batching import Batcher, BatchOptions, rows, select  # noqa: E402

WAIT_S = 20  # every wait here has a bound; none is expected to come near it


class Recorder:
    """The three callables a Batcher is given, recording what it does with each call."""

    def __init__(self):
        self.delivered: list = []
        self.failed: list = []
        self.event = threading.Event()

    def execute(self, inputs, calls):
        return [inputs[0] + 1]

    def deliver(self, job, outputs):
        self.delivered.append((job, outputs))
        self.event.set()

    def fail(self, jobs, exc):
        self.failed.extend((job, exc) for job in jobs)
        self.event.set()


def job(*shapes):
    return SimpleNamespace(tensors=[torch.zeros(shape) for shape in shapes])


def test_stop_during_the_min_batch_wait_fails_the_queued_call_and_ends_the_thread():
    errors = []
    hook, threading.excepthook = threading.excepthook, errors.append
    try:
        recorder = Recorder()
        batcher = Batcher(
            BatchOptions("m", batch_size=8, min_batch_size=8, min_batch_timeout=600_000),
            recorder.execute,
            recorder.deliver,
            recorder.fail,
        )
        queued = job((1, 3))
        batcher.add(queued)
        batcher.stop()
        assert batcher.join(WAIT_S)
    finally:
        threading.excepthook = hook
    assert errors == []  # the old loop raised IndexError on self._jobs[0] here
    assert [j for j, _ in recorder.failed] == [queued]
    assert isinstance(recorder.failed[0][1], memstore.ModelError)


def test_a_call_added_after_stop_fails_at_once():
    """A run that raced set_model/delete_model must not join a stopped batcher's queue."""
    recorder = Recorder()
    batcher = Batcher(BatchOptions("m", 8), recorder.execute, recorder.deliver, recorder.fail)
    batcher.stop()
    late = job((1, 3))
    batcher.add(late)
    assert [j for j, _ in recorder.failed] == [late]
    assert "'m' was replaced or deleted" in str(recorder.failed[0][1])


def test_a_0d_input_runs_alone():
    recorder = Recorder()
    batcher = Batcher(BatchOptions("m", 8), recorder.execute, recorder.deliver, recorder.fail)
    try:
        scalar = SimpleNamespace(tensors=[torch.tensor(2.0)])
        batcher.add(scalar)
        assert recorder.event.wait(WAIT_S)
        assert recorder.failed == []
        assert recorder.delivered[0][0] is scalar
        assert recorder.delivered[0][1][0].item() == 3.0
    finally:
        batcher.stop()


shapes = st.lists(st.integers(0, 3), min_size=0, max_size=3).map(tuple)
jobs = st.lists(st.lists(shapes, min_size=0, max_size=3), min_size=1, max_size=8)


@settings(max_examples=200, deadline=None)
@given(queue=jobs, batch_size=st.integers(1, 8))
def test_select_always_takes_the_oldest_call_and_respects_batch_size(queue, batch_size):
    queued = [job(*shapes_) for shapes_ in queue]
    batch = select(queued, batch_size)
    assert batch and batch[0] is queued[0]  # progress: the queue shrinks every turn
    assert len(batch) == 1 or rows(batch) <= batch_size
    if len(batch) > 1:  # merged calls agree on everything but dim 0
        first = batch[0].tensors
        for other in batch[1:]:
            assert [t.shape[1:] for t in other.tensors] == [t.shape[1:] for t in first]
            assert all(t.dim() > 0 for t in other.tensors)


class AddOne(torch.nn.Module):
    def forward(self, x):
        return x + 1


@pytest.fixture(scope="module")
def batched():
    running = memstore.LocalCluster(shards=1, extra_args=["--model-timeout", "5"])
    with running, running.client(timeout=20) as client:
        client.set_model("add", torch.jit.script(AddOne()), batch_size=8)
        yield running, client


def shard_cpu_seconds(cluster) -> float:
    """User + system CPU seconds of the (single) shard process so far."""
    with open(f"/proc/{cluster.shards[0].process.pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_0d_input_does_not_wedge_a_batched_model(batched):
    _, client = batched
    client.put_tensor("scalar", np.array(2.0, dtype=np.float32))
    client.run_model("add", "scalar", "scalar_out")  # used to time out, and so did every later run
    assert client.get_tensor("scalar_out") == 3.0
    client.put_tensor("rows", np.zeros((2, 3), dtype=np.float32))
    client.run_model("add", "rows", "rows_out")
    np.testing.assert_array_equal(client.get_tensor("rows_out"), np.ones((2, 3)))


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads /proc")
def test_an_idle_batcher_uses_no_cpu_after_a_0d_input(batched):
    """The wedged batcher spun at 100% of a core; an idle one waits on its condition."""
    cluster, client = batched
    client.put_tensor("scalar", np.array(1.0, dtype=np.float32))
    client.run_model("add", "scalar", "scalar_out")
    before = shard_cpu_seconds(cluster)
    waited = threading.Event()
    waited.wait(1.0)  # an idle second of the shard, to measure its CPU use
    used = shard_cpu_seconds(cluster) - before
    assert used < 0.5, f"the idle shard used {used:.2f} CPU s in 1 s"
