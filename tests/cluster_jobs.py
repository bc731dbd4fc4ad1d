"""Programs that tests/test_cluster_nodes.py runs on virtual nodes (tests/vnodes.py).

``python tests/cluster_jobs.py SCENARIO OUT [ARGS]``: each writes what the test checks as
JSON to ``OUT`` (on the shared /tmp) and, per application rank, prints ``ok <rank>``. Not
collected by pytest.
"""

from __future__ import annotations

import json
import os
import socket
import sys

import numpy as np

from memstore.placement import key_shard

#: Bytes of every tensor: well above the shared-memory threshold (256 KiB by default).
TENSOR_BYTES = 4 << 20


def say(text: str) -> None:
    os.write(1, f"{text}\n".encode())


def keys_per_shard(prefix: str, shards: int) -> list[str]:
    """One key per shard, in shard order ({hash tags} found by trying)."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < shards:
        key = f"{{{prefix}-{i}}}"
        found.setdefault(key_shard(key, shards), key)
        i += 1
    return [found[s] for s in range(shards)]


def tensor(writer: int, shard: int) -> np.ndarray:
    return np.full(TENSOR_BYTES // 8, writer * 100 + shard, dtype=np.int64)


def put_mine(client, me: int, shards: int) -> None:
    for s, key in enumerate(keys_per_shard(f"w{me}", shards)):
        client.put_tensor(key, tensor(me, s))


def read_all(client, writers: range, shards: int) -> None:
    for writer in writers:
        for s, key in enumerate(keys_per_shard(f"w{writer}", shards)):
            got = client.get_tensor(key)
            assert got.nbytes == TENSOR_BYTES, (key, got.shape)
            assert int(got[0]) == int(got[-1]) == writer * 100 + s, (key, got[:2])


def write(out: str, report: dict) -> None:
    with open(out + ".tmp", "w") as f:
        json.dump(report, f)
    os.replace(out + ".tmp", out)


def exchange(store, out: str) -> None:
    """Every app rank puts one 4 MiB tensor per shard, then reads every rank's; app rank 0
    reports the shards' info and every app rank's node."""
    client, comm = store.client, store.comm
    shards = len(store.addresses)
    put_mine(client, comm.Get_rank(), shards)
    comm.Barrier()
    read_all(client, range(comm.Get_size()), shards)
    comm.Barrier()
    hosts = comm.gather(socket.gethostname())
    if comm.Get_rank() == 0:
        infos = client.get_db_node_info(store.addresses)
        write(out, {"addresses": store.addresses, "hosts": hosts, "infos": infos})
    say(f"ok {store.rank}")


def spmd(out: str) -> None:
    """``mpi.init`` with one shard per node: the exchange."""
    from memstore import mpi

    with mpi.init(shards_per_node=1, timeout=60, grace=5, client_timeout=20) as store:
        if store.is_server:
            store.serve()
            return
        exchange(store, out)


def mpmd(out: str) -> None:
    """``mpi.connect`` next to ``memstore-server --mpi``: the same exchange."""
    from memstore import mpi

    with mpi.connect(timeout=60, grace=5, client_timeout=20) as store:
        exchange(store, out)


def client(out: str) -> None:
    """A plain program (no MPI) that finds the store through the environment."""
    import memstore

    with memstore.Client(timeout=20) as plain:
        infos = plain.get_db_node_info()
        me = int(socket.gethostname().removeprefix("node"))
        put_mine(plain, me, len(infos))
        read_all(plain, range(me, me + 1), len(infos))
        write(out, {"host": socket.gethostname(), "infos": plain.get_db_node_info()})
    say(f"ok {me}")


def resp(out: str, gateways: str) -> None:
    """Through the gateways (one per node): a tensor set through the first is read through
    every other, and each answers CLUSTER SLOTS with the same list."""
    import redis

    listed = [g.rsplit(":", 1) for g in gateways.split(",")]
    blob = np.arange(1 << 16, dtype=np.float32)
    slots = []
    for i, (host, port) in enumerate(listed):
        with redis.Redis(host=host, port=int(port), protocol=2, socket_timeout=10) as r:
            if i == 0:
                r.execute_command("AI.TENSORSET", "resp-key", "FLOAT", blob.size, "BLOB",
                                  blob.tobytes())  # fmt: skip
            got = r.execute_command("AI.TENSORGET", "resp-key", "BLOB")
            assert got == blob.tobytes(), (host, port, len(got))
            slots.append([[s[0], s[1], s[2][0].decode(), s[2][1]] for s in
                          r.execute_command("CLUSTER", "SLOTS")])  # fmt: skip
    write(out, {"slots": slots})
    say("ok resp")


def deadnode(out: str, layout: str, linger: str = "0", grace: str = "5") -> None:
    """``mpi.init`` (``layout`` spmd) or ``mpi.connect`` next to ``memstore-server --mpi``
    (mpmd) across the nodes; once every app rank's tensors are in, app rank 0 writes
    ``OUT.ready`` and the test kills or partitions a node. Each app rank then reads its key
    on every shard until one fails, prints ``lost <rank> <shard> <unix time>`` and ``alive
    <rank> <shards>`` (the shards that still answered), and shuts down. node3's app ranks
    first go on working ``linger`` seconds (a rank that reaches shutdown late)."""
    import time

    from memstore import mpi

    options = {"timeout": 60, "grace": float(grace), "client_timeout": 20}
    start = mpi.init(shards_per_node=1, **options) if layout == "spmd" else mpi.connect(**options)
    with start as store:
        if store.is_server:
            store.serve()
            return
        client, comm = store.client, store.comm
        shards = len(store.addresses)
        put_mine(client, comm.Get_rank(), shards)
        comm.Barrier()
        if comm.Get_rank() == 0:
            write(out + ".ready", {"addresses": store.addresses})
        keys = keys_per_shard(f"w{comm.Get_rank()}", shards)
        if socket.gethostname() == "node3":
            time.sleep(float(linger))  # its work, before it reads again
        lost = read_until_lost(client, keys, store.rank)
        alive = []
        for shard, key in enumerate(keys):
            if shard not in lost:
                assert int(client.get_tensor(key)[0]) == comm.Get_rank() * 100 + shard
                alive.append(shard)
        say(f"alive {store.rank} {','.join(map(str, alive))}")
    say(f"down {store.rank} failures {store.failures}")


def read_until_lost(client, keys: list[str], rank: int, limit: float = 60) -> set[int]:
    """Read one key per shard, round after round, until a shard is lost (or ``limit`` s)."""
    import time

    from memstore.errors import ConnectionLost

    deadline = time.monotonic() + limit
    lost: set[int] = set()
    while not lost and time.monotonic() < deadline:
        for shard, key in enumerate(keys):
            try:
                client.get_tensor(key)
            except ConnectionLost:
                lost.add(shard)
                say(f"lost {rank} {shard} {time.time():.3f}")
    return lost


if __name__ == "__main__":
    scenario, *args = sys.argv[1:]
    scenarios = {"spmd": spmd, "mpmd": mpmd, "client": client, "resp": resp, "deadnode": deadnode}
    scenarios[scenario](*args)
