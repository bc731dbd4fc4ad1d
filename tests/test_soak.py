"""A bounded soak (``make soak``; ``slow``): 4 shards, producers, consumers, pollers and
script runs from several processes for ``MEMSTORE_SOAK_SECONDS`` (default 120); mid-way a
snapshot is taken, one shard is killed and restored from it, and one client process is
killed by SIGKILL mid-put. The report (ops, errors by type, acknowledged writes lost, RSS
and descriptors per shard before/after) is printed and written as JSON to
``MEMSTORE_SOAK_REPORT`` (default ``soak-report.json`` in the temporary directory).
"""

from __future__ import annotations

import collections
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import memstore

SECONDS = float(os.environ.get("MEMSTORE_SOAK_SECONDS", "120"))
SCRIPT = "def scale(a):\n    return a * 2\n"


def _value(worker: int, seq: int) -> np.ndarray:
    return np.full(256, worker * 1_000_003 + seq, dtype=np.int64)


def _worker(role: str, worker: int, addresses: list[str], until: float, out) -> None:
    """One soak process: runs ``role`` until ``until``; sends back its tallies."""
    ops, errors, acked = 0, collections.Counter(), []
    rng = np.random.default_rng(worker)
    with memstore.Client(address=",".join(addresses), cluster=True, timeout=5) as client:
        seq = 0
        while time.time() < until:
            try:
                if role == "producer":
                    key = f"soak/{worker}/{seq}"
                    client.put_tensor(key, _value(worker, seq))
                    acked.append((key, time.time()))
                    seq += 1
                elif role == "consumer":
                    key = f"soak/{rng.integers(0, 2)}/{rng.integers(0, 50)}"
                    if client.tensor_exists(key):
                        client.get_tensor(key)
                elif role == "poller":
                    client.poll_key(f"soak/0/{seq}", 10, 5)
                    seq += 1
                else:  # model runs: a TorchScript function on a tensor of its own
                    if seq == 0:
                        client.set_script("soak-script", SCRIPT)
                    client.put_tensor(f"in/{worker}", np.arange(64.0))
                    client.run_script("soak-script", "scale", [f"in/{worker}"], [f"out/{worker}"])
                    assert client.get_tensor(f"out/{worker}")[3] == 6.0
                    seq += 1
                ops += 1
            except Exception as exc:  # tallied: a shard is down for part of the run
                errors[type(exc).__name__] += 1
                time.sleep(0.05)
    out.put({"role": role, "ops": ops, "errors": dict(errors), "acked": acked})


def _shard_stats(client: memstore.Client) -> list[dict]:
    stats = []
    for node in client.get_db_node_info():
        fds = len(os.listdir(f"/proc/{node['pid']}/fd")) if os.path.isdir("/proc") else -1
        stats.append({"pid": node["pid"], "rss": node["rss"], "fds": fds, "keys": node["keys"]})
    return stats


KILLED_PUTTER = """
import sys, numpy as np, memstore
client = memstore.Client(address=sys.argv[1], cluster=True, timeout=5)
print("ready", flush=True)
i = 0
while True:
    client.put_tensor(f"killed/{i % 8}", np.ones(4 << 20, np.uint8))
    i += 1
"""


@pytest.mark.slow
@pytest.mark.timeout(SECONDS + 240)  # the soak itself runs SECONDS, past the default 120 s
def test_soak(tmp_path):
    snapshot = tmp_path / "snapshot"
    report_path = os.environ.get("MEMSTORE_SOAK_REPORT", str(tmp_path / "soak-report.json"))
    roles = ["producer", "producer", "consumer", "poller", "model"]
    with (
        memstore.LocalCluster(shards=4, extra_args=["--save-dir", str(snapshot)]) as running,
        running.client(timeout=30) as client,
    ):
        before = _shard_stats(client)
        start = time.time()
        until = start + SECONDS
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        workers = [
            ctx.Process(target=_worker, args=(r, i, running.addresses, until, out))
            for i, r in enumerate(roles)
        ]
        for w in workers:
            w.start()
        putter = subprocess.Popen(
            [sys.executable, "-c", KILLED_PUTTER, ",".join(running.addresses)],
            stdout=subprocess.PIPE,
        )
        try:
            assert putter.stdout.readline() == b"ready\n"
            time.sleep(min(5.0, SECONDS / 10))
            putter.send_signal(signal.SIGKILL)  # mid-put: it never stops putting
        finally:
            putter.kill()
            putter.wait(timeout=10)
        time.sleep(max(0.0, start + SECONDS * 0.4 - time.time()))
        saved_at = time.time()  # every write acknowledged before this is in the snapshot
        client.save(str(snapshot))
        time.sleep(min(3.0, SECONDS / 20))
        killed_pid = running.shards[1].process.pid
        os.kill(killed_pid, signal.SIGKILL)
        time.sleep(1.0)
        running.restart_shard(1, restore=str(snapshot))
        results = [out.get(timeout=SECONDS + 60) for _ in workers]
        for w in workers:
            w.join(timeout=30)
            assert w.exitcode == 0, f"a soak process failed: {w.exitcode}"
        lost, checked = [], 0
        for result in results:
            for key, acked_at in result["acked"]:
                if acked_at >= saved_at:
                    continue  # may be lost with the killed shard: after the snapshot
                checked += 1
                worker, seq = (int(part) for part in key.split("/")[1:])
                if not client.tensor_exists(key) or not np.array_equal(
                    client.get_tensor(key), _value(worker, seq)
                ):
                    lost.append(key)
        after = _shard_stats(client)
        errors = collections.Counter()
        for result in results:
            errors.update(result["errors"])
        report = {
            "seconds": round(time.time() - start, 1),
            "ops": sum(r["ops"] for r in results),
            "ops_by_role": dict(collections.Counter({r["role"]: 0 for r in results})),
            "errors": dict(errors),
            "acked_before_snapshot": checked,
            "acked_writes_lost": len(lost),
            "lost_keys": lost[:20],
            "killed_shard_pid": killed_pid,
            "shards_before": before,
            "shards_after": after,
        }
        for r in results:
            report["ops_by_role"][r["role"]] += r["ops"]
        print("\nsoak report:\n" + json.dumps(report, indent=2))
        with open(report_path, "w") as f:
            json.dump(report, f, indent=2)
        assert not lost, f"{len(lost)} acknowledged writes lost: {lost[:5]}"
        assert checked > 0 and report["ops"] > 0
        for b, a in zip(before, after, strict=True):
            assert a["fds"] < b["fds"] + 64, (b, a)  # no descriptor leak per client churn
