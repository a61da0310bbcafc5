"""Format detection and key mapping for third-party checkpoints (first version: own + plain)."""

from __future__ import annotations

from pathlib import Path

import torch

from checkpoints.backbones import BackboneSpec, build_backbone
from checkpoints.load import OWN_FORMAT, CheckpointError, LoadReport, strict_load
from mocobench.io import sha256_file


def read_checkpoint(path: Path, *, arch: str | None = None, **build_kwargs):
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint ({type(e).__name__}: {e})") from None
    if isinstance(obj, dict) and obj.get("format") == OWN_FORMAT:
        spec = BackboneSpec.from_dict(obj["spec"])
        if build_kwargs:
            spec = BackboneSpec.from_dict(spec.to_dict() | {k: v for k, v in build_kwargs.items()})
        backbone = build_backbone(spec)
        used = strict_load(backbone, obj["state_dict"], str(path))
        return backbone, LoadReport(path=str(path), name=path.stem, sha256=sha256_file(path),
                                    format=OWN_FORMAT, arch=spec.arch, used_keys=used,
                                    metadata=dict(obj.get("meta") or {}))
    raise CheckpointError(f"{path}: unrecognised checkpoint layout (top-level keys: "
                          f"{sorted(obj)[:10] if isinstance(obj, dict) else type(obj).__name__})")
