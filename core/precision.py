"""The one precision policy: which autocast a training or evaluation step runs under.

- Pretraining runs what its config says (``precision``: ``bf16`` autocast or ``fp32``), on any
  device: CPU autocast supports bf16 (the CPU presets choose fp32, which is faster on most CPUs).
- Evaluations (probes, detection, segmentation) run bf16 autocast on CUDA where their protocol
  allows it, and fp32 everywhere else, so CPU numbers are fp32 references.
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("bf16", "fp32")


def autocast(precision: str, device: torch.device | str):
    """bf16 autocast on ``device``'s type for ``bf16``; nothing for ``fp32``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def evaluation(device: torch.device | str, bf16: bool = True) -> str:
    """The precision of an evaluation on ``device``: bf16 on CUDA when ``bf16`` allows it, else fp32."""
    return "bf16" if bf16 and torch.device(device).type == "cuda" else "fp32"


def evaluation_autocast(device: torch.device | str, bf16: bool = True):
    """``autocast(evaluation(device, bf16), device)``."""
    return autocast(evaluation(device, bf16), device)
