"""The pretraining loop, top to bottom: setup, data, model, resume, train, checkpoint, export.

Conventions:
- ``step`` counts optimizer steps over the whole run; checkpoints store (epoch, batch_in_epoch), the
  position of the next batch, and every piece of state, so a resumed run computes exactly what an
  uninterrupted one computes (CPU, same thread count).
- Model-level randomness (shuffle-BN permutations, k-means initialisation) draws from torch's RNG
  reseeded at every step from (seed, step, rank); augmentations are seeded per image
  (``mocobench.pretrain.data``). The RNG states are stored in the checkpoint as well.
- the momentum update runs inside the method's forward, i.e. after the previous optimizer step and
  before the keys are computed.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import signal
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from mocobench.checkpoints import build_backbone, save_backbone, strict_load
from mocobench.checkpoints.errors import CheckpointError
from mocobench.checkpoints.formats import PRETRAIN_FORMAT
from mocobench.checkpoints.safe_pickle import read_file
from mocobench.checkpoints.write import save_training_state
from mocobench.core import dist
from mocobench.core.io import StepLog, atomic_write_json, move_aside, progress
from mocobench.core.settings import protocol_changes
from mocobench.pretrain import augment, data, fast_paths, gpu_augment
from mocobench.pretrain.config import PretrainConfig, check_processes, from_dict
from mocobench.pretrain.divergence import DivergenceGuard
from mocobench.pretrain.lars import LARS
from mocobench.pretrain.methods import METHODS
from mocobench.pretrain.prefetch import Prefetcher
from mocobench.pretrain.preempt import Preempted, StopRequest

CKPT_VERSION = 2  # 2: queues and the SMoG bank are pretrain.ring_buffer.RingBuffer modules


# -- small helpers ------------------------------------------------------------------------------

def step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step) * 4099 + rank


# Transformer parameters that AdamW does not decay (with every 1-d tensor: norms and biases), by the last
# part of their name: timm's ``no_weight_decay()`` names for ViTs (position embedding, class, register and
# distillation tokens) and Swin (absolute position embedding, relative position bias tables).
NO_DECAY_NAMES = frozenset({"pos_embed", "cls_token", "reg_token", "dist_token", "absolute_pos_embed",
                            "relative_position_bias_table"})


def decays(name: str, p: torch.Tensor) -> bool:
    return p.ndim > 1 and name.rsplit(".", 1)[-1] not in NO_DECAY_NAMES


def build_optimizer(cfg: PretrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "lars":
        return LARS(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        # betas (0.9, 0.999) as MoCo v3, DINO and MoBY; ``momentum`` is not used by AdamW.
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        return torch.optim.AdamW([
            {"params": [p for n, p in named if decays(n, p)], "weight_decay": cfg.weight_decay},
            {"params": [p for n, p in named if not decays(n, p)], "weight_decay": 0.0}], lr=cfg.lr)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; use sgd, lars or adamw")


def rng_state() -> dict:
    """Every RNG state as tensors and lists (loadable with ``torch.load(weights_only=True)``)."""
    version, internal, gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": [version, list(internal), gauss]}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step_{step:08d}.pth"


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted((run_dir / "checkpoints").glob("step_*.pth"))
    return found[-1] if found else None


def supersede_later_checkpoints(run_dir: Path, step: int) -> list[Path]:
    """Move the checkpoints of ``RUN_DIR/checkpoints`` after ``step`` under
    ``RUN_DIR/superseded/<time>/checkpoints/`` (as ``mocobench.resume.supersede``, a layer above this
    one, keeps the pipeline's outputs nothing may resume from); returns where they went. A run
    resumed from an earlier checkpoint trains on from there, so they hold a trajectory it abandoned:
    left in place, pruning (by step) would keep them over the new run's checkpoints and ``--resume
    auto`` would continue them."""
    later = [p for p in sorted((run_dir / "checkpoints").glob("step_*.pth")) if int(p.stem[len("step_"):]) > step]
    return move_aside(run_dir, later, relative_to=run_dir)


def refuse_used_run_dir(run_dir: Path) -> None:
    """A new run (no ``--resume``) into a folder that holds checkpoints is refused: checkpoints are
    pruned by name, so the old run's later steps would outlive the new run's own, and ``--resume
    auto`` would then continue the old run."""
    found = latest_checkpoint(Path(run_dir))
    if found is not None:
        raise ValueError(f"--out {run_dir} holds another run's checkpoints ({found}); continue that run with "
                         "--resume auto, or give a new --out")


def read_training_state(path: Path, offer_previous: bool) -> dict:
    """A pretraining checkpoint, read safely; a corrupt latest one names the previous good one."""
    try:
        obj, _ = read_file(path)
    except CheckpointError as e:
        older = [p for p in sorted(path.parent.glob("step_*.pth")) if p.name < path.name] if offer_previous else []
        hint = (f"; the previous checkpoint {older[-1]} may be intact: resume from it with --resume {older[-1]}"
                if older else "")
        raise ValueError(f"{e}{hint}") from None
    if not isinstance(obj, dict) or obj.get("format") != PRETRAIN_FORMAT:
        raise ValueError(f"{path}: not a mocobench pretraining checkpoint")
    return obj


def body_state_dict(encoder: nn.Module) -> dict[str, torch.Tensor]:
    """The encoder's state dict without its classifier/projection (``fc.*`` or ``head.*``): the
    canonical backbone state dict of ``mocobench.checkpoints.backbones``."""
    heads = tuple(f"{name}." for name in ("fc", "head") if hasattr(encoder, name))
    return {k: v for k, v in encoder.state_dict().items() if not k.startswith(heads)}


def export_backbone(cfg: PretrainConfig, model: nn.Module, path: Path, step: int, epochs_done: int) -> Path:
    """Copy the online encoder's body into a canonical Backbone (strictly) and save it."""
    backbone = build_backbone(cfg.arch, cifar_stem=cfg.cifar_stem,
                              img_size=cfg.img_size if cfg.arch.startswith("timm:") else None)
    encoder = METHODS.lookup(cfg.method).online_encoder(model)
    encoder = dist.unwrap(encoder)
    strict_load(backbone, body_state_dict(encoder), source=f"{cfg.method} online encoder")
    meta = {"method": cfg.method, "arch": cfg.arch, "epochs": epochs_done,
            "label_fraction": label_fraction_of(cfg), "config": cfg.to_dict(), "step": step, "seed": cfg.seed}
    return save_backbone(path, backbone, meta)


def label_fraction_of(cfg: PretrainConfig) -> float:
    """With a supervised list, ``train`` has set ``label_fraction`` to the fraction the list labels."""
    if cfg.method != "unimoco":
        return 0.0
    return float(cfg.label_fraction)


# -- the loop -----------------------------------------------------------------------------------

def train(cfg: PretrainConfig, data_dir: str | Path, run_dir: str | Path, resume: str | None = None,
          allow_config_change: bool = False) -> Path:
    """Pretrain; returns the path of the exported backbone (``RUN_DIR/backbone.pth``)."""
    fast_paths.check_compile(cfg.compile)   # before anything is started or written
    if not resume:
        refuse_used_run_dir(Path(run_dir))
    # ---- setup: processes, device, determinism
    place, dev = dist.setup(cfg.device or None)  # torchrun: process group, this process's GPU
    rank, world, main = place.rank, place.world, place.main
    check_processes(cfg, world)   # before anything is written
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    device, on_gpu = str(dev), dev.type == "cuda"
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the {world} processes")
    per_rank = cfg.batch_size // world
    method = METHODS.lookup(cfg.method)
    steplog = StepLog(run_dir / "log.jsonl", key="step")

    def log(**fields) -> None:
        """A row of ``RUN_DIR/log.jsonl`` (main process only)."""
        if main:
            steplog.append({"time": round(time.time(), 3), **fields})

    # ---- data
    folder = data.ImageFolder(data.train_root(data_dir))
    labels, label_info = (data.labeled_mask(cfg, folder, run_dir, main) if method.uses_labels
                          else ([-1] * len(folder), {"labeled": 0, "source": "none"}))
    if method.uses_labels and cfg.supervised_list:
        # the config states the fraction that ran: what the list labels of this folder
        cfg = replace(cfg, label_fraction=round(label_info["labeled"] / len(folder), 6))
    data_id = data.identity(folder, label_info)   # into every checkpoint; a resume must match it
    # input_pipeline=device: workers read bytes, decode + augmentations run on `dev` (pretrain.gpu_augment)
    device_views = gpu_augment.device_views(cfg, device)
    dataset = (gpu_augment.RawImages(folder, labels) if device_views
               else data.SeededViews(folder, augment.build(cfg), labels, cfg.seed))
    sampler = data.EpochSampler(len(dataset), per_rank, rank, world, cfg.seed)
    iters = sampler.batches_per_epoch
    if cfg.max_steps_per_epoch:
        iters = min(iters, cfg.max_steps_per_epoch)
    total_steps = iters * cfg.epochs

    # ---- model and optimizer (same initialisation on every process)
    torch.manual_seed(cfg.seed)
    model = method.build(cfg)
    if cfg.sync_bn and world > 1:
        for name in method.online_modules:
            setattr(model, name, nn.SyncBatchNorm.convert_sync_batchnorm(getattr(model, name)))
    model.to(device)
    memory_format = fast_paths.memory_format(cfg)
    model.to(memory_format=memory_format)
    optimizer = build_optimizer(cfg, model)

    # ---- resume
    start_epoch, start_batch, step, skipped, changed, superseded = 0, 0, 0, 0, {}, []
    ckpt_file = latest_checkpoint(run_dir) if resume == "auto" else (Path(resume) if resume else None)
    if ckpt_file is not None:
        ckpt = read_training_state(ckpt_file, offer_previous=resume == "auto")
        if ckpt.get("version") != CKPT_VERSION:
            raise ValueError(f"{ckpt_file}: pretraining checkpoint version {ckpt.get('version')}, this code "
                             f"resumes version {CKPT_VERSION} (its backbone still loads with load_backbone)")
        saved = from_dict(ckpt["config"])
        if saved.method != cfg.method or saved.arch != cfg.arch:
            raise ValueError(f"{ckpt_file}: checkpoint of {saved.method}/{saved.arch}, this run is "
                             f"{cfg.method}/{cfg.arch}")
        changed = protocol_changes(saved.to_dict(), cfg)
        if changed and not allow_config_change:
            raise ValueError(f"{ckpt_file}: this run's settings differ from the checkpoint's: "
                             + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
                             + "; resume with the same settings, or pass --allow-config-change to train "
                               "on with the new ones (both are then recorded)")
        saved_data = ckpt.get("data")
        if saved_data is None:
            if main:
                print(f"{ckpt_file}: this checkpoint does not say which data it trained on (written before "
                      "checkpoints did); resuming on --data without checking it")
        elif saved_data != data_id:
            differ = {k: (saved_data.get(k), v) for k, v in data_id.items() if saved_data.get(k) != v}
            if not allow_config_change:
                raise ValueError(f"{ckpt_file}: this run's data differ from the checkpoint's: "
                                 + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in differ.items())
                                 + "; resume on the same --data (and label list), or pass --allow-config-change "
                                   "to train on with these data (both are then recorded)")
            changed = {**changed, "data": (saved_data, data_id)}
        model.load_state_dict(ckpt["model"], strict=True)
        optimizer.load_state_dict(ckpt["optimizer"])
        set_rng_state(ckpt["rng"])
        start_epoch, start_batch, step = ckpt["epoch"], ckpt["batch_in_epoch"], ckpt["step"]
        skipped = ckpt.get("skipped_images", 0) if main else 0
        if main:
            print(f"resuming from {ckpt_file} (step {step}, epoch {start_epoch}, batch {start_batch})")
            # before any checkpoint of this run is written
            superseded = [str(p) for p in supersede_later_checkpoints(run_dir, step)]
            if superseded:
                print(f"moved aside the checkpoints after step {step}, which this run does not continue: "
                      + ", ".join(superseded))
    if main:
        # the history of the steps the checkpoint holds (a row names the steps done, so step
        # `step`'s row is kept); what ran after it is cut, as that is trained again
        steplog.resume(step + 1 if ckpt_file is not None else 0)
        record = cfg.to_dict()
        if changed:
            # NOTE: steps before `step` ran with the old values; config.json says so.
            history = json.loads((run_dir / "config.json").read_text()).get("changed_on_resume", []) \
                if (run_dir / "config.json").is_file() else []
            record["changed_on_resume"] = history + [{"step": step, "from": {k: a for k, (a, _) in changed.items()}}]
        atomic_write_json(run_dir / "config.json", record)
        log(event="start", step=step, world_size=world, device=device, images=len(folder),
                  data=data_id, labels=label_info, resumed_from=str(ckpt_file) if ckpt_file else None, config=cfg.to_dict(),
                  changed_on_resume={k: list(v) for k, v in changed.items()}, superseded=superseded)

    net = model
    if world > 1:
        # NOTE: the official code keeps DDP's default broadcast_buffers=True, which re-sends the
        # whole queue from rank 0 at every step. The queues, label queue and groups are identical
        # on every process by construction (gathered keys; SMoG's groups are sent from rank 0 after
        # each update, pretrain.smog.SMoG.commit), so we skip that traffic; BN running
        # statistics then stay per process and rank 0's are the ones saved and exported.
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device] if on_gpu else None,
                                                  broadcast_buffers=False)
    # the step with its fast paths, on any device: autocast, compile (pretrain.fast_paths)
    train_step = fast_paths.TrainStep(method, net, optimizer, precision=cfg.precision, device=device,
                                      compile=cfg.compile)

    guard = DivergenceGuard(device)  # a non-finite loss is seen at its step; nothing after it is saved

    def save_checkpoint(epoch: int, batch_in_epoch: int) -> None:
        guard.check(model)  # every process, before anything is written
        total_skipped = skipped
        if world > 1:
            t = torch.tensor([skipped], device=device)
            torch.distributed.all_reduce(t)
            total_skipped = int(t)
        if not main:
            return
        path = checkpoint_path(run_dir, step)
        save_training_state(path, {"method": cfg.method, "arch": cfg.arch, "config": cfg.to_dict(), "step": step,
                                   "epoch": epoch, "batch_in_epoch": batch_in_epoch, "world_size": world,
                                   "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                   "rng": rng_state(), "skipped_images": total_skipped, "data": data_id},
                            CKPT_VERSION)
        for old in sorted((run_dir / "checkpoints").glob("step_*.pth"))[:-cfg.keep_checkpoints]:
            old.unlink()
        log(event="checkpoint", step=step, epoch=epoch, batch_in_epoch=batch_in_epoch, path=str(path))

    # ---- train
    bar = progress(total=total_steps, initial=step, desc=f"pretrain {cfg.method}", unit="step",
                   disable=None if main else True)
    t_last, step_last = time.perf_counter(), step
    schedule = cfg.lr_schedule()
    # SIGTERM/SIGUSR1: save at this step and stop (pretrain.preempt). The handlers and the bar
    # are put back however the loop ends (a diverged loss, a preemption, any error).
    with StopRequest() as stop, contextlib.closing(bar):
        for epoch in range(start_epoch, cfg.epochs):
            first = start_batch if epoch == start_epoch else 0
            if first >= iters:
                continue
            sampler.set_epoch(epoch, first)
            dataset.set_epoch(epoch)
            collate = gpu_augment.collate_raw if device_views else data.collate_fill
            loader = torch.utils.data.DataLoader(dataset, batch_size=per_rank, sampler=sampler,
                                                 num_workers=cfg.workers, collate_fn=collate,
                                                 pin_memory=on_gpu, drop_last=True)
            model.train()

            def on_device(b: int, batch, epoch=epoch):
                """Batch b's views and labels on the device (the device path: decoded and augmented there)."""
                views, batch_labels, n_skipped = (device_views(batch, gpu_augment.batch_seed(cfg.seed, epoch, b, rank))
                                                  if device_views else batch)
                views = [v.to(device, non_blocking=True).contiguous(memory_format=memory_format) for v in views]
                return views, batch_labels.to(device, non_blocking=True), n_skipped

            # each batch is made one step ahead, on an input stream of its own (pretrain.prefetch)
            for b, (views, batch_labels, n_skipped) in Prefetcher(itertools.islice(loader, iters - first),
                                                                  on_device, dev, start=first):
                lr = schedule.lr(cfg.lr, epoch + b / iters)
                train_step.set_lr(lr)
                torch.manual_seed(step_seed(cfg.seed, step, rank))
                loss = train_step(views, batch_labels)
                step += 1
                guard.update(loss, step)  # no host sync
                skipped += n_skipped
                bar.update(1)

                if step % cfg.log_every == 0 or b + 1 == iters:
                    guard.check()
                    loss_value = float(loss.detach())
                    now = time.perf_counter()
                    img_s = (step - step_last) * cfg.batch_size / max(now - t_last, 1e-9)
                    t_last, step_last = now, step
                    bar.set_postfix(loss=f"{loss_value:.3f}", img_s=f"{img_s:.0f}", lr=f"{lr:.3g}")
                    log(step=step, epoch=epoch, lr=lr, loss=loss_value, img_per_s=round(img_s, 1),
                              skipped_images=skipped)
                saved = step % cfg.ckpt_every == 0 and b + 1 < iters
                if saved:
                    save_checkpoint(epoch, b + 1)
                signum = stop.requested(device)
                if signum:
                    if not saved:
                        save_checkpoint(epoch, b + 1)   # b + 1 == iters resumes at the next epoch
                    log(event="preempted", step=step, signal=signal.Signals(signum).name)
                    raise Preempted(step, signum, str(checkpoint_path(run_dir, step)))
            save_checkpoint(epoch + 1, 0)

    # ---- export
    guard.check(model)
    out = run_dir / "backbone.pth"
    if main:
        export_backbone(cfg, model, out, step, cfg.epochs)
        log(event="done", step=step, backbone=str(out), skipped_images=skipped)
    dist.barrier()
    return out
