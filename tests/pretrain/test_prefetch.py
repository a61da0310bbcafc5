"""pretrain.prefetch: each batch is made one step ahead, and handed over unchanged and in order.

The GPU side (an input stream, an event per batch, tensors recorded on the training stream) runs
only on a GPU: the device check's end-to-end rows run ``train()`` through it there.
"""

from __future__ import annotations

import pytest
import torch

from mocobench.pretrain.prefetch import Prefetcher


def test_each_batch_is_made_before_the_step_of_the_batch_before_it():
    events = []

    def make(b, raw):
        events.append(f"make {b}")
        return [torch.full((2,), raw)], torch.tensor([b]), b * 10

    got = []
    for b, (views, labels, extra) in Prefetcher([7.0, 8.0, 9.0], make, "cpu", start=4):
        events.append(f"step {b}")
        got.append((b, views[0].tolist(), labels.tolist(), extra))
    assert events == ["make 4", "make 5", "step 4", "make 6", "step 5", "step 6"]
    assert got == [(4, [7.0, 7.0], [4], 40), (5, [8.0, 8.0], [5], 50), (6, [9.0, 9.0], [6], 60)]


def test_no_batch_and_one_batch():
    assert list(Prefetcher([], lambda b, raw: raw, "cpu")) == []
    assert list(Prefetcher(iter(["a"]), lambda b, raw: raw * 2, "cpu", start=3)) == [(3, "aa")]


def test_an_unreadable_batch_is_reported_one_step_early():
    """Batch b+1 is made before batch b's step: its error comes first, and nothing is lost silently."""
    def make(b, raw):
        if raw is None:
            raise RuntimeError(f"all images of batch {b} are unreadable")
        return raw

    seen = []
    with pytest.raises(RuntimeError, match="batch 1 are unreadable"):
        for b, raw in Prefetcher(["x", None, "z"], make, "cpu"):
            seen.append(b)
    assert seen == []   # batch 1 is made before batch 0's step
