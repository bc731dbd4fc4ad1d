"""The issues' targets as ratios of this run's measurements, each met or missed.

A :class:`Goal` says which two measurements of a run to divide and what the quotient must
be; evaluated on a run's results it gives a :class:`Ratio`. :data:`GOALS` lists every
issue's targets and :func:`ratios` evaluates them. A target whose inputs were not
measured (a workload skipped, Redis missing) has ratio ``None``; one measured at other
parameters than its issue names (a smaller preset) says so in its note.

Issue 12's targets read the bandwidth workload's ``memstore-shm`` column; its absolute
ones (64 MiB get >= 5 GB/s, ``client.empty`` puts >= 20 GB/s, a got array's first full
read) are measured by ``python -m benchmarks.shm``.

Issue 11 (client transport) supersedes issue 6's floor ratios, which it tightens on the same
measurements (1 KiB get <= 1.5x -> 1.2x, 64 MiB put / get >= 0.8x -> 0.9x). Since issue 24
a same-node client takes the shard's Unix socket (``memstore``): issues 6 and 11's targets
read the ZeroMQ paths they were set for (``memstore-tcp``, ``memstore-ipc``), issue 24's the
Unix path against Redis and the plain Unix-socket floor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from benchmarks.presets import KiB, MiB, size_label
from benchmarks.targets import (
    FLOOR,
    MEMSTORE,
    MEMSTORE_IPC,
    MEMSTORE_SHM,
    MEMSTORE_TCP,
    REDIS,
    UNIX_FLOOR,
)
from benchmarks.threads import SEPARATE, SHARED
from benchmarks.throughput import BULK_GET, BULK_PUT, PIPELINED, SYNC, lookup

#: what each issue's targets are about, for the report's headings
ISSUES = {
    24: "same-node Unix socket",
    22: "streams",
    12: "same-node shared memory",
    11: "client transport",
    6: "benchmark suite",
    4: "batched inference",
}
#: the parameters the targets name
SMALL_SIZE, WINDOW, LARGE_SIZE, THREADS, THREADS_SIZE = 256, 256, 64 * MiB, 8, KiB

Lookup = Callable[[dict], float | None]


@dataclass
class Ratio:
    """One target: ``ratio = value / baseline``, compared with ``limit`` (``<=`` or ``>=``)."""

    issue: int
    name: str
    value: float | None
    baseline: float | None
    unit: str
    op: str
    limit: float
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    @property
    def met(self) -> bool | None:
        r = self.ratio
        if r is None:
            return None
        return r <= self.limit if self.op == "<=" else r >= self.limit

    def as_dict(self) -> dict:
        return {
            "issue": self.issue,
            "name": self.name,
            "value": self.value,
            "baseline": self.baseline,
            "unit": self.unit,
            "ratio": self.ratio,
            "target": f"{self.op} {self.limit}",
            "met": self.met,
            "note": self.note,
        }


# -- reading the results: each factory returns ``results -> number or None`` ------------------


def _p50(results: dict, workload: str, kind: str, op: str, size: int | None) -> float | None:
    """The median of one series at one size, or None where it was not measured."""
    by_kind = results.get(workload, {}).get("summary", {}).get(kind, {})
    row = by_kind.get(op, {}).get(str(size))
    return row.get("p50") if row and row.get("n") else None


def _bandwidth_size(results: dict) -> int | None:
    sizes = results.get("bandwidth", {}).get("params", {}).get("sizes", [])
    return max((s for s in sizes if s <= LARGE_SIZE), default=None)


def bandwidth_at(kind: str, op: str, size: int) -> Lookup:
    return lambda r: _p50(r, "bandwidth", kind, op, size)


def latency(kind: str, op: str = "get") -> Lookup:
    return lambda r: _p50(r, "latency", kind, op, KiB)


def bandwidth(kind: str, op: str) -> Lookup:
    return lambda r: _p50(r, "bandwidth", kind, op, _bandwidth_size(r))


def _row_rate(workload: str, **match) -> Lookup:
    def read(results: dict) -> float | None:
        row = lookup(results.get(workload, {}).get("summary") or [], **match)
        return row["ops_per_s"] if row else None

    return read


def rate(kind: str, mode: str) -> Lookup:
    """Throughput of one client on one shard."""
    return _row_rate("throughput", system=kind, mode=mode, shards=1, clients=1)


def threads_rate(mode: str) -> Lookup:
    return _row_rate("threads", mode=mode)


def inference_rate(mode: str) -> Lookup:
    return _row_rate("inference", mode=mode)


def _streams_size(results: dict, asked: int) -> int | None:
    """``asked`` if the streams workload measured it, else its largest size."""
    sizes = results.get("streams", {}).get("params", {}).get("sizes", [])
    return asked if asked in sizes else max(sizes, default=None)


def streams_row(kind: str, size: int, field: str, consumers: int = 1) -> Lookup:
    """One figure of the streams summary (at ``size``, or the largest size measured)."""

    def read(results: dict) -> float | None:
        rows = results.get("streams", {}).get("summary") or []
        row = lookup(rows, system=kind, size=_streams_size(results, size), consumers=consumers)
        return row.get(field) if row else None

    return read


def stall(variant: str) -> Lookup:
    """The producer's append p99 in the streams workload's stall phase, ``variant`` consumer."""

    def read(results: dict) -> float | None:
        for row in results.get("streams", {}).get("stall") or []:
            if row["variant"] == variant:
                return row["append"].get("p99")
        return None

    return read


def stall_bytes(field: str) -> Lookup:
    """The most of ``field`` (``peak_bytes``, ``bound_bytes``) over the stall phase's runs, MB."""

    def read(results: dict) -> float | None:
        rows = results.get("streams", {}).get("stall") or []
        return max((row[field] / 1e6 for row in rows), default=None)

    return read


def _streams_note(size: int) -> Callable[[dict], str]:
    def note(results: dict) -> str:
        measured = _streams_size(results, size)
        if measured is None or measured == size:
            return ""
        return f"streams largest size {size_label(measured)}, the target names {size_label(size)}"

    return note


def _param(workload: str, field: str, asked: int, show: Callable = str) -> Callable[[dict], str]:
    """A note when ``workload`` ran with ``field`` other than the target names."""

    def note(results: dict) -> str:
        measured = results.get(workload, {}).get("params", {}).get(field)
        if measured is None or measured == asked:
            return ""
        return f"{workload} {field} {show(measured)}, the target names {show(asked)}"

    return note


def _large_size(results: dict) -> str:
    size = _bandwidth_size(results)
    if size is None or size == LARGE_SIZE:
        return ""
    return f"largest bandwidth size measured <= 64 MiB is {size_label(size)}"


# -- the targets -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Goal:
    """A target: ``value(results) / baseline(results) <op> limit``.

    ``notes`` say where the run measured other parameters than the target names;
    an ``optional`` goal is left out of a run that did not measure it."""

    issue: int
    name: str
    value: Lookup
    baseline: Lookup
    unit: str
    op: str
    limit: float
    notes: tuple[Callable[[dict], str], ...] = ()
    optional: bool = False

    def evaluate(self, results: dict) -> Ratio:
        note = "; ".join(n for n in (check(results) for check in self.notes) if n)
        return Ratio(
            self.issue,
            self.name,
            self.value(results),
            self.baseline(results),
            self.unit,
            self.op,
            self.limit,
            note,
        )


_SMALL = _param("throughput", "size", SMALL_SIZE, size_label)
_WINDOW = _param("throughput", "window", WINDOW)
_THREADS = (
    _param("threads", "threads", THREADS),
    _param("threads", "size", THREADS_SIZE, size_label),
)

GOALS: tuple[Goal, ...] = (
    Goal(11, "1 KiB get p50, tcp, vs raw pyzmq floor",
         latency(MEMSTORE_TCP), latency(FLOOR), "us", "<=", 1.2),
    Goal(11, "1 KiB get p50, ipc://, vs Redis on loopback",
         latency(MEMSTORE_IPC), latency(REDIS), "us", "<=", 1.0),
    Goal(11, "sync 256 B puts, tcp, vs redis-py SET",
         rate(MEMSTORE_TCP, SYNC), rate(REDIS, SYNC), "ops/s", ">=", 1.0, (_SMALL,)),
    Goal(11, "pipelined 256 B puts, tcp, window 256, vs redis-py pipeline",
         rate(MEMSTORE_TCP, PIPELINED), rate(REDIS, PIPELINED), "ops/s", ">=", 1.5,
         (_SMALL, _WINDOW)),
    Goal(11, "64 MiB put, tcp, vs raw pyzmq floor", bandwidth(MEMSTORE_TCP, "put"),
         bandwidth(FLOOR, "put"), "GB/s", ">=", 0.9, (_large_size,)),
    Goal(11, "64 MiB get, tcp, vs raw pyzmq floor", bandwidth(MEMSTORE_TCP, "get"),
         bandwidth(FLOOR, "get"), "GB/s", ">=", 0.9, (_large_size,)),
    Goal(11, "8 threads, 1 KiB get/put: one client vs 8 clients",
         threads_rate(SHARED), threads_rate(SEPARATE), "ops/s", ">=", 0.8, _THREADS),
    Goal(24, "1 KiB get p50, same node (unix), vs Redis",
         latency(MEMSTORE), latency(REDIS), "us", "<=", 1.0),
    Goal(24, "1 KiB get p50, same node (unix), vs Unix-socket floor",
         latency(MEMSTORE), latency(UNIX_FLOOR), "us", "<=", 2.0),
    Goal(24, "sync 256 B puts, same node (unix), vs redis-py SET",
         rate(MEMSTORE, SYNC), rate(REDIS, SYNC), "ops/s", ">=", 1.0, (_SMALL,)),
    Goal(24, "256 put_tensor_async + result(), unix, vs redis-py pipeline",
         rate(MEMSTORE, PIPELINED), rate(REDIS, PIPELINED), "ops/s", ">=", 0.5,
         (_SMALL, _WINDOW)),
    Goal(24, "put_tensors of 256 x 256 B, unix, vs a redis-py pipeline of 256 SETs",
         rate(MEMSTORE, BULK_PUT), rate(REDIS, BULK_PUT), "ops/s", ">=", 1.5,
         (_SMALL, _WINDOW)),
    Goal(24, "get_tensors of 256 x 256 B, unix, vs a redis-py pipeline of 256 GETs",
         rate(MEMSTORE, BULK_GET), rate(REDIS, BULK_GET), "ops/s", ">=", 1.5,
         (_SMALL, _WINDOW)),
    Goal(6, "1 KiB get p50, tcp, vs Redis",
         latency(MEMSTORE_TCP), latency(REDIS), "us", "<=", 1.0),
    Goal(6, "64 MiB put vs Redis",
         bandwidth(MEMSTORE, "put"), bandwidth(REDIS, "put"), "GB/s", ">=", 2.0, (_large_size,)),
    Goal(6, "64 MiB get vs Redis",
         bandwidth(MEMSTORE, "get"), bandwidth(REDIS, "get"), "GB/s", ">=", 2.0, (_large_size,)),
    Goal(6, "pipelined 256 B puts vs sync (1 client, 1 shard)",
         rate(MEMSTORE, PIPELINED), rate(MEMSTORE, SYNC), "ops/s", ">=", 5.0, (_SMALL,)),
    Goal(6, "1 KiB poll wake-up p50 vs get p50",
         latency(MEMSTORE, "wake"), latency(MEMSTORE), "us", "<=", 2.0),
    Goal(12, "64 MiB get, shm (a writable copy-on-write array), vs numpy.copyto",
         bandwidth(MEMSTORE_SHM, "get"), bandwidth("memcpy", "copy"), "GB/s", ">=", 0.5,
         (_large_size,)),
    Goal(12, "64 MiB put, shm, vs numpy.copyto",
         bandwidth(MEMSTORE_SHM, "put"), bandwidth("memcpy", "copy"), "GB/s", ">=", 0.5,
         (_large_size,)),
    Goal(12, "1 MiB get, shm vs socket path",
         bandwidth_at(MEMSTORE_SHM, "get", MiB), bandwidth_at(MEMSTORE, "get", MiB), "GB/s",
         ">=", 3.0, optional=True),
    Goal(12, "1 MiB put, shm vs socket path",
         bandwidth_at(MEMSTORE_SHM, "put", MiB), bandwidth_at(MEMSTORE, "put", MiB), "GB/s",
         ">=", 3.0, optional=True),
    Goal(22, "1 MiB steps, 1 producer x 1 consumer, steps/s vs Redis Streams",
         streams_row(MEMSTORE_SHM, MiB, "steps_per_s"), streams_row(REDIS, MiB, "steps_per_s"),
         "steps/s", ">=", 3.0, (_streams_note(MiB),), optional=True),
    Goal(22, "1 KiB steps, consumer lag p99 vs Redis Streams",
         streams_row(MEMSTORE_SHM, KiB, "lag_p99_ms"), streams_row(REDIS, KiB, "lag_p99_ms"),
         "ms", "<=", 1.0, optional=True),
    Goal(22, "1 MiB steps, consumer lag p99 vs Redis Streams",
         streams_row(MEMSTORE_SHM, MiB, "lag_p99_ms"), streams_row(REDIS, MiB, "lag_p99_ms"),
         "ms", "<=", 1.0, (_streams_note(MiB),), optional=True),
    Goal(22, "drop_oldest append p99, slow consumer vs fast",
         stall("slow"), stall("fast"), "ms", "<=", 2.0,
         optional=True),
    Goal(22, "shards' peak bytes vs (maxlen + 1) x (step + 3 KiB) + 4 KiB",
         stall_bytes("peak_bytes"), stall_bytes("bound_bytes"), "MB", "<=", 1.0,
         optional=True),
    Goal(4, "run_model, batching on vs off",
         inference_rate("batching on"), inference_rate("batching off"), "ops/s", ">=", 3.0,
         optional=True),
)  # fmt: skip


def ratios(results: dict, issues: Iterable[int] | None = None) -> list[Ratio]:
    """The targets of ``issues`` (default: every issue), from this run's measurements."""
    wanted = set(ISSUES if issues is None else issues)
    out = []
    for goal in GOALS:
        if goal.issue in wanted:
            ratio = goal.evaluate(results)
            if ratio.ratio is not None or not goal.optional:
                out.append(ratio)
    return out
