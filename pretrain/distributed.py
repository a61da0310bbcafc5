"""MoCo's shuffle BN, across processes (DDP) or within one (sub-batches), and rank 0's copy of a
state buffer sent to every process (SMoG's groups).

Rank, world size and the gather come from ``mocobench.core.dist``; with one process the gather is the
identity and the "all processes" are this one.
"""

from __future__ import annotations

import torch
import torch.distributed

from mocobench.core import dist


@torch.compiler.disable
@torch.no_grad()
def broadcast_permutation(n: int, device) -> torch.Tensor:
    """A random permutation of ``range(n)`` drawn on rank 0 (its RNG) and sent to every process.
    Eager inside a compiled step: the draw is torch's own generator's, as in an eager run."""
    perm = torch.randperm(n).to(device)
    if dist.is_distributed():
        torch.distributed.broadcast(perm, src=0)
    return perm


@torch.no_grad()
def broadcast_from_main(t: torch.Tensor) -> torch.Tensor:
    """``t`` overwritten in place with rank 0's values (one process: unchanged). For state that every
    process computes from the same inputs but with kernels that need not give the same bits (CUDA's
    ``index_add_`` adds in no fixed order), so the processes cannot drift apart."""
    if dist.is_distributed():   # checked outside the eager part: one process's compiled step has no break
        _broadcast(t)
    return t


@torch.compiler.disable
def _broadcast(t: torch.Tensor) -> None:
    # eager inside a compiled step, like the gathers (core.dist): the graph ends at the collective
    torch.distributed.broadcast(t, src=0)


@torch.no_grad()
def batch_shuffle_ddp(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffle BN, step 1: this process's slice of the globally shuffled batch.

    Returns ``(x_shuffled_local, idx_unshuffle)``. ``x``: n x C x H x W per process; the global
    batch (world*n) is permuted with a permutation drawn on rank 0, and rank r keeps positions
    ``r*n .. (r+1)*n`` of the permuted batch.
    """
    n = x.shape[0]
    x_all = dist.concat_all_gather(x)  # (world*n) x C x H x W
    perm = broadcast_permutation(x_all.shape[0], x.device)
    idx_unshuffle = torch.argsort(perm)
    mine = perm.view(dist.world_size(), n)[dist.rank()]
    return x_all[mine], idx_unshuffle


@torch.no_grad()
def batch_unshuffle_ddp(y: torch.Tensor, idx_unshuffle: torch.Tensor) -> torch.Tensor:
    """Shuffle BN, step 2: gather the keys computed on shuffled slices and take back ours."""
    n = y.shape[0]
    y_all = dist.concat_all_gather(y)  # (world*n) x dim, in shuffled order
    mine = idx_unshuffle.view(dist.world_size(), n)[dist.rank()]
    return y_all[mine]


def grouped_forward(encoder, x: torch.Tensor, groups: int) -> torch.Tensor:
    """Single-process shuffle BN: permute the batch, run ``groups`` sub-batches (each with its own
    BN statistics), undo the permutation. ``groups == 1`` is one forward over the whole batch.

    NOTE: the official code requires DDP for shuffle BN; with one process its BN would see the whole
    key batch at once, which is what ``groups == 1`` computes.
    """
    if groups <= 1:
        return encoder(x)
    n = x.shape[0]
    if n < groups:
        raise ValueError(f"--shuffle-bn-groups {groups} is larger than the key batch ({n})")
    perm = torch.randperm(n, device=x.device)
    chunks = torch.tensor_split(x[perm], groups)
    y = torch.cat([encoder(c) for c in chunks], dim=0)
    return y[torch.argsort(perm)]
