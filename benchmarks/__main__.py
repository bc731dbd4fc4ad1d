"""``memstore-bench`` / ``python -m benchmarks``: run the suite, print the report, save results.

    memstore-bench --quick                  # make bench: under 5 minutes on 2 cores
    memstore-bench --full                   # make bench-full
    memstore-bench --only latency,bandwidth --name laptop
    memstore-bench --only transport --quick  # issues 11 and 24's targets only
    memstore-bench --only gateway            # SmartRedis via the gateway vs redis-server

Writes ``<out>/<name>.json`` (machine, versions, parameters, every raw sample) and
``<out>/<name>-<workload>.png``. Every process the suite starts is stopped when it ends,
also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import signal
import sys
import time
import traceback
from pathlib import Path

from benchmarks import (
    bandwidth,
    curve,
    gateway,
    inference,
    latency,
    online,
    report,
    scaling,
    streams,
    threads,
    throughput,
)
from benchmarks.goals import ratios
from benchmarks.harness import Env, machine, versions
from benchmarks.presets import PRESETS, Preset

WORKLOADS = {
    m.NAME: m
    for m in (
        latency,
        bandwidth,
        throughput,
        threads,
        scaling,
        inference,
        online,
        streams,
        curve,
        gateway,
    )
}
#: Workloads only run when asked for (``--only``, or ``--secure`` for curve; the gateway needs
#: .venv-smartredis: make test-smartredis)
OPTIONAL = ("curve", "gateway")
#: ``--only`` names that stand for several workloads: the workloads, the issues whose targets
#: the report shows, and how the preset is cut down to what those targets read
GROUPS = {
    "transport": (("latency", "bandwidth", "throughput", "threads"), (11, 24), Preset.transport),
}
_NUMBER_LIST = re.compile(r"\[\s*((?:-?[0-9][0-9.eE+-]*,?\s*)+)\]")
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="memstore-bench",
        description="memstore against raw pyzmq and Redis, measured in one run.",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--quick",
        dest="preset",
        action="store_const",
        const="quick",
        help="the quick preset (default; `make bench`)",
    )
    which.add_argument(
        "--full",
        dest="preset",
        action="store_const",
        const="full",
        help="the full preset (`make bench-full`)",
    )
    which.add_argument("--preset", choices=sorted(PRESETS), help="a preset by name")
    p.add_argument(
        "--only",
        default="",
        help=f"comma list of workloads: {','.join(WORKLOADS)}; or 'transport' for issues 11 "
        "and 24's targets alone (1 KiB latency, 64 MiB bandwidth, 1x1 throughput, threads)",
    )
    p.add_argument(
        "--secure",
        action="store_true",
        help="also measure CURVE's cost: 1 KiB latency and 64 MiB bandwidth, plain vs "
        "--secure, in this run (the curve workload; --only curve runs it alone)",
    )
    p.add_argument("--name", help="results name (default: the preset's name)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder")
    p.add_argument("--shards", type=_ints, help="scaling grid's shard counts, e.g. 1,2,4,8")
    p.add_argument("--clients", type=_ints, help="scaling grid's client counts, e.g. 1,2,4,8")
    p.add_argument("--device", default="CPU", help="run_model device, e.g. GPU:0")
    p.add_argument("--no-redis", action="store_true", help="skip the Redis baseline")
    p.add_argument("--redis-server", help="path of the redis-server binary to start")
    p.add_argument("--no-plots", action="store_true", help="write the JSON only")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    @staticmethod
    def write(text: str) -> None:
        print(text, file=sys.stderr)


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc="memstore-bench", unit="step", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    # The suite compares memstore's socket path with the raw ZeroMQ floor and Redis, which
    # are sockets too; the same-node shared-memory path has its own benchmark
    # (python -m benchmarks.shm). Shards and client processes inherit this; the caller's
    # environment is left as it was (main may run inside another program, e.g. the tests).
    before = os.environ.get("MEMSTORE_SHM")
    os.environ.setdefault("MEMSTORE_SHM", "0")
    try:
        return _main(argv)
    finally:
        if before is None:
            os.environ.pop("MEMSTORE_SHM", None)


def _main(argv: list[str] | None) -> int:
    args = parser().parse_args(argv)
    preset = PRESETS[args.preset or "quick"].with_grid(args.shards, args.clients)
    chosen, issues = [], None
    for word in (w.strip() for w in args.only.split(",")):
        if word in GROUPS:
            workloads, group_issues, narrow = GROUPS[word]
            chosen += [w for w in workloads if w not in chosen]
            issues = [*(issues or []), *group_issues]
            preset = narrow(preset)
        elif word and word not in chosen:
            chosen.append(word)
    chosen = chosen or [w for w in WORKLOADS if w not in OPTIONAL]
    if args.secure and curve.NAME not in chosen:
        chosen.append(curve.NAME)
    unknown = [w for w in chosen if w not in WORKLOADS]
    if unknown:
        choices = [*WORKLOADS, *GROUPS]
        print(f"unknown workload(s) {unknown}: choose from {choices}", file=sys.stderr)
        return 2
    name = args.name or preset.name
    args.out.mkdir(parents=True, exist_ok=True)
    bar = _progress(sum(WORKLOADS[w].steps(preset) for w in chosen), not args.no_progress)
    run = {
        "name": name,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": ["memstore-bench", *(sys.argv[1:] if argv is None else argv)],
        "preset": preset.as_dict(),
        "target_issues": issues,
        "machine": machine(),
        "results": {},
        "seconds": {},
    }
    started = time.monotonic()
    handlers: dict = {}
    try:
        with Env(
            preset,
            redis=not args.no_redis,
            redis_server=args.redis_server,
            device=args.device,
            progress=bar,
            log=bar.write,
        ) as env:
            run["redis"] = env.redis_note
            run["redis_version"] = env.redis_version
            handlers.update(_stop_on_signals(env))
            for workload in chosen:
                t0 = time.monotonic()
                try:
                    run["results"][workload] = WORKLOADS[workload].run(env)
                except Exception as exc:  # one broken workload must not lose the others
                    if env.interrupted:
                        raise KeyboardInterrupt from None
                    bar.write(f"{workload} failed: {exc!r}")
                    run["results"][workload] = {
                        "error": repr(exc),
                        "traceback": traceback.format_exc(),
                    }
                run["seconds"][workload] = round(time.monotonic() - t0, 2)
    except KeyboardInterrupt:
        bar.close()
        print("\ninterrupted: every process the suite started has been stopped", file=sys.stderr)
        return 130
    finally:
        bar.close()
        for signum, previous in handlers.items():
            signal.signal(signum, previous)
    run["seconds"]["total"] = round(time.monotonic() - started, 2)
    run["machine"]["load_average_at_end"] = list(os.getloadavg())
    run["versions"] = versions()
    redis_version = run.pop("redis_version", "")
    if redis_version:
        run["versions"]["redis-server"] = redis_version
    run["targets"] = [r.as_dict() for r in ratios(run["results"], issues)]
    path = args.out / f"{name}.json"
    path.write_text(to_json(run))
    print(report.render(run))
    print(f"\nresults: {path}")
    if not args.no_plots:
        _plot(run, args.out)
    print(f"took {run['seconds']['total']:.0f} s")
    return 0


def _stop_on_signals(env: Env) -> dict:
    """On Ctrl-C or SIGTERM, stop every process of the run at once, then unwind.

    Stopping happens in the handler itself because pyzmq's poll retries after EINTR and
    can swallow the KeyboardInterrupt; closing our sockets makes the pending call fail
    instead, and ``env.interrupted`` turns that failure into the end of the run."""

    def handler(signum, frame):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        env.interrupted = True
        env.close()
        raise KeyboardInterrupt

    return {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}


def to_json(run: dict) -> str:
    """Indented JSON with each list of numbers on one line (samples stay readable)."""
    text = json.dumps(run, indent=1)
    return _NUMBER_LIST.sub(lambda m: "[" + "".join(m.group(1).split()) + "]", text) + "\n"


def _plot(run: dict, out: Path) -> None:
    try:
        from benchmarks import plots

        written = plots.draw(run, out)
    except ImportError as exc:
        print(f"plots skipped: {exc} (pip install matplotlib)")
        return
    for path in written:
        print(f"plot: {path}")


if __name__ == "__main__":
    sys.exit(main())
