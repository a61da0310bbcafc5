"""UniMoCo (Dai et al. 2021): MoCo v2 plus a label queue and the UniCon loss.

The logits are MoCo's (``mocobench.pretrain.moco.info_nce_logits``); only the targets change: column 0 (the
query's own key) is always positive, and queue column j is positive iff the query is labeled and
its label equals ``label_queue[j]``. Unlabeled images carry label −1.

NOTE: the official UniMoCo copies MoCo's whole ``forward`` to change the targets; here UniMoCo
replaces MoCo's ``targets`` (:func:`unimoco_targets`) and ``enqueue`` (the labels go into the key
queue's ring as a second field, ``queue.labels``) and adds a loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mocobench.core import dist
from mocobench.pretrain.moco import MoCo, base_encoder


# -- pure functions ---------------------------------------------------------------------------

def unimoco_targets(labels: torch.Tensor, label_queue: torch.Tensor) -> torch.Tensor:
    """Multi-hot targets N x (1+K) (float 0/1) from query labels (N, −1 = unlabeled) and the
    label queue (K, −1 = unlabeled or never filled)."""
    labeled = (labels >= 0).unsqueeze(1)  # N x 1
    same = (labels.unsqueeze(1) == label_queue.unsqueeze(0)) & labeled  # N x K
    key = torch.ones(labels.shape[0], 1, dtype=torch.bool, device=labels.device)
    return torch.cat([key, same], dim=1).float()  # targets: N x (1+K)


def unicon_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """UniCon, mean over the batch: L_i = log(1 + Σ_{n∉P(i)} exp(s_in) · Σ_{p∈P(i)} exp(−s_ip)).

    logits s: N x (1+K) (already divided by T); targets: N x (1+K) multi-hot, P(i) its positives.
    Computed as softplus(logsumexp_{n∉P} s_in + logsumexp_{p∈P} −s_ip), in float32 at least, so it
    never overflows (the direct form overflows in float16 as soon as some s > 11). With the key as
    the only positive it is log(1 + Σ_n exp(s_n − s_0)) = cross-entropy with target 0.
    """
    s = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    pos = targets > 0
    neg_inf = torch.finfo(s.dtype).min  # "−inf" that keeps logsumexp of an empty set finite
    lse_neg = torch.logsumexp(s.masked_fill(pos, neg_inf), dim=1)  # N
    lse_pos = torch.logsumexp((-s).masked_fill(~pos, neg_inf), dim=1)  # N
    return F.softplus(lse_neg + lse_pos).mean()


# -- the module -------------------------------------------------------------------------------

class UniMoCo(MoCo):
    """MoCo whose queue also holds the keys' labels (``queue.labels``: K, −1 = unlabeled)."""

    def __init__(self, base_encoder, dim: int = 128, K: int = 65536, m: float = 0.999,
                 T: float = 0.2, mlp: bool = True, shuffle_bn_groups: int = 1):
        super().__init__(base_encoder, dim=dim, K=K, m=m, T=T, mlp=mlp, shuffle_bn_groups=shuffle_bn_groups)
        self.queue.add("labels", torch.full((K,), -1, dtype=torch.long))

    def targets(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """N x (1+K) multi-hot, against the labels of the queue before this batch."""
        return unimoco_targets(labels, self.queue.labels)

    @torch.no_grad()
    def enqueue(self, k: torch.Tensor, labels: torch.Tensor) -> None:
        self.queue.push(keys=dist.concat_all_gather(k), labels=dist.concat_all_gather(labels))


# -- builder and training step ----------------------------------------------------------------

def build(cfg) -> UniMoCo:
    return UniMoCo(base_encoder(cfg), dim=cfg.dim, K=cfg.K, m=cfg.m, T=cfg.T, mlp=cfg.mlp,
                   shuffle_bn_groups=cfg.shuffle_bn_groups)


def train_step(model, views: list[torch.Tensor], labels: torch.Tensor):
    """UniCon loss of one batch and what ``moco.commit`` enqueues after the backward."""
    logits, targets, k = model(views[0], views[1], labels)
    return unicon_loss(logits, targets), (k, labels)
