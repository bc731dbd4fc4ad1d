"""``memstore-server`` / ``python -m memstore.server``: run one shard in the foreground.

With ``--mpi`` every rank of an MPI job serves a shard (:mod:`memstore.mpi.program`). This
program sits above both the server and :mod:`memstore.mpi` (see docs/design.md, "Layers"):
the server package never imports mpi.
"""

from __future__ import annotations

import argparse
import logging
import sys

from memstore import address as addresses
from memstore import auth
from memstore.auth import exposure_warning
from memstore.config import (
    DEFAULT_CLIENT_OUTPUT_LIMIT,
    DEFAULT_HOST,
    DEFAULT_MAX_CLIENT_WAITERS,
    DEFAULT_MAX_WAITERS,
    DEFAULT_MODELS,
    DEFAULT_PORT,
    GATEWAY_READY_LINE,
    MODEL_POLICIES,
    MODEL_TIMEOUT,
    MODELS_ALL,
    READY_LINE,
    parse_size,
)
from memstore.errors import MemstoreError
from memstore.gateway.access import Access, exposure_warnings
from memstore.gateway.server import connect, serve_in_thread
from memstore.server.options import shard_options
from memstore.server.shard import Shard
from memstore.server.signals import stop_on_signals
from memstore.server.snapshot import plan_restore


def parser() -> argparse.ArgumentParser:
    """``memstore-server``'s options (the table; its parts are added by concern below)."""
    p = argparse.ArgumentParser(
        prog="memstore-server", description=__doc__.split("\n\n", maxsplit=1)[0]
    )
    p.add_argument("--host", help=f"interface to bind (default {DEFAULT_HOST}; --mpi: auto)")
    p.add_argument(
        "--port",
        type=int,
        help=f"TCP port; 0 picks a free one (default {DEFAULT_PORT}; --mpi: free ports)",
    )
    p.add_argument(
        "--bind",
        metavar="ADDRESS",
        help="full address instead of host/port, e.g. ipc:///tmp/memstore-0.sock",
    )
    p.add_argument(
        "--no-shm",
        action="store_true",
        help="offer no same-node shared-memory path: every byte goes through the sockets "
        "(as MEMSTORE_SHM=0 for the shard)",
    )
    p.add_argument(
        "--resp-port",
        type=int,
        metavar="PORT",
        help="also serve the Redis protocol (a memstore gateway, for SmartRedis's compiled "
        "clients) on this port of --host (0: a free one), in front of the whole cluster; it "
        "shares this process (for throughput run `memstore gateway` instead); with --mpi one "
        "gateway per node, on its first rank, each answering CLUSTER SLOTS with them all",
    )
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    _add_limits(p)
    _add_models(p)
    _add_security(p)
    _add_membership(p)
    _add_snapshots(p)
    _add_mpi(p)
    return p


def _add_limits(p: argparse.ArgumentParser) -> None:
    """Caps on memory, message size, parked waits and unread replies."""
    p.add_argument(
        "--max-memory",
        default="0",
        type=parse_size,
        help="cap on stored bytes, e.g. 2GiB, counting each key's bookkeeping; the shard's "
        "resident memory stays under it plus a constant (docs/security.md) (default: unlimited)",
    )
    p.add_argument(
        "--max-message",
        default="0",
        type=parse_size,
        help="largest request accepted, e.g. 1GiB: a request over it is refused, and a client "
        "sending a single frame over it is disconnected before the frame is in memory "
        "(default: unlimited)",
    )
    p.add_argument(
        "--max-waiters",
        type=int,
        default=DEFAULT_MAX_WAITERS,
        help="most parked waits (polls) on this shard, 0 for no cap "
        f"(default {DEFAULT_MAX_WAITERS})",
    )
    p.add_argument(
        "--max-client-waiters",
        type=int,
        default=DEFAULT_MAX_CLIENT_WAITERS,
        help="most parked waits of one client connection, 0 for no cap "
        f"(default {DEFAULT_MAX_CLIENT_WAITERS})",
    )
    p.add_argument(
        "--client-output-limit",
        default=str(DEFAULT_CLIENT_OUTPUT_LIMIT),
        type=parse_size,
        help="most bytes of replies one client may leave unread, e.g. 256MiB: a client past it "
        "is disconnected with a logged reason (like Redis's client-output-buffer-limit); one "
        "reply larger than it still goes; 0 for no limit (default 1GiB)",
    )


def _add_models(p: argparse.ArgumentParser) -> None:
    """Which client code the shard runs, and how."""
    p.add_argument(
        "--models",
        choices=MODEL_POLICIES,
        default=None,
        help="which client code this shard runs: 'none' (no models or scripts), "
        "'torchscript' (TorchScript only; compiling a script can still read and write files "
        "as the shard's user) or 'all' (also cloudpickled nn.Modules and functions: "
        "arbitrary code). Default torchscript; docs/security.md",
    )
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="the same as --models all (kept for older command lines)",
    )
    p.add_argument("--model-threads", type=int, default=1, help="model workers per device")
    p.add_argument(
        "--intra-op-threads",
        type=int,
        default=0,
        help="torch.set_num_threads for model runs (default: torch's choice)",
    )
    p.add_argument(
        "--model-timeout",
        type=float,
        default=MODEL_TIMEOUT,
        help=f"seconds a model run may take before its caller gets ModelError "
        f"(default {MODEL_TIMEOUT:g})",
    )


def _add_security(p: argparse.ArgumentParser) -> None:
    """CURVE keys and who may run admin operations."""
    group = p.add_argument_group("authentication and encryption (docs/security.md)")
    group.add_argument(
        "--curve-secret-key",
        metavar="FILE",
        help="speak ZeroMQ CURVE with this secret key file (memstore keygen's "
        "server.key_secret, mode 0600): traffic is encrypted, and only clients holding an "
        "authorized key, or this same key (the cluster key), are admitted",
    )
    group.add_argument(
        "--curve-authorized-keys",
        metavar="DIR",
        help="with --curve-secret-key: admit the clients whose public keys (*.key) are in DIR",
    )
    group.add_argument(
        "--admin-key",
        metavar="FILE",
        help="with --curve-secret-key: only the client holding this key (a .key file) and the "
        "cluster key may run flush_db, shutdown, cluster, save and config",
    )
    group.add_argument(
        "--no-admin",
        action="store_true",
        help="with --curve-secret-key: no client may run admin operations (only the cluster "
        "key, which launchers use)",
    )


def _add_membership(p: argparse.ArgumentParser) -> None:
    """The cluster a restarted shard belongs to from its start."""
    group = p.add_argument_group(
        "cluster membership (a shard restarted in place; see `memstore start --restart-shard`)"
    )
    group.add_argument(
        "--cluster",
        metavar="ADDR,ADDR,...",
        help="the cluster's full shard list, this shard's address among them: the shard "
        "refuses keys other shards own from its first request on",
    )
    group.add_argument(
        "--cluster-file",
        metavar="FILE",
        help="read that list from an address file (the one `memstore start` writes)",
    )
    group.add_argument(
        "--index",
        type=int,
        help="this shard's place in the list (default: where its --bind address is)",
    )


def _add_snapshots(p: argparse.ArgumentParser) -> None:
    """Loading a snapshot at start, and saving them."""
    group = p.add_argument_group("snapshots (docs/operations.md)")
    group.add_argument(
        "--restore",
        metavar="DIR",
        help="load this snapshot directory at start (the keys this shard owns in its "
        "cluster: a snapshot of any shard count restores); a missing, torn or altered file "
        "stops the shard with an error naming it",
    )
    group.add_argument(
        "--save-dir",
        metavar="DIR",
        help="where --save-every and `memstore save` without a directory write snapshots",
    )
    group.add_argument(
        "--save-every",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="snapshot to --save-dir this often (default 0: only when asked)",
    )


def _add_mpi(p: argparse.ArgumentParser) -> None:
    """``--mpi``: every rank of an MPI job serves one shard."""
    group = p.add_argument_group("MPI (see memstore.mpi and docs/cluster.md)")
    group.add_argument(
        "--mpi",
        action="store_true",
        help="run under mpiexec: every rank of this program serves one shard, bootstrapped "
        "with the application ranks (memstore.mpi.connect()); --host defaults to loopback "
        "for a one-node job without --address-file, else each node's address; --port to "
        "free ports",
    )
    group.add_argument("--address-file", help="with --mpi: write the shard list to this file")
    group.add_argument(
        "--mpi-timeout",
        type=float,
        default=None,
        help="with --mpi: seconds every rank has to reach the bootstrap (MEMSTORE_MPI_TIMEOUT)",
    )


def _models(args: argparse.Namespace) -> str:
    """The --models policy; --allow-pickle means ``all`` and cannot contradict --models."""
    if args.allow_pickle:
        if args.models not in (None, MODELS_ALL):
            sys.exit(f"memstore-server: --allow-pickle contradicts --models {args.models}")
        return MODELS_ALL
    return args.models or DEFAULT_MODELS


def _cluster(args: argparse.Namespace) -> list[str] | None:
    """The shard list from --cluster or --cluster-file, None when neither is given."""
    if args.cluster and args.cluster_file:
        raise MemstoreError("give --cluster or --cluster-file, not both")
    if args.cluster:
        return addresses.parse(args.cluster)
    if args.cluster_file:
        return addresses.read_file(args.cluster_file)
    if args.index is not None:
        raise MemstoreError("--index needs --cluster or --cluster-file")
    return None


def _index(args: argparse.Namespace, cluster: list[str], address: str) -> int:
    if args.index is not None:
        return args.index
    if address not in cluster:
        raise MemstoreError(
            f"this shard's address {address} is not in the cluster list {','.join(cluster)}: "
            "bind the address it has there, or give --index"
        )
    return cluster.index(address)


def _curve(args: argparse.Namespace) -> auth.ServerKeys | None:
    """The shard's CURVE keys from the command line, None without --curve-secret-key."""
    if args.curve_secret_key is None:
        if args.curve_authorized_keys or args.admin_key or args.no_admin:
            raise MemstoreError(
                "--curve-authorized-keys, --admin-key and --no-admin need --curve-secret-key: "
                "without CURVE every client that connects is trusted alike"
            )
        return None
    return auth.load_server(
        args.curve_secret_key, args.curve_authorized_keys, args.admin_key, args.no_admin
    )


def _check_snapshot_options(args: argparse.Namespace) -> None:
    """Refuse at once what would fail later: --save-every without --save-dir, or a
    --restore directory that holds no complete snapshot (checksums are checked on load)."""
    if args.save_every and not args.save_dir:
        raise MemstoreError("--save-every needs --save-dir")
    if args.save_every < 0:
        raise MemstoreError(f"--save-every must be positive seconds, got {args.save_every}")
    if args.restore:
        plan_restore(args.restore)


def _check_resp_port(args: argparse.Namespace, curve: object) -> None:
    """Refuse ``--resp-port`` in front of a CURVE shard: that gateway takes no password, so
    it would serve anyone who reaches its port with this process's keys."""
    if curve is not None and args.resp_port is not None:
        raise MemstoreError(
            "--resp-port with --curve-secret-key: the in-process gateway has no "
            "authentication, so it cannot front a CURVE store; run `memstore gateway "
            "--requirepass-file FILE` beside the shards instead (docs/security.md)"
        )


def main(argv: list[str] | None = None) -> int:
    """Run ``memstore-server`` with ``argv`` (default: the command line); its exit code."""
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args.models = _models(args)  # --mpi passes it on by name too
    if args.mpi:
        return _run_mpi(args)
    host = DEFAULT_HOST if args.host is None else args.host
    port = DEFAULT_PORT if args.port is None else args.port
    address = args.bind or f"tcp://{host}:{port}"
    try:
        cluster = _cluster(args)
        curve = _curve(args)
        _check_snapshot_options(args)
        _check_resp_port(args, curve)
    except (MemstoreError, ValueError) as exc:
        print(f"memstore-server: {exc}", file=sys.stderr)
        return 2
    try:
        shard = Shard(address, curve=curve, **shard_options(args))
    except Exception as exc:
        print(f"memstore-server: cannot bind {address}: {exc}", file=sys.stderr)
        return 1
    code = _prepare(shard, args, cluster, host, secure=curve is not None)
    if code:
        shard.close()
        return code
    return _serve(shard)


def _run_mpi(args: argparse.Namespace) -> int:
    """``--mpi``: the same checks as one shard's, before any rank joins the bootstrap."""
    try:
        curve = _curve(args)
        _check_snapshot_options(args)
        _check_resp_port(args, curve)
    except (MemstoreError, ValueError) as exc:
        print(f"memstore-server --mpi: {exc}", file=sys.stderr)
        return 2
    from memstore.mpi import program  # here: mpi4py is optional, needed only for --mpi

    return program.main(args, curve=curve)


def _prepare(
    shard: Shard, args: argparse.Namespace, cluster: list[str] | None, host: str, secure: bool
) -> int:
    """Join ``cluster``, warn when exposed, start ``--resp-port``'s gateway; an exit code
    for a failure (the caller closes the shard), else 0."""
    if cluster is not None:
        try:
            shard.join(cluster, _index(args, cluster, shard.address))
        except MemstoreError as exc:
            print(f"memstore-server: {exc}", file=sys.stderr)
            return 2
    _warn_exposed(shard.address, secure)
    if args.resp_port is not None:
        try:
            _start_gateway(shard.address, host, args.resp_port)
        except OSError as exc:
            print(f"memstore-server: {exc}", file=sys.stderr)
            return 1
    return 0


def _serve(shard: Shard) -> int:
    """Print the ready line and serve until a signal or a ``shutdown`` request; the exit
    code: 1 when the shard stopped because its ``--restore`` failed (said on stderr)."""
    stop_on_signals()
    try:
        print(READY_LINE + shard.address, flush=True)
        shard.serve()
    except KeyboardInterrupt:  # a signal that came before serve() was ready to take it
        shard.close()
    if shard.restore_error is not None:
        print(f"memstore-server: --restore failed: {shard.restore_error}", file=sys.stderr)
        return 1
    return 0


def _start_gateway(address: str, host: str, port: int) -> None:
    """A gateway thread whose client reaches the cluster through this shard, made on the
    first command: by then a launcher has told the shard its cluster."""
    bound = serve_in_thread(lambda: connect(address), host, port)
    for warning in exposure_warnings(host, bound, Access()):
        print(f"memstore-server: {warning}", file=sys.stderr, flush=True)
    print(f"{GATEWAY_READY_LINE}{host}:{bound}", flush=True)


def _warn_exposed(address: str, secure: bool) -> None:
    """Say on stderr when a shard without CURVE listens beyond this machine."""
    warning = exposure_warning(address, secure)
    if warning:
        print(f"memstore-server: {warning}", file=sys.stderr, flush=True)
