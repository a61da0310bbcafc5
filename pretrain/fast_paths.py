"""The training step's fast paths: bf16 autocast (the policy is ``core/precision.py``), channels_last
and ``torch.compile``, on any device.

Each takes effect wherever the config asks for it: CPU autocast supports bf16, and inductor
compiles for the CPU with the system's C compiler, so ``tests/pretrain/test_fast_paths.py`` runs
all three on CPU against fp32 eager and the GPU runs code that has been executed before. (They
used to be silently skipped off the GPU.) The CPU presets (``TINY``) turn bf16 and channels_last off:
on most CPUs both are slower than fp32 NCHW.
"""

from __future__ import annotations

import torch
from torch import nn

def memory_format(cfg) -> torch.memory_format:
    """The layout of the model's weights and of the input views."""
    return torch.channels_last if cfg.channels_last else torch.contiguous_format


def compile_in_place(model: nn.Module) -> None:
    """``torch.compile`` each top-level sub-module in place: parameter names (and so checkpoints)
    do not change, and the no-grad state updates between the sub-modules stay eager."""
    for child in model.children():
        child.compile()
