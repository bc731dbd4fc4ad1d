"""Model execution on CUDA devices; skipped where there is no GPU."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import memstore  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def scripted_mlp():
    torch.manual_seed(0)
    return torch.jit.script(
        torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    )


@pytest.fixture(scope="module")
def gpu_client():
    with memstore.LocalCluster(shards=2) as cluster, cluster.client(timeout=60) as client:
        yield client


def test_run_model_on_gpu0(gpu_client):
    model = scripted_mlp()
    gpu_client.set_model("gpu_mlp", model, device="GPU:0")
    x = np.random.default_rng(0).random((8, 16), dtype=np.float32)
    gpu_client.put_tensor("gx", x)
    gpu_client.run_model("gpu_mlp", "gx", "gy")
    expected = model(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(gpu_client.get_tensor("gy"), expected, rtol=1e-4, atol=1e-5)
    assert gpu_client.get_ai_info("gpu_mlp")["per_shard"][0]["device"] == "cuda:0"


def test_run_model_multigpu(gpu_client):
    gpus = torch.cuda.device_count()
    model = scripted_mlp()
    gpu_client.set_model_multigpu("mg", model, "TORCH", first_gpu=0, num_gpus=gpus)
    x = np.ones((4, 16), np.float32)
    gpu_client.put_tensor("mx", x)
    expected = model(torch.from_numpy(x)).detach().numpy()
    for offset in range(2 * gpus):
        gpu_client.run_model_multigpu("mg", offset, 0, gpus, "mx", f"my{offset}")
        np.testing.assert_allclose(
            gpu_client.get_tensor(f"my{offset}"), expected, rtol=1e-4, atol=1e-5
        )
    gpu_client.delete_model_multigpu("mg", 0, gpus)
    assert not gpu_client.model_exists("mg.GPU:0")


def test_batching_on_gpu(gpu_client):
    model = scripted_mlp()
    gpu_client.set_model(
        "gb", model, device="GPU", batch_size=64, min_batch_size=8, min_batch_timeout=2000
    )
    names = [f"{{g}}.in{i}" for i in range(8)]
    gpu_client.put_tensors({n: np.ones((1, 16), np.float32) for n in names})
    memstore.wait(
        [gpu_client.run_model_async("gb", n, f"{{g}}.out{i}") for i, n in enumerate(names)],
        timeout=60,
    )
    assert gpu_client.get_ai_info("gb")["batches"] == 1
