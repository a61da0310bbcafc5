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
from checkpoints.errors import CheckpointError
from core.io import atomic_torch_save

OWN_FORMAT = "mocobench-backbone"
OWN_VERSION = 1


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
    # key in the file -> canonical key it was loaded into
    key_map: dict[str, str] = field(default_factory=dict)
    # canonical keys the file does not store and that were set to their initial value (only
    # BatchNorm ``num_batches_tracked`` counters, which detectron2/VISSL files omit)
    filled: list[str] = field(default_factory=list)
    container: str = ""  # torch-zip | torch-legacy | pickle | safetensors
    num_params: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Everything, as plain values (``mocobench inspect --json``)."""
        return {"path": self.path, "name": self.name, "sha256": self.sha256, "format": self.format,
                "container": self.container, "arch": self.arch, "num_params": self.num_params,
                "used_keys": list(self.used_keys), "key_map": dict(self.key_map),
                "dropped": dict(self.dropped), "filled": list(self.filled),
                "metadata": dict(self.metadata)}

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


def check_state_keys(expected: dict[str, tuple[int, ...]], state: dict[str, Any], source: str) -> None:
    """Raise :class:`CheckpointError` unless ``state`` has exactly ``expected``'s keys and shapes."""
    missing = sorted(set(expected) - set(state))
    if missing:
        shown = ", ".join(missing[:20]) + (f", ... ({len(missing)} in all)" if len(missing) > 20 else "")
        raise CheckpointError(f"{source}: backbone keys missing from the checkpoint: {shown}")
    wrong = [f"{k} (file {tuple(state[k].shape)}, backbone {tuple(shape)})"
             for k, shape in expected.items() if tuple(state[k].shape) != tuple(shape)]
    if wrong:
        raise CheckpointError(f"{source}: shape mismatch for {', '.join(wrong[:10])}")
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise CheckpointError(f"{source}: keys not in the backbone: {', '.join(unexpected[:20])}")


def strict_load(backbone: Backbone, state: dict[str, torch.Tensor], source: str) -> list[str]:
    """Copy ``state`` into ``backbone.net``; every parameter and buffer must be there with its shape."""
    expected = {k: tuple(v.shape) for k, v in backbone.net.state_dict().items()}
    check_state_keys(expected, state, f"{source} ({backbone.arch})")
    backbone.net.load_state_dict(state, strict=True)
    return sorted(state)


def load_backbone(path_or_name: str | os.PathLike, *, arch: str | None = None,
                  **build_kwargs) -> tuple[Backbone, LoadReport]:
    """Load a backbone strictly; ``random:ARCH[:SEED]`` builds a seeded random one.

    ``path_or_name`` is a file (any format of ``checkpoints/formats.py``, detected from its
    contents), a zoo name (``moco_v2_800ep``; the file must have been fetched with
    ``mocobench fetch NAME``), or ``random:ARCH[:SEED]``. ``arch`` overrides arch detection.

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

    path, entry = resolve_name(text)
    backbone, report = read_checkpoint(path, arch=arch or (entry.arch if entry else None), **build_kwargs)
    if entry is not None:
        annotate_zoo(report, entry)
    return backbone, report


def resolve_name(text: str):
    """``(path, zoo entry or None)`` for a file path or a zoo name (which must be fetched already)."""
    path = Path(text)
    if path.exists() or os.sep in text or "/" in text:
        return path, None
    from checkpoints.zoo import ZOO_PATH, cached_path, load_zoo

    zoo = load_zoo()
    if text not in zoo:
        raise CheckpointError(f"{text}: no such file, and not a checkpoint name in {ZOO_PATH} "
                              f"(known: {', '.join(zoo)})")
    entry = zoo[text]
    cached = cached_path(entry)
    if not cached.is_file():
        raise CheckpointError(f"{text}: zoo checkpoint not downloaded yet; run "
                              f"'mocobench fetch {text}' (it goes to {cached})")
    return cached, entry


def annotate_zoo(report: LoadReport, entry) -> None:
    report.name = entry.name
    report.metadata = {"method": entry.method, "epochs": entry.epochs} | report.metadata
    report.metadata["zoo"] = entry.to_dict()
