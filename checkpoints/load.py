"""``load_backbone``: any checkpoint file (or ``random:ARCH``) into a canonical :class:`Backbone`.

This first version reads this project's own backbone files, ``random:ARCH`` and plain
torchvision/timm state dicts; the format table in ``checkpoints/formats.py`` extends it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from checkpoints.backbones import Backbone, BackboneSpec, build_backbone
from mocobench.io import atomic_torch_save, sha256_file

OWN_FORMAT = "mocobench-backbone"
OWN_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file and the problem."""


@dataclass
class LoadReport:
    """What :func:`load_backbone` did; ``record_fields()`` is what a result record stores."""

    path: str
    name: str
    sha256: str | None
    format: str
    arch: str
    used_keys: list[str] = field(default_factory=list)
    # key in the file -> why it was not loaded ("head", "momentum encoder", "queue", "optimizer", ...)
    dropped: dict[str, str] = field(default_factory=dict)
    # what the checkpoint says about itself: method, epochs, label_fraction, config, ...
    metadata: dict[str, Any] = field(default_factory=dict)

    def record_fields(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "sha256": self.sha256, "format": self.format,
                "arch": self.arch, "method": self.metadata.get("method"),
                "epochs": self.metadata.get("epochs"),
                "label_fraction": self.metadata.get("label_fraction")}


def save_backbone(path: str | os.PathLike, backbone: Backbone, meta: dict[str, Any]) -> Path:
    """Write ``backbone`` in this project's own format (loadable with ``weights_only=True``).

    ``meta`` holds plain Python values only: method, epochs, label_fraction, config, step...
    """
    obj = {"format": OWN_FORMAT, "version": OWN_VERSION, "spec": backbone.spec.to_dict(),
           "state_dict": {k: v.detach().cpu().clone() for k, v in backbone.net.state_dict().items()},
           "meta": dict(meta)}
    return atomic_torch_save(obj, path)


def strict_load(backbone: Backbone, state: dict[str, torch.Tensor], source: str) -> list[str]:
    """Copy ``state`` into ``backbone.net``; every parameter and buffer must be there with its shape."""
    expected = backbone.net.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        shown = ", ".join(missing[:20]) + (f", ... ({len(missing)} in all)" if len(missing) > 20 else "")
        raise CheckpointError(f"{source}: backbone keys missing from the checkpoint: {shown}")
    wrong = [f"{k} (file {tuple(state[k].shape)}, backbone {tuple(v.shape)})"
             for k, v in expected.items() if tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        raise CheckpointError(f"{source}: shape mismatch for {', '.join(wrong[:10])}")
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise CheckpointError(f"{source}: keys not in a {backbone.arch} backbone: {', '.join(unexpected[:20])}")
    backbone.net.load_state_dict(state, strict=True)
    return sorted(state)


def load_backbone(path_or_name: str | os.PathLike, *, arch: str | None = None,
                  **build_kwargs) -> tuple[Backbone, LoadReport]:
    """Load a backbone strictly; ``random:ARCH[:SEED]`` builds a seeded random one.

    ``build_kwargs`` (``dilation``, ``cifar_stem``, ``img_size``) override how the backbone is built
    (segmentation asks for a dilated res5, for instance); they never change parameter shapes.
    """
    text = str(path_or_name)
    if text.startswith("random:"):
        parts = text.split(":")
        if parts[1] == "timm":  # random:timm:vit_small_patch16_224[:seed]
            rand_arch, rest = "timm:" + parts[2], parts[3:]
        else:
            rand_arch, rest = parts[1], parts[2:]
        seed = int(rest[0]) if rest else 0
        backbone = build_backbone(rand_arch, seed=seed, **build_kwargs)
        report = LoadReport(path=text, name=f"random-{rand_arch.replace(':', '-')}", sha256=None,
                            format="random", arch=rand_arch,
                            metadata={"method": "random-init", "epochs": 0, "seed": seed})
        return backbone, report
    from checkpoints.formats import read_checkpoint

    return read_checkpoint(Path(text), arch=arch, **build_kwargs)
