"""The allowed range of every numeric setting, in one table that every command checks.

A setting is checked where it is parsed, whichever way it comes in: a command-line flag
(:func:`arg` as argparse's ``type=``), a ``--key=value`` override (:func:`mocobench.core.overrides.parse_overrides`
calls :func:`check`) or a whole config (:func:`check_config`). A value out of range is a
``SettingError`` that names the setting, the value and the range, so ``--epochs -3`` can never
produce a record of an untrained model labelled as trained.

Names are config field names (``--max-iters`` is ``max_iters``); a name not in the table is only
checked for being finite when it is a float.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable


class SettingError(ValueError):
    """A setting whose value is outside its range."""


@dataclass(frozen=True)
class Range:
    lo: float | None = None          # smallest allowed value (None: unbounded)
    hi: float | None = None          # largest allowed value (None: unbounded)
    lo_open: bool = False            # lo itself is not allowed
    hi_open: bool = False            # hi itself is not allowed

    def holds(self, v: float) -> bool:
        if self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)):
            return False
        return not (self.hi is not None and (v > self.hi or (self.hi_open and v == self.hi)))

    def __str__(self) -> str:
        lo = "" if self.lo is None else f"{'>' if self.lo_open else '>='} {self.lo:g}"
        hi = "" if self.hi is None else f"{'<' if self.hi_open else '<='} {self.hi:g}"
        return " and ".join(p for p in (lo, hi) if p)


AT_LEAST_1 = Range(1)
AT_LEAST_0 = Range(0)
POSITIVE = Range(0, lo_open=True)
UNIT = Range(0, 1)
UNIT_OPEN_TOP = Range(0, 1, hi_open=True)

# field name -> range. Schedules must have a length; rates and temperatures are positive.
RANGES: dict[str, Range] = {
    # schedule lengths and sizes
    "epochs": AT_LEAST_1, "max_iters": AT_LEAST_1, "iters": AT_LEAST_1, "steps": AT_LEAST_1,
    "batch_size": AT_LEAST_1, "ims_per_batch": AT_LEAST_1, "img_size": AT_LEAST_1,
    "crop_size": AT_LEAST_1, "K": AT_LEAST_1, "k": AT_LEAST_1, "dim": AT_LEAST_1,
    "mlp_dim": AT_LEAST_1, "num_groups": AT_LEAST_1, "groups": AT_LEAST_1, "seeds": AT_LEAST_1,
    "num_seeds": AT_LEAST_1, "eval_period": AT_LEAST_1, "log_every": AT_LEAST_1,
    "checkpoint_every": AT_LEAST_1, "save_every": AT_LEAST_1, "reset_every": AT_LEAST_1,
    "views": AT_LEAST_1, "nproc": AT_LEAST_1, "nnodes": AT_LEAST_1, "n_groups": AT_LEAST_1,
    "hidden_dim": AT_LEAST_1, "bank_size": AT_LEAST_1, "kmeans_iters": AT_LEAST_1,
    "ckpt_every": AT_LEAST_1, "keep_checkpoints": AT_LEAST_1, "local_size": AT_LEAST_1,
    "shuffle_bn_groups": AT_LEAST_1,
    # counts that may be zero
    "workers": AT_LEAST_0, "num_workers": AT_LEAST_0, "warmup_epochs": AT_LEAST_0,
    "warmup_iters": AT_LEAST_0, "warmup": AT_LEAST_0, "seed": AT_LEAST_0, "threads": AT_LEAST_0,
    "node_rank": AT_LEAST_0, "local_crops": AT_LEAST_0, "max_steps_per_epoch": AT_LEAST_0, "aug_views": AT_LEAST_0, "weight_decay": AT_LEAST_0, "wd": AT_LEAST_0,
    # rates, temperatures
    "lr": POSITIVE, "base_lr": POSITIVE, "T": POSITIVE, "tau": POSITIVE, "temperature": POSITIVE,
    # fractions and momenta
    "label_fraction": UNIT, "m": UNIT, "beta": UNIT, "momentum": UNIT_OPEN_TOP,
    "dropout": UNIT_OPEN_TOP, "fraction": UNIT, "percent": Range(0, 100),
    "crop_min_scale": Range(0, 1, lo_open=True),
}


def check(name: str, value: Any, shown: str | None = None) -> Any:
    """``value`` if setting ``name`` allows it; a :class:`SettingError` naming ``shown`` (the
    flag as the user typed it, default ``--name``) otherwise. Tuples are checked item by item."""
    shown = shown or f"--{name.replace('_', '-')}"
    if isinstance(value, (tuple, list)):
        for v in value:
            check(name, v, shown)
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise SettingError(f"{shown}={value}: must be a finite number")
    rng = RANGES.get(name)
    if rng is not None and not rng.holds(value):
        raise SettingError(f"{shown}={value}: must be {rng}")
    return value


def check_config(cfg: Any, source: str = "") -> Any:
    """Every field of dataclass ``cfg`` checked; ``source`` (a preset or file name) prefixes errors."""
    for f in dataclasses.fields(cfg):
        try:
            check(f.name, getattr(cfg, f.name))
        except SettingError as e:
            raise SettingError(f"{source}: {e}" if source else str(e)) from None
    return cfg


def arg(name: str, kind: Callable[[str], Any] = int) -> Callable[[str], Any]:
    """An argparse ``type=`` that converts with ``kind`` and checks the range of ``name``:
    ``p.add_argument("--epochs", type=arg("epochs"))``. Out of range is a usage error (exit 2)."""
    import argparse

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        try:
            return check(name, value)
        except SettingError:
            rule = f"must be {RANGES[name]}" if name in RANGES else "must be a finite number"
            raise argparse.ArgumentTypeError(f"{text}: {rule}") from None

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse
