"""Learning-rate schedules: one implementation for every protocol (pretraining, linear and
semi-supervised probes, detection, segmentation).

A :class:`Schedule` is stated over a run of ``length`` units (epochs, or iterations) and gives the
rate at any position ``pos`` of it (``pos`` may be fractional: ``epoch + batch / batches``). Its
shape is one of

- ``constant``;
- ``step``: multiplied by ``gamma`` at each position in ``steps`` (MoCo v1: x0.1 at epochs 120
  and 160; detectron2's WarmupMultiStepLR; the linear probe's 60/80);
- ``cosine``: ``final + (base - final) * (1 + cos(pi * x / span)) / 2`` over the part after the
  warmup (MoCo v2, SMoG, MoCo v3);
- ``poly``: ``(base - final) * (1 - x / span) ** power + final`` (MMSegmentation's PolyLR);

times a linear warmup over the first ``warmup`` units. A warmup from ``warmup_start`` > 0 is
detectron2's (``start * (1 - a) + a``, times the step factor); a warmup from zero grows as
``base * (pos + 1e-12) / warmup``, so that the very first step is not a no-op.

A shortened (or lengthened) run keeps its shape: :func:`keep_shape` moves each step to the same
fraction of the new length. It is the one rule every protocol applies when its length is changed
and its steps are not given; the warmup keeps its length in units (as detectron2 and MoCo v3 state
it: a number of iterations or epochs, not a fraction).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SHAPES = ("constant", "step", "cosine", "poly")
WARMUP_FROM_ZERO = 1e-12   # the first step of a warmup from zero still moves the weights


@dataclass(frozen=True)
class Schedule:
    shape: str
    length: float                    # the run's length in its units (epochs or iterations)
    steps: tuple[float, ...] = ()    # step: positions at which the rate is multiplied by gamma
    gamma: float = 0.1
    warmup: float = 0.0              # units of linear warmup at the start
    warmup_start: float = 0.0        # the warmup's first factor (detectron2's WARMUP_FACTOR)
    power: float = 1.0               # poly
    final_lr: float = 0.0            # cosine / poly: the rate at the end of the run

    def __post_init__(self):
        if self.shape not in SHAPES:
            raise ValueError(f"unknown learning-rate schedule {self.shape!r} (known: {', '.join(SHAPES)})")
        if not self.length > 0:
            raise ValueError(f"a schedule needs a positive length, not {self.length!r}")
        if self.warmup < 0:
            raise ValueError(f"warmup {self.warmup!r} must be >= 0")

    def lr(self, base_lr: float, pos: float) -> float:
        """The rate at position ``pos`` (0 <= pos <= length) of a run whose peak rate is ``base_lr``."""
        warm = self.warmup
        if warm > 0 and pos < warm and self.warmup_start == 0:
            return base_lr * (pos + WARMUP_FROM_ZERO) / warm
        lr = base_lr
        if warm > 0 and pos < warm:
            a = pos / warm
            lr *= self.warmup_start * (1 - a) + a
        if self.shape == "step":
            return lr * self.gamma ** sum(pos >= s for s in self.steps)
        span = self.length - warm
        if span <= 0:   # a run that is all warmup (a 1-epoch smoke run of a preset with 1 warmup epoch)
            return lr
        x = min(pos - warm, span)
        if self.shape == "cosine":
            return self.final_lr + (lr - self.final_lr) * 0.5 * (1.0 + math.cos(math.pi * x / span))
        if self.shape == "poly":
            return (lr - self.final_lr) * (1.0 - x / span) ** self.power + self.final_lr
        return lr


def keep_shape(steps, old_length: float, new_length: float) -> tuple[int, ...]:
    """``steps`` (whole epochs or iterations of a run of ``old_length``) moved to the same fraction
    of a run of ``new_length``, rounded to the nearest whole unit and at least 1: the one rule for
    a shortened or lengthened run (``--epochs 10`` of a 100-epoch probe stepping at 60 and 80
    steps at 6 and 8)."""
    if old_length == new_length:
        return tuple(steps)
    return tuple(max(1, int(round(s * new_length / old_length))) for s in steps)


def steps_kept(steps, old_lengths: tuple[float, ...], new_lengths: tuple[float, ...], shape: str,
               option: str = "--milestones") -> tuple[float, ...]:
    """The steps a run uses when its length or shape was changed and its steps were not given: none
    for a shape without steps (the record then lists none); else ``steps`` (stated for runs of
    ``old_lengths``) moved by :func:`keep_shape` to ``new_lengths``. A protocol with two run lengths
    (semi-supervised: one per label subset) has one tuple of steps, which cannot keep the shape of
    both when either length changes: refused, naming ``option``."""
    if shape != "step":
        return ()
    if not steps or tuple(old_lengths) == tuple(new_lengths):
        return tuple(steps)
    if len(old_lengths) > 1 or len(new_lengths) > 1:
        raise ValueError(f"the {option.lstrip('-')} {','.join(map(str, steps))} are stated for runs of "
                         f"{' and '.join(map(str, old_lengths))}; runs of {' and '.join(map(str, new_lengths))} "
                         f"need their own: give each run's length, or {option}")
    return keep_shape(steps, old_lengths[0], new_lengths[0])


def check_steps(steps, length: float, option: str, unit: str = "epoch") -> None:
    """Refuse given steps that a run of ``length`` never reaches (the rate would never change
    while the record said it did): a ``ValueError`` naming ``option`` as typed."""
    late = [s for s in steps if s >= length]
    if late:
        raise ValueError(f"{option}={','.join(map(str, steps))}: a run of {length:g} {unit}s never reaches "
                         f"{unit} {late[0]}")
