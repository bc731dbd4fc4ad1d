"""memstore.mpi._watch: how a rank waiting at an MPI job's shutdown tells a lost peer (its
shard gone) from a normal end (a shard stopped just after the collective completed).

Real shards (LocalCluster); the probe interval is shortened so the test stays short."""

from __future__ import annotations

import time

import pytest

import memstore
from memstore.mpi import _watch
from memstore.mpi._watch import PeerWatch


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(_watch, "PROBE_S", 0.05)


def probes(watch: PeerWatch, count: int) -> list[str | None]:
    """``count`` probes, each waiting out the interval first (bounded: count x PROBE_S)."""
    said = []
    for _ in range(count):
        time.sleep(_watch.PROBE_S)  # the interval the watch keeps between probes
        said.append(watch.lost())
    return said


def test_a_shard_killed_counts_as_lost_from_its_second_failed_probe():
    """Shards that answer are never lost; one failed probe is no loss either (a normal end
    stops shards one by one); the second, an interval later, names the shard."""
    with memstore.LocalCluster(shards=2) as cluster:
        watch = PeerWatch(cluster.client, cluster.addresses)
        try:
            assert watch.lost() is None  # the wait begins: no probe yet
            assert probes(watch, 3) == [None, None, None]
            cluster.shards[1].process.kill()
            cluster.shards[1].process.wait(10)
            first, second = probes(watch, 2)
            assert first is None
            assert second is not None and cluster.addresses[1] in second, second
        finally:
            watch.close()


def test_no_peers_nothing_to_watch():
    watch = PeerWatch(memstore.Client, [])
    assert probes(watch, 2) == [None, None]
    watch.close()
