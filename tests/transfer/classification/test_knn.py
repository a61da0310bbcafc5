"""DINO's weighted k-NN against a brute-force statement of the same rule."""

import math

import pytest
import torch

from mocobench.transfer.classification.knn import knn_accuracy, knn_scores


def brute_force_votes(train, train_labels, test, num_classes, k, T):
    """Full cosine-similarity matrix, then an explicit per-sample vote loop in plain Python."""
    def unit(row):
        norm = math.sqrt(sum(x * x for x in row))
        return [x / norm for x in row]

    train = [unit(row) for row in train.tolist()]
    test = [unit(row) for row in test.tolist()]
    labels = train_labels.tolist()
    out = []
    for q in test:
        sims = [sum(a * b for a, b in zip(q, t)) for t in train]  # one row of the full matrix
        neighbours = sorted(range(len(sims)), key=lambda j: -sims[j])[:k]
        votes = [0.0] * num_classes
        for j in neighbours:
            votes[labels[j]] += math.exp(sims[j] / T)
        out.append(votes)
    return out


@pytest.mark.parametrize("test_chunk,train_chunk", [(1024, 1 << 20), (7, 13), (1, 5)])
def test_knn_equals_brute_force(test_chunk, train_chunk):
    g = torch.Generator().manual_seed(0)
    C, k, T = 6, 20, 0.07
    train = torch.randn(150, 16, generator=g, dtype=torch.float64).float()
    train_labels = torch.randint(0, C, (150,), generator=g)
    test = torch.randn(40, 16, generator=g)
    votes = knn_scores(train, train_labels, test, C, k=k, T=T, test_chunk=test_chunk,
                       train_chunk=train_chunk)
    ref = torch.tensor(brute_force_votes(train, train_labels, test, C, k, T), dtype=torch.float64)
    torch.testing.assert_close(votes.double(), ref, rtol=2e-4, atol=0.0)

    test_labels = torch.randint(0, C, (40,), generator=g)
    acc = knn_accuracy(train, train_labels, test, test_labels, C, k=k, T=T, test_chunk=test_chunk,
                       train_chunk=train_chunk)
    ranked = [sorted(range(C), key=lambda c: -v[c]) for v in ref.tolist()]
    top1 = 100 * sum(r[0] == y for r, y in zip(ranked, test_labels.tolist())) / 40
    top5 = 100 * sum(y in r[:5] for r, y in zip(ranked, test_labels.tolist())) / 40
    assert acc["top1"] == pytest.approx(top1) and acc["top5"] == pytest.approx(top5)


def test_knn_recovers_clusters_and_k_larger_than_train():
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(4, 32, generator=g) * 5
    train_labels = torch.arange(4).repeat_interleave(5)
    train = centres[train_labels] + 0.1 * torch.randn(20, 32, generator=g)
    test = centres + 0.1 * torch.randn(4, 32, generator=g)
    # k = 50 > 20 train images: every train image votes, the nearest class still wins
    acc = knn_accuracy(train, train_labels, test, torch.arange(4), 4, k=50, T=0.07, train_chunk=6)
    assert acc["top1"] == 100.0


def test_top5_counts_only_classes_that_got_a_vote():
    """k = 1: one neighbour votes, so one class is predicted. A plain top-5 of the vote matrix filled
    the other four places with unvoted classes: of 5 classes, every image scored a top-5 hit, a test
    image of class 1 next to a train image of class 4 too (DINO narrows top-5 to min(5, k) predictions)."""
    C = 5
    train = torch.eye(C)[[4, 2]]                  # one train image each of classes 4 and 2
    train_labels = torch.tensor([4, 2])
    test = torch.eye(C)[[4, 2]] + 0.01            # nearest: the class-4 image, then the class-2 image
    acc = knn_accuracy(train, train_labels, test, torch.tensor([1, 2]), C, k=1, T=0.07)
    assert acc == {"top1": 50.0, "top5": 50.0}
    # k = 2: both classes vote; class 1 still has no vote and is never a prediction
    acc = knn_accuracy(train, train_labels, test, torch.tensor([1, 4]), C, k=2, T=0.07)
    assert acc == {"top1": 0.0, "top5": 50.0}
    # a vote that underflows to 0 (similarity -1 at a tiny T) is still a vote: its class is predicted
    acc = knn_accuracy(train, train_labels, -torch.eye(C)[[4]], torch.tensor([4]), C, k=2, T=1e-3)
    assert knn_scores(train, train_labels, -torch.eye(C)[[4]], C, k=2, T=1e-3)[0, 4] == 0.0
    assert acc == {"top1": 0.0, "top5": 100.0}
