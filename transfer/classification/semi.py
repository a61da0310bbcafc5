"""Semi-supervised evaluation: fine-tune the whole network on a labelled subset (1 % / 10 %).

Protocol (SimCLR appendix B.5 / mmselfsup's semi-supervised benchmark):
1. split the labelled subset per class into a fit part and a held-out part (20 %);
2. for every lr of the grid, fine-tune backbone + a new fc (N(0, 0.01), zero bias) on the fit part
   and measure top-1 on the held-out part;
3. fine-tune again on the whole labelled subset with the best lr and evaluate on the full val set.
The lr is never chosen on val. The chosen lr and the grid's held-out scores go into the record.

Training mode is the normal one (BN statistics update: the whole network is fine-tuned).
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DistributedSampler, Subset

from mocobench.core import dist
from mocobench.core.precision import evaluation_autocast as autocast
from mocobench.core.io import progress
from mocobench.transfer.classification import protocols as P
from mocobench.transfer.classification.data import eval_subset, make_loader, prepare_model, to_device
from mocobench.transfer.classification.linear import evaluate, holdout_split, init_fc


class FineTuneModel(nn.Module):
    """Backbone + linear head; ``head_lr_mult`` gives the head its own learning rate."""

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.fc = init_fc(backbone.num_features, num_classes)

    def forward(self, x):
        return self.fc(self.backbone(x).float())  # N x C


def epochs_for(cfg, pct: int) -> int:
    if cfg.epochs > 0:
        return cfg.epochs
    return cfg.epochs_1pct if pct == 1 else cfg.epochs_10pct


def fine_tune(backbone: nn.Module, dataset, num_classes: int, lr: float, epochs: int, cfg, pct: int,
              device: torch.device, seed: int, desc: str = "semi") -> tuple[nn.Module, int]:
    """A fine-tuned copy of ``backbone`` + fc trained on ``dataset``; also images skipped (1st epoch)."""
    torch.manual_seed(seed)
    model = prepare_model(FineTuneModel(copy.deepcopy(backbone), num_classes), device)
    model.backbone.requires_grad_(True)
    train_model = model
    sampler = None
    if dist.world_size() > 1:
        sampler = DistributedSampler(dataset, shuffle=True, seed=seed)
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    loader = make_loader(dataset, cfg.batch_size, shuffle=True, workers=cfg.workers, device=device,
                         sampler=sampler, drop_last=len(dataset) > cfg.batch_size, seed=seed)
    groups = [{"params": list(model.backbone.parameters()), "lr": lr, "base": lr},
              {"params": list(model.fc.parameters()), "lr": lr * cfg.head_lr_mult,
               "base": lr * cfg.head_lr_mult}]
    opt = torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                          weight_decay=cfg.weight_decay)
    skipped, seen, t0 = 0, 0, time.perf_counter()
    schedule = P.lr_schedule(cfg, epochs)   # the milestones as resolved and recorded
    for epoch in range(epochs):
        for g in opt.param_groups:
            g["lr"] = schedule.lr(g["base"], epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        model.train()
        bar = progress(loader, desc=f"{desc} epoch {epoch + 1}/{epochs}", unit="batch")
        for batch, n_skipped in bar:
            skipped += n_skipped if epoch == 0 else 0
            if batch is None:
                continue
            images, labels = batch
            with autocast(device):
                logits = train_model(to_device(images, device))
            loss = F.cross_entropy(logits.float(), labels.to(device))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"semi-supervised epoch {epoch + 1}: loss is {loss.item()}; "
                                         "the run diverged")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(labels)
            bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{seen / (time.perf_counter() - t0):.0f}")
    model.eval()
    return model, skipped


def semi_supervised(backbone: nn.Module, labelled_train, labelled_eval, val_dataset, num_classes: int,
                    cfg, pct: int, device: torch.device, seed: int = 0, log=print) -> tuple[dict, dict]:
    """``(metrics on val, info)``.

    ``labelled_train`` and ``labelled_eval`` are the same labelled images with the training
    (augmenting) and the evaluation transform; ``val_dataset`` is the full val set.
    """
    epochs = epochs_for(cfg, pct)
    labels = torch.tensor(labelled_train.targets if hasattr(labelled_train, "targets")
                          else [y for _, y in labelled_train.samples])
    fit_idx, held_idx = holdout_split(labels, cfg.holdout_fraction, seed)
    sweep = {}
    t0 = time.perf_counter()
    if len(cfg.lr_grid) > 1:
        if len(held_idx) == 0:
            raise ValueError("the labelled subset is too small to hold out images for the lr choice; "
                             "give a single lr (--lr-grid=0.05)")
        fit_ds = Subset(labelled_train, fit_idx.tolist())
        held_ds = eval_subset(Subset(labelled_eval, held_idx.tolist()))
        held_loader = make_loader(held_ds, cfg.batch_size, workers=cfg.workers, device=device)
        for lr in cfg.lr_grid:
            model, _ = fine_tune(backbone, fit_ds, num_classes, lr, epochs, cfg, pct, device, seed,
                                 desc=f"semi lr {lr:g}")
            m, _ = evaluate(model, held_loader, device, num_classes, desc="held-out")
            sweep[lr] = m["top1"]
            log(f"semi: lr {lr:g} held-out top-1 {m['top1']:.2f}")
            del model
    best_lr = max(cfg.lr_grid, key=lambda lr: sweep.get(lr, 0.0)) if sweep else cfg.lr_grid[0]
    model, train_skipped = fine_tune(backbone, labelled_train, num_classes, best_lr, epochs, cfg, pct,
                                     device, seed, desc=f"semi final lr {best_lr:g}")
    val_loader = make_loader(eval_subset(val_dataset), cfg.batch_size, workers=cfg.workers, device=device)
    metrics, val_skipped = evaluate(model, val_loader, device, num_classes)
    train_skipped = int(dist.all_reduce_sum(torch.tensor([float(train_skipped)]))[0])  # over ranks
    info = {"chosen_lr": best_lr, "lr_grid_holdout_top1": {f"{k:g}": v for k, v in sweep.items()},
            "epochs": epochs, "n_labelled": len(labels), "n_fit": int(len(fit_idx)),
            "n_holdout": int(len(held_idx)), "train_time_s": time.perf_counter() - t0,
            "unreadable": {"train": train_skipped, "val": val_skipped}}
    return metrics, info
