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


def test_torchscript_model_round_trip(same_node_path, mc):
    model = torch.jit.script(MLP())
    mc.set_model("mlp", model)
    assert mc.model_exists("mlp")
    x = np.random.default_rng(0).random((5, 8), dtype=np.float32)
    mc.put_tensor("x", x)
    mc.run_model("mlp", inputs="x", outputs="y")
    expected = model(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(mc.get_tensor("y"), expected, rtol=1e-6)
    assert same_node_path in mc.paths()


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


def test_models_none_refuses_models_and_scripts_naming_the_flag():
    """--models none: set_model (even TorchScript) and set_script are refused with a
    ModelError naming the flag, and nothing is stored; tensors still work."""
    with (
        memstore.LocalCluster(shards=2, extra_args=["--models", "none"]) as cluster,
        cluster.client(timeout=20) as client,
    ):
        assert [i["models"] for i in client.get_db_node_info()] == ["none", "none"]
        with pytest.raises(memstore.ModelError, match="--models none"):
            client.set_model("scripted", torch.jit.script(MLP()))
        with pytest.raises(memstore.ModelError, match="--models none"):
            client.set_script("ops", "def neg(a):\n    return -a\n")
        with pytest.raises(memstore.ModelError, match="--models none"):
            client.set_model("eager", MLP())
        assert not any(client.model_exists(n) for n in ("scripted", "ops", "eager"))
        client.put_tensor("x", np.ones(2))
        np.testing.assert_array_equal(client.get_tensor("x"), [1, 1])


def test_models_policy_default_and_alias(mc):
    """The default is torchscript; --allow-pickle is --models all."""
    assert {i["models"] for i in mc.get_db_node_info()} == {"all"}
    with memstore.LocalCluster(shards=1) as cluster, cluster.client(timeout=20) as client:
        assert client.get_db_node_info()[0]["models"] == "torchscript"
        with pytest.raises(memstore.ModelError, match="--models all"):
            client.set_model("eager", MLP())


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


def test_inputs_on_other_shards_and_outputs_where_they_hash(same_node_path, mc):
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
    assert mc.paths() == [same_node_path] * 2


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
            while not run.done() and len(latencies) < 200:
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


# -- issue 10: all-or-nothing outputs, races, shutdown, smaller defects -----------------------


class TwoOutputs(torch.nn.Module):
    def forward(self, x):
        return x + 1, x + 2


def names_on_shards(n_shards: int, shards: list[int], prefix: str) -> list[str]:
    """Distinct key names, one per wanted shard index."""
    names: list[str] = []
    for shard in shards:
        names.append(
            next(
                name
                for name in (f"{prefix}{i}" for i in range(10_000))
                if key_shard(name, n_shards) == shard and name not in names
            )
        )
    return names


@pytest.fixture
def capped():
    """Two shards of 1 MiB each that accept pickled code."""
    cluster = memstore.LocalCluster(shards=2, max_memory="1MiB", extra_args=["--allow-pickle"])
    with cluster, cluster.client(timeout=20) as client:
        yield client


@pytest.mark.parametrize(
    "full, filler_floats", [(0, 180_000), (1, 225_000)], ids=["home shard full", "other shard full"]
)
def test_a_run_that_cannot_store_every_output_stores_none(capped, full, filler_floats):
    """Outputs are staged on the other shard and kept only if all fit (the old worker wrote
    the other shard's output first and then failed on the full one)."""
    x_key, out_home = names_on_shards(2, [0, 0], "a")
    (out_other,) = names_on_shards(2, [1], "b")
    (filler,) = names_on_shards(2, [full], "fill")
    capped.set_model("two", torch.jit.script(TwoOutputs()))
    capped.put_tensor(x_key, np.zeros(50_000, np.float32))  # 200 kB; each output as well
    capped.put_tensor(filler, np.zeros(filler_floats, np.float32))  # then one output won't fit
    with pytest.raises(memstore.StoreFull):
        capped.run_model("two", x_key, [out_home, out_other])
    assert not capped.tensor_exists(out_home)
    assert not capped.tensor_exists(out_other)
    capped.delete_tensor(filler)  # with room, the same run writes both
    capped.run_model("two", x_key, [out_home, out_other])
    assert capped.tensor_exists(out_home) and capped.tensor_exists(out_other)


def test_a_timed_out_run_with_outputs_on_two_shards_writes_none(mc):
    class SlowTwo(torch.nn.Module):
        def forward(self, x):
            time.sleep(2.5)  # past the fixture's 2 s --model-timeout
            return x + 1, x + 2

    x_key, out_home = names_on_shards(2, [0, 0], "t")
    (out_other,) = names_on_shards(2, [1], "u")
    mc.set_model("slow_two", SlowTwo())
    mc.put_tensor(x_key, np.ones(2, np.float32))
    with pytest.raises(memstore.ModelError, match="model-timeout"):
        mc.run_model("slow_two", x_key, [out_home, out_other])
    # The run ends (its batch is counted) and then its staged outputs are dropped.
    for _ in range(200):
        if mc.get_ai_info("slow_two")["batches"]:
            break
        mc.poll_tensor(out_home, 25, 1)
    assert mc.get_ai_info("slow_two")["batches"] == 1
    assert not mc.poll_tensor(out_home, 50, 10)
    assert not mc.tensor_exists(out_other)


class SlowToLoad(torch.nn.Module):
    """Takes 1.5 s to unpickle, longer than the client's 1 s timeout in the test."""

    def forward(self, x):
        return x

    def __setstate__(self, state):
        time.sleep(1.5)
        super().__setstate__(state)


def test_set_model_waits_for_a_slow_load_beyond_the_client_timeout(models_cluster):
    with models_cluster.client(timeout=1) as client:
        client.set_model("slow_load", SlowToLoad())  # ConnectionLost after 1 s before
        assert client.model_exists("slow_load")


def test_model_exists_and_poll_model_see_scripts(mc):
    waiter = mc.poll_model_async("scr", 100, 100)
    mc.set_script("scr", "def f(a):\n    return a\n")
    assert waiter.result(timeout=30) is True
    assert mc.model_exists("scr")
    mc.put_tensor("plain", np.ones(1, np.float32))
    assert not mc.model_exists("plain")  # a tensor is not a model
    assert mc.poll_model("plain", 10, 3) is False


def test_running_an_unknown_model_is_key_not_found_naming_it(mc):
    mc.put_tensor("x", np.ones(1, np.float32))
    with pytest.raises(memstore.KeyNotFound, match="'no_such_model' not found"):
        mc.run_model("no_such_model", "x", "y")
    with pytest.raises(memstore.KeyNotFound, match="'no_such_script' not found"):
        mc.run_script("no_such_script", "f", "x", "y")


def test_a_run_queued_in_a_batcher_fails_fast_when_the_model_is_replaced(mc):
    mc.set_model("held", Sleeper(0.0), batch_size=8, min_batch_size=8, min_batch_timeout=60_000)
    mc.put_tensor("x", np.ones((1, 2), np.float32))
    run = mc.run_model_async("held", "x", "y")  # waits for 8 rows, up to 60 s
    assert not mc.poll_tensor("y", 50, 4)
    mc.set_model("held", Sleeper(0.0))
    with pytest.raises(memstore.ModelError, match="replaced or deleted"):
        run.result(timeout=30)  # within the fixture's 2 s --model-timeout, not after it


def test_stats_count_every_update_from_many_threads():
    import sys

    from memstore.server.models import Stats

    stats = Stats()
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [
            threading.Thread(
                target=lambda: [
                    (stats.called(), stats.ran(0.0), stats.failed()) for _ in range(20_000)
                ]
            )
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        sys.setswitchinterval(interval)
    counts = stats.as_dict()
    assert (counts["calls"], counts["batches"], counts["errors"]) == (80_000, 80_000, 80_000)


def test_a_closed_executor_ignores_late_completions():
    """A worker finishing after close() used to write into the closed (maybe reused) pipe."""
    from memstore.server.executor import Executor
    from memstore.server.peers import Peers

    executor = Executor(Peers(timeout=1.0), lambda key: None, lambda items: None)
    executor.close()
    executor.call_on_loop(lambda: None)  # OSError (EBADF) before


SHUTDOWN_PROGRAM = """
import sys, threading, time
import numpy as np, torch
import memstore
from memstore.server.shard import Shard

class Stuck(torch.nn.Module):
    def forward(self, x):
        time.sleep(3600)
        return x

shard = Shard("tcp://127.0.0.1:0", allow_pickle=True)
serving = threading.Thread(target=shard.serve)
serving.start()
with memstore.Client(shard.address, timeout=30) as client:
    client.set_model("stuck", Stuck())
    client.put_tensor("x", np.ones(1, np.float32))
    client.run_model_async("stuck", "x", "y")
    while not client.get_ai_info("stuck")["calls"]:
        pass
shard.stop()
serving.join(30)
print("closed", flush=True)
"""


def test_a_model_stuck_in_a_run_does_not_block_interpreter_exit(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "stuck.py"
    script.write_text(SHUTDOWN_PROGRAM)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )  # the model sleeps an hour: non-daemon pool threads held the exit that long
    assert done.returncode == 0, done.stderr[-2000:]
    assert "closed" in done.stdout
