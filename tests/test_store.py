"""The shard's store on its own (no sockets): memory accounting, the cap, waiters, lists."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from memstore.errors import KeyNotFound, StoreFull, WrongType
from memstore.server.store import (
    DATASET,
    DIM_OVERHEAD,
    ENTRY_OVERHEAD,
    FRAME_SLACK,
    LIST,
    TENSOR,
    Entry,
    Store,
)


def tensor(key: str, nbytes: int) -> Entry:
    return Entry.of(TENSOR, {"dtype": "|u1", "shape": [nbytes], "order": "C"}, [b"x" * nbytes], key)


def charged(store: Store) -> int:
    """What the store's entries add up to, to compare with ``store.used``."""
    names = store.keys()
    return sum(store.get(k).nbytes for k in names)


class Recorder:
    """A waiter callback that remembers what it was called with."""

    def __init__(self):
        self.calls: list = []

    def __call__(self, entry):
        self.calls.append(entry)


# -- memory accounting -----------------------------------------------------------------------


def test_used_returns_to_zero_after_deletes():
    """Putting then deleting every key leaves ``used`` at 0."""
    store = Store()
    for i in range(10):
        store.put(f"k{i}", tensor(f"k{i}", 100 * i))
    assert store.used == charged(store) > 0
    for i in range(10):
        store.delete(f"k{i}")
    assert store.used == 0
    assert len(store) == 0


def test_replace_accounts_old_size():
    """Replacing a value charges only the difference."""
    store = Store()
    store.put("k", tensor("k", 2000))
    first = store.used
    store.put("k", tensor("k", 1500))
    assert store.used == first - 500 == charged(store)
    store.put("k", tensor("k", 5000))
    assert store.used == first + 3000 == charged(store)


def test_entry_size_counts_payload_and_key():
    """An entry is charged for its payload, its key, a fixed overhead for its objects and
    the allocator's slack per frame."""
    small, big = tensor("k", 0), tensor("k", 4096)
    assert big.nbytes - small.nbytes == 4096 + FRAME_SLACK
    assert small.nbytes == ENTRY_OVERHEAD + 1 + DIM_OVERHEAD
    assert tensor("longer-key", 0).nbytes - small.nbytes == len("longer-key") - 1


def test_dataset_entry_is_charged_for_its_metadata():
    """A dataset's metadata (carried in its layout) counts towards its size."""
    small = Entry.of(DATASET, {"tensors": [], "meta": {}}, [], "ds")
    layout = {"tensors": [], "meta": {"s": {"type": "string", "values": ["x" * 10_000]}}}
    big = Entry.of(DATASET, layout, [], "ds")
    assert big.nbytes - small.nbytes >= 10_000


def test_flush_resets_used():
    """flush empties the store and its accounting."""
    store = Store()
    store.put("a", tensor("a", 10))
    store.list_push("l", ["x", "y"])
    store.flush()
    assert store.used == 0 and len(store) == 0 and store.keys() == []


keys = st.sampled_from(["a", "b", "c", "{t}d", "list1", "list2"])


class Accounting(RuleBasedStateMachine):
    """Any sequence of writes keeps ``used`` equal to the sum of the entries' sizes, and
    never above the cap."""

    def __init__(self):
        super().__init__()
        self.store = Store(max_memory=2000)

    @rule(key=keys, size=st.integers(0, 1200))
    def put(self, key, size):
        try:
            self.store.put(key, tensor(key, size))
        except StoreFull:
            pass

    @rule(key=keys, kind=st.sampled_from([None, TENSOR, LIST]))
    def delete(self, key, kind):
        try:
            self.store.delete(key, kind)
        except (KeyNotFound, WrongType):
            pass

    @rule(src=keys, dst=keys)
    def copy(self, src, dst):
        try:
            self.store.copy(src, dst)
        except (KeyNotFound, StoreFull):
            pass

    @rule(src=keys, dst=keys)
    def rename(self, src, dst):
        try:
            self.store.rename(src, dst)
        except (KeyNotFound, StoreFull):
            pass

    @rule(key=keys, items=st.lists(st.text(max_size=30), max_size=5))
    def list_push(self, key, items):
        try:
            self.store.list_push(key, items)
        except (WrongType, StoreFull):
            pass

    @rule()
    def flush(self):
        self.store.flush()

    @invariant()
    def used_matches_entries(self):
        assert self.store.used == charged(self.store)
        assert 0 <= self.store.used <= self.store.max_memory


TestAccounting = Accounting.TestCase
TestAccounting.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


# -- the cap ---------------------------------------------------------------------------------


def test_store_full_refuses_and_evicts_nothing():
    """A put past --max-memory raises StoreFull; every stored key and ``used`` are unchanged."""
    store = Store(max_memory=4 * tensor("k0", 2000).nbytes + 1000)
    for i in range(4):
        store.put(f"k{i}", tensor(f"k{i}", 2000))
    names = store.keys()
    before = {k: store.get(k) for k in names}
    used = store.used
    with pytest.raises(StoreFull, match="new") as info:
        store.put("new", tensor("new", 3000))
    assert "nothing was evicted" in str(info.value)
    assert store.used == used
    assert store.keys() == names
    assert all(store.get(k) is before[k] for k in names)
    assert not store.exists("new")


def test_replacing_with_a_bigger_value_that_does_not_fit_keeps_the_old_one():
    """A refused replacement leaves the old value in place."""
    store = Store(max_memory=tensor("k", 2000).nbytes)
    old = tensor("k", 1000)
    store.put("k", old)
    with pytest.raises(StoreFull):
        store.put("k", tensor("k", 5000))
    assert store.get("k") is old


def test_replacement_that_fits_only_after_freeing_the_old_value_is_accepted():
    """The cap is checked against the size after replacement, not old + new."""
    store = Store(max_memory=tensor("k", 2500).nbytes)
    store.put("k", tensor("k", 2000))
    store.put("k", tensor("k", 2500))
    assert store.get("k").nbytes == tensor("k", 2500).nbytes


def test_check_room_counts_a_batch_together():
    """A batch that fits only one at a time is refused as a whole."""
    store = Store(max_memory=3000)
    with pytest.raises(StoreFull):
        store.check_room([("a", 2000), ("b", 2000)])
    store.check_room([("a", 2000)])


def test_list_push_on_a_full_store_leaves_the_list_alone():
    """A refused list push changes neither the list nor ``used``."""
    store = Store(max_memory=ENTRY_OVERHEAD + 1000)
    store.list_push("l", ["a"])
    used = store.used
    with pytest.raises(StoreFull):
        store.list_push("l", ["x" * 2000])
    assert store.get("l", LIST).meta == ["a"]
    assert store.used == used


def test_rename_in_a_nearly_full_store_succeeds():
    """Renaming moves a value; it must not need room for two copies of it."""
    store = Store(max_memory=tensor("old", 2000).nbytes + 500)
    store.put("old", tensor("old", 2000))
    store.rename("old", "new")
    assert store.exists("new") and not store.exists("old")
    assert store.used == charged(store)


def test_unlimited_store_takes_anything():
    """max_memory=0 means no cap."""
    store = Store()
    store.put("k", tensor("k", 10_000_000))
    assert store.used > 10_000_000


# -- reads, kinds, copy, rename --------------------------------------------------------------


def test_get_missing_names_the_key():
    """A missing key is KeyNotFound naming it (and a KeyError)."""
    with pytest.raises(KeyError, match="snap7"):
        Store().get("snap7", TENSOR)


def test_get_wrong_kind_is_wrong_type():
    """Asking for a tensor where a dataset is stored is WrongType naming both kinds."""
    store = Store()
    store.put("ds", Entry.of(DATASET, {"tensors": []}, [], "ds"))
    with pytest.raises(WrongType, match="dataset"):
        store.get("ds", TENSOR)
    assert store.exists("ds") and store.exists("ds", DATASET) and not store.exists("ds", TENSOR)


def test_copy_shares_frames_and_charges_the_copy():
    """copy makes an independent entry (deleting the source keeps it) charged for its size."""
    store = Store()
    store.put("a", tensor("a", 100))
    store.copy("a", "b")
    store.delete("a")
    assert store.get("b").frames == [b"x" * 100]
    assert store.used == charged(store) == tensor("b", 100).nbytes


def test_copy_of_a_list_is_independent():
    """Appending to a copied list does not change the original."""
    store = Store()
    store.list_push("l", ["a"])
    store.copy("l", "m")
    store.list_push("m", ["b"])
    assert store.get("l").meta == ["a"]
    assert store.get("m").meta == ["a", "b"]
    assert store.used == charged(store)


def test_rename_onto_itself_keeps_the_value():
    """rename(k, k) is a no-op, not a delete."""
    store = Store()
    store.put("k", tensor("k", 10))
    store.rename("k", "k")
    assert store.exists("k") and store.used == charged(store)


def test_rename_missing_key_is_key_not_found():
    """Renaming a missing key raises KeyNotFound and creates nothing."""
    store = Store()
    with pytest.raises(KeyNotFound):
        store.rename("a", "b")
    assert len(store) == 0


# -- lists -----------------------------------------------------------------------------------


def test_list_push_and_length():
    """list_push creates the list, appends in order and returns the new length."""
    store = Store()
    assert store.list_push("l", ["a"]) == 1
    assert store.list_push("l", ["b", "c"]) == 3
    assert store.list_push("l", []) == 3
    assert store.get("l", LIST).meta == ["a", "b", "c"]
    assert store.used == charged(store)


def test_list_push_onto_a_tensor_is_wrong_type():
    """Pushing onto a key that holds a tensor is WrongType; the tensor stays."""
    store = Store()
    store.put("t", tensor("t", 4))
    with pytest.raises(WrongType):
        store.list_push("t", ["a"])
    assert store.get("t", TENSOR)


# -- waiters ---------------------------------------------------------------------------------


def test_waiter_fires_immediately_when_ready():
    """A wait on a key that is already there is answered at once with the entry."""
    store = Store()
    entry = tensor("k", 1)
    store.put("k", entry)
    done = Recorder()
    store.wait("k", lambda e: e is not None, 10.0, done)
    assert done.calls == [entry]
    assert store.parked == 0


def test_waiter_fires_on_put():
    """A parked waiter is answered by the put of its key, with the new entry, once."""
    store = Store()
    done, other = Recorder(), Recorder()
    store.wait("k", lambda e: e is not None, 10.0, done)
    store.wait("other", lambda e: e is not None, 10.0, other)
    assert store.parked == 2 and done.calls == []
    entry = tensor("k", 1)
    store.put("k", entry)
    store.put("k", tensor("k", 2))
    assert done.calls == [entry]
    assert other.calls == []
    assert store.parked == 1


def test_waiter_fires_on_deadline_via_expire():
    """expire() answers a waiter with None once its deadline has passed, not before."""
    store = Store()
    done = Recorder()
    store.wait("k", lambda e: e is not None, 5.0, done)
    deadline = store.next_deadline()
    assert deadline is not None
    store.expire(now=deadline - 0.001)
    assert done.calls == []
    store.expire(now=deadline)
    assert done.calls == [None]
    assert store.parked == 0 and store.next_deadline() is None
    store.put("k", tensor("k", 1))
    assert done.calls == [None]  # answered once only


def test_deadlines_expire_in_order_and_skip_answered_waiters():
    """next_deadline is the earliest pending deadline; woken waiters leave the queue."""
    store = Store()
    early, late = Recorder(), Recorder()
    store.wait("a", lambda e: e is not None, 1.0, early)
    store.wait("b", lambda e: e is not None, 100.0, late)
    first = store.next_deadline()
    store.put("a", tensor("a", 1))
    assert early.calls and store.next_deadline() > first
    store.expire(now=first + 1.0)
    assert late.calls == []
    store.expire(now=store.next_deadline())
    assert late.calls == [None]


def test_waiter_condition_on_list_length():
    """A waiter whose condition is a list length fires when a push reaches it."""
    store = Store()
    done = Recorder()
    store.wait("l", lambda e: e is not None and len(e.meta) >= 3, 10.0, done)
    store.list_push("l", ["a", "b"])
    assert done.calls == []
    store.list_push("l", ["c"])
    assert len(done.calls) == 1 and done.calls[0].meta == ["a", "b", "c"]


def test_delete_and_flush_wake_waiters_whose_condition_holds_on_absence():
    """Deletes and flushes offer ``None`` to waiters, so "length <= n" waits can fire."""
    store = Store()
    store.list_push("l", ["a", "b"])
    store.list_push("m", ["a"])
    on_delete, on_flush, needs_key = Recorder(), Recorder(), Recorder()
    store.wait("l", lambda e: e is None or len(e.meta) <= 0, 10.0, on_delete)
    store.wait("m", lambda e: e is None, 10.0, on_flush)
    store.wait("m", lambda e: e is not None and len(e.meta) > 5, 10.0, needs_key)
    store.delete("l")
    assert on_delete.calls == [None]
    store.flush()
    assert on_flush.calls == [None]
    assert needs_key.calls == []


# -- waiters: memory, owners, caps -----------------------------------------------------------


class Payload:
    """Stands for the frames a parked request holds (weak-referenceable, unlike bytes)."""


def test_a_woken_waiter_lets_go_of_its_callback_behind_a_long_parked_one():
    """A waiter answered by a put frees what its callback holds at once, even while an
    earlier waiter with a far deadline keeps it in the deadline heap (before: held until
    that one expired)."""
    import gc
    import weakref

    store = Store()
    store.wait("never", lambda e: e is not None, 1e6, Recorder())
    refs = []
    for i in range(200):
        payload = Payload()
        refs.append(weakref.ref(payload))
        store.wait(f"k{i}", lambda e: e is not None, 10.0, lambda e, p=payload: None)
        del payload
        store.put(f"k{i}", tensor(f"k{i}", 1))
    gc.collect()
    assert all(ref() is None for ref in refs)
    assert store.parked == 1
    assert len(store._deadlines) < 100  # finished waiters do not pile up behind it


def test_drop_owner_forgets_only_that_owners_waiters_without_answering():
    """Waiters of a departed client go without a callback; others stay parked."""
    store = Store()
    gone, stays = Recorder(), Recorder()
    for i in range(5):
        store.wait(f"k{i}", lambda e: e is not None, 100.0, gone, owner=b"a")
    store.wait("k0", lambda e: e is not None, 100.0, stays, owner=b"b")
    assert store.parked == 6 and store.parked_clients == 2
    assert store.drop_owner(b"a") == 5
    assert store.parked == 1 and store.parked_clients == 1
    store.put("k0", tensor("k0", 1))
    assert gone.calls == [] and len(stays.calls) == 1
    assert store.parked == 0 and store.next_deadline() is None


def test_waiter_caps_per_owner_and_in_total():
    """A wait past --max-client-waiters or --max-waiters is StoreFull naming the option."""
    store = Store(max_waiters=5, max_client_waiters=3)
    for i in range(3):
        store.wait(f"a{i}", lambda e: e is not None, 100.0, Recorder(), owner=b"a")
    with pytest.raises(StoreFull, match="--max-client-waiters 3"):
        store.wait("a9", lambda e: e is not None, 100.0, Recorder(), owner=b"a")
    store.wait("b0", lambda e: e is not None, 100.0, Recorder(), owner=b"b")
    store.wait("b1", lambda e: e is not None, 100.0, Recorder(), owner=b"b")
    with pytest.raises(StoreFull, match="--max-waiters 5"):
        store.wait("c0", lambda e: e is not None, 100.0, Recorder(), owner=b"c")
    store.wait("a0", lambda e: True, 100.0, Recorder(), owner=b"c")  # ready now: not parked
    store.put("a0", tensor("a0", 1))
    store.wait("c0", lambda e: e is not None, 100.0, Recorder(), owner=b"c")  # room again


def test_a_failing_callback_does_not_undo_the_put_or_skip_other_waiters():
    """One waiter whose answer raises is logged; the put stands and the others are answered."""
    store = Store()
    first, last = Recorder(), Recorder()

    def broken(entry):
        raise RuntimeError("boom")

    for callback in (first, broken, last):
        store.wait("k", lambda e: e is not None, 10.0, callback)
    store.put("k", tensor("k", 1))
    assert store.exists("k") and len(first.calls) == len(last.calls) == 1
    assert store.parked == 0


# -- rename while a save runs (issue 25 item 4) ------------------------------------------------


class FakeFile:
    """Stands for an entry's shared-memory file: records whether it was unlinked."""

    def __init__(self):
        self.unlinked = False

    def unlink(self, frames=None):
        self.unlinked = True


def test_rename_during_a_save_keeps_the_value_when_the_room_left_is_smaller():
    """Before: check_room passed, delete(src) moved its bytes to the save's held set and
    put(dst) raised StoreFull: src and dst were both gone (and a file left uncounted)."""
    big = tensor("src", 30_000)
    big.shm = file = FakeFile()
    store = Store(max_memory=big.nbytes + 10_000)
    store.put("src", big)
    store.snapshot()  # a save is running: it holds the entry
    store.rename("src", "dst")
    assert store.exists("dst") and not store.exists("src")
    assert bytes(store.get("dst").frames[0][:1]) == b"x"
    assert store.used == charged(store) and store.held == 0  # nothing freed: nothing held
    assert store.shm_used == store.used and not file.unlinked
    store.delete("dst")  # the save still holds it: counted as held until the save ends
    assert store.held == big.nbytes + len("dst") - len("src") and file.unlinked
    store.end_snapshot()
    assert store.used == store.held == store.shm_used == 0


def test_a_replacement_during_a_save_counts_the_held_bytes():
    """Replacing a value the save holds frees nothing until the save ends (before: the put
    was accepted as if it did, and the shard passed its cap by the held value). A rename
    onto it moves src's bytes, so it fits."""
    store = Store(max_memory=tensor("a", 30_000).nbytes * 2 + 500)
    store.put("a", tensor("a", 30_000))
    store.put("b", tensor("b", 30_000))
    store.snapshot()
    with pytest.raises(StoreFull, match="'b' needs"):
        store.put("b", tensor("b", 30_000))
    store.rename("a", "b")
    assert store.exists("b") and not store.exists("a")
    assert store.used + store.held <= store.max_memory
    store.end_snapshot()
    assert store.used == charged(store) and store.held == 0
