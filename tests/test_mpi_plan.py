"""memstore.mpi without a job: who serves, where it binds, and mpi4py staying optional."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("mpi4py")

from memstore.mpi._plan import (
    CONNECT,
    INIT,
    SERVER,
    Member,
    Role,
    assign_roles,
    bind_host,
    ipc_path,
)


def members(layout: list[int], mode: str = INIT, k: int = 1) -> list[Member]:
    """Ranks in order over nodes of the given sizes; a node is named by its first rank."""
    out, rank = [], 0
    for size in layout:
        first = rank
        for _ in range(size):
            out.append(Member(rank, first, mode, k if mode == INIT else 0, 0))
            rank += 1
    return out


def serving(roles: list[Role]) -> list[int]:
    return [rank for rank, role in enumerate(roles) if role.is_server]


def test_last_ranks_of_each_node_serve():
    roles = assign_roles(members([4, 4], k=1))
    assert serving(roles) == [3, 7]
    roles = assign_roles(members([4, 4], k=2))
    assert serving(roles) == [2, 3, 6, 7]
    assert [roles[r].first_local for r in (2, 3)] == [0, 1]  # ports base+0, base+1


def test_every_node_keeps_an_application_rank():
    roles = assign_roles(members([2, 3], k=4))
    assert serving(roles) == [1, 3, 4]
    assert not roles[0].is_server and not roles[2].is_server


def test_a_rank_alone_on_its_node_runs_the_shards_in_threads():
    (alone,) = assign_roles(members([1], k=2))
    assert alone == Role(is_server=False, shards=2, first_local=0)
    roles = assign_roles(members([1, 3], k=1))
    assert roles[0].shards == 1 and not roles[0].is_server
    assert serving(roles) == [3]


def test_dedicated_server_ranks_win():
    job = [Member(0, 0, SERVER, 0, 0), Member(1, 0, SERVER, 0, 0)]
    job += [Member(r, 0, CONNECT, 0, 1) for r in range(2, 6)]
    roles = assign_roles(job)
    assert serving(roles) == [0, 1]
    assert [r.shards for r in roles] == [1, 1, 0, 0, 0, 0]
    assert [r.first_local for r in roles[:2]] == [0, 1]


def test_connect_without_servers_starts_nothing():
    assert not any(r.shards for r in assign_roles(members([4], mode=CONNECT)))


def test_ranks_must_agree_on_shards_per_node():
    job = members([2], k=1)
    job[1] = Member(1, 0, INIT, 2, 0)
    with pytest.raises(ValueError, match="disagree"):
        assign_roles(job)


def test_bind_host():
    assert bind_host(None, 1) == "127.0.0.1"
    assert bind_host("127.0.0.1", 3) == "127.0.0.1"
    assert bind_host("localhost", 1) == "127.0.0.1"
    assert bind_host("lo", 3) == "127.0.0.1"  # an interface name: its address on each node
    assert bind_host(None, 2) != ""  # this node's address (whatever the machine has)


def test_ipc_path_is_short_and_unique():
    a, b = ipc_path("abcd1234", 3, 0), ipc_path("abcd1234", 3, 1)
    assert a != b and len(a) <= 100 and a.endswith(".sock")


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_import_memstore_does_not_import_mpi4py():
    done = run_python("import sys, memstore; assert 'mpi4py' not in sys.modules, 'imported'")
    assert done.returncode == 0, done.stderr


def test_memstore_mpi_without_mpi4py_names_the_extra():
    done = run_python("import sys; sys.modules['mpi4py'] = None; import memstore.mpi")
    assert done.returncode != 0
    assert "pip install 'memstore[mpi]'" in done.stderr, done.stderr


def test_importing_memstore_mpi_does_not_start_mpi():
    done = run_python("import sys, memstore.mpi; assert 'mpi4py.MPI' not in sys.modules")
    assert done.returncode == 0, done.stderr


def test_server_cli_offers_mpi():
    done = subprocess.run(
        [sys.executable, "-m", "memstore.server", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "--mpi" in done.stdout and "--address-file" in done.stdout


def test_no_address_under_mpi_points_to_the_bootstrap(monkeypatch):
    from memstore import address
    from memstore.errors import MemstoreError

    for name in ("MEMSTORE_ADDRESS", "SSDB", "MEMSTORE_ADDRESS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PMI_RANK", "3")
    with pytest.raises(MemstoreError, match=r"memstore\.mpi\.connect\(\)"):
        address.resolve(None)


def test_one_gateway_per_node_on_its_first_rank_with_shards():
    from memstore.mpi._gateway import runs_gateway

    job = members([4, 4], k=2)  # ranks 2, 3 and 6, 7 serve
    roles = assign_roles(job)
    assert [r for r in range(8) if runs_gateway(job, roles, r)] == [2, 6]
    job = [Member(r, 0 if r < 2 else 2, SERVER, 0, 0) for r in range(4)]
    job += [Member(4, 4, CONNECT, 0, 1)]  # a node without shards runs no gateway
    roles = assign_roles(job)
    assert [r for r in range(5) if runs_gateway(job, roles, r)] == [0, 2]
