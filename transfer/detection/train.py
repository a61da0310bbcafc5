"""Detection fine-tuning with the torchvision engine: data stream, schedule, train loop, precise BN.

Read top to bottom: data (iteration -> batch) | schedule | train loop with exact resume |
precise BN. Inference and scoring are in ``evaluate.py``, one evaluation per seed in ``run.py``.

Conventions:
- iteration-based, as detectron2: iteration ``it`` (0-based) uses images ``it*B .. (it+1)*B - 1``
  of an endless stream made of one seeded permutation of the training set per epoch, so the
  images of an iteration depend only on (seed, it) and a resumed run sees exactly what an
  uninterrupted one would; horizontal flips are drawn from a generator seeded with (seed, it, k);
- the learning rate of iteration ``it`` is ``lr * warmup(it) * gamma ** #{s in steps: s <= it}``
  with ``lr = base_lr * ims_per_batch / reference_batch`` (linear scaling);
- the work checkpoint (``last.pt``) holds model, optimizer, iteration, the RNG states (torch,
  CUDA) and a fingerprint of (checkpoint, protocol, seed, world size); resuming with a different
  fingerprint is refused;
- ``losses.jsonl`` (rank 0's losses, one line per iteration) is appended as training goes; on
  resume it keeps exactly the iterations before the work checkpoint's, so the history of a killed
  and resumed run has every iteration once;
- under torchrun (``mocobench.core.dist.setup``): DDP, BN layers become SyncBatchNorm (CUDA), each process
  takes ``ims_per_batch / world`` images of the iteration; rank 0 writes the work checkpoint;
- bf16 autocast on CUDA (``protocol.bf16``); fp32 on CPU.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mocobench.core import dist, precision
from mocobench.core.io import StepLog, atomic_torch_save, progress
from mocobench.core.settings import protocol_changes

# -- data ------------------------------------------------------------------------------------------


def _identity(x):
    return x


def hflip(image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
    """Mirror an image (3 x H x W) with its continuous ``x0 y0 x1 y1`` boxes and masks."""
    w = image.shape[-1]
    target = dict(target)
    boxes = target["boxes"].clone()
    boxes[:, 0], boxes[:, 2] = w - target["boxes"][:, 2], w - target["boxes"][:, 0]
    target["boxes"] = boxes
    if "masks" in target:
        target["masks"] = target["masks"].flip(-1)
    return image.flip(-1), target


class IterationBatches(torch.utils.data.Dataset):
    """``batches[it]`` -> this process's list of ``(image, target)`` for iteration ``it``."""

    def __init__(self, dataset, batch_size: int, seed: int, flip: bool = True, rank: int = 0, world: int = 1):
        if len(dataset) == 0:
            raise ValueError("the training set is empty")
        self.dataset, self.batch_size, self.seed, self.flip = dataset, batch_size, seed, flip
        self.rank, self.world = rank, world

    def indices(self, it: int) -> list[int]:
        n = len(self.dataset)
        out = []
        for pos in range(it * self.batch_size, (it + 1) * self.batch_size):
            epoch, k = divmod(pos, n)
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            out.append(int(torch.randperm(n, generator=g)[k]))
        return out

    def __len__(self) -> int:  # only used by samplers that need a length
        return 2 ** 62

    def __getitem__(self, it: int):
        items = []
        for k, i in enumerate(self.indices(it)[self.rank::self.world]):
            image, target = self.dataset[i]
            if self.flip and np.random.default_rng([self.seed, it, k]).random() < 0.5:
                image, target = hflip(image, target)
            items.append((image, target))
        return items


class WithSkipped(torch.utils.data.Dataset):
    """``with_skipped[it]`` -> ``(batches[it], skipped)``: ``skipped`` lists the image paths that
    reading the batch named unreadable for the first time in this process (``dataset.skipped``).

    A DataLoader worker reads its own copy of the dataset, whose ``skipped`` the main process never
    sees; the paths travel with the batch instead, as ``n_skipped`` does with the classification
    loops' batches (``datasets.imagefolder.collate_skip``). Paths, not counts: the same image met
    by two workers or ranks, or in two epochs, is one skipped image."""

    def __init__(self, batches: IterationBatches):
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, it: int):
        named = getattr(self.batches.dataset, "skipped", [])
        before = len(named)
        items = self.batches[it]
        return items, list(named[before:])


# -- schedule -------------------------------------------------------------------------------------


def scaled_lr(protocol) -> float:
    return protocol.base_lr * protocol.ims_per_batch / protocol.reference_batch


def lr_at(it: int, protocol) -> float:
    """The rate at iteration ``it``: detectron2's WarmupMultiStepLR (``protocol.lr_schedule()``)."""
    return protocol.lr_schedule().lr(scaled_lr(protocol), it)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weights and biases, none on normalisation parameters (detectron2's
    ``WEIGHT_DECAY_NORM: 0.0`` default)."""
    norm, other, seen = [], [], set()
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (norm if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm))
             else other).append(p)
    return [{"params": other, "weight_decay": weight_decay}, {"params": norm, "weight_decay": 0.0}]


# -- distributed ----------------------------------------------------------------------------------


def gather_skipped(paths: list[str]) -> list[str] | None:
    """The unreadable image paths every rank met (each once, in rank order), on rank 0; ``None`` on
    the others. A collective: every rank calls it."""
    parts = dist.gather_to_main(list(paths))
    return None if parts is None else list(dict.fromkeys(p for part in parts for p in part))


# -- training ---------------------------------------------------------------------------------------


def _to(device, images, targets):
    images = [im.to(device, non_blocking=True) for im in images]
    targets = [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()}
               for t in targets]
    return images, targets


def train(model: nn.Module, dataset, protocol, seed: int, work_dir: str | os.PathLike, device: torch.device,
          *, resume: bool | Path = True, fingerprint: dict | None = None, stop_at: int | None = None,
          desc: str = "detection") -> dict:
    """Fine-tune ``model`` for ``protocol.max_iter`` iterations; returns what ran (a summary).

    ``resume``: True resumes from ``work_dir/last.pt`` when it exists, False starts over, a path
    resumes from that state file. ``stop_at`` ends the loop early (after saving), as a kill would;
    used by the resume test.

    The training images found unreadable on any rank or loader worker (and, on resume, before the
    work checkpoint) are named in ``dataset.skipped`` on rank 0 when this returns, as ``predict``
    does for the test images.
    """
    p = protocol
    rank, world = dist.rank(), dist.world_size()
    work_dir = Path(work_dir)
    ckpt_path = work_dir / "last.pt"
    # JSON round trip: what is stored compares equal to what a later run computes.
    fingerprint = json.loads(json.dumps(dict(fingerprint or {}, protocol=p.to_dict(), seed=seed, world=world)))
    if p.ims_per_batch % world:
        raise ValueError(f"ims_per_batch={p.ims_per_batch} is not divisible by the {world} processes")

    model.to(device)
    optimizer = torch.optim.SGD(param_groups(model, p.weight_decay), lr=lr_at(0, p), momentum=p.momentum)
    start = 0
    met: list[str] = []  # unreadable training images this process's batches named (paths, each once)
    state_file = resume if isinstance(resume, Path) else ckpt_path if resume and ckpt_path.exists() else None
    if state_file is not None:
        state = torch.load(state_file, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or "fingerprint" not in state:
            raise ValueError(f"{state_file}: not a detection training state (written as last.pt by "
                             "mocobench eval detection)")
        saved = state["fingerprint"]
        # the run settings of the protocol (workers, checkpoint period) may differ on resume
        differ = sorted([k for k in fingerprint if k != "protocol" and saved.get(k) != fingerprint[k]]
                        + [f"protocol.{k}" for k in protocol_changes(saved.get("protocol") or {}, p)])
        if differ:
            raise ValueError(f"{state_file}: training state of a different run ({', '.join(differ)} "
                             "differ); use --resume no or another --work-dir")
        dist.unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["iteration"]
        met = list(state.get("skipped", []))   # met before the work checkpoint (older states: none known)
        torch.set_rng_state(state["rng"]["torch"])
        if torch.cuda.is_available() and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    sync_bn = world > 1 and device.type == "cuda"
    if world > 1:
        if sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        # NOTE: SyncBatchNorm needs CUDA; CPU (gloo) runs keep per-process BN statistics.
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=False)

    def save(iteration: int) -> None:
        skipped = gather_skipped(met)   # on every rank: a collective
        if rank != 0:
            return
        rng = {"torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
        atomic_torch_save({"model": dist.unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                           "iteration": iteration, "rng": rng, "fingerprint": fingerprint,
                           "skipped": skipped}, ckpt_path)

    end = p.max_iter if stop_at is None else min(stop_at, p.max_iter)
    use_bf16 = precision.evaluation(device, p.bf16) == "bf16"
    summary = {"start_iteration": start, "end_iteration": end, "final_loss": None, "world_size": world,
               "ims_per_gpu": p.ims_per_batch // world, "sync_bn": sync_bn, "bf16": use_bf16,
               "lr": scaled_lr(p)}
    log = StepLog(work_dir / "losses.jsonl") if rank == 0 else None
    if log is not None and start < end:
        missing = log.resume(start)
        if missing:
            warnings.warn(f"{log.path}: no losses for {len(missing)} of the iterations before {start} "
                          f"(written by an older version); the history starts with a gap")
    if start < end:
        batches = WithSkipped(IterationBatches(dataset, p.ims_per_batch, seed, p.hflip, rank, world))
        # The loader draws its worker seed from its own generator, never from the global RNG,
        # so creating it does not shift the stream a resumed run restores.
        loader = torch.utils.data.DataLoader(
            batches, batch_size=None, sampler=range(start, end), num_workers=p.num_workers,
            collate_fn=_identity, generator=torch.Generator().manual_seed(seed),
            persistent_workers=False, pin_memory=device.type == "cuda")
        model.train()
        bar = progress(total=end - start, desc=desc, unit="it", disable=None if rank == 0 else True)
        for it, (items, skipped) in zip(range(start, end), loader):
            met += [path for path in skipped if path not in met]
            lr = lr_at(it, p)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images, targets = _to(device, [i for i, _ in items], [t for _, t in items])
            with precision.evaluation_autocast(device, p.bf16):
                loss_dict = model(images, targets)
            loss = sum(loss_dict.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"iteration {it}: loss is {loss.item()} ({ {k: v.item() for k, v in loss_dict.items()} })")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            summary["final_loss"] = loss.item()
            if log is not None:
                log.append({"iteration": it, "lr": lr, "loss": summary["final_loss"],
                            **{k: v.item() for k, v in loss_dict.items()}})
            bar.update(1)
            bar.set_postfix(loss=f"{summary['final_loss']:.3f}", lr=f"{lr:.4g}", refresh=False)
            if (it + 1) % p.checkpoint_period == 0 or it + 1 == end:
                save(it + 1)
        bar.close()
    skipped = gather_skipped(met)
    if skipped is not None and hasattr(dataset, "skipped"):
        dataset.skipped += [path for path in skipped if path not in dataset.skipped]
    return summary


@torch.no_grad()
def freeze_bn(module: nn.Module) -> int:
    """Replace every BatchNorm2d under ``module`` by a FrozenBatchNorm2d with its statistics and
    affine parameters (detectron2's FrozenBN), in place; how many were replaced."""
    from torchvision.ops import FrozenBatchNorm2d

    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
            count += 1
        else:
            count += freeze_bn(child)
    return count


def precise_bn(model: nn.Module, dataset, protocol, seed: int, device: torch.device) -> int:
    """Recompute every BN's running statistics as the average over ``precise_bn_iters`` training
    batches with the weights fixed (detectron2's ``PreciseBN`` hook, which MoCo enables)."""
    p = protocol
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or p.precise_bn_iters <= 0:
        return 0
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    batches = IterationBatches(dataset, p.ims_per_batch, seed + 1_000_000, p.hflip)
    for it in range(p.precise_bn_iters):
        items = batches[it]
        images, targets = _to(device, [i for i, _ in items], [t for _, t in items])
        with precision.evaluation_autocast(device, p.bf16):
            model(images, targets)
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    return p.precise_bn_iters


