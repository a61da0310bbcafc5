"""safetensors export: the canonical state dict plus this project's spec and metadata.

Header metadata (strings only): ``format = "mocobench-backbone"``, ``spec`` and ``meta`` as JSON,
``arch``. ``checkpoints.load_backbone`` reads such a file back exactly like an exported backbone;
any other safetensors reader sees plain torchvision/timm names.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from checkpoints.load import OWN_FORMAT
from core.io import atomic_write_bytes


def write_safetensors(path: str | os.PathLike, state: dict[str, torch.Tensor], spec: dict,
                      meta: dict | None = None) -> Path:
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    header = {"format": OWN_FORMAT, "arch": str(spec.get("arch")),
              "spec": json.dumps(spec, sort_keys=True),
              "meta": json.dumps(meta or {}, sort_keys=True, default=repr)}
    return atomic_write_bytes(path, save(tensors, metadata=header))
