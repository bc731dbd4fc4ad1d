"""``memstore start|stop|status|info|keygen|gateway``: run and serve a store from a shell."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable

from memstore import address as addresses
from memstore import auth
from memstore.client import Client
from memstore.config import (
    DEFAULT_ADDRESS_FILE,
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_RESP_PORT,
    ENV_ADDRESS_FILE,
    ENV_CURVE_DIR,
    GATEWAY_READY_LINE,
    parse_size,
)
from memstore.deploy.admin import request_once, stop_addresses
from memstore.deploy.curve import secure_args, secure_keys
from memstore.deploy.jobs import Launcher
from memstore.deploy.local import restart_shard, start_shards
from memstore.errors import MemstoreError
from memstore.gateway.access import (
    ENV_ADMIN_PASSWORD,
    ENV_PASSWORD,
    Access,
    exposure_warnings,
    password_from,
    require_password,
)
from memstore.gateway.commands import parse_peer
from memstore.gateway.limits import QueryLimits, default_total
from memstore.gateway.resp import DEFAULT_QUERY_LIMIT
from memstore.gateway.server import connect, serve


def _address_file(args: argparse.Namespace) -> str:
    return args.address_file or os.environ.get(ENV_ADDRESS_FILE) or DEFAULT_ADDRESS_FILE


def _cluster(args: argparse.Namespace) -> list[str]:
    """Addresses from --address, else the address file, else the environment."""
    if args.address:
        return addresses.parse(args.address)
    path = _address_file(args)
    if os.path.exists(path):
        return addresses.read_file(path)
    return addresses.resolve(None)


def cmd_start(args: argparse.Namespace) -> int:
    """``memstore start``: shards in the background (or ``--restart-shard N`` again)."""
    log_dir = args.log_dir or os.path.dirname(os.path.abspath(_address_file(args)))
    if args.restart_shard is not None:
        return _restart(args, log_dir)
    keys_dir = _keys_dir(args, log_dir)
    warning = auth.exposure_warning(f"tcp://{args.host}:0", keys_dir is not None)
    if warning and not args.ipc_dir:
        print(f"memstore start: {warning}", file=sys.stderr)
    admin = _admin_args(args)
    if args.mpi:
        secure = []
        if keys_dir is not None:
            secure_keys(keys_dir)  # made there when missing
            secure = secure_args(keys_dir)
        found = _start_mpi(args, log_dir, [*secure, *admin])
    else:
        shards = start_shards(
            args.shards,
            host=args.host,
            port=args.port,
            ipc_dir=args.ipc_dir,
            max_memory=args.max_memory,
            log_dir=log_dir,
            detach=True,
            extra_args=["--log-level", args.log_level, *admin, *_persist_args(args)],
            keys_dir=keys_dir,
        )
        found = [s.address for s in shards]
    addresses.write_file(_address_file(args), found)
    print(
        f"started {len(found)} shard(s); address file {_address_file(args)}; logs in {log_dir}",
        file=sys.stderr,
    )
    print(f"export MEMSTORE_ADDRESS={','.join(found)}")
    if keys_dir is not None:
        print(f"export {ENV_CURVE_DIR}={os.path.abspath(keys_dir)}")
    return 0


def _keys_dir(args: argparse.Namespace, log_dir: str) -> str | None:
    """Where ``--secure`` keeps the cluster's keys (made there if missing), else None."""
    if not args.secure:
        return None
    return args.keys_dir or os.path.join(log_dir, "memstore-keys")


def _admin_args(args: argparse.Namespace) -> list[str]:
    """``--admin-key``/``--no-admin`` as ``memstore-server`` options (they need --secure)."""
    if not (args.admin_key or args.no_admin):
        return []
    if not args.secure:
        raise MemstoreError("--admin-key and --no-admin need --secure")
    if args.no_admin:
        return ["--no-admin"]
    return ["--admin-key", os.path.abspath(args.admin_key)]


def cmd_keygen(args: argparse.Namespace) -> int:
    """``memstore keygen DIR``: a server and a client key pair, and how to use them."""
    made = auth.keygen(args.dir, force=args.force)
    for name in (auth.SERVER, auth.CLIENT):
        print(f"{name}: {made[name + '_public']} (public), {made[name]} (secret, mode 0600)")
    print(
        f"shards: memstore-server --curve-secret-key {made[auth.SERVER]} "
        f"--curve-authorized-keys {os.path.abspath(args.dir)}"
    )
    print(f"clients: export {ENV_CURVE_DIR}={os.path.abspath(args.dir)}")
    return 0


def _restart(args: argparse.Namespace, log_dir: str) -> int:
    """``--restart-shard N``: shard N of the address file's cluster, again at its address."""
    found = addresses.read_file(_address_file(args))
    index = args.restart_shard
    if not 0 <= index < len(found):
        raise MemstoreError(f"no shard {index}: {_address_file(args)} lists {len(found)}")
    try:
        request_once(found[index], "hello", timeout=min(args.timeout, 1.0))
    except MemstoreError:
        pass  # not answering: the expected case
    else:
        raise MemstoreError(
            f"shard {index} at {found[index]} still answers: stop it first "
            f"(memstore stop --address {found[index]}); its data would be lost"
        )
    keys_dir = _keys_dir(args, log_dir)
    secure = secure_args(keys_dir) if keys_dir is not None else []
    secure += _admin_args(args)
    shard = restart_shard(
        found,
        index,
        max_memory=args.max_memory,
        log_dir=log_dir,
        detach=True,
        extra_args=["--log-level", args.log_level, *secure, *_persist_args(args)],
    )
    what = f"from {args.restore}" if args.restore else "empty"
    print(
        f"restarted shard {index} at {shard.address} ({what}); logs in {log_dir}", file=sys.stderr
    )
    return 0


def _start_mpi(args: argparse.Namespace, log_dir: str, secure: list[str]) -> list[str]:
    """The shards as one ``mpiexec`` job of ``memstore-server --mpi`` that outlives us."""
    hosts = args.hosts.split(",") if args.hosts else None
    runner = Launcher("mpiexec", workdir=log_dir, hosts=hosts)
    runner.address_file = os.path.abspath(_address_file(args))
    return runner.start_store(
        args.shards,
        nodes=len(hosts) if hosts else None,
        host=None if hosts and args.host == DEFAULT_HOST else args.host,
        port=args.port,
        max_memory=args.max_memory,
        server_args=["--log-level", args.log_level, *secure, *_persist_args(args)],
    )


def _persist_args(args: argparse.Namespace) -> list[str]:
    """The snapshot (and ``--no-shm``) options of ``memstore start``, as ``memstore-server``
    options."""
    extra = []
    if args.restore:
        extra += ["--restore", os.path.abspath(args.restore)]
    if args.save_dir:
        extra += ["--save-dir", os.path.abspath(args.save_dir)]
    if args.save_every:
        extra += ["--save-every", str(args.save_every)]
    if args.no_shm:
        extra.append("--no-shm")
    return extra


def cmd_save(args: argparse.Namespace) -> int:
    """``memstore save``: snapshot every shard, with what each wrote."""
    with Client(_cluster(args), timeout=args.timeout) as client:
        results = client.save(args.dir)
    total = sum(r["bytes"] for r in results)
    seconds = max(r["seconds"] for r in results)
    for result in results:
        print(
            f"{result['file']}: {result['keys']} keys, {result['bytes']} bytes in "
            f"{result['seconds']:.3f}s (loop paused {result['pause'] * 1000:.3f} ms)"
        )
    print(
        f"saved {len(results)} shard(s), {total} bytes, to "
        f"{os.path.dirname(results[0]['file'])} ({total / max(seconds, 1e-9) / 1e6:.1f} MB/s)"
    )
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    """``memstore stop``: ask every shard to shut down; 1 if one did not (or refused)."""
    found = _cluster(args)
    refused: list = []  # alive, and this key may not stop them (--admin-key)
    silent = stop_addresses(found, timeout=args.timeout, refused=refused)
    for exc in refused:
        print(f"{exc} (stop it with the admin or cluster key)", file=sys.stderr)
    for address in silent:
        print(f"shard {address} did not answer (already stopped?)", file=sys.stderr)
    path = _address_file(args)
    if not args.address and not refused and os.path.exists(path):
        os.remove(path)  # kept while a shard that refused still serves
    print(f"stopped {len(found) - len(silent) - len(refused)} of {len(found)} shard(s)")
    return 0 if not (silent or refused) else 1


def _infos(args: argparse.Namespace) -> list[dict]:
    with Client(_cluster(args), timeout=args.timeout) as client:
        return client.get_db_node_info()


def cmd_status(args: argparse.Namespace) -> int:
    """``memstore status``: a table of keys, streams (their home here) and the steps they
    hold, bytes, clients and uptime per shard."""
    infos = _infos(args)
    print(
        f"{'address':<36} {'keys':>9} {'streams':>8} {'steps':>9} {'bytes':>14} "
        f"{'clients':>8} {'uptime':>10}"
    )
    for info in infos:
        print(
            f"{info['address']:<36} {info['keys']:>9} {info.get('streams', 0):>8} "
            f"{info.get('stream_steps', 0):>9} {info['bytes']:>14} "
            f"{info['clients']:>8} {_duration(info['uptime']):>10}"
        )
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """``memstore info``: every shard's statistics as JSON."""
    print(json.dumps(_infos(args), indent=2))
    return 0


def cmd_gateway(args: argparse.Namespace) -> int:
    """``memstore gateway``: serve RESP in front of the store until interrupted."""
    try:
        access, limits, peers = _gateway_options(args)
        keys = auth.client_keys()  # MEMSTORE_CURVE_*: the store speaks CURVE
        require_password(keys is not None, access, "memstore gateway")
    except (MemstoreError, ValueError) as exc:
        print(f"memstore gateway: {exc}", file=sys.stderr)
        return 2
    for warning in exposure_warnings(args.host, args.port, access):
        print(f"memstore gateway: {warning}", file=sys.stderr, flush=True)
    client = connect(_cluster(args), timeout=args.timeout, curve=keys)

    def ready(port: int) -> None:
        print(f"{GATEWAY_READY_LINE}{args.host}:{port}", flush=True)

    try:
        serve(client, args.host, args.port, ready=ready, peers=peers, access=access, limits=limits)
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
    return 0


def _gateway_options(args: argparse.Namespace) -> tuple[Access, QueryLimits, list | None]:
    """``memstore gateway``'s passwords, query buffer limits and peers, checked."""
    if args.requirepass is not None:
        print(
            "memstore gateway: --requirepass shows the password to every user of this "
            f"machine (ps): prefer --requirepass-file or {ENV_PASSWORD}",
            file=sys.stderr,
        )
    access = Access(
        password_from(args.requirepass, args.requirepass_file, ENV_PASSWORD),
        password_from(None, args.admin_password_file, ENV_ADMIN_PASSWORD),
    )
    total = args.query_buffer_total or default_total()
    limits = QueryLimits(args.query_buffer_limit, total)
    try:
        peers = [parse_peer(a) for a in args.peers.split(",")] if args.peers else None
    except ValueError as exc:
        raise ValueError(f"--peers: {exc}") from None
    return access, limits, peers


def _duration(seconds: float) -> str:
    return (
        time.strftime("%H:%M:%S", time.gmtime(seconds))
        if seconds < 86400
        else (f"{seconds / 86400:.1f}d")
    )


def parser() -> argparse.ArgumentParser:
    """``memstore``'s options (the table; its parts are added by concern below)."""
    p = argparse.ArgumentParser(prog="memstore", description="Run and inspect a memstore.")
    sub = p.add_subparsers(dest="command", required=True)
    _add_start(sub)
    keygen = sub.add_parser("keygen", help="write a CURVE server and client key pair")
    keygen.add_argument("dir", help="folder for the keys (made 0700; files 0600)")
    keygen.add_argument("--force", action="store_true", help="replace keys already there")
    keygen.set_defaults(run=cmd_keygen)
    save = _add_command(sub, "save", cmd_save, "snapshot every shard into a directory")
    save.add_argument("dir", nargs="?", help="snapshot directory (default: the shards' --save-dir)")
    _add_command(sub, "stop", cmd_stop, "stop the shards")
    _add_command(sub, "status", cmd_status, "keys, streams, bytes, clients per shard")
    _add_command(sub, "info", cmd_info, "every shard's statistics as JSON")
    gateway = _add_command(
        sub, "gateway", cmd_gateway, "serve the Redis protocol (RESP2) for SmartRedis"
    )
    gateway.add_argument("--host", default=DEFAULT_HOST, help="interface to listen on")
    gateway.add_argument("--port", type=int, default=DEFAULT_RESP_PORT, help="0: a free port")
    gateway.add_argument(
        "--peers",
        metavar="HOST:PORT,...",
        help="every gateway of the store, this one included, in the same order on each: "
        "CLUSTER SLOTS splits the slots over them (SmartRedis's cluster mode); default: "
        "this gateway alone",
    )
    _add_gateway_security(gateway)
    return p


def _add_gateway_security(gateway: argparse.ArgumentParser) -> None:
    """``memstore gateway``'s passwords and memory caps (docs/security.md)."""
    gateway.add_argument(
        "--requirepass-file",
        metavar="FILE",
        help="clients must AUTH with the password on this file's first line (mode 0600; "
        f"or set {ENV_PASSWORD}); required in front of a CURVE store",
    )
    gateway.add_argument(
        "--requirepass",
        metavar="PASSWORD",
        help="the password itself (Redis's requirepass): visible in ps, prefer the file",
    )
    gateway.add_argument(
        "--admin-password-file",
        metavar="FILE",
        help="the password of the admin user (AUTH admin PASSWORD), who alone may rewrite "
        f"the gateway list (MEMSTORE.GATEWAYS); or set {ENV_ADMIN_PASSWORD}",
    )
    gateway.add_argument(
        "--query-buffer-limit",
        type=parse_size,
        default=str(DEFAULT_QUERY_LIMIT),
        metavar="SIZE",
        help="most bytes of unfinished commands one connection may hold, e.g. 256MiB "
        "(Redis's client-query-buffer-limit); past it the connection gets an error and is "
        "closed (default 1GiB)",
    )
    gateway.add_argument(
        "--query-buffer-total",
        type=parse_size,
        default="0",
        metavar="SIZE",
        help="most bytes every connection together may hold; the connection that would pass "
        "it gets an error and is closed (default: 4GiB or a quarter of this machine's "
        "memory, whichever is less)",
    )


def _add_common(q: argparse.ArgumentParser) -> None:
    """The options of every command that finds a running store."""
    q.add_argument("--address-file", help=f"default ${ENV_ADDRESS_FILE} or {DEFAULT_ADDRESS_FILE}")
    q.add_argument("--timeout", type=float, default=5.0, help="seconds per shard")


def _add_command(
    sub, name: str, run: Callable[[argparse.Namespace], int], text: str
) -> argparse.ArgumentParser:
    """A command that talks to running shards: ``--address`` or the address file."""
    q = sub.add_parser(name, help=text)
    _add_common(q)
    q.add_argument("--address", help="shard addresses instead of the address file")
    q.set_defaults(run=run)
    return q


def _add_start(sub) -> None:
    """``memstore start``: where the shards listen, then security, then snapshots."""
    start = sub.add_parser("start", help="start shards in the background")
    _add_common(start)
    start.add_argument("--shards", type=int, default=1)
    start.add_argument("--host", default=DEFAULT_HOST)
    start.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help="first port; shards use port, port+1, ... (0: free ports)",
    )
    start.add_argument("--ipc-dir", help="listen on ipc:// sockets in this folder instead")
    start.add_argument("--max-memory", default="0", help="per shard, e.g. 2GiB")
    start.add_argument("--log-dir", help="default: the address file's folder")
    start.add_argument("--log-level", default="INFO")
    start.add_argument(
        "--mpi", action="store_true", help="start the shards as one mpiexec job (docs/cluster.md)"
    )
    start.add_argument("--hosts", help="with --mpi: nodes to spread the shards over, a,b,...")
    _add_start_security(start)
    start.add_argument(
        "--restart-shard",
        type=int,
        metavar="N",
        help="start shard N of the address file's cluster again, at its address on this "
        "machine, knowing the whole cluster (it comes back empty)",
    )
    start.add_argument(
        "--restore", metavar="DIR", help="load this snapshot (any shard count; re-hashed)"
    )
    start.add_argument("--save-dir", metavar="DIR", help="where the shards' snapshots go")
    start.add_argument(
        "--no-shm",
        action="store_true",
        help="shards offer no same-node shared-memory path (sockets only)",
    )
    start.add_argument(
        "--save-every", type=float, metavar="SECONDS", help="snapshot to --save-dir this often"
    )
    start.set_defaults(run=cmd_start)


def _add_start_security(start: argparse.ArgumentParser) -> None:
    """``memstore start --secure`` and the admin-key options that need it."""
    start.add_argument(
        "--secure",
        action="store_true",
        help="CURVE: generate a server and a client key pair (in --keys-dir, kept if there) "
        f"and start secure shards; prints the {ENV_CURVE_DIR} clients need",
    )
    start.add_argument(
        "--keys-dir", help="with --secure: where the keys live (default: LOG_DIR/memstore-keys)"
    )
    start.add_argument(
        "--admin-key",
        metavar="FILE",
        help="with --secure: only the holder of this public key (a .key file, e.g. the "
        "client.key of another `memstore keygen` folder) may run flush_db, shutdown, cluster, "
        "save and config; `memstore stop` and `memstore save` then need its secret key "
        "(MEMSTORE_CURVE_CLIENT_KEY)",
    )
    start.add_argument(
        "--no-admin",
        action="store_true",
        help="with --secure: no client key may run admin operations, only the cluster key "
        "(KEYS_DIR/server.key_secret as MEMSTORE_CURVE_CLIENT_KEY, e.g. for `memstore stop`)",
    )


def main(argv: list[str] | None = None) -> int:
    """Run ``memstore`` with ``argv`` (default: the command line); its exit code."""
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except MemstoreError as exc:
        print(f"memstore {args.command}: {exc}", file=sys.stderr)
        return 1
