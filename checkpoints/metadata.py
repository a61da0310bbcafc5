"""What a checkpoint says about itself (method, epochs, arch, config), one reader per format.

Each reader takes ``(obj, state)``, the loaded object and its weights dict, and returns plain
Python values (JSON-able); ``None`` values are left out of the report.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch

from mocobench.checkpoints.errors import CheckpointError
from mocobench.checkpoints.safe_pickle import decode_json_metadata


def plain(v: Any) -> Any:
    """Metadata as plain Python values (JSON-able): Namespaces become dicts, tensors are summarised."""
    if isinstance(v, argparse.Namespace):
        v = vars(v)
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, (torch.Tensor, np.ndarray)):
        return v.item() if v.ndim == 0 else f"<array {tuple(v.shape)}>"
    if isinstance(v, np.generic):
        return v.item()
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return repr(v)


def settings(obj: dict, key: str) -> dict:
    """``obj[key]`` as a plain dict of settings (``{}`` when absent); a value of another type is
    refused (``CheckpointError`` naming the entry) rather than read as if it said nothing."""
    value = plain(obj.get(key))
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CheckpointError(f"its {key!r} entry is a {type(obj.get(key)).__name__}, not a dict of settings")
    return value


def any_key(state: Any, prefixes: tuple[str, ...]) -> bool:
    """``state`` is a dict with a key starting with one of ``prefixes``."""
    return isinstance(state, dict) and any(isinstance(k, str) and k.startswith(prefixes) for k in state)


def moco(obj: dict, state: dict) -> dict:
    if any_key(state, ("module.label_queue", "label_queue")):
        method = "unimoco"
    elif any_key(state, ("module.encoder_q.fc.0.", "encoder_q.fc.0.")):
        method = "moco_v2"  # NOTE: inferred from the MLP head (v1 has a linear fc); PCL looks the same
    else:
        method = "moco_v1"
    # The official main_moco.py saves 'epoch': epoch + 1, i.e. the number of finished epochs.
    return {"method": method, "epochs": obj.get("epoch"), "arch": obj.get("arch")}


def moco_v3(obj: dict, state: dict) -> dict:
    return {"method": "moco_v3", "epochs": obj.get("epoch"), "arch": obj.get("arch")}


def dino(obj: dict, state: dict) -> dict:
    args = settings(obj, "args")
    return {"method": "dino", "epochs": obj.get("epoch"), "arch": args.get("arch"),
            "patch_size": args.get("patch_size"), "config": args or None}


def swav(obj: dict, state: dict) -> dict:
    multi = any_key(state, ("module.prototypes.prototypes", "prototypes.prototypes"))
    return {"method": "deepcluster_v2/sela_v2" if multi else "swav", "epochs": obj.get("epoch")}


def pycontrast(obj: dict, state: dict) -> dict:
    opt = settings(obj, "opt")
    return {"method": opt.get("method") or "insdis/pirl/infomin", "epochs": obj.get("epoch"),
            "arch": opt.get("arch"), "config": opt or None}


def lightning(obj: dict, state: dict) -> dict:
    hp = settings(obj, "hyper_parameters")
    backbone = hp.get("backbone") if isinstance(hp.get("backbone"), dict) else {}
    return {"method": hp.get("method"), "epochs": obj.get("epoch"), "arch": backbone.get("name"),
            "global_step": obj.get("global_step"),
            "lightning_version": obj.get("pytorch-lightning_version"), "config": hp or None}


def mm(obj: dict, state: dict) -> dict:
    meta = settings(obj, "meta")
    ours = meta.get("mocobench") if isinstance(meta.get("mocobench"), dict) else {}
    out = {"epochs": meta.get("epoch"), "iteration": meta.get("iter")}
    out.update({k: v for k, v in meta.items() if k in ("mmselfsup_version", "mmpretrain_version",
                                                        "mmengine_version", "mmseg_version")})
    out.update(ours)
    return out


def vissl(obj: dict, state: dict) -> dict:
    return {"method": None, "phase_idx": obj.get("phase_idx"), "iteration": obj.get("iteration"),
            "epochs": (obj["train_phase_idx"] + 1) if isinstance(obj.get("train_phase_idx"), int) else None}


def detectron2(obj: dict, state: dict) -> dict:
    out = {"author": obj.get("__author__"), "matching_heuristics": obj.get("matching_heuristics")}
    out.update(settings(obj, "__mocobench__"))
    return out


def own_pretrain(obj: dict, state: dict) -> dict:
    """pretrain/train.py's checkpoint: method, arch, config (resolved), step, epoch, batch_in_epoch."""
    config = settings(obj, "config")
    method = obj.get("method") or config.get("method")
    out = {"method": method, "arch": obj.get("arch") or config.get("arch"),
           "epochs": obj.get("epoch"), "planned_epochs": config.get("epochs"), "step": obj.get("step"),
           "batch_in_epoch": obj.get("batch_in_epoch"), "config": config or None}
    if method == "unimoco":
        out["label_fraction"] = config.get("label_fraction")
    return out


def own_backbone(obj: dict, state: dict) -> dict:
    """An exported backbone (``mocobench.checkpoints.write.save_backbone``): its ``meta`` as written."""
    return settings(obj, "meta")


def safetensors(obj: dict, state: dict) -> dict:
    meta = obj["__metadata__"]
    out = {k: v for k, v in meta.items() if k not in ("meta", "spec", "format")}
    ours = decode_json_metadata(meta, "meta")
    if isinstance(ours, dict):
        out.update(ours)
    return out


def plain_state_dict(obj: dict, state: dict) -> dict:
    """torchvision/timm files: timm's train checkpoints keep ``epoch`` and ``arch`` beside the weights."""
    return {"epochs": obj.get("epoch"), "arch": obj.get("arch")} if "state_dict" in obj else {}


def none(obj: dict, state: dict) -> dict:
    return {}
