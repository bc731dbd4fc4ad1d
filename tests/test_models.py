"""Server-side models and scripts: storage, execution, batching, errors, isolation."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import memstore  # noqa: E402
from memstore.placement import key_shard  # noqa: E402


class MLP(torch.nn.Module):
    def __init__(self, width: int = 8):
        super().__init__()
        self.layer = torch.nn.Linear(width, 4)

    def forward(self, x):
        return torch.relu(self.layer(x))


class Sleeper(torch.nn.Module):
    """Holds a worker for ``seconds`` (time.sleep releases the GIL, as torch kernels do)."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def forward(self, x):
        time.sleep(self.seconds)
        return x + 1


class Fails(torch.nn.Module):
    def forward(self, x):
        raise RuntimeError("deliberate failure inside the model")


@pytest.fixture(scope="module")
def models_cluster():
    """Two shards that accept pickled code and time runs out after 2 s."""
    with memstore.LocalCluster(
        shards=2, extra_args=["--allow-pickle", "--model-timeout", "2", "--model-threads", "2"]
    ) as running:
        yield running


@pytest.fixture
def mc(models_cluster):
    with models_cluster.client(timeout=20) as client:
        client.flush_db()
        yield client


def names_on_both_shards(client) -> tuple[str, str]:
    """Two tensor names that live on different shards."""
    first = "in_a"
    home = key_shard(first, len(client.addresses))
    other = next(f"in_{i}" for i in range(1000) if key_shard(f"in_{i}", 2) != home)
    return first, other


def test_torchscript_model_round_trip(mc):
    model = torch.jit.script(MLP())
    mc.set_model("mlp", model)
    assert mc.model_exists("mlp")
    x = np.random.default_rng(0).random((5, 8), dtype=np.float32)
    mc.put_tensor("x", x)
    mc.run_model("mlp", inputs="x", outputs="y")
    expected = model(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(mc.get_tensor("y"), expected, rtol=1e-6)


def test_model_bytes_and_file_and_get_model(mc, tmp_path):
    model = torch.jit.script(MLP())
    path = tmp_path / "mlp.pt"
    torch.jit.save(model, str(path))
    mc.set_model_from_file("from_file", str(path))
    mc.set_model("from_bytes", path.read_bytes())
    assert mc.get_model("from_bytes") == path.read_bytes()
    mc.put_tensor("x", np.ones((2, 8), np.float32))
    mc.run_model("from_file", ["x"], ["y1"])
    mc.run_model("from_bytes", ["x"], ["y2"])
    np.testing.assert_array_equal(mc.get_tensor("y1"), mc.get_tensor("y2"))


def test_pickled_module_runs_with_allow_pickle(mc):
    module = MLP()
    mc.set_model("eager", module)
    x = np.ones((3, 8), np.float32)
    mc.put_tensor("x", x)
    mc.run_model("eager", "x", "y")
    np.testing.assert_allclose(
        mc.get_tensor("y"), module(torch.from_numpy(x)).detach().numpy(), rtol=1e-6
    )


def test_pickle_refused_without_flag_names_the_flag():
    with memstore.LocalCluster(shards=1) as cluster, cluster.client(timeout=20) as client:
        with pytest.raises(memstore.ModelError, match="--allow-pickle"):
            client.set_model("eager", MLP())
        assert not client.model_exists("eager")
        client.set_model("scripted", torch.jit.script(MLP()))  # TorchScript is always allowed
        assert client.model_exists("scripted")


def test_script_and_function(mc):
    mc.set_script("ops", "def add(a, b):\n    return a + b\n\ndef neg(a):\n    return -a\n")
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    mc.put_tensor("a", x)
    mc.put_tensor("b", x * 10)
    mc.run_script("ops", "add", ["a", "b"], ["sum"])
    mc.run_script("ops", "neg", "a", "negated")
    np.testing.assert_array_equal(mc.get_tensor("sum"), x * 11)
    np.testing.assert_array_equal(mc.get_tensor("negated"), -x)
    assert "def add" in mc.get_script("ops")

    def triple(t):
        return t * 3

    mc.set_function("triple", triple)
    mc.run_script("triple", "triple", "a", "tripled")
    np.testing.assert_array_equal(mc.get_tensor("tripled"), x * 3)


def test_inputs_on_other_shards_and_outputs_where_they_hash(mc):
    first, other = names_on_both_shards(mc)
    mc.set_script("ops", "def add(a, b):\n    return a + b\n")
    mc.put_tensor(first, np.ones(4, np.float32))
    mc.put_tensor(other, np.full(4, 2, np.float32))
    outputs = [f"out_{i}" for i in range(6)]  # spread over both shards
    assert {key_shard(o, 2) for o in outputs} == {0, 1}
    for out in outputs:
        mc.run_script("ops", "add", [first, other], [out])
    for out in outputs:
        np.testing.assert_array_equal(mc.get_tensor(out), np.full(4, 3, np.float32))


def test_model_cannot_corrupt_its_stored_input(mc):
    mc.set_script("inplace", "def bump(a):\n    a.add_(1)\n    return a\n")
    mc.put_tensor("data", np.zeros(3, np.float32))
    mc.run_script("inplace", "bump", "data", "bumped")
    np.testing.assert_array_equal(mc.get_tensor("data"), np.zeros(3, np.float32))
    np.testing.assert_array_equal(mc.get_tensor("bumped"), np.ones(3, np.float32))


def test_batching_merges_concurrent_calls(mc):
    model = torch.jit.script(MLP())
    mc.set_model("batched", model, batch_size=64, min_batch_size=8, min_batch_timeout=5000)
    # All inputs on one shard, so one batcher sees every call.
    names = [f"{{b}}.in{i}" for i in range(8)]
    rng = np.random.default_rng(1)
    rows = {name: rng.random((1, 8), dtype=np.float32) for name in names}
    mc.put_tensors(rows)
    futures = [mc.run_model_async("batched", n, f"{{b}}.out{i}") for i, n in enumerate(names)]
    memstore.wait(futures, timeout=30)
    for future in futures:
        future.result()
    info = mc.get_ai_info("batched")
    assert info["calls"] == 8
    assert info["batches"] == 1  # min_batch_size=8 gathered all eight calls into one run
    for i, name in enumerate(names):
        expected = model(torch.from_numpy(rows[name])).detach().numpy()
        # a batched matmul rounds differently from a single row: float32 noise, not error
        np.testing.assert_allclose(mc.get_tensor(f"{{b}}.out{i}"), expected, rtol=1e-4, atol=1e-6)


def test_incompatible_shapes_are_not_merged(mc):
    mc.set_script("ident", "def f(a):\n    return a * 1\n")
    model = torch.jit.script(MLP(width=8))
    mc.set_model("mixed", model, batch_size=16, min_batch_size=4, min_batch_timeout=300)
    mc.put_tensor("{m}.wide", np.ones((2, 8), np.float32))
    mc.put_tensor("{m}.narrow", np.ones((2, 3), np.float32))
    ok = mc.run_model_async("mixed", "{m}.wide", "{m}.o1")
    bad = mc.run_model_async("mixed", "{m}.narrow", "{m}.o2")
    assert ok.result(timeout=30) is None
    with pytest.raises(memstore.ModelError, match="mixed"):
        bad.result(timeout=30)  # ran alone (shapes differ) and failed alone
    assert mc.get_tensor("{m}.o1").shape == (2, 4)
    assert not mc.tensor_exists("{m}.o2")


def test_min_batch_timeout_releases_a_lone_call(mc):
    model = torch.jit.script(MLP())
    mc.set_model("lonely", model, batch_size=32, min_batch_size=32, min_batch_timeout=200)
    mc.put_tensor("x", np.ones((1, 8), np.float32))
    started = time.monotonic()
    mc.run_model("lonely", "x", "y")  # must not wait for 31 more calls
    assert time.monotonic() - started < 15  # far below the client's 20 s timeout
    assert mc.get_ai_info("lonely")["batches"] == 1


def test_model_errors_name_the_model_and_keep_serving(mc):
    mc.set_model("fails", Fails())
    mc.put_tensor("x", np.ones(3, np.float32))
    with pytest.raises(memstore.ModelError, match=r"fails.*deliberate failure"):
        mc.run_model("fails", "x", "never")
    assert not mc.tensor_exists("never")
    with pytest.raises(memstore.KeyNotFound, match="nope"):
        mc.run_model("nope", "x", "y")
    with pytest.raises(memstore.KeyNotFound, match="missing_input"):
        mc.run_model("fails", "missing_input", "y")
    mc.set_model("mlp", torch.jit.script(MLP()))
    with pytest.raises(memstore.ModelError, match="takes 1 input"):
        mc.run_model("mlp", ["x", "x"], "y")
    mc.put_tensor("wrong", np.ones((2, 5), np.float32))
    with pytest.raises(memstore.ModelError, match="mlp"):
        mc.run_model("mlp", "wrong", "y")  # shape mismatch inside the model
    mc.put_tensor("fits", np.ones((1, 8), np.float32))
    with pytest.raises(memstore.ModelError, match="2 output key"):
        mc.run_model("mlp", "fits", ["y", "z"])
    with pytest.raises(memstore.ModelError, match="no function 'nofn'"):
        mc.set_script("s", "def f(a):\n    return a\n")
        mc.run_script("s", "nofn", "x", "y")
    with pytest.raises(memstore.ModelError, match="TF"):
        mc.set_model("tf", b"graph", backend="TF")
    with pytest.raises(memstore.ModelError, match="not valid TorchScript"):
        mc.set_script("broken", "def f(a):\n    return a +\n")
    with pytest.raises(memstore.ModelError, match="could not be loaded"):
        mc.set_model("garbage", b"this is not a torchscript archive")
    assert mc.get_ai_info("fails")["errors"] >= 1
    mc.put_tensor("still", np.arange(3))  # the shard kept serving
    np.testing.assert_array_equal(mc.get_tensor("still"), np.arange(3))


def test_missing_cuda_device_is_a_model_error(mc):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(memstore.ModelError, match="CUDA"):
        mc.set_model("gpu_model", torch.jit.script(MLP()), device="GPU:0")
    with pytest.raises(memstore.ModelError, match="unknown device"):
        mc.set_model("bad_device", torch.jit.script(MLP()), device="TPU")


def test_long_run_does_not_block_the_shard(mc):
    mc.set_model("sleepy", Sleeper(1.5))
    mc.put_tensor("{s}.x", np.ones(2, np.float32))
    mc.put_tensor("{s}.probe", np.arange(4))
    run = mc.run_model_async("sleepy", "{s}.x", "{s}.y")
    latencies = []

    def probe():
        with memstore.Client(mc.addresses, timeout=5) as other:
            while not run.done_now() and len(latencies) < 200:
                started = time.monotonic()
                other.get_tensor("{s}.probe")
                latencies.append(time.monotonic() - started)

    thread = threading.Thread(target=probe)
    thread.start()
    run.result(timeout=30)
    thread.join(timeout=30)
    assert len(latencies) >= 5  # many gets answered while the model ran
    assert max(latencies) < 1.0  # none waited for the 1.5 s model run
    np.testing.assert_array_equal(mc.get_tensor("{s}.y"), np.full(2, 2, np.float32))


def test_model_timeout_answers_and_writes_nothing(mc):
    mc.set_model("too_slow", Sleeper(4.0))  # the fixture's --model-timeout is 2 s
    mc.put_tensor("x", np.ones(2, np.float32))
    with pytest.raises(memstore.ModelError, match="model-timeout"):
        mc.run_model("too_slow", "x", "late_output")
    # wait for the run to really end, then check its output was dropped
    assert not mc.poll_tensor("late_output", 100, 40)


def test_delete_and_replace_models(mc):
    mc.set_model("m", torch.jit.script(MLP()))
    mc.set_script("s", "def f(a):\n    return a\n")
    assert mc.model_exists("m")
    mc.delete_model("m")
    mc.delete_script("s")
    assert not mc.model_exists("m")
    with pytest.raises(memstore.KeyNotFound):
        mc.run_model("m", "x", "y")
    with pytest.raises(memstore.KeyNotFound):
        mc.get_script("s")


def test_poll_model_waits_on_the_server(mc):
    waiter = mc.poll_model_async("later", 100, 100)
    mc.set_model("later", torch.jit.script(MLP()))
    assert waiter.result(timeout=30) is True
    assert mc.poll_model("never_set", 10, 5) is False


def test_multigpu_names_without_cuda(mc):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(memstore.ModelError, match="CUDA"):
        mc.set_model_multigpu("mg", torch.jit.script(MLP()), "TORCH", first_gpu=0, num_gpus=2)
    with pytest.raises(ValueError):
        mc.run_model_multigpu("mg", 0, first_gpu=0, num_gpus=0, inputs="x", outputs="y")


def test_model_prefix_is_off_by_default(monkeypatch, models_cluster):
    monkeypatch.setenv("SSKEYOUT", "ens1")
    monkeypatch.setenv("SSKEYIN", "ens1")
    with models_cluster.client(timeout=20) as client:
        client.set_model("shared", torch.jit.script(MLP()))
        client.put_tensor("x", np.ones((1, 8), np.float32))  # stored as ens1.x
        client.run_model("shared", "x", "y")
        assert client.key_exists("shared") and client.key_exists("ens1.y")
        client.use_model_ensemble_prefix(True)
        client.set_model("mine", torch.jit.script(MLP()))
        assert client.key_exists("ens1.mine")
