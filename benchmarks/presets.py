"""The parameters of a run: sizes, counts, durations. Every loop in the suite is bounded here.

``quick`` is ``make bench`` (under 5 minutes on 2 cores), ``full`` is ``make bench-full``,
``tiny`` is for the suite's own test (seconds). :meth:`Preset.transport` narrows any of them
to what issue 11's transport targets read (``--only transport``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

KiB, MiB = 1 << 10, 1 << 20


def size_label(n: int) -> str:
    """``n`` bytes as tables and plots show it: ``64 MiB``, ``1 KiB``, ``256 B``."""
    if n >= MiB:
        return f"{n // MiB} MiB"
    if n >= KiB:
        return f"{n // KiB} KiB"
    return f"{n} B"


@dataclass(frozen=True)
class Preset:
    """How much to measure. Times are seconds; every loop stops at its count or its time."""

    name: str
    # latency: sizes in bytes; per (size, round, system, op) at most `latency_iters` calls
    # and at most `latency_batch_s` seconds; `wake_iters` poll wake-ups per round.
    latency_sizes: tuple[int, ...]
    latency_rounds: int
    latency_iters: int
    latency_batch_s: float
    wake_iters: int
    # bandwidth: sizes in bytes; per (size, round, system, op) at most `bandwidth_reps`
    # transfers and at most `bandwidth_batch_s` seconds (at least one transfer).
    bandwidth_sizes: tuple[int, ...]
    bandwidth_rounds: int
    bandwidth_reps: int
    bandwidth_batch_s: float
    # throughput: small puts from N client processes on M shards, for `throughput_s` each.
    small_size: int
    throughput_clients: tuple[int, ...]
    throughput_shards: tuple[int, ...]
    throughput_rounds: int
    throughput_s: float
    pipeline_window: int
    keys_per_client: int
    # scaling: shards x clients grid; async small puts and sync gets of `scaling_get_size`.
    scaling_shards: tuple[int, ...]
    scaling_clients: tuple[int, ...]
    scaling_s: float
    scaling_get_size: int
    # inference: run_model calls from `inference_clients` processes, batching off / on.
    inference_clients: int
    inference_window: int
    inference_batch_size: int
    inference_s: float
    inference_features: int
    # online learning: producers put a snapshot every 1/rate s; consumers wait and get.
    online_producers: int
    online_consumers: int
    online_rate_hz: float
    online_snapshots: int
    online_size: int
    # threads: `threads` threads in one process, mixed get / put of `threads_size` bytes on
    # `threads_keys` keys each, sharing one client vs one client each, `threads_s` per round.
    threads: int = 8
    threads_size: int = 1 * KiB
    threads_keys: int = 64
    threads_rounds: int = 2
    threads_s: float = 1.0
    # streams: one producer, N consumers in a group, per step size; a rate phase of at most
    # `streams_steps` steps and `streams_bytes` bytes, a lag phase of `streams_lag_steps` at
    # `streams_rate_hz`, each producer for at most `streams_s`; the stall phase appends
    # `streams_stall_steps` to a drop_oldest stream of `streams_stall_maxlen`, its consumer
    # holding each step `streams_slow_s` (the slow case).
    streams_sizes: tuple[int, ...] = (1 * KiB, 1 * MiB)
    streams_consumers: tuple[int, ...] = (1, 2)
    streams_rounds: int = 1
    streams_steps: int = 2000
    streams_bytes: int = 256 * MiB
    streams_s: float = 1.0
    streams_rate_hz: float = 100.0
    streams_lag_steps: int = 60
    streams_stall_maxlen: int = 8
    streams_stall_steps: int = 100
    streams_slow_s: float = 0.05
    # no rate loop (throughput, threads) makes more calls than this per client or thread
    max_ops: int = 1_000_000
    # a request that takes longer than this fails the run instead of hanging it
    timeout_s: float = 60.0
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    def with_grid(self, shards: tuple[int, ...] | None, clients: tuple[int, ...] | None) -> Preset:
        """This preset with the scaling grid replaced (``--shards`` / ``--clients``)."""
        return replace(
            self,
            scaling_shards=shards or self.scaling_shards,
            scaling_clients=clients or self.scaling_clients,
        )

    def transport(self) -> Preset:
        """This preset cut down to the points issue 11's targets read: 1 KiB latency without
        wake-ups, the largest bandwidth size up to 64 MiB, throughput on 1 shard x 1 client."""
        return replace(
            self,
            name=f"{self.name}-transport",
            latency_sizes=(1 * KiB,),
            wake_iters=0,
            bandwidth_sizes=(max(s for s in self.bandwidth_sizes if s <= 64 * MiB),),
            throughput_shards=(1,),
            throughput_clients=(1,),
        )


def _pow2(lo: int, hi: int, step: int = 1) -> tuple[int, ...]:
    sizes, size = [], lo
    while size <= hi:
        sizes.append(size)
        size <<= step
    return tuple(sizes)


TINY = Preset(
    name="tiny",
    latency_sizes=(8, 1 * KiB),
    latency_rounds=2,
    latency_iters=20,
    latency_batch_s=0.5,
    wake_iters=5,
    bandwidth_sizes=(1 * MiB,),
    bandwidth_rounds=2,
    bandwidth_reps=2,
    bandwidth_batch_s=0.5,
    small_size=256,
    throughput_clients=(1,),
    throughput_shards=(1,),
    throughput_rounds=1,
    throughput_s=0.3,
    pipeline_window=64,
    keys_per_client=200,
    scaling_shards=(1, 2),
    scaling_clients=(1, 2),
    scaling_s=0.3,
    scaling_get_size=64 * KiB,
    inference_clients=1,
    inference_window=4,
    inference_batch_size=4,
    inference_s=0.5,
    inference_features=16,
    online_producers=1,
    online_consumers=1,
    online_rate_hz=20.0,
    online_snapshots=5,
    online_size=64 * KiB,
    threads_keys=16,
    threads_rounds=1,
    threads_s=0.3,
    streams_sizes=(1 * KiB, 256 * KiB),
    streams_consumers=(1, 2),
    streams_steps=40,
    streams_bytes=8 * MiB,
    streams_s=0.5,
    streams_rate_hz=50.0,
    streams_lag_steps=10,
    streams_stall_maxlen=4,
    streams_stall_steps=20,
    streams_slow_s=0.05,
    max_ops=100_000,
    timeout_s=30.0,
)

QUICK = Preset(
    name="quick",
    latency_sizes=(8, 64, 512, 1 * KiB, 4 * KiB, 32 * KiB, 256 * KiB, 1 * MiB),
    latency_rounds=3,
    latency_iters=100,
    latency_batch_s=1.0,
    wake_iters=20,
    bandwidth_sizes=(1 * MiB, 4 * MiB, 16 * MiB, 64 * MiB),
    bandwidth_rounds=3,
    bandwidth_reps=3,
    bandwidth_batch_s=2.0,
    small_size=256,
    throughput_clients=(1, 2),
    throughput_shards=(1, 2),
    throughput_rounds=2,
    throughput_s=1.0,
    pipeline_window=256,
    keys_per_client=5000,
    scaling_shards=(1, 2, 4),
    scaling_clients=(1, 2, 4),
    scaling_s=1.0,
    scaling_get_size=1 * MiB,
    inference_clients=2,
    inference_window=32,  # 64 calls in flight, as issue 4 asks
    inference_batch_size=64,
    inference_s=4.0,
    inference_features=1024,
    online_producers=2,
    online_consumers=2,
    online_rate_hz=20.0,
    online_snapshots=40,
    online_size=1 * MiB,
)

FULL = Preset(
    name="full",
    latency_sizes=_pow2(8, 1 * MiB),
    latency_rounds=5,
    latency_iters=300,
    latency_batch_s=2.0,
    wake_iters=50,
    bandwidth_sizes=_pow2(1 * MiB, 256 * MiB, 1),
    bandwidth_rounds=5,
    bandwidth_reps=5,
    bandwidth_batch_s=5.0,
    small_size=256,
    throughput_clients=(1, 2, 4),
    throughput_shards=(1, 2, 4),
    throughput_rounds=3,
    throughput_s=2.0,
    pipeline_window=256,  # issue 11's pipelined target is a window of 256
    keys_per_client=20000,
    scaling_shards=(1, 2, 4, 8),
    scaling_clients=(1, 2, 4, 8),
    scaling_s=2.0,
    scaling_get_size=1 * MiB,
    inference_clients=4,
    inference_window=16,
    inference_batch_size=64,
    inference_s=8.0,
    inference_features=1024,
    online_producers=2,
    online_consumers=4,
    online_rate_hz=50.0,
    online_snapshots=250,
    online_size=4 * MiB,
    threads_rounds=3,
    threads_s=2.0,
    streams_consumers=(1, 2, 4),
    streams_rounds=3,
    streams_steps=5000,
    streams_bytes=1024 * MiB,
    streams_s=2.0,
    streams_lag_steps=200,
    streams_stall_steps=400,
    timeout_s=120.0,
)

PRESETS = {p.name: p for p in (TINY, QUICK, FULL)}
