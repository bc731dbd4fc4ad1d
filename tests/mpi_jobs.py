"""Programs that tests/test_mpi.py runs under ``mpiexec`` (and, some, in-process).

``python tests/mpi_jobs.py SCENARIO [ARGS]``; each application rank prints ``ok <rank>``
when its checks pass, so the test can count them. Not collected by pytest.
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np


def say(text: str) -> None:
    """One line in one write: mpiexec merges the ranks' output at write boundaries."""
    os.write(1, f"{text}\n".encode())


def exchange(store) -> None:
    """Every app rank puts a tensor, then reads every other app rank's."""
    client, comm = store.client, store.comm
    me = comm.Get_rank()
    client.put_tensor(f"rank-{store.appnum}-{me}", np.full(16, me, dtype=np.int64))
    comm.Barrier()
    for other in range(comm.Get_size()):
        got = client.get_tensor(f"rank-{store.appnum}-{other}")
        assert got.shape == (16,) and int(got[0]) == other, (other, got)


def spmd(shards_per_node: str = "1") -> None:
    """``mpi.init``: roles, node-local ipc, every rank reads every other rank's key."""
    from memstore import mpi

    k = int(shards_per_node)
    with mpi.init(shards_per_node=k, timeout=60, grace=5, client_timeout=10) as store:
        if store.is_server:
            store.serve()
            return
        assert store.comm.Get_size() == store.size - len(store.servers), store
        assert len(store.addresses) == max(len(store.servers), k), store.addresses
        local = [a for a in store.client_addresses if not a.startswith("tcp://")]
        assert local, f"no node-local address in {store.client_addresses}"
        exchange(store)
        infos = store.client.get_db_node_info(store.addresses)  # shards by cluster address
        assert sorted(i["address"] for i in infos) == sorted(store.addresses), infos
        say(f"ok {store.rank}")


def world() -> None:
    """Any world size, also 1 (shards in threads): init, exchange, shutdown."""
    spmd("1")


def gateway() -> None:
    """``mpi.init(resp_port=0)``: the app rank reads through the node's gateway what it put
    with its client, and the gateway's CLUSTER SLOTS is the job's gateway list."""
    import redis

    from memstore import mpi
    from memstore.gateway.commands import parse_peer

    with mpi.init(timeout=60, grace=5, client_timeout=10, resp_port=0) as store:
        if store.is_server:
            store.serve()
            return
        assert len(store.gateways) == store.nodes, store.gateways
        host, port = parse_peer(store.gateways[0])
        array = np.arange(6, dtype=np.float64).reshape(2, 3)
        if store.comm.Get_rank() == 0:
            store.client.put_tensor("from-init", array)
        store.comm.Barrier()
        with redis.Redis(host=host, port=port, protocol=2, socket_timeout=10) as r:
            assert r.execute_command("AI.TENSORGET", "from-init", "BLOB") == array.tobytes()
            slots = r.execute_command("CLUSTER", "SLOTS")
            assert [s[:2] for s in slots] == [[0, 16383]], slots
            assert slots[0][2][:2] == [host.encode(), port], slots
        say(f"ok {store.rank} gateway")


def snapshots() -> None:
    """A world of one serves its shards in threads over inproc://: a put still snapshots
    the caller's array and a got array is still the caller's own (both used to alias)."""
    from memstore import DataSet, mpi

    with mpi.init(timeout=60, grace=5, client_timeout=10) as store:
        if store.is_server:
            store.serve()
            return
        assert any(a.startswith("inproc://") for a in store.client_addresses), store
        client = store.client
        data = np.arange(100_000, dtype=np.float64)  # large: no small-message copy hides it
        client.put_tensor("s", data)
        client.put_tensor_async("s_async", data).result(10)
        data[:] = 7
        for key in ("s", "s_async"):
            got = client.get_tensor(key)
            assert got[1] == 1 and got[-1] == 99_999, (key, got[:3])
            got[:] = -1
            assert client.get_tensor(key)[5] == 5, key
        dataset = DataSet("d")
        dataset.add_tensor("t", data)
        client.put_dataset(dataset)
        data[:] = 3
        assert client.get_dataset("d").get_tensor("t")[0] == 7
        say("ok snapshots")


def mpmd() -> None:
    """``mpi.connect`` next to ``memstore-server --mpi``: program numbers and comms."""
    import memstore
    from memstore import mpi

    with mpi.connect(timeout=60, grace=5, client_timeout=10) as store:
        assert not store.is_server and store.appnum >= 1, store
        exchange(store)
        with memstore.Client(timeout=10) as plain:  # found through MEMSTORE_ADDRESS
            key = f"rank-{store.appnum}-{store.comm.Get_rank()}"
            assert int(plain.get_tensor(key)[0]) == store.comm.Get_rank()
        say(f"ok {store.rank} appnum {store.appnum} of {store.comm.Get_size()}")


def stream_writer(per_rank: str = "20") -> None:
    """``StreamWriter(comm=...)`` on every app rank of an MPMD job: dense steps, each
    rank's items in its own order, and the stream ended once, after every rank's appends."""
    import memstore
    from memstore import mpi

    count = int(per_rank)
    with mpi.connect(timeout=60, grace=5, client_timeout=10) as store:
        comm, me = store.comm, store.comm.Get_rank()
        stream = store.client.stream("sim", maxlen=count * comm.Get_size())
        writer = memstore.StreamWriter(stream, max_in_flight=4, comm=comm)
        for t in range(count):
            writer.append({"t": np.array(t), "rank": np.array(me)})
        writer.close()  # collective: rank 0 ends the stream after every rank's appends
        assert writer.appended == count, writer
        comm.Barrier()
        items = stream.window(count * comm.Get_size())
        assert [step for step, _ in items] == list(range(count * comm.Get_size())), items
        for rank in range(comm.Get_size()):
            mine = [int(item["t"]) for _, item in items if int(item["rank"]) == rank]
            assert mine == list(range(count)), (rank, mine)
        assert stream.info()["closed"] and stream.wait(len(items), timeout=5) is False
        say(f"ok {store.rank} stream_writer")


def shared_memory(store) -> None:
    """Every app rank puts 512 KiB (over the threshold), reads every rank's: the node's
    shards hold them as shared-memory files, and each got array maps one."""
    client, comm = store.client, store.comm
    me = comm.Get_rank()
    client.put_tensor(f"big-{store.appnum}-{me}", np.arange(1 << 16, dtype=np.float64) + me)
    comm.Barrier()
    for other in range(comm.Get_size()):
        got = client.get_tensor(f"big-{store.appnum}-{other}")
        owner = got
        while isinstance(owner, np.ndarray):
            owner = owner.base
        assert type(getattr(owner, "obj", owner)).__name__ == "mmap", (other, type(owner))
        np.testing.assert_array_equal(got, np.arange(1 << 16, dtype=np.float64) + other)
    comm.Barrier()
    infos = client.get_db_node_info(store.addresses)
    assert sum(i["shm_bytes"] for i in infos) >= comm.Get_size() * (8 << 16), infos


def shm_init() -> None:
    """``mpi.init``: its shard ranks offer the node's app ranks the shared-memory path."""
    from memstore import mpi

    with mpi.init(timeout=60, grace=5, client_timeout=10) as store:
        if store.is_server:
            store.serve()
            return
        shared_memory(store)
        say(f"ok {store.rank}")


def shm_connect() -> None:
    """``mpi.connect`` beside ``memstore-server --mpi`` ranks: the same, MPMD."""
    from memstore import mpi

    with mpi.connect(timeout=60, grace=5, client_timeout=10) as store:
        shared_memory(store)
        say(f"ok {store.rank}")


def secure_mpmd() -> None:
    """``mpi.connect`` next to ``memstore-server --mpi --curve-secret-key ...``: the app
    ranks get the cluster key over MPI; a client without it is refused."""
    import memstore
    from memstore import mpi

    with mpi.connect(timeout=60, grace=5, client_timeout=10) as store:
        exchange(store)
        try:
            memstore.Client(store.addresses, timeout=3)
        except memstore.AuthError as exc:
            assert any(a in str(exc) for a in store.addresses), exc
        else:
            raise AssertionError("a client without a key was served")
        say(f"ok {store.rank} secure")


def restore_values() -> dict[str, np.ndarray]:
    """What tests/test_mpi.py saves from a 3-shard store and the MPI restores check."""
    rng = np.random.default_rng(13)
    values = {f"t{i}": rng.standard_normal(i * 31 + 1).astype(np.float32) for i in range(30)}
    values["big"] = rng.integers(0, 255, 3 << 20, dtype=np.uint8)
    values["{tag}.i64"] = np.arange(24, dtype=np.int64).reshape(2, 3, 4)
    values["empty"] = np.zeros((0, 5), dtype=np.int16)
    return values


def fill_for_restore(client) -> None:
    from memstore import DataSet

    for key, value in restore_values().items():
        client.put_tensor(key, value)
    dataset = DataSet("ds")
    dataset.add_tensor("u", np.arange(7, dtype=np.uint16))
    dataset.add_meta_string("note", "saved")
    client.put_dataset(dataset)
    for i in range(3):
        item = DataSet(f"item{i}")
        item.add_tensor("x", np.full(4, i, dtype=np.float64))
        client.append_to_list("queue", item)


def check_restored(client) -> None:
    """Every value of :func:`fill_for_restore`, bit-identical (dtype, shape, bytes)."""
    for key, value in restore_values().items():
        got = client.get_tensor(key)
        assert got.dtype == value.dtype and got.shape == value.shape, key
        assert got.tobytes() == value.tobytes(), key
    dataset = client.get_dataset("ds")
    assert dataset.get_tensor("u").tobytes() == np.arange(7, dtype=np.uint16).tobytes()
    assert dataset.get_meta_strings("note") == ["saved"]
    items = client.get_datasets_from_list("queue")
    assert [int(d.get_tensor("x")[0]) for d in items] == [0, 1, 2], items


def restore(directory: str, shards_per_node: str, saved_keys: str) -> None:
    """``mpi.init(restore=DIR)``: the app ranks read back a snapshot of another shard count."""
    from memstore import mpi

    k = int(shards_per_node)
    with mpi.init(shards_per_node=k, restore=directory, timeout=60, grace=5,
                  client_timeout=20) as store:  # fmt: skip
        if store.is_server:
            store.serve()
            return
        assert len(store.addresses) == k, store.addresses
        check_restored(store.client)
        keys = sum(i["keys"] for i in store.client.get_db_node_info(store.addresses))
        assert keys == int(saved_keys), f"{keys} keys on {k} shards, saved {saved_keys}"
        say(f"ok {store.rank} restored onto {k}")


def fail(variant: str, grace: str = "20") -> None:
    """App rank 1 raises. ``with``: the others finish; ``stuck``: they wait in a
    barrier for rank 1, so it aborts the job after ``grace``; ``uncaught``: no ``with``;
    ``torch_stuck``: rank 1 raises uncaught under torch.distributed, the others wait."""
    from memstore import mpi

    store = mpi.init(timeout=60, grace=float(grace), client_timeout=10)
    if store.is_server:
        store.serve()
        store.shutdown()
        return
    if variant == "uncaught":
        if store.comm.Get_rank() == 1:
            raise RuntimeError("failing on purpose")
        store.shutdown()
        say(f"ok {store.rank}")
        return
    if variant == "torch_stuck":  # torch.distributed's excepthook buffers stderr around ours
        if store.comm.Get_rank() == 1:
            import torch.distributed as dist

            rendezvous = f"file://{tempfile.gettempdir()}/memstore-torch-{os.getpid()}"
            dist.init_process_group("gloo", init_method=rendezvous, rank=0, world_size=1)
            raise RuntimeError("failing on purpose")
        store.comm.Barrier()  # never completes: rank 1 is gone
        return
    with store:
        if store.comm.Get_rank() == 1:
            raise RuntimeError("failing on purpose")
        if variant == "stuck":
            store.comm.Barrier()  # never completes: rank 1 is gone
        say(f"ok {store.rank}")


def crash() -> None:
    """A shard's loop dies: its rank reports it and the job ends."""
    from mpi4py import MPI

    from memstore import mpi

    store = mpi.init(timeout=60, grace=20, client_timeout=3)
    with store:
        if store.is_server:

            def broken(*args, **kwargs):
                raise RuntimeError("shard bug on purpose")

            store.shards[0]._drain = broken  # the loop calls it on the next request
            MPI.COMM_WORLD.Barrier()  # broken before any application rank sends
            store.serve()
        else:
            MPI.COMM_WORLD.Barrier()
            store.client.put_tensor(f"x{store.rank}", np.zeros(4))


def handoff() -> None:
    """A separate job: plain ``Client()`` through ``MEMSTORE_ADDRESS_FILE``."""
    from mpi4py import MPI

    import memstore

    comm = MPI.COMM_WORLD
    with memstore.Client(timeout=10) as client:
        client.put_tensor(f"handoff-{comm.rank}", np.arange(4) + comm.rank)
        comm.Barrier()
        for other in range(comm.size):
            assert int(client.get_tensor(f"handoff-{other}")[0]) == other
    say(f"ok {comm.rank}")


def hello_app() -> None:
    """For Launcher tests: a plain app with MEMSTORE_ADDRESS from the launcher."""
    import memstore

    with memstore.Client(timeout=10) as client:
        name = f"app-{os.environ.get('MEMSTORE_RANK', os.environ.get('PMI_RANK', '0'))}"
        client.put_tensor(name, np.ones(3))
        assert client.tensor_exists(name)
    say(f"ok {name}")


if __name__ == "__main__":
    scenario, *args = sys.argv[1:]
    {
        "spmd": spmd,
        "world": world,
        "snapshots": snapshots,
        "gateway": gateway,
        "mpmd": mpmd,
        "stream_writer": stream_writer,
        "secure_mpmd": secure_mpmd,
        "shm_init": shm_init,
        "shm_connect": shm_connect,
        "restore": restore,
        "fail": fail,
        "crash": crash,
        "handoff": handoff,
        "hello_app": hello_app,
    }[scenario](*args)
