"""The benchmark suite end to end on its tiny preset: real shards, real baselines, real JSON.

The first two tests need nothing beyond memstore's own dependencies (no Redis, no plots);
the third (``--only transport``, issue 11's targets) needs the ``[bench]`` extra (redis-py,
matplotlib) and skips without it.
"""

from __future__ import annotations

import json

import pytest

from benchmarks.__main__ import main
from benchmarks.goals import ratios


def _run(tmp_path, *args: str, name: str = "tiny") -> dict:
    code = main(["--preset", "tiny", "--out", str(tmp_path), "--no-progress", *args])
    assert code == 0
    return json.loads((tmp_path / f"{name}.json").read_text())


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
    paths = {"memstore", "memstore-tcp", "memstore-ipc", "floor", "floor-unix"}
    assert set(latency["samples"]) == paths  # each path, each floor, no Redis
    for op in ("put", "get", "wake"):
        _positive_samples(latency["samples"]["memstore"][op])
    for kind in paths:
        _positive_samples(latency["samples"][kind]["get"])
    get_1k = latency["summary"]["memstore"]["get"]["1024"]
    assert 0 < get_1k["min"] <= get_1k["p50"] <= get_1k["p99"] <= get_1k["max"]
    bandwidth = run["results"]["bandwidth"]
    for kind, op in (
        ("memstore", "put"),
        ("memstore", "get"),
        ("memstore-tcp", "get"),
        ("floor", "get"),
        ("floor-unix", "put"),
        ("floor-unix", "get"),
        ("memcpy", "copy"),
        ("memstore-shm", "put"),
        ("memstore-shm", "get"),
    ):
        _positive_samples(bandwidth["samples"][kind][op])
    targets = {t["name"]: t for t in run["targets"]}
    assert targets["1 KiB get p50, tcp, vs raw pyzmq floor"]["ratio"] > 0
    assert targets["1 KiB get p50, ipc://, vs Redis on loopback"]["ratio"] is None  # no Redis
    assert targets["1 KiB get p50, same node (unix), vs Unix-socket floor"]["ratio"] > 0
    assert {t["issue"] for t in run["targets"]} == {6, 11, 12, 24}
    assert targets["1 MiB get, shm vs socket path"]["ratio"] > 0
    out = capsys.readouterr().out
    assert "memstore shm" in out and "Unix socket (floor)" in out and "memstore tcp://" in out
    assert "targets" in out and "vs raw pyzmq floor" in out and "issue 11" in out


def test_threads_shared_and_separate_clients(tmp_path, capsys):
    run = _run(tmp_path, "--only", "threads", "--no-redis", "--no-plots")
    result = run["results"]["threads"]
    assert result["params"]["threads"] == 8
    rows = {r["mode"]: r for r in result["summary"]}
    assert set(rows) == {"shared", "separate"}
    assert all(r["ops_per_s"] > 0 for r in rows.values())
    for sample in result["samples"]:
        assert sample["threads"] == 8
        assert sample["clients"] == (1 if sample["mode"] == "shared" else 8)
        assert len(sample["per_thread_ops"]) == 8 and min(sample["per_thread_ops"]) > 0
    target = next(t for t in run["targets"] if t["name"].startswith("8 threads"))
    assert target["ratio"] > 0 and target["met"] in (True, False)
    assert "one shared client" in capsys.readouterr().out


def test_transport_targets_with_redis_and_plots(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    pytest.importorskip("redis")
    run = _run(tmp_path, "--only", "transport", name="tiny-transport")
    if "skipped" in run["redis"]:
        pytest.skip(run["redis"])
    assert set(run["results"]) == {"latency", "bandwidth", "throughput", "threads"}
    latency = run["results"]["latency"]
    assert latency["params"]["sizes"] == [1024]
    for kind in ("memstore", "memstore-tcp", "memstore-ipc", "floor", "floor-unix", "redis"):
        assert set(latency["samples"][kind]) == {"put", "get"}  # no wake-ups here
        _positive_samples(latency["samples"][kind]["get"])
    rows = run["results"]["throughput"]["summary"]
    assert {(r["system"], r["mode"]) for r in rows} == {
        (kind, mode)
        for kind in ("memstore", "memstore-tcp", "floor", "floor-unix", "redis")
        for mode in ("sync", "pipelined")
    } | {(kind, mode) for kind in ("memstore", "redis") for mode in ("bulk put", "bulk get")}
    assert all(r["ops_per_s"] > 0 for r in rows)
    targets = run["targets"]
    assert len(targets) == 13 and {t["issue"] for t in targets} == {11, 24}
    assert all(t["ratio"] > 0 and t["met"] in (True, False) for t in targets), targets
    assert [t["name"] for t in targets] == [r.name for r in ratios(run["results"], [11, 24])]
    out = capsys.readouterr().out
    assert "issue 11 (client transport)" in out and "issue 6" not in out
    assert "issue 24 (same-node Unix socket)" in out
    for name in ("latency", "bandwidth", "throughput"):
        png = tmp_path / f"tiny-transport-{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_secure_measures_curve_next_to_plain(tmp_path, capsys):
    """``--secure``: the curve workload, plain and CURVE shards measured in the same run."""
    run = _run(tmp_path, "--only", "latency", "--secure", "--no-redis", "--no-plots")
    assert set(run["results"]) == {"latency", "curve"}
    result = run["results"]["curve"]
    assert result["params"]["sizes"] == [1024, 1 << 20]  # tiny: its largest bandwidth size
    for mode in ("plain", "secure"):
        for op in ("put", "get"):
            _positive_samples(result["samples"][mode][op])
    assert all(r > 0 for by_size in result["overhead"].values() for r in by_size.values())
    out = capsys.readouterr().out
    assert "CURVE (--secure) vs plain TCP" in out and "secure/plain" in out


def test_the_shm_benchmark_measures_each_target_and_the_crossover():
    from benchmarks import shm as bench

    (row,) = bench.crossover(1, sizes=(256,))
    assert row["kib"] == 256
    assert all(row[k] > 0 for k in ("shm_put", "shm_get", "socket_put", "socket_get"))
    targets = bench.targets(bench.measure(1))
    assert len(targets) == 8 and all(ratio > 0 for _, ratio, _ in targets)


def test_streams_against_redis_streams_in_one_run(tmp_path, capsys):
    """``--only streams``: every step appended is consumed once, on memstore (sockets and
    shared memory) and Redis Streams alike; the stall phase and issue 22's targets."""
    pytest.importorskip("redis")
    from benchmarks.presets import TINY
    from benchmarks.streams import memory_bound

    run = _run(tmp_path, "--only", "streams", "--no-plots")
    if "skipped" in run["redis"]:
        pytest.skip(run["redis"])
    result = run["results"]["streams"]
    assert "error" not in result, result.get("traceback")
    systems = {"memstore", "memstore-shm", "redis"}
    for record in result["samples"]:
        assert record["appended"] == record["steps"] > 0, record  # each step taken once
        assert len(record["lag_ms"]) == record["steps"] and min(record["lag_ms"]) > 0
    phases = {(r["system"], r["phase"], r["size"], r["consumers"]) for r in result["samples"]}
    assert phases == {
        (system, phase, size, n)
        for system in systems
        for phase in ("rate", "lag")
        for size in TINY.streams_sizes
        for n in TINY.streams_consumers
    }
    for row in result["summary"]:
        assert row["steps_per_s"] > 0 and row["mb_per_s"] > 0
        assert row["lag_n"] == TINY.streams_lag_steps
        assert 0 < row["lag_p50_ms"] <= row["lag_p99_ms"]
    slow, fast = sorted(result["stall"], key=lambda row: row["variant"], reverse=True)
    assert (slow["variant"], fast["variant"]) == ("slow", "fast")
    for row in (slow, fast):
        assert row["appended"] == TINY.streams_stall_steps
        assert 0 < row["taken"] <= row["appended"]
        assert row["bound_bytes"] == memory_bound(TINY.streams_stall_maxlen, row["size"])
        assert row["peak_bytes"] > TINY.streams_stall_maxlen * row["size"]  # the window filled
    assert slow["taken"] < slow["appended"]  # the slow consumer lagged: steps were dropped
    goals = [t for t in run["targets"] if t["issue"] == 22]
    assert len(goals) == 5 and all(t["ratio"] > 0 for t in goals), goals
    out = capsys.readouterr().out
    assert "streams: 1 producer" in out and "issue 22 (streams)" in out
