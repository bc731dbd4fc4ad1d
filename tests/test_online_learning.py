"""The online-learning example end to end, at a tiny size: real store, real mpiexec."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")
image = pytest.importorskip("matplotlib.image")

RUN = Path(__file__).resolve().parents[1] / "examples" / "online_learning" / "run.py"


@pytest.mark.timeout(240)
def test_online_learning_tiny(tmp_path):
    out = tmp_path / "output"
    result = subprocess.run(
        [sys.executable, str(RUN), "--size", "tiny", "--output", str(out), "--timeout", "200"],
        capture_output=True,
        text=True,
        timeout=230,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert all(summary["checks"].values()), summary["checks"]
    assert summary["snapshots_produced"] == summary["snapshots_appended"] > 0
    assert 0 < summary["snapshots_trained_on"] <= summary["snapshots_produced"]
    low, high = summary["store_bytes_after_fill_min_max"]
    steps_held = summary["stream_window"] + summary["appends_in_flight_max"]
    step_bytes = summary["window_bytes"] / summary["stream_window"]
    assert 0 < low <= high <= 1.25 * steps_held * step_bytes + 2**20
    assert summary["final_loss"] < summary["first_loss"]
    assert summary["in_store_model_runs"] >= 1
    assert summary["producer_ranks"] == 2 and summary["trainer_ranks"] == 2
    pngs = sorted(out.glob("*.png"))
    assert {"loss.png", "prediction.png"} <= {p.name for p in pngs}
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = image.imread(png)
        assert pixels.ndim == 3 and pixels.shape[0] > 50 and pixels.shape[1] > 50
        assert pixels.std() > 0  # not a blank canvas


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("launch", [[], ["--no-mpi"]], ids=["mpiexec", "local"])
def test_online_learning_long_streams_far_more_than_the_store_holds(tmp_path, launch):
    """``--size long``: 8,000 solver steps a producer rank, many times the shards'
    --max-memory, through a bounded stream: never StoreFull, the store's bytes flat once the
    window is full; under one MPMD mpiexec job and as local processes (one producer)."""
    out = tmp_path / "output"
    result = subprocess.run(
        [sys.executable, str(RUN), "--size", "long", *launch, "--output", str(out),
         "--timeout", "800"],
        capture_output=True,
        text=True,
        timeout=880,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert all(summary["checks"].values()), summary["checks"]
    assert summary["snapshots_appended"] == summary["snapshots_produced"]
    assert summary["snapshots_produced"] == 4000 * summary["producer_ranks"]
    assert summary["streamed_x_store_max_memory"] >= 10
