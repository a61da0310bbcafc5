"""The input convention a checkpoint's weights expect, and how it is applied.

Every probe and engine here feeds RGB pixels in [0, 1], normalised with ``backbone.mean`` and
``backbone.std``. Most checkpoints expect torchvision's convention (RGB, ImageNet mean/std), but
detectron2's MSRA-style weights expect BGR pixels on a 0-255 scale minus their own means, with no
division. Such weights are made to take our input exactly: the stem convolution's input channels
are reversed (BGR -> RGB) and ``mean``/``std`` become the file's, reordered to RGB and divided by
255. The features of an image are then those the original weights give the original input.

The convention comes from, in order: the file's own ``pixel_mean``/``pixel_std`` (detectron2 keeps
them in the model; the channel order follows from the means, as ImageNet's blue mean, 103.5, is the
smallest of the three), the format's known convention (MoCo's and torchvision's detectron2
conversions are RGB with ImageNet's statistics), or the default (torchvision's), said as such.

timm weights carry their own statistics (``pretrained_cfg``: many are normalised with mean and std
0.5, or CLIP's), which a state dict does not store. For a timm architecture in a plain state dict or
safetensors file they come from, in order: the ``config.json`` that timm's Hugging Face releases
keep beside the weights (the file's own metadata), or timm's ``pretrained_cfg`` of the pretrained tag
the arch names (``timm:vit_small_patch16_224.augreg_in21k``). An arch without a tag says nothing:
``vit_small_patch16_224``'s default tag is normalised with 0.5, but DINO's and MoCo v3's releases of
the same architecture with ImageNet's statistics. The eval crop ratio and interpolation of that
``pretrained_cfg`` go on the card; the probes keep their protocol's resize and crop (the papers'
linear protocols fix them), and say so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mocobench.checkpoints.backbones import IMAGENET_MEAN, IMAGENET_STD

RGB_AUTHORS = {"MOCO": "MoCo's convert-pretrain-to-detectron2 (RGB, ImageNet mean/std)",
               "mocobench": "mocobench convert --to detectron2 (RGB, ImageNet mean/std)",
               "torchvision": "detectron2's convert-torchvision-to-d2 (RGB, ImageNet mean/std)"}
STEM_KEYS = ("conv1.weight",)   # the canonical ResNet stem; the one layer that sees the channels


MSRA_MEAN_BGR = [103.53, 116.28, 123.675]   # detectron2's MSRA ImageNet models: BGR, 0-255, no division
GIVEN = ("rgb", "bgr255")                    # --input-convention


def given_convention(name: str) -> dict[str, Any]:
    """``--input-convention``: ``rgb`` (torchvision's) or ``bgr255`` (detectron2's MSRA models)."""
    if name == "rgb":
        return torchvision_convention("given (--input-convention rgb)")
    if name == "bgr255":
        return {"channels": "BGR", "scale": "0-255", "mean": list(MSRA_MEAN_BGR), "std": [1.0, 1.0, 1.0],
                "source": "given (--input-convention bgr255: detectron2's MSRA convention)"}
    raise ValueError(f"--input-convention {name!r}: one of {', '.join(GIVEN)}")


class Undecided(ValueError):
    """The file does not say which input convention its weights expect."""


def torchvision_convention(source: str) -> dict[str, Any]:
    return {"channels": "RGB", "scale": "0-1", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
            "source": source}


def detectron2_convention(obj: dict, state: dict) -> dict[str, Any]:
    """The convention of a detectron2 checkpoint ``obj`` (``state``: its model dict, before mapping)."""
    mean, std = state.get("pixel_mean"), state.get("pixel_std")
    if mean is not None:
        mean = [float(v) for v in torch.as_tensor(mean).flatten()]
        std = [float(v) for v in torch.as_tensor(std).flatten()] if std is not None else [1.0, 1.0, 1.0]
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"pixel_mean {mean} / pixel_std {std}: expected three channels and a positive std")
        scale = "0-255" if max(mean) > 1.5 else "0-1"
        return {"channels": "BGR" if mean[0] < mean[2] else "RGB", "scale": scale, "mean": mean, "std": std,
                "source": "the file's pixel_mean/pixel_std (channel order from the means: ImageNet's blue mean is "
                          "the smallest)"}
    author = obj.get("__author__")
    if author in RGB_AUTHORS:
        return torchvision_convention(f"the format's known convention: __author__ {author!r}, {RGB_AUTHORS[author]}")
    raise Undecided(f"a detectron2 checkpoint with no pixel_mean/pixel_std and no known __author__ "
                    f"({author!r}): its input convention cannot be decided (detectron2's own MSRA models are BGR 0-255, "
                    "converted torchvision ones RGB); say which with --input-convention rgb|bgr255, and for a "
                    "ResNet-50 or deeper where its stride is with --stride-in-1x1 true|false (MSRA models put it in "
                    "the 1x1 conv, torchvision ones in the 3x3; the weights' shapes are the same), to mocobench eval, "
                    "preflight, inspect or convert")


def apply(convention: dict[str, Any], state: dict[str, torch.Tensor], arch: str) -> tuple[tuple, tuple]:
    """Make ``state`` take RGB input in [0, 1] (reversing the stem's channels for BGR weights, in place)
    and return the ``(mean, std)`` that normalise it for these weights."""
    mean, std = list(convention["mean"]), list(convention["std"])
    if convention["channels"] == "BGR":
        stem = next((k for k in STEM_KEYS if k in state), None)
        if stem is None:
            raise ValueError(f"BGR weights of {arch}: no stem convolution ({', '.join(STEM_KEYS)}) to reverse the "
                             "channels of; only ResNets are known to come in the BGR convention")
        state[stem] = state[stem].flip(1)
        mean, std = mean[::-1], std[::-1]
    if convention["scale"] == "0-255":
        mean, std = [m / 255 for m in mean], [s / 255 for s in std]
    return tuple(mean), tuple(std)


def is_torchvision(mean, std) -> bool:
    """Whether ``mean``/``std`` are torchvision's ImageNet statistics (what the engines' configs assume)."""
    return all(abs(a - b) < 1e-6 for a, b in zip([*mean, *std], [*IMAGENET_MEAN, *IMAGENET_STD]))


def _from_timm_cfg(cfg: dict, source: str) -> dict[str, Any]:
    mean, std = cfg.get("mean"), cfg.get("std")
    if not (isinstance(mean, (list, tuple)) and isinstance(std, (list, tuple)) and len(mean) == 3 and len(std) == 3
            and all(isinstance(v, (int, float)) for v in [*mean, *std]) and min(std) > 0):
        raise ValueError(f"{source}: mean {mean!r} / std {std!r}: expected three numbers each, std positive")
    conv = {"channels": "RGB", "scale": "0-1", "mean": [float(v) for v in mean], "std": [float(v) for v in std],
            "source": source}
    if cfg.get("crop_pct") is not None:
        conv["eval_crop_pct"] = float(cfg["crop_pct"])
    if cfg.get("interpolation"):
        conv["eval_interpolation"] = str(cfg["interpolation"])
    return conv


def timm_convention(path: Path, arch: str) -> dict[str, Any] | None:
    """The convention of timm weights in ``path`` loaded as ``arch`` (``timm:NAME[.TAG]``), from the
    ``config.json`` beside the file or the arch's pretrained tag; None when neither states one.
    A ``config.json`` that describes another architecture is an error, not a guess."""
    name = arch.removeprefix("timm:")
    cfg_file = Path(path).parent / "config.json"
    if cfg_file.is_file():
        try:
            cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{cfg_file} (beside the weights): not readable JSON ({e}); move it away or fix it")
        pretrained = cfg.get("pretrained_cfg") if isinstance(cfg, dict) else None
        if isinstance(pretrained, dict):
            stated = cfg.get("architecture")
            if stated and str(stated).split(".")[0] != name.split(".")[0]:
                raise ValueError(f"{cfg_file} (beside the weights) describes {stated!r}, but the weights were "
                                 f"loaded as {arch}: its input convention may not be theirs; give --arch timm:{stated} "
                                 f"or move the config away")
            tag = f" {pretrained['tag']}" if pretrained.get("tag") else ""
            return _from_timm_cfg(pretrained, f"the file's config.json (timm pretrained_cfg{tag})")
    if "." in name:
        from timm.models import get_pretrained_cfg

        try:
            found = get_pretrained_cfg(name)
        except RuntimeError:   # timm: "Invalid pretrained tag"
            found = None
        if found is None:
            raise ValueError(f"--arch {arch}: timm has no pretrained tag {name!r}, so its input convention is unknown")
        return _from_timm_cfg(found.to_dict(), f"timm's pretrained_cfg of {name} (the tag the arch names)")
    return None
