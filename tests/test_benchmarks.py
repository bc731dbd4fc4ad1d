"""The benchmark suite end to end on its tiny preset: real shards, real baselines, real JSON.

The first test needs nothing beyond memstore's own dependencies (no Redis, no plots); the
second needs the ``[bench]`` extra (redis-py, matplotlib) and skips without it.
"""

from __future__ import annotations

import json

import pytest

from benchmarks.__main__ import main
from benchmarks.report import ratios


def _run(tmp_path, *args: str) -> dict:
    code = main(["--preset", "tiny", "--out", str(tmp_path), "--no-progress", *args])
    assert code == 0
    return json.loads((tmp_path / "tiny.json").read_text())


def _positive_samples(by_size: dict) -> None:
    assert by_size, "no sizes measured"
    for size, values in by_size.items():
        assert int(size) > 0
        assert values and all(v > 0 for v in values), f"size {size}: {values[:5]}"


def test_latency_and_bandwidth_json(tmp_path, capsys):
    run = _run(tmp_path, "--only", "latency,bandwidth", "--no-redis", "--no-plots")
    for field in ("name", "created", "command", "preset", "machine", "versions", "results"):
        assert field in run
    assert run["machine"]["cores"] >= 1
    assert run["versions"]["pyzmq"] and run["versions"]["memstore"]
    latency = run["results"]["latency"]
    assert set(latency["samples"]) == {"memstore", "floor"}  # no Redis asked for
    for op in ("put", "get", "wake"):
        _positive_samples(latency["samples"]["memstore"][op])
    _positive_samples(latency["samples"]["floor"]["get"])
    get_1k = latency["summary"]["memstore"]["get"]["1024"]
    assert 0 < get_1k["min"] <= get_1k["p50"] <= get_1k["p99"] <= get_1k["max"]
    bandwidth = run["results"]["bandwidth"]
    for kind, op in (
        ("memstore", "put"),
        ("memstore", "get"),
        ("floor", "get"),
        ("memcpy", "copy"),
    ):
        _positive_samples(bandwidth["samples"][kind][op])
    targets = {t["name"]: t for t in run["targets"]}
    assert targets["1 KiB get latency p50 vs raw ZeroMQ"]["ratio"] > 0
    assert targets["1 KiB get latency p50 vs Redis"]["ratio"] is None  # not measured
    out = capsys.readouterr().out
    assert "targets" in out and "vs raw ZeroMQ" in out


def test_full_pipeline_with_redis_and_plots(tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("redis")
    run = _run(tmp_path, "--only", "latency,throughput")
    if "skipped" in run["redis"]:
        pytest.skip(run["redis"])
    latency = run["results"]["latency"]
    _positive_samples(latency["samples"]["redis"]["get"])
    _positive_samples(latency["samples"]["redis"]["wake"])
    rows = run["results"]["throughput"]["summary"]
    assert {(r["system"], r["mode"]) for r in rows} >= {
        ("memstore", "pipelined"),
        ("redis", "sync"),
    }
    assert all(r["ops_per_s"] > 0 for r in rows)
    assert all(r.ratio is not None for r in ratios(run["results"]) if "bandwidth" not in r.name)
    for name in ("latency", "throughput"):
        png = tmp_path / f"tiny-{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
