"""SMoG, Synchronous Momentum Grouping (Pang et al. 2022): pure functions, state updates, builder.

No official code is public. We follow the paper and the best-documented reimplementation
(lightly's ``SMoGPrototypes`` and its example), written anew; choices where the paper is ambiguous
are marked NOTE.

Per step, with two global views x1, x2 (and optional small local crops):

    θk ← m·θk + (1−m)·θq             momentum branch (backbone + projector), before its forward
    z1, z2 = normalize(proj_k(f_k(x1, x2)))      momentum features, N x d, no grad
    a1, a2 = argmax_c cos(z, g_c)                group assignments, N
    g_c ← β·g_c + (1−β)·mean(z_i : a_i = c)      synchronous momentum grouping, every step
    p_v = normalize(pred(proj(f(x_v))))          online predictions, N x d
    loss = ½ [CE(p1·ĝᵀ/τ, a2) + CE(p2·ĝᵀ/τ, a1)] ĝ = normalize(G)

and every R steps G is re-initialised by k-means over a memory bank of recent momentum features
while the momentum branch is reset to the online weights.

A step is three calls (``pretrain.fast_paths.TrainStep``): :meth:`SMoG.prepare` on the host (the
reset, when due), ``forward`` (momentum update, assignments, G_{t+1}, loss) and, after the backward,
:meth:`SMoG.commit` (G, the bank, the step counter).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from mocobench.core import dist
from mocobench.pretrain import distributed
from mocobench.pretrain.moco import momentum_update
from mocobench.pretrain.ring_buffer import RingBuffer


# -- pure functions ---------------------------------------------------------------------------

def assign(z: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """a_i = argmax_c cos(z_i, g_c). z: N x d, groups: C x d; returns N (long)."""
    sim = F.normalize(z.float(), dim=1) @ F.normalize(groups.float(), dim=1).t()  # N x C
    return sim.argmax(dim=1)


def update_groups(groups: torch.Tensor, z: torch.Tensor, assignments: torch.Tensor,
                  beta: float) -> torch.Tensor:
    """g_c ← β·g_c + (1−β)·mean(z_i : a_i = c) for every group with members; others unchanged.

    groups: C x d, z: N x d, assignments: N. Returns the new C x d tensor (``groups`` is not modified).
    """
    z = z.to(groups.dtype)
    sums = torch.zeros_like(groups).index_add_(0, assignments, z)  # C x d
    # counted as sums of ones, not with bincount, whose output size depends on the data (a compiled
    # step would break its graph there); exact for counts below 2^24
    counts = groups.new_zeros(groups.shape[0], 1).index_add_(0, assignments, z.new_ones(z.shape[0], 1))  # C x 1
    means = sums / counts.clamp(min=1)
    return torch.where(counts > 0, beta * groups + (1 - beta) * means, groups)


def group_logits(p: torch.Tensor, groups: torch.Tensor, tau: float) -> torch.Tensor:
    """normalize(p)·normalize(G)ᵀ/τ: N x C, in float32."""
    return F.normalize(p.float(), dim=1) @ F.normalize(groups.float(), dim=1).t() / tau


def spherical_kmeans(x: torch.Tensor, k: int, iters: int, seed: int) -> torch.Tensor:
    """k cluster centres (k x d, unit norm) of the rows of x (n x d) under cosine similarity.

    Initialised with k distinct rows drawn with ``seed``, so every process computes the same centres
    from the same bank. An empty cluster keeps its previous centre.
    """
    x = F.normalize(x.float(), dim=1)
    g = torch.Generator().manual_seed(seed)
    centres = x[torch.randperm(x.shape[0], generator=g)[:k].to(x.device)].clone()
    for _ in range(iters):
        a = (x @ centres.t()).argmax(dim=1)
        sums = torch.zeros_like(centres).index_add_(0, a, x)
        counts = torch.bincount(a, minlength=k).unsqueeze(1)
        centres = torch.where(counts > 0, F.normalize(sums, dim=1), centres)
    return centres


# -- heads ------------------------------------------------------------------------------------

def projection_head(in_dim: int, hidden: int, dim: int) -> nn.Sequential:
    """in_dim → hidden, BN, ReLU → dim, BN(affine=False), as in the paper and lightly."""
    return nn.Sequential(nn.Linear(in_dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, dim, bias=False), nn.BatchNorm1d(dim, affine=False))


def prediction_head(dim: int, hidden: int) -> nn.Sequential:
    """dim → hidden, BN, ReLU → dim."""
    return nn.Sequential(nn.Linear(dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, dim))


# -- the module -------------------------------------------------------------------------------

class SMoG(nn.Module):
    """Online branch (``backbone``, ``projector``, ``predictor``), momentum branch (``backbone_k``,
    ``projector_k``), buffers ``groups`` (C x d), ``iteration`` (steps taken, decides the resets) and
    the memory bank of momentum features, a ring (``bank.features``: B x d)."""

    def __init__(self, backbone: nn.Module, num_features: int, dim: int = 128, hidden: int = 2048,
                 n_groups: int = 3000, beta: float = 0.99, tau: float = 0.1, m: float = 0.99,
                 reset_every: int = 300, bank_size: int = 65536, kmeans_iters: int = 10, seed: int = 0):
        super().__init__()
        self.beta, self.tau, self.m = beta, tau, m
        self.reset_every, self.kmeans_iters, self.seed = reset_every, kmeans_iters, seed
        self.backbone = backbone
        self.projector = projection_head(num_features, hidden, dim)
        self.predictor = prediction_head(dim, hidden)
        self.backbone_k = copy.deepcopy(backbone)
        self.projector_k = copy.deepcopy(self.projector)
        for p in list(self.backbone_k.parameters()) + list(self.projector_k.parameters()):
            p.requires_grad = False
        # NOTE: lightly starts from uniform random group features; we start from random unit
        # vectors (they are replaced by k-means at the first reset anyway).
        self.register_buffer("groups", F.normalize(torch.randn(n_groups, dim), dim=1))
        self.bank = RingBuffer(features=torch.zeros(bank_size, dim))
        self.register_buffer("iteration", torch.zeros(1, dtype=torch.long))
        # the host's copy of ``iteration``, which decides the resets (``prepare``): reading the buffer
        # each step would wait for the GPU's queued work. Read once after construction and after a load.
        self._iteration: int | None = None
        self.register_load_state_dict_post_hook(lambda module, keys: setattr(module, "_iteration", None))

    def _steps_taken(self) -> int:
        if self._iteration is None:
            self._iteration = int(self.iteration[0])
        return self._iteration

    # -- no-grad state updates --
    @torch.no_grad()
    def reset(self) -> None:
        """G ← k-means(bank) and momentum branch ← online branch (parameters and BN buffers). With
        fewer than C features in the bank the groups are kept: the command line refuses such a config
        (``pretrain.config.check_resolved``); a config built in code (a throughput benchmark) may not."""
        bank = self.bank.filled("features")
        if bank.shape[0] >= self.groups.shape[0]:
            self.groups.copy_(spherical_kmeans(bank, self.groups.shape[0], self.kmeans_iters,
                                               seed=self.seed * 1_000_003 + self._steps_taken()))
            distributed.broadcast_from_main(self.groups)   # the k-means adds with index_add_ (see commit)
        self.backbone_k.load_state_dict(self.backbone.state_dict())
        self.projector_k.load_state_dict(self.projector.state_dict())

    @torch.no_grad()
    def momentum_features(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projector_k(self.backbone_k(x)), dim=1)  # N x d

    def prepare(self) -> dict:
        """Before the step, on the host: a reset step re-clusters and copies the online branch (k-means
        over the bank: eager, not part of a compiled step). Returns the forward's ``momentum`` flag."""
        it = self._steps_taken()
        reset = it > 0 and it % self.reset_every == 0
        if reset:
            self.reset()
        self._iteration = it + 1
        # NOTE: as lightly does, a reset step replaces the momentum update.
        return {"momentum": not reset}

    def forward(self, crops: list[torch.Tensor], momentum: bool = True):
        """``(loss, pending)`` of one batch; ``crops[0:2]`` are the global views, the rest local crops.
        ``pending`` (the new groups, every process's momentum features) is what :meth:`commit` writes
        after the backward."""
        if momentum:
            momentum_update(self.backbone, self.backbone_k, self.m)
            momentum_update(self.projector, self.projector_k, self.m)

        with torch.no_grad():
            z = [self.momentum_features(x) for x in crops[:2]]  # 2 x (N x d)
            a = [assign(zv, self.groups) for zv in z]  # 2 x N
            # NOTE: the paper updates the groups with momentum features (lightly's example uses the
            # online ones); all processes' features, and rank 0's result kept by all (commit), so
            # every process keeps the same groups.
            z_all = torch.cat([dist.concat_all_gather(zv) for zv in z])  # (2·world·N) x d
            a_all = assign(z_all, self.groups)
            # NOTE: order within a step is ambiguous in the paper; like lightly we assign with G_t,
            # then compute the logits against the updated G_{t+1}.
            groups = update_groups(self.groups, z_all, a_all, self.beta)

        p = [self.predictor(self.projector(self.backbone(x))) for x in crops]  # V x (N x d)
        loss = 0.5 * (F.cross_entropy(group_logits(p[0], groups, self.tau), a[1])
                      + F.cross_entropy(group_logits(p[1], groups, self.tau), a[0]))
        if len(crops) > 2:
            # NOTE: the paper does not spell out multi-crop targets; each local crop predicts the
            # assignments of both global views (as SwAV/DINO pair local with global crops).
            local = [0.5 * (F.cross_entropy(group_logits(pv, groups, self.tau), a[0])
                            + F.cross_entropy(group_logits(pv, groups, self.tau), a[1])) for pv in p[2:]]
            loss = (2 * loss + sum(local)) / len(crops)
        return loss, (groups, z_all)

    @torch.no_grad()
    def commit(self, groups: torch.Tensor, z_all: torch.Tensor) -> None:
        """After the backward: G ← G_{t+1}, the momentum features into the bank, one more step taken.

        Under DDP every process computes G_{t+1} from the same gathered features, but ``index_add_``
        on CUDA adds in no fixed order, so the bits may differ between processes and, with
        ``broadcast_buffers=False`` (pretrain/train.py), the differences would grow: rank 0's groups
        are sent to all. On the CPU the processes' groups are already equal and nothing changes."""
        self.groups.copy_(groups)
        distributed.broadcast_from_main(self.groups)
        self.bank.push(features=z_all)
        self.iteration += 1


# -- builder and training step ----------------------------------------------------------------

def build(cfg) -> SMoG:
    from mocobench.checkpoints.backbones import build_backbone

    backbone = build_backbone(cfg.arch, cifar_stem=cfg.cifar_stem,
                              img_size=cfg.img_size if cfg.arch.startswith("timm:") else None)
    return SMoG(backbone.net, backbone.num_features, dim=cfg.dim, hidden=cfg.hidden_dim,
                n_groups=cfg.n_groups, beta=cfg.beta, tau=cfg.tau, m=cfg.m, reset_every=cfg.reset_every,
                bank_size=cfg.bank_size, kmeans_iters=cfg.kmeans_iters, seed=cfg.seed)


def train_step(model, views: list[torch.Tensor], labels: torch.Tensor, momentum: bool = True):
    """``(loss, pending)``; ``model`` may be the DDP wrapper."""
    return model(views, momentum=momentum)


def commit(model: SMoG, pending) -> None:
    model.commit(*pending)


def online_encoder(model: SMoG) -> nn.Module:
    return model.backbone
