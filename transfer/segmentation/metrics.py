"""Semantic segmentation metrics from one confusion matrix accumulated over the whole val set.

The matrix ``C`` is K x (K+1): row = ground-truth class, column = predicted class, plus a last
"void" column for predictions that are no evaluated class (a Cityscapes prediction of an ignored
label id such as ``unlabeled``). Ground-truth pixels labelled 255 are not counted at all.

    IoU_c  = C[c,c] / (sum_j C[c,j] + sum_i C[i,c] - C[c,c])      (row sum includes the void column)
    Acc_c  = C[c,c] / sum_j C[c,j]
    mIoU   = mean of IoU_c over classes whose denominator is > 0
    mAcc   = mean of Acc_c over classes with ground truth
    aAcc   = trace(C) / sum(C)

This is exactly cityscapesscripts' ``evalPixelLevelSemanticLabeling``: its false negatives are the
whole ground-truth row minus the diagonal (so a pixel predicted as an ignored label id counts
against the true class), its false positives only count pixels whose ground truth is evaluated,
and its average skips classes whose IoU is NaN (no ground truth and never predicted). A class with
no ground truth that *is* predicted scores IoU 0 and counts in the mean, in both. MMSegmentation's
``IoUMetric`` gives the same numbers when predictions never fall in the void column.
"""

from __future__ import annotations

import math

import torch

from mocobench.core.dist import all_reduce_sum


class ConfusionMatrix:
    """Accumulates a K x (K+1) int64 matrix on ``device`` (GPU when the model is there)."""

    def __init__(self, num_classes: int, ignore_index: int = 255, device: str | torch.device = "cpu"):
        self.K = num_classes
        self.ignore_index = ignore_index
        self.mat = torch.zeros(num_classes, num_classes + 1, dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """``pred``: class indices, any value outside 0..K-1 counts as void. ``target``: class
        indices or ``ignore_index``; same shape as ``pred``."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
        pred = pred.to(self.mat.device, torch.int64).flatten()
        target = target.to(self.mat.device, torch.int64).flatten()
        keep = target != self.ignore_index
        if ((target[keep] < 0) | (target[keep] >= self.K)).any():
            bad = torch.unique(target[keep][(target[keep] < 0) | (target[keep] >= self.K)]).tolist()
            raise ValueError(f"ground-truth values {bad[:10]} are neither classes 0..{self.K - 1} "
                             f"nor ignore ({self.ignore_index})")
        pred, target = pred[keep], target[keep]
        pred = torch.where((pred >= 0) & (pred < self.K), pred, torch.full_like(pred, self.K))
        idx = target * (self.K + 1) + pred
        self.mat += torch.bincount(idx, minlength=self.K * (self.K + 1)).view(self.K, self.K + 1)

    def merge(self, other: "ConfusionMatrix") -> None:
        self.mat += other.mat.to(self.mat.device)

    def all_reduce(self) -> None:
        """Sum the matrices of every rank (each evaluated its own shard of the val set); exact
        while a cell stays below 2**53 pixels."""
        self.mat = all_reduce_sum(self.mat).to(self.mat.device, torch.int64)

    def scores(self, class_names: tuple[str, ...] | list[str] | None = None) -> dict[str, float]:
        return scores_from_confusion(self.mat.cpu(), class_names)


def scores_from_confusion(mat: torch.Tensor, class_names=None) -> dict[str, float]:
    """``mIoU``, ``mAcc``, ``aAcc`` and ``IoU/<class>``, ``Acc/<class>`` in percent.

    Classes whose IoU (or accuracy) is undefined are left out of the means and of the per-class
    entries (a record stores numbers only, so NaN is never written).
    """
    mat = mat.to(torch.float64)
    K = mat.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(K)]
    if len(names) != K:
        raise ValueError(f"{len(names)} class names for a {K}-class confusion matrix")
    tp = mat.diagonal()                       # K
    gt = mat.sum(dim=1)                       # K, includes the void column
    predicted = mat[:, :K].sum(dim=0)         # K, only pixels with evaluated ground truth
    union = gt + predicted - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))
    acc = torch.where(gt > 0, tp / gt.clamp(min=1), torch.full_like(tp, math.nan))
    total = mat.sum()
    out = {
        "mIoU": 100.0 * float(torch.nanmean(iou)) if (union > 0).any() else math.nan,
        "mAcc": 100.0 * float(torch.nanmean(acc)) if (gt > 0).any() else math.nan,
        "aAcc": 100.0 * float(tp.sum() / total) if total > 0 else math.nan,
    }
    for name, v in zip(names, iou.tolist()):
        if not math.isnan(v):
            out[f"IoU/{name}"] = 100.0 * v
    for name, v in zip(names, acc.tolist()):
        if not math.isnan(v):
            out[f"Acc/{name}"] = 100.0 * v
    return out
