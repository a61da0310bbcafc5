"""Plain library state dicts: what ``torchvision.models.<arch>()`` / ``timm.create_model`` load.

The canonical state dict already uses the library's names; the written file holds every backbone
parameter and buffer, so loading it into the full library model reports exactly the classifier
(``fc.*`` / ``classifier.1.*`` / ``head.*``) as missing and nothing else.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from checkpoints.backbones import TORCHVISION_RESNETS, is_timm
from core.io import atomic_torch_save


def to_torchvision(state: dict[str, torch.Tensor], arch: str) -> dict[str, torch.Tensor]:
    if is_timm(arch):
        raise ValueError(f"{arch} is a timm model; convert with --to timm")
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def to_timm(state: dict[str, torch.Tensor], arch: str) -> tuple[dict[str, torch.Tensor], str]:
    """``(state dict, timm model name)``. torchvision ResNets keep their names in timm's ``resnet*``."""
    if is_timm(arch):
        return {k: v.detach().cpu().clone() for k, v in state.items()}, arch[len("timm:"):]
    if arch in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
        # timm's ResNet uses torchvision's parameter names (conv1, bn1, layer1.0.downsample.0, fc).
        return {k: v.detach().cpu().clone() for k, v in state.items()}, arch
    raise ValueError(f"no timm equivalent with the same parameter names for {arch} "
                     f"(supported: timm:* models and {', '.join(TORCHVISION_RESNETS[:5])})")


def write_state_dict(path: str | os.PathLike, state: dict[str, torch.Tensor]) -> Path:
    return atomic_torch_save(state, path)
