"""Linear probes on a frozen backbone: the ``paper`` SGD protocol and the ``fast`` cached-feature one.

``paper`` (MoCo's ``main_lincls.py``): backbone frozen and in eval mode (BN statistics frozen), a
new fc with ``weight ~ N(0, 0.01)`` and zero bias, SGD momentum 0.9, lr 30, no weight decay, batch
256, 100 epochs, lr x0.1 at epochs 60 and 80, ``RandomResizedCrop(224) + flip`` for training and
``Resize(256) + CenterCrop(224)`` for validation; after training every backbone tensor must be
unchanged (the official sanity check), else :class:`BackboneChangedError`.

``fast``: features extracted once (and cached, see ``features.py``); a multinomial logistic
regression fitted full-batch with L-BFGS for each L2 strength of a sweep on 80 % of train, the
strength with the best top-1 on the held-out 20 % refitted on all of train, evaluated on val
(CLIP's and ssl-transfer's linear probes). It is a different protocol: its records say ``fast``.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from mocobench.core import dist
from mocobench.core.precision import evaluation_autocast as autocast
from mocobench.core.io import progress
from mocobench.transfer.classification import protocols as P
from mocobench.transfer.classification.data import to_device, topk_correct


class BackboneChangedError(RuntimeError):
    """A backbone tensor changed during linear-probe training (it must stay frozen)."""


# -- paper protocol ---------------------------------------------------------------------------
def init_fc(num_features: int, num_classes: int, std: float = 0.01) -> nn.Linear:
    fc = nn.Linear(num_features, num_classes)
    nn.init.normal_(fc.weight, mean=0.0, std=std)
    nn.init.zeros_(fc.bias)
    return fc


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def check_unchanged(before: dict[str, torch.Tensor], module: nn.Module) -> None:
    """Raise :class:`BackboneChangedError` naming every parameter or buffer that differs."""
    after = module.state_dict()
    changed = [k for k, v in before.items() if not torch.equal(v, after[k].detach().to(v.device))]
    if changed:
        raise BackboneChangedError(
            f"{len(changed)} backbone tensors changed during linear-probe training although the "
            f"backbone must stay frozen (first: {', '.join(changed[:5])}); the result is invalid")


@torch.no_grad()
def evaluate(model_fn, loader, device, num_classes: int, desc: str = "val") -> tuple[dict, int]:
    """Top-1/top-5 (percent) over ``loader``, counts summed across ranks; also images skipped."""
    counts = torch.zeros(4)  # correct@1, correct@5, total, skipped
    for batch, n_skipped in progress(loader, desc=desc, unit="batch"):
        counts[3] += n_skipped
        if batch is None:
            continue
        images, labels = batch
        with autocast(device):
            logits = model_fn(to_device(images, device))
        c1, c5 = topk_correct(logits.float(), labels.to(device), (1, 5))
        counts[0] += c1
        counts[1] += c5
        counts[2] += len(labels)
    counts = dist.all_reduce_sum(counts)
    return accuracies(counts), int(counts[3])


def accuracies(counts: torch.Tensor) -> dict[str, float]:
    """``counts`` = (correct@1, correct@5, total, ...) summed over every image -> percent."""
    total = float(counts[2])
    if total == 0:
        raise RuntimeError("no image was evaluated (all unreadable?)")
    return {"top1": 100.0 * float(counts[0]) / total, "top5": 100.0 * float(counts[1]) / total}


def train_linear_paper(backbone: nn.Module, train_loader, val_loader, num_classes: int, cfg,
                       device: torch.device, sampler=None, log=print) -> tuple[dict, dict]:
    """Train the fc on frozen features with SGD; returns ``(metrics, info)``.

    NOTE: the official script evaluates after every epoch and keeps the best val top-1 (model
    selection on val); we evaluate once after the last epoch so the number is not tuned on val.
    """
    backbone.eval()
    backbone.requires_grad_(False)
    before = snapshot(backbone)
    fc = init_fc(backbone.num_features, num_classes, cfg.fc_init_std).to(device)
    fc_train = fc
    if dist.world_size() > 1:
        fc_train = nn.parallel.DistributedDataParallel(
            fc, device_ids=[device.index] if device.type == "cuda" else None)
    base_lr = cfg.lr * (cfg.batch_size / 256 if cfg.lr_scale_by_batch else 1.0)
    opt = torch.optim.SGD(fc.parameters(), lr=base_lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    skipped, seen, t0 = 0, 0, time.perf_counter()
    schedule = P.lr_schedule(cfg)
    for epoch in range(cfg.epochs):
        lr = schedule.lr(base_lr, epoch)
        for group in opt.param_groups:
            group["lr"] = lr
        if sampler is not None:
            sampler.set_epoch(epoch)
        backbone.eval()  # BN statistics stay frozen
        bar = progress(train_loader, desc=f"linear epoch {epoch + 1}/{cfg.epochs} lr {lr:.3g}",
                       unit="batch")
        for batch, n_skipped in bar:
            skipped += n_skipped if epoch == 0 else 0  # each unreadable image counted once
            if batch is None:
                continue
            images, labels = batch
            with torch.no_grad(), autocast(device):
                feats = backbone(to_device(images, device))  # B x D
            logits = fc_train(feats.float())  # B x C
            loss = F.cross_entropy(logits, labels.to(device))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"linear epoch {epoch + 1}: loss is {loss.item()} at lr {lr:.3g}; "
                                         "the run diverged")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(labels)
            bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{seen / (time.perf_counter() - t0):.0f}")
    train_time = time.perf_counter() - t0
    check_unchanged(before, backbone)
    metrics, val_skipped = evaluate(lambda x: fc(backbone(x).float()), val_loader, device, num_classes)
    train_skipped = int(dist.all_reduce_sum(torch.tensor([float(skipped)]))[0])
    return metrics, {"train_time_s": train_time, "effective_lr": base_lr,
                     "unreadable": {"train": train_skipped, "val": val_skipped}}


# -- fast protocol ----------------------------------------------------------------------------
def fit_logistic_regression(X: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float,
                            max_iter: int = 1000, init: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise ``mean CE(X W + b, y) + l2 / 2 * ||W||^2`` full-batch with L-BFGS; returns (W, b).

    ``X``: N x D, ``W``: D x C. The bias is not penalised. ``init`` warm-starts from a previous fit
    (the sweep goes from strong to weak L2, so each fit starts near its answer).
    """
    D = X.shape[1]
    W = torch.zeros(D, num_classes, dtype=X.dtype, device=X.device) if init is None else init[0].clone()
    b = torch.zeros(num_classes, dtype=X.dtype, device=X.device) if init is None else init[1].clone()
    W.requires_grad_(True)
    b.requires_grad_(True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, history_size=20,
                            tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(X @ W + b, y) + 0.5 * l2 * (W * W).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return W.detach(), b.detach()


def holdout_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class random split of indices into (fit, held out); each class keeps >= 1 fit image."""
    g = torch.Generator().manual_seed(seed)
    fit, held = [], []
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().view(-1)
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_held = min(int(round(fraction * len(idx))), len(idx) - 1)
        held.append(idx[:n_held])
        fit.append(idx[n_held:])
    return torch.cat(fit).sort().values, torch.cat(held).sort().values


class _threads:
    """Run with ``n`` CPU threads (L-BFGS on a few thousand features is many small ops: OpenMP
    barriers make 2+ threads slower than 1 there, by 10x on a loaded machine)."""

    def __init__(self, n: int | None):
        self.n = n

    def __enter__(self):
        self.before = torch.get_num_threads()
        if self.n:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)
        return False


def fast_linear_probe(train_views: list[torch.Tensor], train_labels: torch.Tensor,
                      val_features: torch.Tensor, val_labels: torch.Tensor, num_classes: int, cfg,
                      device: torch.device, seed: int = 0, log=print) -> tuple[dict, dict]:
    """``(metrics, info)``; ``train_views[0]`` is the centre crop, the rest augmented views (N x D each).

    Features are standardised with the train mean/std (L-BFGS converges much faster on
    well-conditioned inputs; the fitted classifier is still linear in the raw features).
    """
    small_cpu = device.type == "cpu" and train_views[0].numel() * len(train_views) < 20_000_000
    with _threads(1 if small_cpu else None):
        return _fast_linear_probe(train_views, train_labels, val_features, val_labels, num_classes,
                                  cfg, device, seed, log)


def _fast_linear_probe(train_views, train_labels, val_features, val_labels, num_classes, cfg, device,
                       seed, log):
    t0 = time.perf_counter()
    views = [v.to(device).float() for v in train_views]
    # divide by the global RMS first so the std floor below is relative to the features' scale
    rms = views[0].pow(2).mean().sqrt().clamp_min(1e-30)
    views = [v / rms for v in views]
    mean = views[0].mean(0, keepdim=True)
    std = views[0].std(0, keepdim=True).clamp_min(1e-6)
    views = [(v - mean) / std for v in views]
    val = (val_features.to(device).float() / rms - mean) / std
    y = train_labels.to(device)
    fit_idx, held_idx = holdout_split(train_labels, cfg.holdout_fraction, seed)
    fit_idx, held_idx = fit_idx.to(device), held_idx.to(device)
    X_fit = torch.cat([v[fit_idx] for v in views])  # (V * N_fit) x D
    y_fit = y[fit_idx].repeat(len(views))
    sweep, init = {}, None
    for l2 in sorted(cfg.l2_grid, reverse=True):
        init = fit_logistic_regression(X_fit, y_fit, num_classes, l2, cfg.max_iter, init)
        if len(held_idx):
            scores = views[0][held_idx] @ init[0] + init[1]
            sweep[l2] = 100.0 * topk_correct(scores, y[held_idx], (1,))[0] / len(held_idx)
        else:
            sweep[l2] = 0.0
        log(f"fast linear: l2 {l2:g} held-out top-1 {sweep[l2]:.2f}")
    # ties go to the strongest regularisation (first in the descending sweep)
    best_l2 = max(sorted(sweep, reverse=True), key=lambda l2: sweep[l2])
    X_all = torch.cat(views)
    y_all = y.repeat(len(views))
    W, b = fit_logistic_regression(X_all, y_all, num_classes, best_l2, cfg.max_iter)
    c1, c5 = topk_correct(val @ W + b, val_labels.to(device), (1, 5))
    n = len(val_labels)
    metrics = {"top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n}
    info = {"chosen_l2": best_l2, "l2_sweep_holdout_top1": {f"{k:g}": v for k, v in sweep.items()},
            "n_fit": int(len(fit_idx)), "n_holdout": int(len(held_idx)),
            "fit_time_s": time.perf_counter() - t0}
    return metrics, info
