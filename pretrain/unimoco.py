"""UniMoCo (Dai et al. 2021): MoCo v2 plus a label queue and the UniCon loss.

The logits are MoCo's (``pretrain.moco.info_nce_logits``); only the targets change: column 0 (the
query's own key) is always positive, and queue column j is positive iff the query is labeled and
its label equals ``label_queue[j]``. Unlabeled images carry label −1.

NOTE: the official UniMoCo copies MoCo's whole ``forward`` to change the targets; here the change is
:func:`unimoco_targets`, one buffer (``label_queue``) and a loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pretrain import distributed
from pretrain.moco import MoCo, base_encoder, dequeue_and_enqueue, info_nce_logits


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
    """MoCo with a ``label_queue`` buffer (K labels, −1 = unlabeled) enqueued with the keys."""

    def __init__(self, base_encoder, dim: int = 128, K: int = 65536, m: float = 0.999,
                 T: float = 0.2, mlp: bool = True, shuffle_bn_groups: int = 1):
        super().__init__(base_encoder, dim=dim, K=K, m=m, T=T, mlp=mlp, shuffle_bn_groups=shuffle_bn_groups)
        self.register_buffer("label_queue", torch.full((K,), -1, dtype=torch.long))

    def forward(self, im_q: torch.Tensor, im_k: torch.Tensor, labels: torch.Tensor):
        """Returns ``(logits, targets)``: N x (1+K) logits and N x (1+K) multi-hot targets."""
        q = F.normalize(self.encoder_q(im_q), dim=1)  # N x d
        k = self.keys(im_k)  # N x d
        logits = info_nce_logits(q, k, self.queue.clone().detach(), self.T)
        targets = unimoco_targets(labels, self.label_queue.clone())
        # keys and labels share queue_ptr: enqueue the labels first, the keys move the pointer
        update_label_queue(self.label_queue, self.queue_ptr, distributed.concat_all_gather(labels))
        dequeue_and_enqueue(self.queue, self.queue_ptr, distributed.concat_all_gather(k))
        return logits, targets


@torch.no_grad()
def update_label_queue(label_queue: torch.Tensor, queue_ptr: torch.Tensor, labels: torch.Tensor) -> None:
    """Write ``labels`` (B) at the columns the keys go to (same wrap-around as the key queue);
    leaves ``queue_ptr`` unchanged (``dequeue_and_enqueue`` moves it)."""
    K, B, ptr = label_queue.shape[0], labels.shape[0], int(queue_ptr[0])
    if B > K:
        ptr, labels, B = (ptr + B - K) % K, labels[-K:], K
    label_queue[(ptr + torch.arange(B, device=label_queue.device)) % K] = labels.to(label_queue.dtype)


# -- builder and training step ----------------------------------------------------------------

def build(cfg) -> UniMoCo:
    return UniMoCo(base_encoder(cfg), dim=cfg.dim, K=cfg.K, m=cfg.m, T=cfg.T, mlp=cfg.mlp,
                   shuffle_bn_groups=cfg.shuffle_bn_groups)


def train_step(model, views: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    logits, targets = model(views[0], views[1], labels)
    return unicon_loss(logits, targets)
