"""Shard-side hardening of issue 25: staged outputs, refused batches, memory-cap bypasses
and shared-memory adoption, each against real shard processes and raw sockets."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import zmq

import memstore
from memstore import wire
from memstore.client import shm as shm_client

MiB = 1 << 20


@pytest.fixture(scope="module")
def shm_root(tmp_path_factory):
    """A private shared-memory root for this module's shards and clients; freed files are
    unlinked at once (no spares), so a file left behind is a leak."""
    root = tmp_path_factory.mktemp("shm")
    root.chmod(0o700)
    saved = {k: os.environ.get(k) for k in ("MEMSTORE_SHM_DIR", "MEMSTORE_SHM_SPARE")}
    os.environ["MEMSTORE_SHM_DIR"] = str(root)
    os.environ["MEMSTORE_SHM_SPARE"] = "0"
    yield root
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def until(condition, timeout_s: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s} s")
        time.sleep(0.02)


def dealer(address: str) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    return sock


def ask(sock: zmq.Socket, op: str, fields: dict, payload=(), req_id: int = 1) -> dict:
    sock.send_multipart(wire.request(req_id, op, fields, list(payload)))
    assert sock.poll(10_000), f"the shard did not answer {op}"
    return wire.unpack_header(sock.recv_multipart()[0])


def shard_files(directory: str) -> list[str]:
    """Every file under a shard's shared-memory directory but its probe."""
    found = []
    for top, _, names in os.walk(directory):
        found += [os.path.join(top, n) for n in names if n != "probe"]
    return found


def upload(root, nbytes: int) -> tuple[dict, str]:
    """A file of this process's upload area holding ``nbytes``: the put fields naming it."""
    area = shm_client._uploads_in(str(root))
    name = area.write(memoryview(np.ones(nbytes, np.uint8)))
    fields = {"area": area.name, "files": [name]}
    key = getattr(area, "key", None)  # the area's secret, where the client has one
    if key is not None:
        fields["area_key"] = key
    return fields, os.path.join(area.path, name)


def stage(sock, txn: str, key: str, fields: dict, nbytes: int, ttl: float = 60.0) -> dict:
    meta = {"dtype": "|u1", "shape": [nbytes], "order": "C"}
    return ask(sock, "stage", {"txn": txn, "ttl": ttl, "keys": [key], "metas": [meta], **fields},
               [b""])  # fmt: skip


# -- item 7: staged shared-memory outputs are unlinked on every path ---------------------------


@pytest.fixture
def capped_shm(shm_root):
    """A 4 MiB shard with shared memory, its shm directory and a raw socket to it."""
    with (
        memstore.LocalCluster(shards=1, max_memory=4 * MiB) as running,
        running.client(timeout=10) as client,
    ):
        sock = dealer(running.addresses[0])
        try:
            yield running.addresses[0], client.get_db_node_info()[0]["shm_dir"], sock, client
        finally:
            sock.close()


def test_staged_files_are_unlinked_on_abort_replace_expiry_refusal_and_flush(capped_shm, shm_root):
    """Before: every staged file stayed in /dev/shm for good, outside --max-memory."""
    _, directory, sock, client = capped_shm
    gone = lambda: shard_files(directory) == []  # noqa: E731

    fields, _ = upload(shm_root, MiB)
    assert stage(sock, "t1", "a", fields, MiB)["ok"]
    assert len(shard_files(directory)) == 1
    assert ask(sock, "abort", {"txn": "t1"})["ok"]
    until(gone, what="the aborted stage's file unlinked")

    fields, _ = upload(shm_root, MiB)
    assert stage(sock, "t2", "a", fields, MiB)["ok"]
    fields, _ = upload(shm_root, MiB)
    assert stage(sock, "t2", "a", fields, MiB, ttl=0.3)["ok"]  # replaces the first
    until(lambda: len(shard_files(directory)) == 1, what="the replaced stage's file unlinked")
    until(gone, what="the expired stage's file unlinked")
    assert ask(sock, "commit", {"txn": "t2"})["code"] == "model"  # expired

    fields, path = upload(shm_root, 8 * MiB)
    refused = stage(sock, "t3", "a", fields, 8 * MiB)
    assert refused["code"] == "store_full"
    assert "\x00" not in refused["msg"] and "'a'" in refused["msg"], refused["msg"]
    until(gone, what="the refused stage's file unlinked")
    assert not os.path.exists(path)

    fields, _ = upload(shm_root, MiB)
    assert stage(sock, "t4", "a", fields, MiB)["ok"]
    client.flush_db()
    until(gone, what="the flushed stage's file unlinked")
    assert ask(sock, "commit", {"txn": "t4"})["code"] == "model"
    assert not client.key_exists("a")


def test_staged_bytes_count_against_max_memory_until_commit(capped_shm, shm_root):
    """Before: a stage was checked once but not counted: 3 MiB staged and 3 MiB put fit a
    4 MiB shard. Now the put is refused while the stage holds its bytes, fits after."""
    _, _, sock, client = capped_shm
    meta = {"dtype": "|u1", "shape": [3 * MiB], "order": "C"}
    staged = ask(sock, "stage", {"txn": "t", "ttl": 60, "keys": ["s"], "metas": [meta]},
                 [bytes(3 * MiB)])  # fmt: skip
    assert staged["ok"], staged
    with pytest.raises(memstore.StoreFull, match="staged by model runs"):
        client.put_tensor("p", np.zeros(3 * MiB, np.uint8))
    assert ask(sock, "commit", {"txn": "t"})["ok"]
    assert client.get_tensor("s").nbytes == 3 * MiB
    client.delete_tensor("s")
    assert ask(sock, "stage", {"txn": "u", "ttl": 60, "keys": ["s"], "metas": [meta]},
               [bytes(3 * MiB)])["ok"]  # fmt: skip
    assert ask(sock, "abort", {"txn": "u"})["ok"]
    client.put_tensor("p", np.zeros(3 * MiB, np.uint8))  # the aborted bytes were let go


def test_a_stage_ttl_is_bounded_by_the_model_timeout(shm_root):
    """Before: any finite ttl (1e300) held staged bytes for good; now at most
    --model-timeout + 30 s, and the reply says what was granted."""
    with memstore.LocalCluster(shards=1, extra_args=["--model-timeout", "2"]) as running:
        sock = dealer(running.addresses[0])
        try:
            meta = {"dtype": "|u1", "shape": [16], "order": "C"}
            fields = {"txn": "t", "ttl": 1e300, "keys": ["s"], "metas": [meta]}
            reply = ask(sock, "stage", fields, [bytes(16)])
            assert reply["ok"] and reply["ttl"] == 32.0, reply
            assert ask(sock, "stage", {**fields, "ttl": 0.5}, [bytes(16)])["ttl"] == 0.5
        finally:
            sock.close()


# -- item 13: only an upload area's owner may have its files adopted ---------------------------


def _attack(address: str, area: str, names: list[str], meta: dict) -> list[dict]:
    """Ask the shard to adopt each of ``names`` from ``area``, with no or guessed secrets,
    then read the key it would have stored: the answers."""
    sock = zmq.Context().socket(zmq.DEALER)  # the child's own: never the parent's sockets
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    answers = []
    for i, name in enumerate(names):
        for guess in ({}, {"area_key": ""}, {"area_key": "0" * 32}):
            fields = {"keys": ["stolen"], "metas": [meta], "area": area, "files": [name]}
            answers.append(ask(sock, "put", {**fields, **guess}, [b""], req_id=i + 1))
    answers.append(ask(sock, "get", {"keys": ["stolen"]}, req_id=99))
    return answers


def test_another_user_cannot_adopt_a_clients_upload_files(shm_root, other_user):
    """Before: a put from another Unix account over TCP naming the victim's area and file
    numbers was accepted: it stored the victim's unsent ``client.empty()`` buffer under its
    own key, read it back, and the victim's next put failed. Now it needs the area's
    secret, which only the area's owner can read."""
    with memstore.LocalCluster(shards=1) as running, running.client(timeout=10) as victim:
        victim._shm.threshold = 1
        array = victim.empty("mine", 1 << 16, np.uint8)
        array[:] = 7
        area = shm_client._uploads_in(str(shm_root))
        names = sorted(n for n in os.listdir(area.path) if n != "key")
        assert names, "the victim's buffer has a file"
        meta = {"dtype": "|u1", "shape": [1 << 16], "order": "C"}
        answers = other_user.run(lambda: _attack(running.addresses[0], area.name, names, meta))
        assert not any(a.get("ok") for a in answers), answers
        assert "area_key" in answers[0]["msg"], answers[0]
        assert all(os.path.exists(os.path.join(area.path, n)) for n in names)
        victim.put_tensor("mine", array)  # the victim's file is still its own
        assert (victim.get_tensor("mine") == 7).all()
        assert not victim.key_exists("stolen")


# -- item 3: a batch refused as a whole fails each part at once --------------------------------


def _batch(parts: list[list]) -> list:
    frames = [wire.pack({"v": wire.VERSION, "id": 0, "op": "batch", "n": [len(p) for p in parts]})]
    for part in parts:
        frames += part
    return frames


def _put(req_id: int, keys: list[str], nbytes: int) -> list:
    meta = {"dtype": "|u1", "shape": [nbytes], "order": "C"}
    return wire.request(req_id, "put", {"keys": keys, "metas": [meta] * len(keys)},
                        [bytes(nbytes)] * len(keys))  # fmt: skip


def _part_answers(sock: zmq.Socket) -> dict[int, dict]:
    """One reply message, as a batch reply: each part's header by its id."""
    assert sock.poll(10_000), "the shard did not answer at once"
    frames = sock.recv_multipart()
    header = wire.unpack_header(frames[0])
    assert header["id"] == 0 and "n" in header, header
    at, parts = 1, {}
    for count in header["n"]:
        part = wire.unpack_header(frames[at])
        parts[part["id"]] = part
        at += count
    return parts


def test_a_batch_over_max_message_fails_each_part_at_once_with_the_reason():
    """Before: one id-0 error without ``n``: no part's caller could match it and each
    waited out its timeout. Now every part gets the refusal under its own id."""
    with memstore.LocalCluster(shards=1, extra_args=["--max-message", "64KiB"]) as running:
        sock = dealer(running.addresses[0])
        try:
            sock.send_multipart(_batch([_put(i, [f"k{i}"], 30 * 1024) for i in range(1, 21)]))
            parts = _part_answers(sock)
            assert sorted(parts) == list(range(1, 21))
            for part in parts.values():
                assert part["code"] == "protocol" and "--max-message" in part["msg"], part
            assert ask(sock, "exists", {"key": "k1"}, req_id=99)["exists"] is False
        finally:
            sock.close()


def test_a_batch_over_the_frame_cap_fails_each_part_at_once():
    """Past 100,000 frames the message's frames are dropped; the part headers are kept,
    so each part is refused by its id (before: one id-0 error, every part timed out)."""
    with memstore.LocalCluster(shards=1) as running:
        sock = dealer(running.addresses[0])
        try:
            parts = [_put(1, ["a"], 1)] + [_put(i, [f"k{j}" for j in range(40_000)], 0)
                                            for i in (2, 3, 4)]  # fmt: skip
            sock.send_multipart(_batch(parts))
            answers = _part_answers(sock)
            assert sorted(answers) == [1, 2, 3, 4]
            assert all("100000 frames" in a["msg"] for a in answers.values()), answers
            reply = ask(sock, "exists", {"key": "a"}, req_id=9)
            assert reply["ok"] and reply["exists"] is False  # no part was handled
        finally:
            sock.close()


# -- item 8: no bypass of --max-memory (RSS <= idle + cap + 16 MiB, read from /proc) -----------


def vm_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


@pytest.fixture
def capped16():
    """A 16 MiB shard without shared memory (every byte in its RSS): (client, raw socket,
    pid, idle RSS after a warm-up of each op)."""
    with (
        memstore.LocalCluster(shards=1, max_memory=16 * MiB, shm=False) as running,
        running.client(timeout=30) as client,
    ):
        sock = dealer(running.addresses[0])
        try:
            client.put_tensor("w", np.zeros(1024, np.uint8))
            client.flush_db()
            pid = client.get_db_node_info()[0]["pid"]
            yield client, sock, pid, vm_rss(pid)
        finally:
            sock.close()


BOUND = 16 * MiB + 16 * MiB  # the cap and the documented constant


def test_tensor_meta_with_extra_fields_is_refused(capped16):
    """Before: 120 puts with a 1 MiB ``pad`` meta field under a 16 MiB cap were all
    accepted, each charged ~1 KiB (RSS +126 MiB). Now refused, naming key and field."""
    _, sock, pid, idle = capped16
    meta = {"dtype": "|u1", "shape": [1], "order": "C", "pad": "x" * MiB}
    for i in range(120):
        reply = ask(sock, "put", {"keys": [f"p{i}"], "metas": [meta]}, [b"x"], req_id=i + 1)
        assert reply["code"] == "protocol" and "'pad'" in reply["msg"] and f"'p{i}'" in reply["msg"]
    assert vm_rss(pid) - idle <= BOUND


def test_list_items_are_charged_what_they_cost(capped16):
    """Before: items were charged len + 8 bytes, ~4x below what 10-character strings cost
    (RSS +64 MiB under a 16 MiB cap). Now the cap holds."""
    _, sock, pid, idle = capped16
    items = [f"item{i:06d}" for i in range(10_000)]
    for push in range(400):
        reply = ask(sock, "list_push", {"key": "l", "items": items}, req_id=push + 1)
        if not reply["ok"]:
            assert reply["code"] == "store_full", reply
            break
    else:
        raise AssertionError("the cap never refused a push")
    assert vm_rss(pid) - idle <= BOUND, (vm_rss(pid) - idle) / MiB


def test_staged_and_stored_bytes_stay_within_the_cap(capped16):
    """A stage counts: 15 MiB staged, then a 15 MiB put is refused; RSS within the bound."""
    client, sock, pid, idle = capped16
    meta = {"dtype": "|u1", "shape": [15 * MiB], "order": "C"}
    fields = {"txn": "t", "ttl": 60, "keys": ["s"], "metas": [meta]}
    assert ask(sock, "stage", fields, [bytes(15 * MiB)])["ok"]
    with pytest.raises(memstore.StoreFull):
        client.put_tensor("p", np.ones(15 * MiB, np.uint8))
    assert vm_rss(pid) - idle <= BOUND
