"""DINO's weighted k-NN classifier (Caron et al., 2021, ``eval_knn.py``).

Features are L2-normalised, so the dot product is the cosine similarity. For each test feature the
``k`` most similar train features vote for their labels with weight ``exp(sim / T)``; classes are
ranked by their summed votes. DINO: k = 20, T = 0.07.

Top-5 ranks only the classes that got a vote: with k = 3 neighbours at most 3 classes are
predicted, and a class no neighbour voted for is no prediction, so it never fills the top 5 (in
index order, as a plain ``topk`` of the vote matrix does, scoring a hit on a tie at zero).
NOTE: DINO's eval_knn.py narrows top-5 to the first min(5, k) ranked classes; we agree with it
for every k except where fewer distinct classes than min(5, k) voted, whose remaining places
DINO fills with unvoted classes in sort order and we leave empty.

Memory: the similarity of a ``test_chunk`` block against a ``train_chunk`` block is formed at a time
and only the running top-k (``test_chunk x k``) is kept, so ImageNet's 1.28M x 2048 train set needs
``test_chunk x train_chunk`` floats at once, never ``N_test x N_train``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


TEST_CHUNK, TRAIN_CHUNK = 1024, 262144   # the similarity blocks' default sizes (KNNConfig sets them)


def knn_scores(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
               num_classes: int, k: int = 20, T: float = 0.07, test_chunk: int = TEST_CHUNK,
               train_chunk: int = TRAIN_CHUNK) -> torch.Tensor:
    """Class votes ``N_test x num_classes``: ``sum_{j in topk(i)} exp(sim_ij / T) [y_j = c]``.

    Inputs need not be normalised (they are here); computation happens on ``test_features``'
    device, train blocks are moved there one at a time.
    """
    return _knn_votes(train_features, train_labels, test_features, num_classes, k, T, test_chunk, train_chunk)[0]


def _knn_votes(train_features, train_labels, test_features, num_classes: int, k: int, T: float,
               test_chunk: int, train_chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(votes, voted)``, both ``N_test x num_classes``: :func:`knn_scores`' votes, and whether any
    of the k neighbours has the class (a vote of exp(sim / T) can underflow to 0 at a small T, so a
    zero vote does not say it)."""
    device = test_features.device
    k = min(k, train_features.shape[0])
    test = F.normalize(test_features.float(), dim=1)
    out, voted = [], []
    for t0 in range(0, test.shape[0], test_chunk):
        q = test[t0:t0 + test_chunk]  # B x D
        best_sim = torch.full((q.shape[0], 0), float("-inf"), device=device)
        best_idx = torch.zeros((q.shape[0], 0), dtype=torch.long, device=device)
        for r0 in range(0, train_features.shape[0], train_chunk):
            bank = F.normalize(train_features[r0:r0 + train_chunk].to(device).float(), dim=1)
            sim = q @ bank.T  # B x R
            kk = min(k, sim.shape[1])
            s, i = sim.topk(kk, dim=1)  # B x kk
            # merge this block's top-k into the running top-k
            best_sim = torch.cat([best_sim, s], dim=1)
            best_idx = torch.cat([best_idx, i + r0], dim=1)
            best_sim, order = best_sim.topk(min(k, best_sim.shape[1]), dim=1)
            best_idx = best_idx.gather(1, order)
        neighbour_labels = train_labels.to(device)[best_idx]  # B x k
        weights = (best_sim / T).exp()  # B x k
        votes = torch.zeros(q.shape[0], num_classes, device=device)
        votes.scatter_add_(1, neighbour_labels, weights)  # B x C
        out.append(votes)
        voted.append(torch.zeros(q.shape[0], num_classes, dtype=torch.bool, device=device)
                     .scatter_(1, neighbour_labels, True))  # B x C
    return torch.cat(out), torch.cat(voted)


def knn_accuracy(train_features, train_labels, test_features, test_labels, num_classes: int,
                 k: int = 20, T: float = 0.07, **chunks) -> dict[str, float]:
    """Top-1 and top-5 accuracy (percent) of the weighted k-NN classifier; a class no neighbour voted
    for is never among its predictions (see the module's note)."""
    chunks = {"test_chunk": TEST_CHUNK, "train_chunk": TRAIN_CHUNK} | chunks
    votes, voted = _knn_votes(train_features, train_labels, test_features, num_classes, k, T, **chunks)
    maxk = min(5, num_classes)
    _, pred = votes.masked_fill(~voted, float("-inf")).topk(maxk, dim=1)  # N x maxk, voted classes first
    hit = pred.eq(test_labels.to(votes.device).view(-1, 1)) & voted.gather(1, pred)  # N x maxk
    n = len(test_labels)
    return {"top1": 100.0 * int(hit[:, :1].any(dim=1).sum()) / n, "top5": 100.0 * int(hit.any(dim=1).sum()) / n}
