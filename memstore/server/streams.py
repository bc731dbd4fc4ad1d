"""A stream's state on its home shard: its steps, its bound and its consumer groups.

Pure Python, no sockets and no store: :mod:`.stream_ops` keeps one :class:`StreamState`
as the ``meta`` of the store entry of kind ``stream`` under the stream's name, changes it
in place on the shard's thread and wakes the waiters parked on that key. A step's data is
an ordinary entry under its own data key (:data:`DATA_PREFIX` + a uuid), on whichever shard
that key hashes to; the state only holds ``step -> (data key, kind, nbytes)``.

Step numbers are given here, one at a time on the shard's thread: dense, in the order the
appends reach the home shard, never twice.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

from memstore.errors import KeyNotFound, ProtocolError, StepDropped, StreamClosed

#: Data keys of steps: hidden from key listings, no hash tag (they spread over the shards).
DATA_PREFIX = "\x00step\x00"
DROP_OLDEST, BLOCK, LATEST = "drop_oldest", "block", "latest"
POLICIES = (DROP_OLDEST, BLOCK, LATEST)
#: What a step's data is: a tensor, a DataSet, or a dict of tensors (stored as a dataset).
ITEM_KINDS = ("tensor", "dataset", "dict")
#: Settings of a stream first made by a reader that named none (a producer's win).
DEFAULT_MAXLEN = 1024
#: Bytes charged per held step and per pending delivery on top of the data's own entry.
STEP_OVERHEAD = 160


@dataclass(slots=True)
class Delivery:
    """A step delivered to a group member and not acked yet."""

    member: str
    owner: bytes  # the member's connection ("" once it dropped, or after a restore)
    deadline: float  # monotonic; at or past it the step may go to another member
    deliveries: int = 1


@dataclass(slots=True)
class Group:
    """A consumer group: each step goes to one member; acked steps are done."""

    next: int  # the next step never delivered to this group
    ack_floor: int  # every step below it is acked (or gone)
    pending: dict[int, Delivery] = field(default_factory=dict)
    acked_above: set[int] = field(default_factory=set)  # acked steps >= ack_floor
    delivered: int = 0
    acked: int = 0
    redelivered: int = 0

    def has_acked(self, step: int) -> bool:
        return step < self.ack_floor or step in self.acked_above


class StreamState:
    """One stream (see the module). ``name`` is only for messages."""

    def __init__(self, name: str, maxlen: int = DEFAULT_MAXLEN, policy: str = DROP_OLDEST):
        self.name = name
        self.maxlen, self.policy = check_settings(name, maxlen, policy)
        #: Whether a create named the settings (a stream a reader made has defaults that
        #: the first producer's create replaces).
        self.explicit = True
        self.next = 0
        self.closed = False
        self.steps: dict[int, tuple[str, str, int]] = {}  # in step order
        self.bytes = 0
        self.groups: dict[str, Group] = {}
        #: Deadline of the armed visibility timer, if any (set by stream_ops).
        self.timer_at: float | None = None

    @property
    def oldest(self) -> int:
        """The oldest step held (``next`` when none is)."""
        return next(iter(self.steps), self.next)

    def describe(self) -> dict:
        return {
            "maxlen": self.maxlen,
            "policy": self.policy,
            "oldest": self.oldest,
            "next": self.next,
            "closed": self.closed,
        }

    def overhead(self) -> int:
        """Bytes this state costs the home shard, beyond a bare entry."""
        pending = sum(len(g.pending) + len(g.acked_above) for g in self.groups.values())
        return STEP_OVERHEAD * (len(self.steps) + pending + len(self.groups))

    # -- appends ---------------------------------------------------------------------------

    def can_append(self) -> bool:
        """Whether an append may go now (a ``block`` stream waits for its groups' acks)."""
        if self.closed or len(self.steps) < self.maxlen or self.policy != BLOCK:
            return True
        return self.slowest_group() is None

    def slowest_group(self) -> str | None:
        """A group that has not acked the oldest step (the one with the most left)."""
        oldest = self.oldest
        behind = [(g.ack_floor, name) for name, g in self.groups.items() if not g.has_acked(oldest)]
        return min(behind)[1] if behind else None

    def append(self, data_key: str, kind: str, nbytes: int) -> tuple[int, list[str]]:
        """Add a step: its number, and the data keys of the steps it pushed out."""
        if self.closed:
            raise StreamClosed(f"stream {self.name!r} is closed: no more appends")
        if kind not in ITEM_KINDS:
            raise ProtocolError(f"stream {self.name!r}: kind must be one of {ITEM_KINDS}")
        evicted = self.trim(self.maxlen - 1)
        step = self.next
        self.next += 1
        self.steps[step] = (data_key, kind, nbytes)
        self.bytes += nbytes
        return step, evicted

    def trim(self, maxlen: int) -> list[str]:
        """Drop the oldest steps until at most ``maxlen`` are held; their data keys."""
        dropped = []
        while len(self.steps) > max(maxlen, 0):
            dropped.append(self.drop(self.oldest))
        return dropped

    def drop(self, step: int) -> str:
        """Forget ``step`` (held): readers get StepDropped; its data key."""
        data_key, _, nbytes = self.steps.pop(step)
        self.bytes -= nbytes
        for group in self.groups.values():
            group.pending.pop(step, None)
            self._advance_floor(group)
        return data_key

    def delete_steps(self, steps: list[int]) -> list[str]:
        """Drop those of ``steps`` that are held (XDEL); their data keys."""
        return [self.drop(s) for s in dict.fromkeys(steps) if s in self.steps]

    def close(self) -> None:
        self.closed = True

    # -- reads -----------------------------------------------------------------------------

    def item(self, step: int) -> tuple[str, str]:
        """``(data key, kind)`` of ``step``; StepDropped if it is no longer held."""
        held = self.steps.get(step)
        if held is not None:
            return held[0], held[1]
        if 0 <= step < self.next:
            raise StepDropped.of(self.name, step, self.oldest)
        raise KeyNotFound(
            f"step {step} of stream {self.name!r} was not appended (next step is {self.next})"
        )

    def last(self, k: int) -> list[tuple[int, str, str]]:
        """The last ``k`` steps held, oldest first: ``(step, data key, kind)``."""
        newest = itertools.islice(reversed(self.steps.items()), max(k, 0))
        return [(s, key, kind) for s, (key, kind, _) in reversed(list(newest))]

    def span(
        self, first: int, last: int, count: int, newest: bool = False
    ) -> list[tuple[int, str, str]]:
        """The held steps from ``first`` to ``last`` (inclusive), oldest first, at most
        ``count``: the oldest such (XRANGE) or, with ``newest``, the newest (XREVRANGE).
        ``(step, data key, kind)``. Walks the held steps only, so holes that deletes left
        cost nothing."""
        order = reversed(self.steps.items()) if newest else iter(self.steps.items())
        found: list[tuple[int, str, str]] = []
        for step, (key, kind, _) in order:
            if len(found) >= count or (step < first if newest else step > last):
                break
            if first <= step <= last:
                found.append((step, key, kind))
        return found[::-1] if newest else found

    # -- consumer groups -------------------------------------------------------------------

    def add_group(self, name: str, start: str | int) -> Group:
        """The group ``name``, made now (from ``start``: "oldest", "next" or a step) if new."""
        group = self.groups.get(name)
        if group is not None:
            return group
        if start == "oldest":
            first = self.oldest
        elif start == "next":
            first = self.next
        elif type(start) is int and start >= 0:
            first = start
        else:
            raise ProtocolError(
                f"stream {self.name!r}: group start must be 'oldest', 'next' or a step, "
                f"got {start!r}"
            )
        group = self.groups[name] = Group(first, first)
        return group

    def group(self, name: str) -> Group:
        group = self.groups.get(name)
        if group is None:
            raise ProtocolError(
                f"stream {self.name!r} has no consumer group {name!r} (groups: "
                f"{sorted(self.groups)}): create it with stream_group first"
            )
        return group

    def _undelivered(self, group: Group) -> int | None:
        """The next held step this group never had (skipping steps dropped meanwhile)."""
        group.next = max(group.next, self.oldest) if self.steps else max(group.next, self.next)
        while group.next < self.next and group.next not in self.steps:
            group.next += 1
        return group.next if group.next < self.next else None

    @staticmethod
    def _redeliverable(group: Group, now: float) -> int | None:
        late = [s for s, d in group.pending.items() if d.deadline <= now]
        return min(late) if late else None

    def available(self, group: Group, now: float) -> bool:
        """Whether a take would answer now: a step to deliver, or the end of the stream."""
        return (
            self._redeliverable(group, now) is not None
            or self._undelivered(group) is not None
            or self.ended(group)
        )

    def ended(self, group: Group) -> bool:
        """Closed, and nothing left for ``group``: every step delivered, none pending."""
        return self.closed and not group.pending and self._undelivered(group) is None

    def take(self, group: Group, member: str, owner: bytes, visibility: float, now: float):
        """Deliver a step to ``member``: ``(step, data key, kind, redelivered)``, or None."""
        step = self._redeliverable(group, now)
        if step is not None:
            delivery = group.pending[step]
            delivery.member, delivery.owner = member, owner
            delivery.deadline = now + visibility
            delivery.deliveries += 1
            group.redelivered += 1
            redelivered = True
        else:
            step = self._undelivered(group)
            if step is None:
                return None
            group.next = step + 1
            group.pending[step] = Delivery(member, owner, now + visibility)
            group.delivered += 1
            redelivered = False
        data_key, kind, _ = self.steps[step]
        return step, data_key, kind, redelivered

    def ack(self, name: str, steps: list[int]) -> int:
        """Ack ``steps`` for group ``name``; how many were pending (repeats count 0)."""
        group = self.group(name)
        for step in steps:
            delivered = step in group.pending or group.has_acked(step)
            gone = type(step) is int and 0 <= step < self.next and step not in self.steps
            if not delivered and not gone:  # a dropped step acks as nothing
                raise ProtocolError(
                    f"stream {self.name!r}: step {step!r} was never delivered to group "
                    f"{name!r}: nothing to ack"
                )
        count = 0
        for step in steps:
            if group.pending.pop(step, None) is not None:
                group.acked_above.add(step)
                count += 1
        group.acked += count
        self._advance_floor(group)
        return count

    def _advance_floor(self, group: Group) -> None:
        """Move the ack floor over acked steps, and over steps gone undelivered-or-done."""
        floor = group.ack_floor
        while (
            floor < group.next
            and floor not in group.pending
            and (floor in group.acked_above or floor not in self.steps)
        ):
            group.acked_above.discard(floor)
            floor += 1
        group.ack_floor = floor

    def release_owner(self, owner: bytes) -> bool:
        """A member's connection closed: its pending steps may go to others now."""
        released = False
        for group in self.groups.values():
            for delivery in group.pending.values():
                if delivery.owner == owner:
                    delivery.owner, delivery.deadline = b"", -math.inf
                    released = True
        return released

    def owners(self) -> set[bytes]:
        return {d.owner for g in self.groups.values() for d in g.pending.values() if d.owner}

    def next_deadline(self) -> float | None:
        """The earliest visibility deadline of a pending delivery."""
        deadlines = [d.deadline for g in self.groups.values() for d in g.pending.values()]
        return min(deadlines) if deadlines else None

    def stats(self, group: Group) -> dict:
        self._undelivered(group)
        return {
            "delivered": group.delivered,
            "acked": group.acked,
            "redelivered": group.redelivered,
            "pending": len(group.pending),
            "lag": max(0, self.next - group.next),
        }

    def info(self) -> dict:
        return {
            **self.describe(),
            "steps": len(self.steps),
            "bytes": self.bytes,
            "groups": {name: self.stats(g) for name, g in self.groups.items()},
        }

    # -- snapshots -------------------------------------------------------------------------

    def saved(self, now: float) -> dict:
        """This state as plain data (msgpack): pending deliveries keep their member and
        the visibility they have left; connections are not kept."""
        return {
            "name": self.name, "maxlen": self.maxlen, "policy": self.policy,
            "explicit": self.explicit, "next": self.next, "closed": self.closed,
            "steps": [[s, *held] for s, held in self.steps.items()],
            "groups": {name: _saved_group(g, now) for name, g in self.groups.items()},
        }  # fmt: skip

    @classmethod
    def restored(cls, saved: dict, now: float) -> StreamState:
        """The state :meth:`saved` wrote; pending steps go to others after their visibility."""
        state = cls(saved["name"], saved["maxlen"], saved["policy"])
        state.explicit, state.next, state.closed = saved["explicit"], saved["next"], saved["closed"]
        for step, data_key, kind, nbytes in saved["steps"]:
            state.steps[step] = (data_key, kind, nbytes)
            state.bytes += nbytes
        for name, g in saved["groups"].items():
            group = state.groups[name] = Group(g["next"], g["ack_floor"])
            group.acked_above = set(g["acked_above"])
            group.delivered, group.acked, group.redelivered = g["counts"]
            for step, member, left, deliveries in g["pending"]:
                group.pending[step] = Delivery(member, b"", now + left, deliveries)
        return state


def _saved_group(group: Group, now: float) -> dict:
    return {
        "next": group.next,
        "ack_floor": group.ack_floor,
        "acked_above": sorted(group.acked_above),
        "counts": [group.delivered, group.acked, group.redelivered],
        "pending": [
            [s, d.member, max(0.0, d.deadline - now), d.deliveries]
            for s, d in group.pending.items()
        ],
    }


def check_settings(name: str, maxlen: object, policy: object) -> tuple[int, str]:
    """``(maxlen, policy)`` checked; ``latest`` is ``maxlen`` 1 with ``drop_oldest``; no
    ``maxlen`` is :data:`DEFAULT_MAXLEN`."""
    if policy not in POLICIES:
        raise ProtocolError(f"stream {name!r}: policy must be one of {POLICIES}, got {policy!r}")
    if policy == LATEST:
        if maxlen not in (None, 1):
            raise ProtocolError(f"stream {name!r}: policy 'latest' keeps 1 step, not {maxlen!r}")
        return 1, DROP_OLDEST
    if maxlen is None:
        return DEFAULT_MAXLEN, str(policy)
    if type(maxlen) is not int or maxlen < 1:
        raise ProtocolError(f"stream {name!r}: maxlen must be an int >= 1, got {maxlen!r}")
    return maxlen, str(policy)
