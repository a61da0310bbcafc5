"""Learning-rate schedules as plain functions of the (fractional) epoch.

``t`` is ``epoch + batch_in_epoch / iters_per_epoch``, so the rate changes every iteration.
NOTE: the official MoCo code sets the rate once per epoch (``adjust_learning_rate(optimizer, epoch)``);
for step schedules this is the same, for cosine the per-iteration curve differs by less than one
epoch's step and makes warmup possible.
"""

from __future__ import annotations

import math


def step_lr(base_lr: float, t: float, milestones: tuple[int, ...], gamma: float = 0.1) -> float:
    """lr · γ^(number of milestones ≤ t): MoCo v1's ×0.1 at epochs 120 and 160."""
    return base_lr * gamma ** sum(t >= mile for mile in milestones)


def cosine_lr(base_lr: float, t: float, epochs: float, final_lr: float = 0.0) -> float:
    """final + (base − final) · ½(1 + cos(π t / epochs)): MoCo v2's schedule."""
    return final_lr + (base_lr - final_lr) * 0.5 * (1.0 + math.cos(math.pi * min(t, epochs) / epochs))


def learning_rate(cfg, t: float) -> float:
    """The config's schedule (``step`` | ``cosine``) with a linear warmup of ``warmup_epochs``.

    With warmup the cosine runs over the epochs after the warmup.
    """
    if cfg.warmup_epochs > 0 and t < cfg.warmup_epochs:
        return cfg.lr * (t + 1e-12) / cfg.warmup_epochs
    if cfg.schedule == "step":
        return step_lr(cfg.lr, t, tuple(cfg.milestones))
    if cfg.schedule == "cosine":
        w = cfg.warmup_epochs
        return cosine_lr(cfg.lr, t - w, cfg.epochs - w)
    raise ValueError(f"unknown lr schedule {cfg.schedule!r}; use step or cosine")
