"""MoCo v1 / v2 (He et al. 2020; Chen et al. 2020): pure logits, no-grad state updates, builder.

Algorithm 1 of the paper, per step (N queries, K queue entries, dim-d embeddings):

    θk ← m·θk + (1−m)·θq                 (before the keys are computed; parameters only)
    q = normalize(f_q(x_q))              N x d
    k = normalize(f_k(x_k)), no grad     N x d, computed with shuffle BN
    l_pos = q·k                          N x 1
    l_neg = q·queue                      N x K
    logits = [l_pos, l_neg] / T          N x (1+K), target 0, cross-entropy
    enqueue(all_gather(k))               after the logits, oldest keys overwritten

:class:`MoCo` spells these out as ``keys``, ``logits``, ``targets`` and ``enqueue``; UniMoCo replaces
only ``targets`` and ``enqueue``.
NOTE: the official ``forward`` enqueues the keys itself; ours returns them and the training step
enqueues them after the backward (``commit``, run by ``pretrain.fast_paths.TrainStep``). The result is
the same, the queue needs no copy for the backward, and a compiled step never mutates in its forward
graph a buffer its backward reads (``pretrain/fast_paths.py`` says why that matters). The encoders keep the official names (``encoder_q.*``,
``encoder_k.*``, ``fc.0``/``fc.2`` for the MLP head).
NOTE: the official queue is ``queue`` (d x K) with ``queue_ptr``; ours is a
:class:`~pretrain.ring_buffer.RingBuffer`: ``queue.keys`` (K x d), ``queue.ptr``, ``queue.count``.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from mocobench.core import dist
from mocobench.pretrain import distributed
from mocobench.pretrain.ring_buffer import RingBuffer


# -- pure function ----------------------------------------------------------------------------

def info_nce_logits(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, T: float) -> torch.Tensor:
    """Logits of the InfoNCE loss; the positive is column 0.

    q, k: N x d (L2-normalised); queue: K x d. Returns N x (1+K) = [q·k, q·queueᵀ] / T, in float32.
    NOTE: the official code computes the logits in the encoder's dtype; we compute them in float32
    so that bf16 autocast does not round q·k (|q·k| ≤ 1, resolution 2^-8 in bf16) before the 1/T.
    """
    q, k, queue = q.float(), k.float(), queue.float()
    l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)  # N x 1
    l_neg = torch.einsum("nc,kc->nk", q, queue)  # N x K
    return torch.cat([l_pos, l_neg], dim=1) / T  # logits: N x (1+K)


# -- no-grad state updates --------------------------------------------------------------------

@torch.no_grad()
def momentum_update(online: nn.Module, momentum: nn.Module, m: float) -> None:
    """θk ← m·θk + (1−m)·θq over parameters (not buffers), as the official code does.

    Called in ``forward`` before the keys are computed, i.e. after the previous optimizer step.
    Two multi-tensor operations over all parameters (on a GPU a few kernel launches, where a loop
    over a ResNet-50's 161 parameters launches 322 every step); per parameter the same arithmetic,
    ``θk·m`` then ``+ (1−m)·θq``.
    """
    keys, queries = list(momentum.parameters()), list(online.parameters())   # no_grad: no graph to detach from
    shapes_k, shapes_q = [p.shape for p in keys], [p.shape for p in queries]
    if shapes_k != shapes_q:   # zip would pair what is left and update the wrong tensors
        raise ValueError(f"momentum update: the momentum encoder's {len(keys)} parameters do not match the "
                         f"online encoder's {len(queries)} in order and shape")
    torch._foreach_mul_(keys, m)
    torch._foreach_add_(keys, queries, alpha=1.0 - m)


# -- the module -------------------------------------------------------------------------------

def classifier_name(encoder: nn.Module) -> str:
    """The attribute path of the last Linear layer: ``fc`` (torchvision ResNets), ``head`` (timm's ViTs)
    or ``head.fc`` (timm's models with a ClassifierHead: Swin, ConvNeXt, ...)."""
    for name in ("fc", "head", "head.fc"):
        module = encoder
        for part in name.split("."):
            module = getattr(module, part, None)
        if isinstance(module, nn.Linear):
            return name
    raise ValueError(f"{type(encoder).__name__} has no 'fc', 'head' or 'head.fc' Linear layer; "
                     "MoCo needs the classifier it replaces by its projection")


def add_mlp_head(encoder: nn.Module) -> None:
    """MoCo v2's head: the classifier ``fc`` (dim_mlp → dim) becomes Linear-ReLU-``fc``, so its
    parameters are named ``fc.0.*`` and ``fc.2.*`` as in the official code."""
    *parents, name = classifier_name(encoder).split(".")
    owner = encoder.get_submodule(".".join(parents)) if parents else encoder
    fc = getattr(owner, name)
    dim_mlp = fc.weight.shape[1]
    setattr(owner, name, nn.Sequential(nn.Linear(dim_mlp, dim_mlp), nn.ReLU(), fc))


class MoCo(nn.Module):
    """The official builder's interface: ``base_encoder(num_classes=dim)`` makes each encoder.

    ``shuffle_bn_groups`` (one process only): compute the keys in that many randomly drawn
    sub-batches, each with its own BN statistics. Under DDP keys always use cross-process shuffle BN.
    """

    def __init__(self, base_encoder, dim: int = 128, K: int = 65536, m: float = 0.999,
                 T: float = 0.07, mlp: bool = False, shuffle_bn_groups: int = 1):
        super().__init__()
        self.K, self.m, self.T, self.shuffle_bn_groups = K, m, T, shuffle_bn_groups
        self.encoder_q = base_encoder(num_classes=dim)
        self.encoder_k = base_encoder(num_classes=dim)
        if mlp:
            add_mlp_head(self.encoder_q)
            add_mlp_head(self.encoder_k)
        for p_q, p_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            p_k.data.copy_(p_q.data)
            p_k.requires_grad = False
        # keys: K x d (drawn as the official d x K, so a seed gives the official initial queue)
        self.queue = RingBuffer(keys=F.normalize(torch.randn(dim, K), dim=0).t().contiguous())

    @torch.no_grad()
    def keys(self, im_k: torch.Tensor) -> torch.Tensor:
        """Momentum update, then k = normalize(f_k(x_k)) with shuffle BN: N x d."""
        momentum_update(self.encoder_q, self.encoder_k, self.m)
        if dist.is_distributed():
            im_k, idx_unshuffle = distributed.batch_shuffle_ddp(im_k)
            k = F.normalize(self.encoder_k(im_k), dim=1)
            return distributed.batch_unshuffle_ddp(k, idx_unshuffle)
        return F.normalize(distributed.grouped_forward(self.encoder_k, im_k, self.shuffle_bn_groups), dim=1)

    def logits(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """N x (1+K) against the queue before this batch (the enqueue comes after the backward, which
        reads this very tensor: no copy)."""
        return info_nce_logits(q, k, self.queue.keys, self.T)

    def targets(self, logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """The positive of every query is its own key, column 0: N (long)."""
        return torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)

    @torch.no_grad()
    def enqueue(self, k: torch.Tensor, labels: torch.Tensor | None) -> None:
        """Every process's keys, in rank order, over the oldest queue slots."""
        self.queue.push(keys=dist.concat_all_gather(k))

    def forward(self, im_q: torch.Tensor, im_k: torch.Tensor, labels: torch.Tensor | None = None):
        """Returns ``(logits, targets, k)``: N x (1+K) logits, what :meth:`targets` makes of them, and
        the keys (N x d), which :meth:`enqueue` writes after the backward."""
        q = F.normalize(self.encoder_q(im_q), dim=1)  # N x d
        k = self.keys(im_k)  # N x d
        logits = self.logits(q, k)
        return logits, self.targets(logits, labels), k


# -- builder and training step ----------------------------------------------------------------

def base_encoder(cfg):
    """``base_encoder(num_classes=dim)`` for the config's arch (torchvision or ``timm:`` name)."""
    from mocobench.checkpoints.backbones import build_classifier_model

    return functools.partial(build_classifier_model, cfg.arch, cifar_stem=cfg.cifar_stem,
                             img_size=cfg.img_size if cfg.arch.startswith("timm:") else None)


def build(cfg) -> MoCo:
    return MoCo(base_encoder(cfg), dim=cfg.dim, K=cfg.K, m=cfg.m, T=cfg.T, mlp=cfg.mlp,
                shuffle_bn_groups=cfg.shuffle_bn_groups)


def train_step(model, views: list[torch.Tensor], labels: torch.Tensor):
    """InfoNCE loss of one batch and what :func:`commit` writes after the backward: ``(loss, (k, labels))``.
    ``model`` may be the DDP wrapper."""
    logits, targets, k = model(views[0], views[1], labels)
    return F.cross_entropy(logits, targets), (k, labels)


def commit(model: MoCo, pending) -> None:
    """After the backward: the keys (and, for UniMoCo, their labels) into the queue."""
    model.enqueue(*pending)


def online_encoder(model: MoCo) -> nn.Module:
    """The encoder whose body is exported as the pretrained backbone (its classifier is dropped)."""
    return model.encoder_q
