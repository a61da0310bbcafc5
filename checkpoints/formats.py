"""Format detection and key mapping: any supported checkpoint into the canonical backbone.

How a file is read, in four steps:

1. ``safe_pickle.read_file`` reads the container safely (torch zip/legacy, plain pickle,
   safetensors), sniffed from the bytes, not the name.
2. The first entry of :data:`FORMATS` whose ``detect`` accepts the object wins. Its ``weights``
   picks the flat ``{key: tensor}`` dict out of the object (``state_dict``, ``teacher``,
   ``classy_state_dict.base_model.model.trunk``, ...); every other top-level entry is reported as
   dropped, with a reason.
3. Each key is either dropped by the format's ``drop`` table (``(prefix, reason)``: momentum
   encoder, queue, projection head, prototypes, ...), or stripped of the format's wrapper prefix
   (``keep``; the first prefix that occurs in the file is the one used) and renamed by the
   format's ordered ``rules``. Classifier keys (``fc.``, ``classifier.``, ``head.``) left after
   that are dropped as ``head``; keys outside the wrapper prefix are dropped and listed.
4. The arch comes from ``arch=`` or from matching the mapped keys and shapes against
   ``canonical_keys(arch)`` of the candidate archs; then ``strict_load`` requires every parameter
   and buffer with its shape (missing keys are named). The only keys ever filled in are BatchNorm
   ``num_batches_tracked`` counters that some formats (detectron2, VISSL) do not store; they are
   listed in ``LoadReport.filled``.

Adding a format is one entry in :data:`FORMATS` (tests parametrize over it).
"""

from __future__ import annotations

import argparse
import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from checkpoints.backbones import TORCHVISION_RESNETS, BackboneSpec, build_backbone, canonical_keys, is_timm
from checkpoints.errors import CheckpointError
from checkpoints.keymaps import DETECTRON2_TO_TORCHVISION, Rules, apply_rules, strip_prefix
from checkpoints.load import OWN_FORMAT, LoadReport, check_state_keys, strict_load
from checkpoints.safe_pickle import decode_json_metadata, read_file
from core.io import sha256_file

# Classifier / projection keys of a backbone model after prefix stripping: dropped as "head".
HEAD_PREFIXES = ("fc.", "classifier.", "head.", "head_dist.")
HEAD_REASON = "head (classifier / projection MLP)"

# Why top-level entries that are not the backbone's weights are not loaded.
TOP_LEVEL_REASONS = {
    "optimizer": "optimizer state", "optimizer_states": "optimizer state",
    "scaler": "AMP grad-scaler state", "amp": "AMP state", "lr_schedulers": "LR scheduler state",
    "scheduler": "LR scheduler state", "param_schedulers": "LR scheduler state",
    "student": "student network (DINO evaluates the teacher)",
    "dino_loss": "DINO loss state (center)", "model_ema": "momentum (EMA) encoder",
    "state_dict_ema": "EMA weights", "contrast": "memory bank / contrast state",
    "callbacks": "Lightning callbacks state", "loops": "Lightning loop state",
    "message_hub": "logger state", "__author__": "metadata", "matching_heuristics": "metadata",
}


# -- helpers over loaded objects ----------------------------------------------------------------
def _is_weights(v: Any) -> bool:
    return isinstance(v, (torch.Tensor, np.ndarray))


def _flat(d: Any) -> bool:
    """A non-empty ``{str: tensor or ndarray}`` dict."""
    return isinstance(d, dict) and bool(d) and all(isinstance(k, str) and _is_weights(v) for k, v in d.items())


def _any_key(state: Any, prefixes: tuple[str, ...]) -> bool:
    return isinstance(state, dict) and any(isinstance(k, str) and k.startswith(prefixes) for k in state)


def _get(obj: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(obj, dict) or p not in obj:
            return None
        obj = obj[p]
    return obj


def _plain(v: Any) -> Any:
    """Metadata as plain Python values (JSON-able): Namespaces become dicts, tensors are summarised."""
    if isinstance(v, argparse.Namespace):
        v = vars(v)
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (torch.Tensor, np.ndarray)):
        return v.item() if v.ndim == 0 else f"<array {tuple(v.shape)}>"
    if isinstance(v, np.generic):
        return v.item()
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return repr(v)


def _weights_in(obj: dict, *names: str) -> tuple[dict, dict[str, str]]:
    """The first ``obj[name]`` that holds weights (or ``obj`` itself if flat); others dropped."""
    for name in names:
        if isinstance(obj.get(name), dict):
            return obj[name], {k: TOP_LEVEL_REASONS.get(k, "not backbone weights (metadata)")
                               for k in obj if k != name}
    return obj, {}


def _state_dict_or_flat(obj: dict) -> tuple[dict, dict[str, str]]:
    return _weights_in(obj, "state_dict", "model") if not _flat(obj) else (obj, {})


# -- metadata readers (method, epochs, label_fraction and the file's own fields) ---------------
def _meta_moco(obj: dict, state: dict) -> dict:
    if _any_key(state, ("module.label_queue", "label_queue")):
        method = "unimoco"
    elif _any_key(state, ("module.encoder_q.fc.0.", "encoder_q.fc.0.")):
        method = "moco_v2"  # NOTE: inferred from the MLP head (v1 has a linear fc); PCL looks the same
    else:
        method = "moco_v1"
    # The official main_moco.py saves 'epoch': epoch + 1, i.e. the number of finished epochs.
    return {"method": method, "epochs": obj.get("epoch"), "arch": obj.get("arch")}


def _meta_moco_v3(obj: dict, state: dict) -> dict:
    return {"method": "moco_v3", "epochs": obj.get("epoch"), "arch": obj.get("arch")}


def _meta_dino(obj: dict, state: dict) -> dict:
    args = _plain(obj.get("args")) or {}
    return {"method": "dino", "epochs": obj.get("epoch"), "arch": args.get("arch"),
            "patch_size": args.get("patch_size"), "config": args or None}


def _meta_swav(obj: dict, state: dict) -> dict:
    multi = _any_key(state, ("module.prototypes.prototypes", "prototypes.prototypes"))
    return {"method": "deepcluster_v2/sela_v2" if multi else "swav", "epochs": obj.get("epoch")}


def _meta_pycontrast(obj: dict, state: dict) -> dict:
    opt = _plain(obj.get("opt")) or {}
    return {"method": opt.get("method") or "insdis/pirl/infomin", "epochs": obj.get("epoch"),
            "arch": opt.get("arch"), "config": opt or None}


def _meta_lightning(obj: dict, state: dict) -> dict:
    hp = _plain(obj.get("hyper_parameters")) or {}
    backbone = hp.get("backbone") if isinstance(hp.get("backbone"), dict) else {}
    return {"method": hp.get("method"), "epochs": obj.get("epoch"), "arch": backbone.get("name"),
            "global_step": obj.get("global_step"),
            "lightning_version": obj.get("pytorch-lightning_version"), "config": hp or None}


def _meta_mm(obj: dict, state: dict) -> dict:
    meta = _plain(obj.get("meta")) or {}
    ours = meta.get("mocobench") if isinstance(meta.get("mocobench"), dict) else {}
    out = {"epochs": meta.get("epoch"), "iteration": meta.get("iter")}
    out.update({k: v for k, v in meta.items() if k in ("mmselfsup_version", "mmpretrain_version",
                                                        "mmengine_version", "mmseg_version")})
    out.update(ours)
    return out


def _meta_vissl(obj: dict, state: dict) -> dict:
    return {"method": None, "phase_idx": obj.get("phase_idx"), "iteration": obj.get("iteration"),
            "epochs": (obj["train_phase_idx"] + 1) if isinstance(obj.get("train_phase_idx"), int) else None}


def _meta_detectron2(obj: dict, state: dict) -> dict:
    out = {"author": obj.get("__author__"), "matching_heuristics": obj.get("matching_heuristics")}
    out.update(_plain(obj.get("__mocobench__")) or {})
    return out


def _meta_own_pretrain(obj: dict, state: dict) -> dict:
    """pretrain/train.py's checkpoint: method, arch, config (resolved), step, epoch, batch_in_epoch."""
    config = _plain(obj.get("config")) or {}
    method = obj.get("method") or config.get("method")
    out = {"method": method, "arch": obj.get("arch") or config.get("arch"),
           "epochs": obj.get("epoch"), "planned_epochs": config.get("epochs"), "step": obj.get("step"),
           "batch_in_epoch": obj.get("batch_in_epoch"), "config": config or None}
    if method == "unimoco":
        out["label_fraction"] = config.get("label_fraction")
    return out


def _meta_safetensors(obj: dict, state: dict) -> dict:
    meta = obj["__metadata__"]
    out = {k: v for k, v in meta.items() if k not in ("meta", "spec", "format")}
    ours = decode_json_metadata(meta, "meta")
    if isinstance(ours, dict):
        out.update(ours)
    return out


def _no_meta(obj: dict, state: dict) -> dict:
    return {}


# -- the format table ------------------------------------------------------------------------
@dataclass(frozen=True)
class Format:
    name: str
    saved_by: str
    detect: Callable[[Any], bool]
    # the flat weights dict inside the object, and {top-level key: why it is not loaded}
    weights: Callable[[dict], tuple[dict, dict[str, str]]]
    keep: tuple[str, ...]  # wrapper prefixes of backbone keys; the first that occurs in the file is used
    drop: tuple[tuple[str, str], ...] = ()  # (prefix, reason) of keys that are not backbone weights
    rules: Rules = ()  # renames applied after the prefix is stripped
    metadata: Callable[[dict, dict], dict] = _no_meta


def _sd(obj):  # the weights of checkpoints that keep them under state_dict (or are flat)
    return _state_dict_or_flat(obj)[0] if isinstance(obj, dict) else None


MOMENTUM_DROPS = (("module.encoder_k.", "momentum encoder (encoder_k)"), ("encoder_k.", "momentum encoder (encoder_k)"),
                  ("module.queue", "queue (and its pointer)"), ("queue", "queue (and its pointer)"),
                  ("module.label_queue", "label queue"), ("label_queue", "label queue"))

FORMATS: dict[str, Format] = {
    "mocobench-pretrain": Format(
        "mocobench-pretrain", "this project's pretrain/ (RUN_DIR/checkpoint*.pth)",
        detect=lambda o: isinstance(o, dict) and isinstance(o.get("format"), str)
        and o["format"].startswith("mocobench") and o["format"] != OWN_FORMAT,
        weights=lambda o: _weights_in(o, "model", "state_dict"),
        keep=("module.encoder_q.", "encoder_q.", "module.backbone.", "backbone."),
        # MoCo / UniMoCo (pretrain/moco.py, unimoco.py) and SMoG (pretrain/smog.py) state
        drop=MOMENTUM_DROPS + (("backbone_k.", "momentum encoder (backbone_k)"),
                               ("projector_k.", "momentum projector"), ("projector.", "projection head"),
                               ("predictor.", "predictor MLP"), ("groups", "SMoG group features"),
                               ("bank", "SMoG feature bank (and its pointer/count)"),
                               ("iteration", "SMoG iteration counter")),
        metadata=_meta_own_pretrain),
    "moco": Format(
        "moco", "official MoCo v1/v2 (main_moco.py), UniMoCo, PCL (same layout)",
        detect=lambda o: _any_key(_sd(o), ("module.encoder_q.", "encoder_q.")),
        weights=_state_dict_or_flat,
        keep=("module.encoder_q.", "encoder_q."),
        drop=MOMENTUM_DROPS,
        metadata=_meta_moco),
    "moco-v3": Format(
        "moco-v3", "official MoCo v3 (ResNet and ViT)",
        detect=lambda o: _any_key(_sd(o), ("module.base_encoder.", "base_encoder.")),
        weights=_state_dict_or_flat,
        keep=("module.base_encoder.", "base_encoder."),
        drop=(("module.momentum_encoder.", "momentum encoder"), ("momentum_encoder.", "momentum encoder"),
              ("module.predictor.", "predictor MLP"), ("predictor.", "predictor MLP")),
        metadata=_meta_moco_v3),
    "dino": Format(
        "dino", "official DINO full checkpoints (teacher/student)",
        detect=lambda o: isinstance(o, dict) and isinstance(o.get("teacher"), dict)
        and _any_key(o["teacher"], ("backbone.", "module.backbone.")),
        weights=lambda o: _weights_in(o, "teacher"),
        keep=("module.backbone.", "backbone."),
        drop=(("module.head.", "DINO projection head"), ("head.", "DINO projection head")),
        metadata=_meta_dino),
    "swav": Format(
        "swav", "SwAV, DeepCluster-v2, SeLa-v2 (facebookresearch/swav)",
        detect=lambda o: _any_key(_sd(o), ("module.prototypes", "module.projection_head.")),
        weights=_state_dict_or_flat,
        keep=("module.",),
        drop=(("module.projection_head.", "projection head"), ("module.prototypes", "prototypes")),
        metadata=_meta_swav),
    "pycontrast": Format(
        "pycontrast", "InsDis, PIRL, InfoMin (PyContrast: model = encoder + head)",
        detect=lambda o: _any_key(_sd(o), ("module.encoder.", "encoder.")),
        weights=lambda o: _weights_in(o, "model", "state_dict"),
        keep=("module.encoder.", "encoder."),
        drop=(("module.head", "projection head"), ("head", "projection head"),
              ("module.jigsaw", "PIRL jigsaw head"), ("jigsaw", "PIRL jigsaw head")),
        metadata=_meta_pycontrast),
    "solo-learn": Format(
        "solo-learn", "solo-learn / PyTorch Lightning .ckpt",
        detect=lambda o: isinstance(o, dict) and isinstance(o.get("state_dict"), dict)
        and ("pytorch-lightning_version" in o or "hyper_parameters" in o),
        weights=lambda o: _weights_in(o, "state_dict"),
        keep=("backbone.",),
        drop=(("momentum_backbone.", "momentum encoder"), ("momentum_projector.", "momentum projector"),
              ("projector.", "projection head"), ("predictor.", "predictor MLP"),
              ("prototypes.", "prototypes"), ("classifier.", "online linear classifier"),
              ("momentum_classifier.", "online linear classifier (momentum)"),
              ("queue", "queue (and its pointer)")),
        metadata=_meta_lightning),
    "mmpretrain": Format(
        "mmpretrain", "mmselfsup / mmpretrain / mmseg / mmdet ({meta, state_dict})",
        detect=lambda o: isinstance(o, dict) and "meta" in o and isinstance(o.get("state_dict"), dict)
        and _any_key(o["state_dict"], ("backbone.",)),
        weights=lambda o: _weights_in(o, "state_dict"),
        keep=("backbone.",),
        drop=(("neck.", "neck (projection)"), ("head.", "head"), ("momentum_encoder.", "momentum encoder"),
              ("encoder_k.", "momentum encoder"), ("target_net.", "momentum encoder"),
              ("teacher.", "momentum encoder"), ("queue", "queue (and its pointer)"),
              ("data_preprocessor.", "data preprocessor buffers"), ("decode_head.", "decode head"),
              ("auxiliary_head.", "auxiliary head")),
        metadata=_meta_mm),
    "vissl": Format(
        "vissl", "VISSL (classy_state_dict -> base_model -> model -> trunk)",
        detect=lambda o: isinstance(_get(o, "classy_state_dict", "base_model", "model", "trunk"), dict),
        weights=lambda o: (o["classy_state_dict"]["base_model"]["model"]["trunk"],
                           {k: TOP_LEVEL_REASONS.get(k, "not backbone weights (metadata)")
                            for k in o if k != "classy_state_dict"}
                           | {"classy_state_dict.base_model.model.heads": "heads"}),
        keep=("_feature_blocks.", "module._feature_blocks.", "trunk._feature_blocks."),
        metadata=_meta_vissl),
    "detectron2": Format(
        "detectron2", "detectron2 .pkl / model_final.pth (stem., res2..res5)",
        detect=lambda o: isinstance(o, dict) and isinstance(o.get("model"), dict)
        and _any_key(o["model"], ("stem.", "res2.", "backbone.bottom_up.", "backbone.stem.", "backbone.res")),
        weights=lambda o: _weights_in(o, "model"),
        keep=("backbone.bottom_up.", "backbone.", ""),
        drop=(("proposal_generator.", "RPN"), ("roi_heads.", "ROI heads"), ("backbone.fpn_", "FPN"),
              ("pixel_mean", "input normalisation"), ("pixel_std", "input normalisation"),
              ("fc1000.", HEAD_REASON), ("stem.fc.", HEAD_REASON)),
        rules=DETECTRON2_TO_TORCHVISION,
        metadata=_meta_detectron2),
    "safetensors": Format(
        "safetensors", "safetensors files (torchvision/timm names, optional module. prefix)",
        detect=lambda o: isinstance(o, dict) and "__safetensors__" in o,
        weights=lambda o: (o["__safetensors__"], {}),
        keep=("module.", ""),
        metadata=_meta_safetensors),
    "torchvision/timm": Format(
        "torchvision/timm", "plain torchvision / timm state dicts (also DINO's and Barlow Twins' "
        "backbone-only releases, timm train checkpoints)",
        detect=lambda o: _flat(_sd(o)),
        weights=_state_dict_or_flat,
        keep=("module.", ""),
        metadata=lambda o, s: {"epochs": o.get("epoch"), "arch": o.get("arch")} if "state_dict" in o else {}),
}


def detect_format(obj: Any) -> Format | None:
    for fmt in FORMATS.values():
        if fmt.detect(obj):
            return fmt
    return None


# -- arch detection ------------------------------------------------------------------------------
CANDIDATE_ARCHS = (*TORCHVISION_RESNETS, "mobilenet_v2",
                   "timm:vit_small_patch16_224", "timm:vit_base_patch16_224", "timm:vit_tiny_patch16_224",
                   "timm:vit_large_patch16_224", "timm:vit_small_patch8_224", "timm:vit_base_patch8_224")

# Names other projects store in their checkpoints -> our arch names.
ARCH_ALIASES = {"vit_small": "timm:vit_small_patch16_224", "vit_base": "timm:vit_base_patch16_224",
                "vit_tiny": "timm:vit_tiny_patch16_224", "vit_large": "timm:vit_large_patch16_224",
                "deit_small": "timm:vit_small_patch16_224", "deit_tiny": "timm:vit_tiny_patch16_224"}


@functools.lru_cache(maxsize=None)
def _canonical(arch: str) -> dict[str, tuple[int, ...]]:
    return _canonical_keys(BackboneSpec(arch=arch))


def _canonical_keys(spec: BackboneSpec) -> dict[str, tuple[int, ...]]:
    """``canonical_keys(spec)`` with the initialisation skipped (see :class:`_SkipInit`)."""
    with _SkipInit(meta_only=True):
        return canonical_keys(spec)


# ViT candidates: embedding width and patch size (read from the names, to skip building the rest)
VIT_SHAPES = {"timm:vit_tiny_patch16_224": (192, 16), "timm:vit_small_patch16_224": (384, 16),
              "timm:vit_base_patch16_224": (768, 16), "timm:vit_large_patch16_224": (1024, 16),
              "timm:vit_small_patch8_224": (384, 8), "timm:vit_base_patch8_224": (768, 8)}


def _family_candidates(keys: dict[str, tuple]) -> tuple[str, ...]:
    if "layer1.0.conv1.weight" in keys:
        return TORCHVISION_RESNETS
    if "features.0.0.weight" in keys:
        return ("mobilenet_v2",)
    if "patch_embed.proj.weight" in keys:
        shape = keys["patch_embed.proj.weight"]  # C x 3 x P x P
        return tuple(a for a, (width, patch) in VIT_SHAPES.items() if (width, patch) == (shape[0], shape[-1]))
    return CANDIDATE_ARCHS


def _mismatch(arch: str, keys: dict[str, tuple]) -> int:
    want = _canonical(arch)
    # A ViT trained at another input size differs only in pos_embed's length (img_size fixes it).
    size_free = {"pos_embed"} if is_timm(arch) else set()
    missing = sum(1 for k in want if k not in keys and not k.endswith("num_batches_tracked"))
    wrong = sum(1 for k, s in want.items() if k in keys and keys[k] != s and k not in size_free)
    extra = sum(1 for k in keys if k not in want)
    return missing + wrong + extra


def guess_arch(keys: dict[str, tuple], hint: str | None = None) -> tuple[str | None, bool]:
    """``(arch, exact)``: the candidate whose canonical keys and shapes match; else the closest."""
    candidates = _family_candidates(keys)
    hint = ARCH_ALIASES.get(hint, hint) if isinstance(hint, str) else None
    if hint in candidates:
        candidates = (hint, *[c for c in candidates if c != hint])
    best, best_score = None, None
    for arch in candidates:
        score = _mismatch(arch, keys)
        if score == 0:
            return arch, True
        if best_score is None or score < best_score:
            best, best_score = arch, score
    # Only a near miss counts as "this arch with keys missing"; otherwise nothing matched.
    return (best, False) if best_score is not None and best_score <= max(8, len(keys) // 10) else (None, False)


# -- reading ------------------------------------------------------------------------------------
def _to_tensor(v: Any) -> torch.Tensor:
    return torch.from_numpy(np.asarray(v, order="C")) if isinstance(v, np.ndarray) else v  # keeps 0-d arrays 0-d


def map_keys(fmt: Format, state: dict) -> tuple[dict[str, torch.Tensor], dict[str, str], dict[str, str]]:
    """``(mapped, key_map, dropped)``: backbone candidates under canonical names, file key of each, drops."""
    keys = [k for k in state if isinstance(k, str)]
    # The wrapper prefix in use: the first of ``keep`` that some non-dropped key starts with.
    def dropped_reason(k):
        return next((reason for prefix, reason in fmt.drop if k.startswith(prefix)), None)

    live = [k for k in keys if dropped_reason(k) is None]
    prefix = next((p for p in fmt.keep if any(k.startswith(p) for k in live)), None)
    mapped, key_map, dropped = {}, {}, {}
    for k in keys:
        reason = dropped_reason(k)
        if reason is not None:
            dropped[k] = reason
            continue
        rest = strip_prefix(k, (prefix,)) if prefix is not None else None
        if rest is None:
            dropped[k] = f"outside the backbone prefix {prefix!r}"
            continue
        name = apply_rules(rest, fmt.rules)
        if name.startswith(HEAD_PREFIXES):
            dropped[k] = HEAD_REASON
            continue
        mapped[name] = _to_tensor(state[k])
        key_map[k] = name
    return mapped, key_map, dropped


def _vit_img_size(arch: str, mapped: dict) -> int | None:
    """Input size a ViT checkpoint was trained at, from its position embedding (1 x (1+HW) x C)."""
    pos, proj = mapped.get("pos_embed"), mapped.get("patch_embed.proj.weight")
    if not is_timm(arch) or pos is None or proj is None:
        return None
    side = int(round((pos.shape[1] - 1) ** 0.5))
    return side * proj.shape[-1] if side * side == pos.shape[1] - 1 else None


def _spec_for(fmt: Format, arch: str, meta: dict, mapped: dict, build_kwargs: dict) -> BackboneSpec:
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    if fmt.name == "mocobench-pretrain":  # the run's config says how the backbone was built
        spec = BackboneSpec(arch=arch, cifar_stem=bool(config.get("cifar_stem", False)),
                            img_size=config.get("img_size") if is_timm(arch) else None)
    else:
        extra = {}
        # NOTE: MoCo v3's ViT-S uses 12 attention heads (timm's vit_small has 6); same shapes, so
        # only the format says so. DINO's ViT-S has 6, like timm.
        if fmt.name == "moco-v3" and arch == "timm:vit_small_patch16_224":
            extra["timm_kwargs"] = {"num_heads": 12}
        spec = BackboneSpec(arch=arch, img_size=_vit_img_size(arch, mapped), extra=extra)
    if is_timm(arch) and spec.img_size is None and "patch_embed.proj.weight" in mapped:
        spec = BackboneSpec.from_dict(spec.to_dict() | {"img_size": 224})
    return BackboneSpec.from_dict(spec.to_dict() | build_kwargs) if build_kwargs else spec


def resolve(path: Path, *, arch: str | None = None, **build_kwargs):
    """``(spec, state, report)``: the file read, detected, mapped and checked; no weights loaded.

    ``state`` has exactly the backbone's canonical keys and shapes (else :class:`CheckpointError`
    naming the keys); ``report.num_params`` is still 0.
    """
    path = Path(path)
    obj, container = read_file(path)
    if isinstance(obj, dict) and obj.get("format") == OWN_FORMAT:
        return _resolve_own(path, obj["spec"], obj["state_dict"], dict(obj.get("meta") or {}),
                            OWN_FORMAT, container, build_kwargs)
    if isinstance(obj, dict) and "__safetensors__" in obj and obj["__metadata__"].get("format") == OWN_FORMAT:
        meta = obj["__metadata__"]
        return _resolve_own(path, decode_json_metadata(meta, "spec"), obj["__safetensors__"],
                            decode_json_metadata(meta, "meta") or {}, "safetensors", container, build_kwargs)
    fmt = detect_format(obj)
    if fmt is None:
        top = sorted(map(str, obj))[:12] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: unrecognised checkpoint layout (container {container}; "
                              f"top-level keys: {top}); known formats: {', '.join(FORMATS)}")
    state, top_dropped = fmt.weights(obj)
    if fmt.name == "detectron2" and any("_branch2a" in k or k.endswith("_w") for k in state):
        raise CheckpointError(f"{path}: a Caffe2-named detectron2 checkpoint (res2_0_branch2a_w, ...); "
                              "only detectron2-named weights (stem.conv1, res2.0.conv1.norm, ...) are read")
    metadata = {k: v for k, v in fmt.metadata(obj, state).items() if v is not None}
    mapped, key_map, dropped = map_keys(fmt, state)
    if not mapped:
        raise CheckpointError(f"{path}: detected as {fmt.name} ({fmt.saved_by}) but no backbone "
                              f"weights were found under {fmt.keep}")
    if arch is None and fmt.name == "mocobench-pretrain":
        arch = metadata.get("arch")
    if arch is None:
        shapes = {k: tuple(v.shape) for k, v in mapped.items()}
        arch, _ = guess_arch(shapes, metadata.get("arch"))
        if arch is None:
            raise CheckpointError(f"{path}: detected as {fmt.name}, but its {len(mapped)} backbone keys "
                                  f"match no known architecture ({', '.join(CANDIDATE_ARCHS)}); pass arch=")
    spec = _spec_for(fmt, arch, metadata, mapped, build_kwargs)
    expected = _canonical_keys(spec) if spec.extra or spec.cifar_stem or spec.img_size else _canonical(arch)
    filled = _fill_bn_counters(expected, mapped)
    check_state_keys(expected, mapped, f"{path} ({fmt.name}, arch {arch})")
    name = fmt.name
    if fmt.name == "torchvision/timm":
        name = "timm" if is_timm(arch) else "torchvision"
    report = LoadReport(path=str(path), name=path.stem, sha256=cached_sha256(path), format=name,
                        arch=arch, used_keys=sorted(mapped), dropped=top_dropped | dropped,
                        metadata=metadata, key_map=key_map, filled=filled, container=container)
    return spec, mapped, report


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int, inode: int) -> str:
    return sha256_file(path)


def cached_sha256(path: Path) -> str:
    """sha256 of the file, memoised on (path, size, mtime, inode): evaluating one checkpoint on
    several tasks in one process hashes it once."""
    st = os.stat(path)
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns, st.st_ino)


def _fill_bn_counters(expected: dict[str, tuple], mapped: dict) -> list[str]:
    """BatchNorm ``num_batches_tracked`` counters the file does not store (only used when BN's
    momentum is None) are set to 0, their initial value, and listed; every other key must be in
    the file."""
    filled = []
    for k in expected:
        if k.endswith("num_batches_tracked") and k not in mapped:
            mapped[k] = torch.zeros((), dtype=torch.long)
            filled.append(k)
    return filled


def _resolve_own(path: Path, spec_dict: dict, state: dict, meta: dict, fmt: str, container: str,
                 build_kwargs: dict):
    if not isinstance(spec_dict, dict) or "arch" not in spec_dict:
        raise CheckpointError(f"{path}: a {OWN_FORMAT} file without a valid spec")
    spec = BackboneSpec.from_dict(spec_dict)
    if build_kwargs:
        spec = BackboneSpec.from_dict(spec.to_dict() | build_kwargs)
    state = dict(state)
    check_state_keys(_canonical_keys(spec), state, str(path))
    report = LoadReport(path=str(path), name=path.stem, sha256=cached_sha256(path), format=fmt,
                        arch=spec.arch, used_keys=sorted(state), metadata=meta,
                        key_map={k: k for k in state}, container=container)
    return spec, state, report


def read_checkpoint(path: Path, *, arch: str | None = None, **build_kwargs):
    """``(backbone, report)``: :func:`resolve`, then build the backbone and load it strictly."""
    spec, state, report = resolve(path, arch=arch, **build_kwargs)
    backbone = build_loaded(spec, state, str(path))
    report.num_params = sum(p.numel() for p in backbone.net.parameters())
    return backbone, report


# Shape-preserving in-place ops that weight initialisers use.
_INIT_OPS = frozenset({"uniform_", "normal_", "fill_", "zero_", "copy_", "clamp_", "clamp_min_",
                       "clamp_max_", "erfinv_", "mul_", "add_", "sub_", "div_", "exp_", "sqrt_",
                       "abs_", "neg_", "random_", "bernoulli_", "exponential_", "log_normal_",
                       "masked_fill_",
                       # torch.nn.init functions (they take the tensor as ``tensor=``)
                       "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_", "xavier_normal_",
                       "trunc_normal_", "constant_", "zeros_", "ones_", "orthogonal_", "eye_", "dirac_"})


class _SkipInit(torch.overrides.TorchFunctionMode):
    """Replaces weight initialisation by zero-filling (on meta tensors only, or on all tensors).

    Used while building a model whose every parameter and persistent buffer is about to be
    replaced: random initialisation is wasted work there (timm's trunc_normal_ alone takes
    seconds for a ViT-B, and on the meta device it runs through slow Python reference kernels).
    """

    def __init__(self, meta_only: bool):
        super().__init__()
        self.meta_only = meta_only
        self.zeroed: set[int] = set()  # data pointers already zero-filled (initialisers chain ops)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") in _INIT_OPS:
            tensor = args[0] if args else kwargs.get("tensor")
            if isinstance(tensor, torch.Tensor) and (tensor.is_meta or not self.meta_only):
                # zeros, once, not the uninitialised memory: denormals in it make the shape
                # probe (a forward pass in Backbone.__init__) many times slower
                if not tensor.is_meta and tensor.data_ptr() not in self.zeroed:
                    self.zeroed.add(tensor.data_ptr())
                    tensor.detach().zero_()
                return tensor
        return func(*args, **kwargs)


def build_uninitialised(spec: BackboneSpec):
    """The backbone of ``spec`` with uninitialised weights (the stage-probe forward in
    ``Backbone.__init__`` only needs shapes), or ``None`` if it has non-persistent buffers, which
    a state dict does not cover and which must therefore be built normally."""
    with _SkipInit(meta_only=False):
        backbone = build_backbone(spec)
    if set(dict(backbone.net.named_buffers())) - set(backbone.net.state_dict()):
        return None
    return backbone


def build_loaded(spec: BackboneSpec, state: dict[str, torch.Tensor], source: str):
    """The backbone of ``spec`` holding ``state`` (already checked to have exactly its keys).

    The model is built without random initialisation and the file's tensors are assigned into it
    (no copy), cast to the model's dtypes (some releases are stored in fp16).
    """
    backbone = build_uninitialised(spec)
    if backbone is None:
        backbone = build_backbone(spec)
        strict_load(backbone, state, source)
        return backbone
    expected = backbone.net.state_dict()
    check_state_keys({k: tuple(v.shape) for k, v in expected.items()}, state, f"{source} ({spec.arch})")
    state = {k: v if v.dtype == expected[k].dtype else v.to(expected[k].dtype) for k, v in state.items()}
    backbone.net.load_state_dict(state, strict=True, assign=True)
    return backbone


def inspect_checkpoint(path: Path, *, arch: str | None = None, **build_kwargs) -> LoadReport:
    """The report of :func:`read_checkpoint` without loading weights (the backbone is built
    uninitialised, only to count parameters)."""
    spec, _, report = resolve(path, arch=arch, **build_kwargs)
    backbone = build_uninitialised(spec) or build_backbone(spec)
    report.num_params = sum(p.numel() for p in backbone.net.parameters())
    return report
