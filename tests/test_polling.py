"""Waiting on the server: polls park on the shard and answer the moment the condition holds,
or at their deadline, without holding up anything else on that shard."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import memstore
from memstore.placement import key_shard

#: A poll that would run 30 s: long enough that answering early proves a wake-up.
LONG_MS, LONG_TRIES = 100, 300
LONG_S = LONG_MS * LONG_TRIES / 1000


def neighbour(client, key: str, n: int = 0) -> str:
    """Another key on the shard that holds ``key``."""
    count = len(client.addresses)
    shard = key_shard(key, count)
    found = [f"nb{i}" for i in range(5000) if key_shard(f"nb{i}", count) == shard]
    return found[n]


def barrier(client, key: str) -> None:
    """Return once the shard of ``key`` has handled every earlier request of this client.

    A client's requests to one shard travel on one socket and the shard serves them in
    order, so the answer to this request means earlier ones (a poll) are parked."""
    client.key_exists(neighbour(client, key))


def parked(client) -> int:
    return sum(info["parked"] for info in client.get_db_node_info())


def dataset(name: str, step: int = 0) -> memstore.DataSet:
    ds = memstore.DataSet(name)
    ds.add_tensor("u", np.full(3, step, dtype=np.float32))
    ds.add_meta_scalar("step", step)
    return ds


@pytest.fixture
def other(cluster):
    """A second client of the same cluster (another producer)."""
    with cluster.client(timeout=10) as second:
        yield second


# -- wake-up ---------------------------------------------------------------------------------


@pytest.mark.every_path
def test_poll_tensor_wakes_when_another_thread_puts(client, cluster):
    """A parked poll_tensor answers True as soon as a put from another client in another
    thread stores the key, long before its deadline."""
    start = time.monotonic()
    poll = client.poll_tensor_async("snap", LONG_MS, LONG_TRIES)
    barrier(client, "snap")
    assert parked(client) == 1
    assert not poll.done()

    def produce():
        with cluster.client(timeout=10) as producer:
            producer.put_tensor("snap", np.arange(4))

    thread = threading.Thread(target=produce)
    thread.start()
    assert poll.result(timeout=LONG_S) is True
    elapsed = time.monotonic() - start
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert elapsed < LONG_S / 3, f"woke after {elapsed:.2f}s of a {LONG_S}s deadline"
    assert parked(client) == 0


def test_poll_tensor_is_true_at_once_when_present(client):
    """Polling a tensor that exists answers True without waiting."""
    client.put_tensor("here", np.ones(1))
    start = time.monotonic()
    assert client.poll_tensor("here", LONG_MS, LONG_TRIES) is True
    assert time.monotonic() - start < LONG_S / 3


@pytest.mark.every_path
def test_poll_returns_false_at_the_deadline(client):
    """A poll for a key that never comes answers False once poll_frequency_ms * num_tries
    has passed, not before."""
    start = time.monotonic()
    assert client.poll_tensor("never", 50, 6) is False
    elapsed = time.monotonic() - start
    assert elapsed >= 0.3
    assert elapsed < 0.3 + client.timeout
    assert parked(client) == 0


def test_poll_with_zero_deadline_answers_now(client):
    """num_tries=0 asks once: False for a missing key, True for a present one."""
    assert client.poll_tensor("absent", 100, 0) is False
    client.put_tensor("present", np.ones(1))
    assert client.poll_tensor("present", 100, 0) is True


@pytest.mark.every_path
def test_poll_longer_than_the_client_timeout_is_not_connection_lost(cluster):
    """A poll may outlast the client's timeout: the client waits for the shard's deadline."""
    with cluster.client(timeout=0.5) as short:
        start = time.monotonic()
        assert short.poll_tensor("never", 100, 10) is False
        assert time.monotonic() - start >= 1.0


def test_result_timeout_on_a_pending_poll_is_timeout(client):
    """future.result(timeout) on a poll still parked raises memstore.Timeout (a TimeoutError),
    and the poll can still complete later."""
    poll = client.poll_tensor_async("later", LONG_MS, LONG_TRIES)
    with pytest.raises(TimeoutError):
        poll.result(timeout=0.2)
    client.put_tensor("later", np.ones(1))
    assert poll.result(timeout=LONG_S) is True


def test_poll_tensor_ignores_other_kinds(client, other):
    """poll_tensor waits for a tensor: a dataset under the name does not satisfy it."""
    poll = client.poll_tensor_async("mixed", 50, 6)
    barrier(client, "mixed")
    other.put_dataset(dataset("mixed"))
    assert poll.result(timeout=10) is False


def test_many_polls_on_one_key_all_wake(client, other):
    """Every poll parked on a key answers True on its first put."""
    polls = [client.poll_tensor_async("crowd", LONG_MS, LONG_TRIES) for _ in range(20)]
    barrier(client, "crowd")
    assert parked(client) == 20
    other.put_tensor("crowd", np.zeros(2))
    memstore.wait(polls, timeout=LONG_S / 3)
    assert all(p.result(0) is True for p in polls)


def test_negative_poll_arguments_are_value_errors(client):
    """Negative poll_frequency_ms or num_tries are refused."""
    with pytest.raises(ValueError):
        client.poll_tensor("x", -1, 3)
    with pytest.raises(ValueError):
        client.poll_key("x", 10, -3)


# -- keys and datasets -----------------------------------------------------------------------


def test_poll_key_wakes_for_any_kind_without_prefix(client, other):
    """poll_key takes the key as-is and wakes for a dataset as well as a tensor."""
    poll = client.poll_key_async("anything", LONG_MS, LONG_TRIES)
    barrier(client, "anything")
    other.put_dataset(dataset("anything"))
    assert poll.result(timeout=LONG_S / 3) is True
    assert client.poll_key("missing", 20, 5) is False


def test_poll_dataset_wakes_on_put_dataset(client, other):
    """poll_dataset answers True when the dataset is stored, and not for a tensor."""
    poll = client.poll_dataset_async("ds", LONG_MS, LONG_TRIES)
    barrier(client, "ds")
    other.put_tensor("ds-tensor", np.ones(1))
    assert not poll.done()
    other.put_dataset(dataset("ds"))
    assert poll.result(timeout=LONG_S / 3) is True
    other.put_tensor("not-a-ds", np.ones(1))
    assert client.poll_dataset("not-a-ds", 20, 5) is False


# -- list lengths ----------------------------------------------------------------------------


def test_poll_list_length_exact(client, other):
    """poll_list_length answers True when the list reaches exactly the length."""
    poll = client.poll_list_length_async("agg", 3, LONG_MS, LONG_TRIES)
    barrier(client, "agg")
    other.append_to_list("agg", dataset("d0"))
    other.append_to_list("agg", dataset("d1"))
    barrier(client, "agg")
    assert not poll.done()
    other.append_to_list("agg", dataset("d2"))
    assert poll.result(timeout=LONG_S / 3) is True
    other.append_to_list("agg", dataset("d3"))
    assert client.poll_list_length("agg", 3, 20, 5) is False


def test_poll_list_length_gte(client, other):
    """poll_list_length_gte answers True once the list has at least the length."""
    poll = client.poll_list_length_gte_async("agg", 2, LONG_MS, LONG_TRIES)
    barrier(client, "agg")
    other.append_to_list("agg", dataset("d0"))
    barrier(client, "agg")
    assert not poll.done()
    other.append_to_list("agg", dataset("d1"))
    assert poll.result(timeout=LONG_S / 3) is True
    other.append_to_list("agg", dataset("d2"))
    assert client.poll_list_length_gte("agg", 2, 20, 5) is True
    assert client.poll_list_length_gte("agg", 4, 20, 5) is False


def test_poll_list_length_lte(client, other):
    """poll_list_length_lte is True at once for short (or missing) lists and wakes when a
    long list is deleted."""
    assert client.poll_list_length_lte("nolist", 0, 20, 5) is True
    for i in range(3):
        other.append_to_list("agg", dataset(f"d{i}"))
    assert client.poll_list_length_lte("agg", 3, 20, 5) is True
    assert client.poll_list_length_lte("agg", 1, 20, 5) is False
    poll = client.poll_list_length_lte_async("agg", 1, LONG_MS, LONG_TRIES)
    barrier(client, "agg")
    assert not poll.done()
    other.delete_list("agg")
    assert poll.result(timeout=LONG_S / 3) is True


def test_poll_list_length_on_a_missing_list_counts_it_as_empty(client):
    """A list that does not exist has length 0."""
    assert client.poll_list_length("nolist", 0, 20, 5) is True
    assert client.poll_list_length("nolist", 1, 20, 5) is False


def test_poll_list_length_refuses_a_negative_length(client):
    """A negative list_length is a ValueError."""
    with pytest.raises(ValueError):
        client.poll_list_length("agg", -1, 10, 10)


# -- wait_tensor -----------------------------------------------------------------------------


def test_wait_tensor_returns_the_array(client, other):
    """wait_tensor parks until the tensor arrives and returns it (one round trip)."""
    waiting = client.wait_tensor_async("field", timeout=LONG_S)
    barrier(client, "field")
    data = np.linspace(0, 1, 7).reshape(7, 1)
    start = time.monotonic()
    other.put_tensor("field", data)
    got = waiting.result(timeout=LONG_S)
    assert time.monotonic() - start < LONG_S / 3
    np.testing.assert_array_equal(got, data)
    assert got.flags.writeable


def test_wait_tensor_of_a_present_tensor(client):
    """wait_tensor of a stored tensor returns it at once, also as torch."""
    client.put_tensor("field", np.arange(3, dtype=np.int16))
    np.testing.assert_array_equal(client.wait_tensor("field", timeout=5), np.arange(3))
    torch = pytest.importorskip("torch")
    assert torch.equal(client.wait_tensor("field", timeout=5, as_torch=True), torch.arange(3))


def test_wait_tensor_raises_timeout(client):
    """wait_tensor raises memstore.Timeout naming the key once its timeout passes."""
    start = time.monotonic()
    with pytest.raises(memstore.Timeout, match="late-field"):
        client.wait_tensor("late-field", timeout=0.3)
    assert time.monotonic() - start >= 0.3


# -- a parked poll blocks nothing ------------------------------------------------------------


@pytest.mark.every_path
def test_parked_poll_does_not_block_its_shard(client, other):
    """While a long poll is parked on a shard, puts and gets of other keys on that shard,
    from the same client and from another one, are answered."""
    poll = client.poll_tensor_async("slow", LONG_MS, LONG_TRIES)
    barrier(client, "slow")
    start = time.monotonic()
    for i, who in enumerate((client, other, client, other)):
        key = neighbour(client, "slow", i)
        who.put_tensor(key, np.full(2, i))
        np.testing.assert_array_equal(who.get_tensor(key), np.full(2, i))
        assert client.poll_tensor(key, LONG_MS, LONG_TRIES) is True
    assert time.monotonic() - start < LONG_S / 3
    assert not poll.done()
    other.put_tensor("slow", np.ones(1))
    assert poll.result(timeout=LONG_S / 3) is True


def test_many_parked_polls_do_not_block_their_shards(client, other):
    """Fifty parked polls across every shard leave the store fully usable."""
    polls = [client.poll_tensor_async(f"wait{i}", LONG_MS, LONG_TRIES) for i in range(50)]
    other.put_tensors({f"free{i}": np.array([i]) for i in range(50)})
    got = other.get_tensors([f"free{i}" for i in range(50)])
    assert [int(a[0]) for a in got] == list(range(50))
    assert not any(p.done() for p in polls)
    other.put_tensors({f"wait{i}": np.array([i]) for i in range(50)})
    memstore.wait(polls, timeout=LONG_S / 3)
    assert all(p.result(0) is True for p in polls)


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.wait_tensor("never", timeout=float("inf")),
        lambda c: c.poll_tensor("never", float("nan"), 3),
        lambda c: c.poll_key("never", float("inf"), 1),
    ],
    ids=["wait-inf", "poll-nan", "poll-inf"],
)
def test_non_finite_waits_are_refused_and_the_shard_survives(client, call):
    """A NaN or infinite wait is refused with an error, and its shard keeps serving."""
    with pytest.raises((memstore.ProtocolError, ValueError)):
        call(client)
    client.put_tensor("never", np.ones(1))
    assert client.poll_tensor("never", 10, 1) is True


@pytest.mark.every_path
def test_many_wait_tensors_on_one_key_all_get_the_array(client, other):
    """Every parked wait_tensor on a key receives the array from its one put."""
    waits = [client.wait_tensor_async("shared", timeout=LONG_S) for _ in range(10)]
    barrier(client, "shared")
    other.put_tensor("shared", np.arange(1000, dtype=np.int32))
    memstore.wait(waits, timeout=LONG_S / 3)
    arrays = [w.result(0) for w in waits]
    assert all(np.array_equal(a, np.arange(1000)) for a in arrays)
    arrays[0][:] = -1
    assert arrays[1][0] == 0


@pytest.mark.parametrize("op", ["copy_tensor", "rename_tensor"])
@pytest.mark.parametrize("same_shard", [True, False], ids=["same", "across"])
def test_copy_and_rename_wake_polls_on_the_destination(client, other, op, same_shard):
    """A tensor that appears by copy or rename (within or across shards) wakes its polls."""
    count = len(client.addresses)
    src = "origin"
    dst = next(
        f"dest{i}"
        for i in range(1000)
        if (key_shard(f"dest{i}", count) == key_shard(src, count)) == same_shard
    )
    other.put_tensor(src, np.arange(3))
    poll = client.poll_tensor_async(dst, LONG_MS, LONG_TRIES)
    barrier(client, dst)
    assert not poll.done()
    getattr(other, op)(src, dst)
    assert poll.result(timeout=LONG_S / 3) is True
