"""Confusion-matrix metrics against an independent per-class statement of IoU, Acc, aAcc."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mocobench.transfer.segmentation.metrics import ConfusionMatrix


def reference(preds, targets, K, ignore=255):
    """Per class with sets of pixels: IoU = |P∩G| / |P∪G| over pixels with a valid ground truth."""
    p = np.concatenate([x.ravel() for x in preds])
    g = np.concatenate([x.ravel() for x in targets])
    keep = g != ignore
    p, g = p[keep], g[keep]
    iou, acc = {}, {}
    for c in range(K):
        inter = np.sum((p == c) & (g == c))
        union = np.sum((p == c) | (g == c))
        if union:
            iou[c] = inter / union
        if np.sum(g == c):
            acc[c] = inter / np.sum(g == c)
    return iou, acc, np.mean(p == g)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_set_definition(seed):
    rng = np.random.default_rng(seed)
    K = 6
    preds, targets = [], []
    cm = ConfusionMatrix(K)
    for _ in range(3):
        g = rng.integers(0, K - 1, (17, 23))          # class K-1 never in the ground truth
        g[rng.random(g.shape) < 0.1] = 255
        p = np.where(rng.random(g.shape) < 0.6, g, rng.integers(0, K, g.shape))
        p[rng.random(g.shape) < 0.05] = K + 3          # "void" predictions (outside 0..K-1)
        p[p == 255] = 0
        preds.append(p), targets.append(g)
        cm.update(torch.from_numpy(p), torch.from_numpy(g))
    iou, acc, aacc = reference(preds, targets, K)
    s = cm.scores([f"c{i}" for i in range(K)])
    for c in range(K):
        if c in iou:
            assert s[f"IoU/c{c}"] == pytest.approx(100 * iou[c], abs=1e-9)
        else:
            assert f"IoU/c{c}" not in s
    assert s["mIoU"] == pytest.approx(100 * np.mean(list(iou.values())), abs=1e-9)
    assert s["mAcc"] == pytest.approx(100 * np.mean(list(acc.values())), abs=1e-9)
    assert s["aAcc"] == pytest.approx(100 * aacc, abs=1e-9)
    # class K-1: predicted but never in the ground truth -> IoU 0, counted in the mean
    assert s[f"IoU/c{K - 1}"] == 0.0


def test_absent_class_is_skipped_not_zero():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 0, 1]), torch.tensor([0, 0, 1]))
    s = cm.scores(["a", "b", "c"])
    assert s["mIoU"] == 100.0 and "IoU/c" not in s


def test_bad_ground_truth_and_shapes_are_errors():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"\[7\]"):
        cm.update(torch.tensor([0]), torch.tensor([7]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(2), torch.zeros(3))


def test_empty_matrix_gives_nan():
    assert math.isnan(ConfusionMatrix(2).scores()["mIoU"])


def _shard_worker(rank, world, port, queue):
    import os

    import torch.distributed as dist

    from mocobench.core.dist import shard_indices

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    preds, targets = _images()
    cm = ConfusionMatrix(5)
    for i in shard_indices(len(preds), rank, world):  # 3 images on rank 0, 2 on rank 1
        cm.update(torch.from_numpy(preds[i]), torch.from_numpy(targets[i]))
    cm.all_reduce()
    queue.put((rank, cm.mat.tolist(), str(cm.mat.dtype)))
    dist.destroy_process_group()


def _images():
    rng = np.random.default_rng(7)
    preds = [rng.integers(0, 5, (6, 7)) for _ in range(5)]
    targets = [np.where(rng.random((6, 7)) < 0.1, 255, rng.integers(0, 5, (6, 7))) for _ in range(5)]
    return preds, targets


def test_two_processes_sum_their_shards_into_the_one_process_matrix():
    import socket

    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("fork")
    queue = ctx.SimpleQueue()
    mp.start_processes(_shard_worker, args=(2, port, queue), nprocs=2, join=True, start_method="fork")
    out = dict((rank, (mat, dtype)) for rank, mat, dtype in (queue.get() for _ in range(2)))
    one = ConfusionMatrix(5)
    for p, t in zip(*_images()):
        one.update(torch.from_numpy(p), torch.from_numpy(t))
    assert out[0] == out[1] == (one.mat.tolist(), "torch.int64")
