"""Every backbone file the suite writes (atomically, through ``mocobench.core.io``), read back by ``load.py``.

- :func:`save_backbone`: this project's own format, a torch file loadable with ``weights_only=True``:
  ``{"format": "mocobench-backbone", "version", "spec", "state_dict", "meta"}``.
- :func:`write_safetensors`: the same content as safetensors; header metadata (strings only):
  ``format``, ``arch``, ``spec`` and ``meta`` as JSON. Any other safetensors reader sees plain
  torchvision/timm names.
- :func:`write_state_dict` with :func:`to_torchvision` / :func:`to_timm`: what
  ``torchvision.models.<arch>()`` / ``timm.create_model`` load. The canonical state dict already
  uses the library's names and holds every backbone parameter and buffer, so loading it into the
  full library model reports exactly the classifier (``fc.*`` / ``classifier.1.*`` / ``head.*``)
  as missing and nothing else.

- :func:`save_training_state`: pretrain/'s resumable checkpoint (``load_backbone`` reads its
  online encoder).

Engine-specific files (detectron2 ``.pkl``, mmseg checkpoints) are written by their adapters in
``transfer/adapters/``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from mocobench.checkpoints.backbones import TORCHVISION_RESNETS, Backbone, is_timm
from mocobench.checkpoints.formats import OWN_FORMAT, OWN_VERSION, PRETRAIN_FORMAT
from mocobench.core.io import atomic_torch_save, atomic_write_bytes


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def save_backbone(path: str | os.PathLike, backbone: Backbone, meta: dict[str, Any]) -> Path:
    """Write ``backbone`` in this project's own format.

    ``meta`` holds plain Python values only: method, epochs, label_fraction, config, step...
    """
    obj = {"format": OWN_FORMAT, "version": OWN_VERSION, "spec": backbone.spec.to_dict(),
           "state_dict": _cpu(backbone.net.state_dict()), "meta": dict(meta)}
    return atomic_torch_save(obj, path)


def save_training_state(path: str | os.PathLike, state: dict[str, Any], version: int) -> Path:
    """``{"format": "mocobench-pretrain", "version": version, **state}``; ``state`` holds method,
    arch, config, step, epoch, batch_in_epoch and every tensor a resumed run needs (model,
    optimizer, RNG), all loadable with ``weights_only=True``."""
    return atomic_torch_save({"format": PRETRAIN_FORMAT, "version": version, **state}, path)


def write_safetensors(path: str | os.PathLike, state: dict[str, torch.Tensor], spec: dict,
                      meta: dict | None = None) -> Path:
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    header = {"format": OWN_FORMAT, "arch": str(spec.get("arch")),
              "spec": json.dumps(spec, sort_keys=True),
              "meta": json.dumps(meta or {}, sort_keys=True, default=repr)}
    return atomic_write_bytes(path, save(tensors, metadata=header))


def to_torchvision(state: dict[str, torch.Tensor], arch: str) -> dict[str, torch.Tensor]:
    if is_timm(arch):
        raise ValueError(f"{arch} is a timm model; convert with --to timm")
    return _cpu(state)


def to_timm(state: dict[str, torch.Tensor], arch: str) -> tuple[dict[str, torch.Tensor], str]:
    """``(state dict, timm model name)``. torchvision ResNets keep their names in timm's ``resnet*``."""
    if is_timm(arch):
        return _cpu(state), arch[len("timm:"):]
    if arch in TORCHVISION_RESNETS[:5]:
        # timm's ResNet uses torchvision's parameter names (conv1, bn1, layer1.0.downsample.0, fc).
        return _cpu(state), arch
    raise ValueError(f"no timm equivalent with the same parameter names for {arch} "
                     f"(supported: timm:* models and {', '.join(TORCHVISION_RESNETS[:5])})")


def write_state_dict(path: str | os.PathLike, state: dict[str, torch.Tensor]) -> Path:
    return atomic_torch_save(state, path)
