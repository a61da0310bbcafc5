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
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return _plain_state_dict(path, obj, arch, build_kwargs)
    raise CheckpointError(f"{path}: unrecognised checkpoint layout (top-level keys: "
                          f"{sorted(obj)[:10] if isinstance(obj, dict) else type(obj).__name__})")


# Classifier keys of plain library state dicts: dropped as "head".
HEAD_PREFIXES = ("fc.", "classifier.", "head.", "head_dist.")


def _guess_arch(state: dict) -> str | None:
    from checkpoints.backbones import TORCHVISION_RESNETS, canonical_keys

    body = {k: tuple(v.shape) for k, v in state.items() if not k.startswith(HEAD_PREFIXES)}
    for arch in (*TORCHVISION_RESNETS, "mobilenet_v2"):
        if canonical_keys(arch) == body:
            return arch
    return None


def _plain_state_dict(path: Path, state: dict, arch: str | None, build_kwargs: dict):
    arch = arch or _guess_arch(state)
    if arch is None:
        raise CheckpointError(f"{path}: a plain state dict whose keys match no known architecture; "
                              "pass arch= explicitly")
    backbone = build_backbone(arch, **build_kwargs)
    dropped = {k: "head" for k in state if k.startswith(HEAD_PREFIXES) and k not in backbone.net.state_dict()}
    body = {k: v for k, v in state.items() if k not in dropped}
    used = strict_load(backbone, body, str(path))
    fmt = "timm" if arch.startswith("timm:") else "torchvision"
    return backbone, LoadReport(path=str(path), name=path.stem, sha256=sha256_file(path), format=fmt,
                                arch=arch, used_keys=used, dropped=dropped)
