"""The detectron2 engine's training stream against detectron2's own sampler and grouping, and its
resume rule: started at batch ``s`` it gives what a stream from 0 gives from batch ``s`` on."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch

from mocobench.transfer.detection.detectron2_data import _Batches, batch_loader, global_order, rank_batches


@pytest.fixture(scope="module")
def d2():
    try:
        from mocobench.transfer.adapters.detectron2_compat import patched

        with patched():
            from detectron2.data import common, samplers
    except ImportError as e:
        pytest.skip(f"detectron2 is not installed ({e}): ./run_all.sh engines")
    return common, samplers


def _sizes(n: int, seed: int = 0) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    return [(rng.choice([300, 500]), rng.choice([300, 375, 500])) for _ in range(n)]


def test_the_order_is_detectron2s_training_sampler(d2):
    _, samplers = d2
    ours = list(itertools.islice(global_order(7, seed=5), 40))
    theirs = list(itertools.islice(samplers.TrainingSampler(7, shuffle=True, seed=5)._infinite_indices(), 40))
    assert ours == theirs and sorted(ours[:7]) == list(range(7)) and ours[:7] != ours[7:14]


@pytest.mark.parametrize("rank,world,batch", [(0, 1, 2), (1, 2, 2), (2, 4, 3)])
def test_batches_are_detectron2s_aspect_ratio_groups(d2, rank, world, batch):
    """Each rank takes every ``world``-th image of the global stream (TrainingSampler's rule) and groups
    them with AspectRatioGroupedDataset's; fed the same images in the same order, it makes the same batches."""
    common, _ = d2
    sizes = _sizes(23)
    stream = itertools.islice(global_order(len(sizes), seed=1), rank, None, world)
    dicts = ({"i": i, "width": sizes[i][0], "height": sizes[i][1]} for i in stream)
    theirs = [[d["i"] for d in b] for b in itertools.islice(common.AspectRatioGroupedDataset(dicts, batch), 30)]
    ours = list(itertools.islice(rank_batches(sizes, 1, rank=rank, world=world, batch=batch, grouping=True), 30))
    assert [[i for _, i in b] for b in ours] == theirs
    # positions are in the global stream: this rank's, in order
    flat = sorted(pos for b in ours for pos, _ in b)
    assert all(pos % world == rank for pos in flat) and len(set(flat)) == len(flat)
    ungrouped = list(itertools.islice(rank_batches(sizes, 1, rank=rank, world=world, batch=batch, grouping=False), 5))
    assert [pos for b in ungrouped for pos, _ in b] == list(range(rank, rank + world * batch * 5, world))


def _draw(d):
    """A mapper whose output shows every RNG the real one could use."""
    return (d, float(np.random.rand()), random.random(), float(torch.rand(())))


def _stream(start: int, workers: int, n: int) -> list:
    ds = _Batches(list(range(11)), _sizes(11, seed=2), _draw, seed=3, stream="train", rank=0, world=1,
                  batch=2, grouping=True, start=start)
    return list(itertools.islice(batch_loader(ds, workers), n))


def test_a_stream_started_at_batch_s_continues_the_stream_from_0():
    # mapping in the training process (no workers) leaves its generators as they were
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    whole = _stream(0, 0, 12)
    after = (torch.get_rng_state(), np.random.get_state()[1], random.getstate())
    assert torch.equal(before[0], after[0]) and (before[1] == after[1]).all() and before[2] == after[2]
    assert _stream(5, 0, 7) == whole[5:]
    assert _stream(5, 2, 7) == whole[5:]         # two loader workers: the same batches, the same order
    assert len({x[1] for b in whole for x in b}) == 24  # every image its own draw
    # precise BN's stream draws apart from training's
    other = _Batches(list(range(11)), _sizes(11, seed=2), _draw, seed=3, stream="precise_bn", rank=0, world=1,
                     batch=2, grouping=True, start=0)
    assert [x[1] for x in next(iter(other))] != [x[1] for x in whole[0]]
