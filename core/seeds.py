"""Seeds: one run seed for every generator, and seeds derived from (run seed, position), which
the engines use so that a resumed run draws what an uninterrupted one draws without saving any
generator's state."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Python's ``random``, numpy's global generator and torch's (every device's)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_for(*parts: int) -> int:
    """A 32-bit seed from non-negative integers (numpy's ``SeedSequence`` mixes them, so nearby
    tuples give unrelated seeds)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def step_seed(seed: int, rank: int, iteration: int) -> int:
    """The seed of one training step's own draws (dropout, the detectors' anchor and proposal
    sampling) on one rank: set before each step, these draws do not depend on where a run resumed."""
    return seed_for(seed, 1, rank, iteration)   # 1: apart from the engines' per-image seeds (0, ...)
