"""RingBuffer (MoCo's queue, UniMoCo's label queue, SMoG's bank) against collections.deque(maxlen)."""

from __future__ import annotations

import collections

import pytest
import torch

from mocobench.pretrain.ring_buffer import RingBuffer


def oldest_first(ring: RingBuffer, name: str) -> list:
    """The ring's items from the oldest to the newest (the slots after ``ptr`` are the oldest)."""
    store, ptr = getattr(ring, name), int(ring.ptr)
    order = range(ptr, ptr + ring.size) if int(ring.count) == ring.size else range(int(ring.count))
    return [store[j % ring.size].tolist() for j in order]


@pytest.mark.parametrize("size,pushes", [(10, [3, 3, 3, 3]), (5, [2, 7, 1]), (4, [4, 4]), (6, [13]),
                                         (7, [1] * 9)])
def test_ring_keeps_the_newest_items_like_a_bounded_deque(size, pushes):
    ring = RingBuffer(keys=torch.zeros(size, 2), labels=torch.full((size,), -1, dtype=torch.long))
    keys, labels = collections.deque(maxlen=size), collections.deque(maxlen=size)
    n = 0
    for B in pushes:
        k = torch.arange(n, n + B, dtype=torch.float32).view(B, 1).repeat(1, 2)
        lab = torch.arange(n, n + B)
        ring.push(keys=k, labels=lab)
        keys.extend(k.tolist())
        labels.extend(lab.tolist())
        n += B
        assert oldest_first(ring, "keys") == list(keys)
        assert oldest_first(ring, "labels") == list(labels)  # one pointer: both fields at the same slots
        assert int(ring.count) == len(keys) and int(ring.ptr) == n % size
        assert ring.filled("labels").shape[0] == len(labels)


def test_wraparound_writes_the_slots_after_the_pointer_first():
    ring = RingBuffer(keys=torch.zeros(10, 1))
    ring.ptr[0] = 8
    ring.push(keys=torch.tensor([[1.0], [2.0], [3.0]]))
    assert ring.keys[:, 0].tolist() == [3, 0, 0, 0, 0, 0, 0, 0, 1, 2] and int(ring.ptr) == 1


def test_state_round_trips_and_bad_pushes_are_refused():
    a = RingBuffer(keys=torch.zeros(4, 3))
    a.push(keys=torch.ones(3, 3))
    b = RingBuffer(keys=torch.zeros(4, 3))
    b.load_state_dict(a.state_dict(), strict=True)
    assert set(a.state_dict()) == {"keys", "ptr", "count"}
    assert int(b.ptr) == 3 and int(b.count) == 3 and torch.equal(a.keys, b.keys)
    with pytest.raises(ValueError, match="exactly the fields"):
        a.push(keys=torch.ones(1, 3), labels=torch.ones(1))
    with pytest.raises(ValueError, match="has 5 slots, the ring has 4"):
        a.add("labels", torch.zeros(5))
