"""What a checkpoint says about itself (method, epochs, arch, config), one reader per format.

Each reader takes ``(obj, state)``, the loaded object and its weights dict, and returns plain
Python values (JSON-able); ``None`` values are left out of the report.
"""

from __future__ import annotations

import argparse
import re
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


def moco_v3_linear(obj: dict, state: dict) -> dict:
    # main_lincls.py saves 'epoch': epoch + 1 of the linear classifier's training; the backbone's
    # pretraining epochs are not in the file
    return {"method": "moco_v3", "arch": obj.get("arch"), "linear_epochs": obj.get("epoch"),
            "linear_best_acc1": plain(obj.get("best_acc1"))}


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
    return {"method": hp.get("method"), "epochs": lightning_epochs(obj), "arch": backbone.get("name"),
            "global_step": obj.get("global_step"), "cifar_stem": solo_learn_stem(hp, state),
            "lightning_version": obj.get("pytorch-lightning_version"), "config": hp or None}


# The datasets for which solo-learn replaces its ResNets' stem (solo/methods/base.py: cfg.data.dataset in
# ("cifar10", "cifar100"): conv1 = Conv2d(3, 64, kernel_size=3, stride=1, padding=2), maxpool = Identity)
SOLO_LEARN_CIFAR_DATASETS = ("cifar10", "cifar100")
SOLO_LEARN_CIFAR_PADDING = 2


def solo_learn_stem(hp: dict, state: dict) -> dict | None:
    """solo-learn's CIFAR stem where the file's ResNet has a 3x3 conv1: ``{"padding", "source"}`` (the
    padding its conv1 had, and what says so); None for any other stem. NOTE: the common CIFAR ResNet
    (ours included) pads conv1 by 1; solo-learn pads by 2, which the weights' shapes do not show."""
    conv1 = state.get("backbone.conv1.weight")
    if conv1 is None or tuple(conv1.shape) != (64, 3, 3, 3):
        return None
    data = hp.get("data") if isinstance(hp.get("data"), dict) else {}
    dataset = data.get("dataset", hp.get("dataset"))  # cfg.data.dataset; before its Hydra configs, --dataset
    if dataset in SOLO_LEARN_CIFAR_DATASETS:
        source = f"hyper_parameters data.dataset {dataset!r}: solo-learn's CIFAR stem"
    elif dataset is None:
        source = ("conv1 is 3x3 and hyper_parameters name no dataset: solo-learn's CIFAR stem "
                  "(the only 3x3 stem solo-learn builds)")
    else:
        raise CheckpointError(f"its ResNet has a 3x3 conv1 (a CIFAR stem), but its hyper_parameters name the "
                              f"dataset {dataset!r}, for which solo-learn keeps the ImageNet stem; how the stem "
                              "was padded is unknown")
    return {"padding": SOLO_LEARN_CIFAR_PADDING,
            "stem": "3x3 conv, stride 1, padding 2, no max-pool", "source": source}


def _count(d: Any, key: str) -> int | None:
    v = d.get(key) if isinstance(d, dict) else None
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def lightning_epochs(obj: dict) -> int | None:
    """The epochs a Lightning checkpoint had finished.

    Since Lightning 1.6 ``epoch`` is the 0-based ``current_epoch``, which counts finished epochs
    *excluding* the one whose end hooks are running; the ModelCheckpoint saves at an epoch's end
    (and solo-learn's Checkpointer) happen exactly then, so a 400-epoch run's last file says 399.
    The loop state (``loops.fit_loop``) tells when the file was saved: an epoch started and not
    completed whose batches have all run (``epoch_loop.batch_progress.is_last_batch``, or
    ``epoch_progress`` processed past completed in the on_train_epoch_end hooks) is finished.
    Before 1.6 Lightning saved ``current_epoch + 1`` itself.
    """
    epoch = _count(obj, "epoch")
    if epoch is None:
        return None
    version = re.match(r"(\d+)\.(\d+)", str(obj.get("pytorch-lightning_version") or ""))
    if version and (int(version[1]), int(version[2])) < (1, 6):
        return epoch
    fit = obj.get("loops", {}).get("fit_loop") if isinstance(obj.get("loops"), dict) else None
    current = (fit.get("epoch_progress") or {}).get("current") if isinstance(fit, dict) else None
    started, processed, completed = (_count(current, k) for k in ("started", "processed", "completed"))
    batches = fit.get("epoch_loop.batch_progress") if isinstance(fit, dict) else None
    last_batch = batches.get("is_last_batch") if isinstance(batches, dict) else None
    if started is not None and completed is not None and started == completed:
        return completed      # between epochs: after fit, or before the first
    if (processed is not None and completed is not None and processed > completed) or last_batch is True:
        return epoch + 1      # the epoch's batches have all run: saved at its end
    if last_batch is False:
        return epoch          # saved during the epoch (every_n_train_steps, val_check_interval < 1)
    # NOTE: no loop state says when the file was saved (a stripped or hand-made file); we count the
    # epoch as finished, since the saves of ModelCheckpoint's defaults and solo-learn's Checkpointer
    # happen at epoch ends.
    return epoch + 1


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
