"""Bounded clients: each limit against a hostile raw-socket client.

--client-output-limit (a client that never reads its replies is disconnected, the shard's
memory stays bounded), MAX_FRAMES (frames per message) and MAX_KEY_BYTES (key length).
"""

from __future__ import annotations

import time

import msgpack
import numpy as np
import pytest
import zmq

import memstore
from memstore import wire
from memstore.config import MAX_FRAMES, MAX_KEY_BYTES

MiB = 1 << 20


def req(op: str, req_id: int = 1, **fields) -> bytes:
    return msgpack.packb({"v": wire.VERSION, "id": req_id, "op": op, **fields})


def info(client: memstore.Client) -> dict:
    return client.get_db_node_info()[0]


def answer(sock: zmq.Socket, timeout_ms: int = 10_000) -> dict:
    assert sock.poll(timeout_ms), "the shard did not answer"
    return msgpack.unpackb(sock.recv_multipart()[0])


def until(condition, timeout_s: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def raw():
    """A factory of raw DEALER sockets, all closed at teardown."""
    sockets = []

    def make(address: str, **options) -> zmq.Socket:
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        for name, value in options.items():
            sock.setsockopt(getattr(zmq, name), value)
        sock.connect(address)
        sockets.append(sock)
        return sock

    yield make
    for sock in sockets:
        sock.close()


def test_a_client_that_never_reads_is_disconnected_and_memory_stays_bounded(raw):
    """The issue's hostile client: 30 gets of a 16 MiB tensor from a raw DEALER that never
    reads (RCVHWM 1, a small receive buffer), while another client overwrites the tensor
    between gets, so each unread reply pins its own 16 MiB. With --client-output-limit
    64MiB the offender is disconnected with a logged reason, the shard's RSS grows by far
    less than the 480 MiB it would hold, and it serves the others on."""
    args = ["--client-output-limit", "64MiB"]
    with (
        memstore.LocalCluster(shards=1, extra_args=args) as running,
        running.client(timeout=30) as client,
    ):
        client.put_tensor("big", np.zeros(16 * MiB, np.uint8))
        idle = info(client)["rss"]
        hostile = raw(running.addresses[0], RCVHWM=1, RCVBUF=64 * 1024)
        hostile.send_multipart([req("hello", 0)])
        assert answer(hostile)["ok"]
        for i in range(30):
            hostile.send_multipart([req("get", i + 1, keys=["big"])])
            client.put_tensor("big", np.full(16 * MiB, i, np.uint8))  # a fresh buffer each
        until(lambda: info(client)["clients_evicted"] == 1, what="the offender's eviction")
        stats = info(client)
        assert stats["client_output_limit"] == 64 * MiB
        # Held: the stored tensor, the offender's 64 MiB before it went, libzmq's buffers.
        assert stats["rss_peak"] - idle < 160 * MiB, (idle, stats)
        until(lambda: info(client)["rss"] - idle < 48 * MiB, what="the unread replies freed")
        np.testing.assert_array_equal(client.get_tensor("big")[:4], np.full(4, 29, np.uint8))
        assert "--client-output-limit" in running.logs()


def test_a_reader_of_large_replies_is_not_disconnected(raw):
    """A client that reads every reply gets 40 of 4 MiB with --client-output-limit 8MiB:
    one reply at a time never passes the limit, so it is never disconnected; a single
    reply larger than the limit still goes."""
    args = ["--client-output-limit", "8MiB"]
    with (
        memstore.LocalCluster(shards=1, extra_args=args) as running,
        running.client(timeout=30) as client,
    ):
        client.put_tensor("four", np.ones(4 * MiB, np.uint8))
        client.put_tensor("sixteen", np.ones(16 * MiB, np.uint8))
        for _ in range(40):
            assert client.get_tensor("four").nbytes == 4 * MiB
        assert client.get_tensor("sixteen").nbytes == 16 * MiB
        assert info(client)["clients_evicted"] == 0


def test_many_small_unread_replies_are_bounded_too(raw):
    """A flood of small requests never read: the untracked small replies are counted too,
    so the offender goes once its unread replies pass a 1 MiB limit."""
    args = ["--client-output-limit", "1MiB"]
    with (
        memstore.LocalCluster(shards=1, extra_args=args) as running,
        running.client(timeout=30) as client,
    ):
        client.put_tensor("small", np.ones(16_000, np.uint8))  # under TRACK_LARGE
        hostile = raw(running.addresses[0], RCVHWM=1, RCVBUF=16 * 1024)
        for i in range(3_000):
            try:  # once cut off, its queue fills: stop rather than block
                hostile.send_multipart([req("get", i, keys=["small"])], zmq.NOBLOCK)
            except zmq.Again:
                break
        until(lambda: info(client)["clients_evicted"] == 1, 60, "the small-reply offender")
        assert client.get_tensor("small").sum() == 16_000


def test_a_message_with_too_many_frames_is_refused(raw):
    """A put of MAX_FRAMES + 10 empty frames is refused with ProtocolError naming the cap,
    and the shard serves on; a message at the cap is parsed normally."""
    with memstore.LocalCluster(shards=1) as running, running.client(timeout=30) as client:
        sock = raw(running.addresses[0])
        keys = [f"k{i}" for i in range(MAX_FRAMES + 10)]
        sock.send_multipart(
            [req("put", 5, keys=keys, metas=[{}] * len(keys)), *([b""] * len(keys))]
        )
        refused = answer(sock, 30_000)
        assert (refused["id"], refused["code"]) == (5, "protocol")
        assert str(MAX_FRAMES) in refused["msg"]
        sock.send_multipart([req("hello", 6)])
        assert answer(sock)["id"] == 6
        client.put_tensor("after", np.arange(3))
        assert client.get_tensor("after").tolist() == [0, 1, 2]


@pytest.mark.parametrize("extra", [1, 1000])
def test_a_key_over_max_key_bytes_is_refused(single, raw, extra):
    """Keys one byte, or 1,000 bytes, over MAX_KEY_BYTES are refused with ProtocolError on
    put and get; a key of exactly MAX_KEY_BYTES is stored."""
    sock = raw(single.addresses[0])
    meta = {"dtype": "|u1", "shape": [1], "order": "C"}
    for i, key in enumerate(["k" * (MAX_KEY_BYTES + extra), "é" * (MAX_KEY_BYTES // 2 + extra)]):
        sock.send_multipart([req("put", i, keys=[key], metas=[meta]), b"x"])
        refused = answer(sock)
        assert refused["code"] == "protocol" and "key" in refused["msg"], refused
        sock.send_multipart([req("get", 10 + i, keys=[key])])
        assert answer(sock)["code"] == "protocol"
    sock.send_multipart([req("put", 20, keys=["k" * MAX_KEY_BYTES], metas=[meta]), b"x"])
    assert answer(sock)["ok"]
