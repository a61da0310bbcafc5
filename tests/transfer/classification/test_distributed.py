"""Metric reduction across processes: summed counts, never averaged per-rank accuracies."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mocobench.core.dist import all_reduce_sum, shard_indices
from mocobench.transfer.classification.data import topk_correct
from mocobench.transfer.classification.linear import accuracies


def test_shards_cover_every_index_once_without_padding():
    for n, world in [(10, 3), (2, 4), (7, 1)]:
        shards = [shard_indices(n, r, world) for r in range(world)]
        assert sorted(i for s in shards for i in s) == list(range(n))


def test_topk_correct_matches_explicit_ranking():
    g = torch.Generator().manual_seed(0)
    scores, labels = torch.randn(50, 7, generator=g), torch.randint(0, 7, (50,), generator=g)
    ranks = [sorted(range(7), key=lambda c: -s[c]).index(y) for s, y in zip(scores.tolist(), labels.tolist())]
    assert topk_correct(scores, labels, (1, 5)) == [sum(r < 1 for r in ranks), sum(r < 5 for r in ranks)]
    assert topk_correct(scores[:, :3], labels.clamp(max=2), (5,)) == [50]  # k > classes: all correct


def _worker(rank, world, port, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    # rank 0: 9 of 10 correct; rank 1: 0 of 2 correct. Global: 9 / 12 = 75 %, mean of ranks = 45 %.
    counts = torch.tensor([[9.0, 10.0, 10.0, 1.0], [0.0, 1.0, 2.0, 0.0]][rank])
    acc = accuracies(all_reduce_sum(counts))
    queue.put((rank, acc["top1"]))
    dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_reduction_weighs_shards_by_size():
    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    # fork: the children reuse the parent's imported torch (spawn would re-import it, ~10 s each)
    ctx = mp.get_context("fork")
    queue = ctx.SimpleQueue()
    mp.start_processes(_worker, args=(2, _free_port(), queue), nprocs=2, join=True, start_method="fork")
    out = dict(queue.get() for _ in range(2))
    assert out[0] == pytest.approx(75.0) and out[1] == pytest.approx(75.0)


def test_reduce_is_identity_in_one_process():
    assert all_reduce_sum(torch.tensor([3, 4, 5])).tolist() == [3.0, 4.0, 5.0]
