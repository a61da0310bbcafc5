"""Iteration-based fine-tuning of a segmentation model, read top to bottom.

Sections: learning-rate schedule; resumable state; the training loop; ``run_seed`` (train one
seed, evaluate on val, return the outcome to the runner, ``transfer/runner.py``). Under torchrun (``mocobench.core.dist.setup``) every process builds the
same model, takes its share of each global batch (SyncBN across processes when the protocol asks
for it and the run is on GPUs) and evaluates its share of the val set; rank 0 writes checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from mocobench.core.dist import Dist
from mocobench.core.precision import evaluation_autocast as autocast
from mocobench.core.io import atomic_torch_save, progress
from mocobench.core.settings import protocol_and_run, protocol_changes
from mocobench.transfer.segmentation.data import IGNORE, PositionBatches, TrainStream, build_dataset, collate
from mocobench.transfer.segmentation.inference import evaluate, prediction_writer
from mocobench.transfer.segmentation.model import segmentation_model
from mocobench.transfer.segmentation.protocols import SegProtocol, preset_changes

STATE_FORMAT = "mocobench-segmentation-train"


# -- resumable state -------------------------------------------------------------------------
def save_state(path: Path, *, model, optimizer, iteration: int, protocol: SegProtocol, seed: int,
               checkpoint: dict) -> None:
    state = {
        "format": STATE_FORMAT, "version": 1,
        "iteration": iteration,        # iterations completed
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "protocol": protocol.to_dict(), "seed": seed, "checkpoint": checkpoint,
        # the data stream is a function of (seed, position), so only torch's own RNG remains
        "rng_cpu": torch.random.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    atomic_torch_save(state, path)


def load_state(path: Path, *, protocol: SegProtocol, seed: int, checkpoint: dict) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path}: not a segmentation training state ({STATE_FORMAT})")
    diff = list(protocol_changes(dict(state["protocol"]), protocol))
    if diff:
        raise ValueError(f"{path}: was written with a different protocol ({', '.join(diff)}); "
                         "resume with the same settings, or use --resume no or another --work-dir")
    if state["seed"] != seed:
        raise ValueError(f"{path}: was written for seed {state['seed']}, not {seed}")
    if state["checkpoint"].get("sha256") != checkpoint.get("sha256") or \
            state["checkpoint"].get("name") != checkpoint.get("name"):
        raise ValueError(f"{path}: was written for checkpoint {state['checkpoint'].get('name')}, "
                         f"not {checkpoint.get('name')}")
    return state


# -- training --------------------------------------------------------------------------------
@dataclass
class TrainResult:
    iterations: int
    losses: list[float] = field(default_factory=list)


def train(model, stream: TrainStream, p: SegProtocol, *, device: torch.device, seed: int,
          dist_info: Dist = Dist(), work_dir: Path | None = None, resume: Path | None = None,
          checkpoint: dict | None = None, stop_at: int | None = None) -> TrainResult:
    """Train ``model`` for ``p.iters`` iterations (or until ``stop_at``), resuming from ``resume``."""
    checkpoint = checkpoint or {}
    net = model
    if dist_info.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    # weight decay on every parameter, BN and biases included, as MoCo's detectron2 setup does
    optimizer = torch.optim.SGD([q for q in model.parameters() if q.requires_grad], lr=p.lr,
                                momentum=p.momentum, weight_decay=p.weight_decay)
    start = 0
    if resume is not None:
        state = load_state(resume, protocol=p, seed=seed, checkpoint=checkpoint)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.random.set_rng_state(state["rng_cpu"])
        if state["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        start = state["iteration"]
    end = p.iters if stop_at is None else min(stop_at, p.iters)
    loader = torch.utils.data.DataLoader(
        stream, batch_sampler=PositionBatches(start, end, p.batch_size, dist_info.rank, dist_info.world),
        num_workers=p.num_workers, collate_fn=collate, pin_memory=device.type == "cuda",
        persistent_workers=False)
    result = TrainResult(iterations=start)
    model.train()
    bar = progress(total=end - start, desc="train", unit="it", disable=None if dist_info.main else True)
    schedule = p.lr_schedule()
    for it, (images, targets) in enumerate(loader, start=start):
        lr = schedule.lr(p.lr, it)
        for g in optimizer.param_groups:
            g["lr"] = lr
        images = images.to(device, non_blocking=True)    # N x 3 x h x w
        targets = targets.to(device, non_blocking=True)  # N x h x w
        with autocast(device):
            logits = net(images)                          # N x K x h x w
        loss = F.cross_entropy(logits.float(), targets, ignore_index=IGNORE)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        result.iterations = it + 1
        result.losses.append(float(loss.detach()))
        if not math.isfinite(result.losses[-1]):
            raise FloatingPointError(f"training diverged: loss {result.losses[-1]} at iteration {it} "
                                     f"(lr {lr:g}); lower --lr")
        bar.update(1)
        if (it + 1) % p.log_every == 0:
            bar.set_postfix(loss=f"{result.losses[-1]:.3f}", lr=f"{lr:.2e}")
        if work_dir is not None and dist_info.main and ((it + 1) % p.checkpoint_every == 0 or it + 1 == end):
            save_state(work_dir / "last.pth", model=model, optimizer=optimizer, iteration=it + 1,
                       protocol=p, seed=seed, checkpoint=checkpoint)
    bar.close()
    return result


# -- one seed: train + evaluate ------------------------------------------------------------
def run_seed(r, protocol: SegProtocol, dataset: str, data_root: str, *, dataset_name: str,
             predictions_dir: str | None = None, stop_at: int | None = None):
    """One seed with the torchvision engine (``transfer/runner.py`` calls it): the Outcome on
    rank 0, None on the others. ``r.backbone`` comes from :func:`load_for_segmentation`."""
    from mocobench.transfer import runner

    dist_info, dev = r.dist, r.device
    train_set = build_dataset(dataset, data_root, protocol.train_split)
    val_set = build_dataset(dataset, data_root, protocol.val_split)
    # NOTE: torch's SyncBatchNorm only runs on GPUs; a multi-process CPU run (gloo) keeps
    # per-process BN statistics and says so.
    sync_bn = protocol.sync_bn and dist_info.world > 1
    if sync_bn and dev.type != "cuda":
        import warnings

        warnings.warn("SyncBN needs CUDA; this multi-process CPU run uses per-process BN")
        sync_bn = False
    model = segmentation_model(r.backbone, protocol.head, train_set.num_classes, sync_bn=sync_bn,
                               frozen_backbone=protocol.frozen_backbone)
    model.to(dev)
    backbone = model.backbone
    stream = TrainStream(train_set, r.seed, protocol.crop, protocol.scale_range, protocol.flip,
                         backbone.mean, backbone.std)
    fields = r.report.record_fields()
    resume_path = None
    if isinstance(r.resume, Path):
        resume_path = r.resume
    elif r.resume == "auto" and (r.work / "last.pth").is_file():
        resume_path = r.work / "last.pth"
    train(model, stream, protocol, device=dev, seed=r.seed, dist_info=dist_info, work_dir=r.work,
                resume=resume_path, checkpoint=fields, stop_at=stop_at)
    if stop_at is not None and stop_at < protocol.iters:
        return None
    writer = prediction_writer(dataset, predictions_dir) if predictions_dir else None
    cm = evaluate(model, val_set, device=dev, mean=backbone.mean, std=backbone.std,
                  inference=protocol.inference, slide_crop=protocol.slide_crop,
                  slide_stride=protocol.slide_stride, rank=dist_info.rank,
                  world=dist_info.world, write_prediction=writer)
    scores = cm.scores(val_set.classes)
    if not dist_info.main:
        return None
    metrics = {k: v for k, v in scores.items() if not k.startswith("Acc/") and not math.isnan(v)}
    protocol_fields, run_settings = protocol_and_run(protocol)
    return runner.Outcome(
        metrics=metrics,
        dataset={"name": dataset_name, "path": str(data_root),
                 "splits": {protocol.train_split: len(train_set), protocol.val_split: len(val_set)}},
        config={**protocol_fields, "dataset": dataset, **model.features_used()},
        # SyncBN runs only with several processes: what ran follows from the world size
        run={**run_settings, "skipped_train": len(train_set.skipped), "skipped_val": len(val_set.skipped),
             "world_size": dist_info.world, "sync_bn": sync_bn,
             "preset_changes": preset_changes(protocol, dataset)})
