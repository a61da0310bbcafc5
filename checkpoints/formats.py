"""The format table: every checkpoint layout we read, as one :class:`Format` entry each.

How a file is read (``checkpoints/load.py``):

1. ``safe_pickle.read_file`` reads the container safely (torch zip/legacy, plain pickle,
   safetensors), sniffed from the bytes, not the name.
2. The first entry of :data:`FORMATS` whose ``detect`` accepts the object wins. Its ``weights``
   picks the flat ``{key: tensor}`` dict out of the object (``state_dict``, ``teacher``,
   ``classy_state_dict.base_model.model.trunk``, ...); every other top-level entry is reported as
   dropped, with a reason.
3. ``keymaps.map_keys`` drops keys by the format's ``drop`` table (momentum encoder, queue,
   projection head, prototypes, ...), strips its wrapper prefix (``keep``), renames by its ordered
   ``rules`` and drops classifier keys (``heads``). A key that is neither dropped by a rule nor
   under the prefix is refused, as are two keys that map to one name.
4. The arch and build options come from the file when it states them (``spec``: our own files),
   else from ``arch_guess`` on the mapped keys and shapes; then every parameter and buffer must be
   there with its shape (``strict.py``).

Adding a format is one entry in :data:`FORMATS`: ``load.resolve`` only calls the entry's fields
(tests parametrize over the table).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from mocobench.checkpoints import metadata as meta
from mocobench.checkpoints.backbones import is_timm, spec_problem
from mocobench.checkpoints.convention import RGB_AUTHORS, detectron2_convention, is_torchvision, torchvision_convention
from mocobench.checkpoints.errors import CheckpointError
from mocobench.checkpoints.keymaps import DETECTRON2_TO_TORCHVISION, HEAD_PREFIXES, HEAD_REASON, Rules
from mocobench.checkpoints.metadata import any_key
from mocobench.checkpoints.safe_pickle import decode_json_metadata

# ``format`` of the files ``mocobench.checkpoints.write`` saves: a backbone with its spec (torch or
# safetensors), and pretrain/'s resumable training state
OWN_FORMAT = "mocobench-backbone"
OWN_VERSION = 1
PRETRAIN_FORMAT = "mocobench-pretrain"

# Why top-level entries that are not the backbone's weights are not loaded.
TOP_LEVEL_REASONS = {
    "optimizer": "optimizer state", "optimizer_states": "optimizer state",
    "scaler": "AMP grad-scaler state", "amp": "AMP state", "lr_schedulers": "LR scheduler state",
    "scheduler": "LR scheduler state", "param_schedulers": "LR scheduler state",
    "student": "student network (DINO evaluates the teacher)",
    "dino_loss": "DINO loss state (center)", "model_ema": "momentum (EMA) encoder",
    "state_dict_ema": "EMA weights", "state_dict_raw": "raw (non-EMA) weights (--branch ema used the EMA copy)",
    "contrast": "memory bank / contrast state",
    "callbacks": "Lightning callbacks state", "loops": "Lightning loop state",
    "message_hub": "logger state", "__author__": "metadata", "matching_heuristics": "metadata",
}


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
    heads: tuple[str, ...] = HEAD_PREFIXES  # classifier names (after renaming), dropped as "head"
    metadata: Callable[[dict, dict], dict] = meta.none  # (obj, weights) -> what the file says
    # (obj, metadata) -> the BackboneSpec fields the file states (at least "arch"), or None: the
    # arch is then guessed from keys and shapes
    spec: Callable[[dict, dict], dict | None] = lambda obj, metadata: None
    # arch -> BackboneSpec.extra this format's models need beyond what the shapes say
    extra: Callable[[str], dict] = lambda arch: {}
    # weights -> why this file cannot be read although it looks like the format, or None
    refuse: Callable[[dict], str | None] = lambda state: None
    # arch -> the format name a report gives (one entry may cover several libraries)
    label: Callable[[str], str] | None = None
    # (obj, weights) -> the input convention the weights expect, and where that comes from
    # (checkpoints/convention.py); the releases of most formats follow torchvision's
    convention: Callable[[dict, dict], dict] = lambda obj, state: torchvision_convention(
        "the format's known convention (torchvision's)")
    # files that state no convention of their own: timm weights in them take timm's, from a
    # config.json beside the file or the arch's pretrained tag (checkpoints/convention.py)
    timm_convention: bool = False
    # (obj, weights) -> whether a Bottleneck ResNet's stride is in its 1x1 conv (BackboneSpec.
    # stride_in_1x1), and what says so; (None, why) where the file cannot tell, and the user must
    stride_in_1x1: Callable[[dict, dict], tuple[bool | None, str]] = lambda obj, state: (
        False, "the format's layout (torchvision's Bottleneck: the stride in the 3x3 conv)")
    # top-level (raw, EMA) entries of one network, between which --branch raw|ema chooses
    ema_pairs: tuple[tuple[str, str], ...] = (("state_dict", "state_dict_ema"), ("model", "model_ema"))
    # whether the layout is one project's, whose models fix the sizes that shapes do not show (a
    # ViT's head count, arch_guess.HEADS_NOT_IN_SHAPES); plain state dicts are anyone's
    says_whose_model: bool = True


# -- where the weights are -----------------------------------------------------------------------
def is_flat(d: Any) -> bool:
    """A non-empty ``{str: tensor or ndarray}`` dict."""
    return isinstance(d, dict) and bool(d) and all(
        isinstance(k, str) and isinstance(v, (torch.Tensor, np.ndarray)) for k, v in d.items())


def weights_in(obj: dict, *names: str) -> tuple[dict, dict[str, str]]:
    """The first ``obj[name]`` that holds weights (or ``obj`` itself); other entries dropped."""
    for name in names:
        if isinstance(obj.get(name), dict):
            return obj[name], {k: TOP_LEVEL_REASONS.get(k, "not backbone weights (metadata)")
                               for k in obj if k != name}
    return obj, {}


def state_dict_or_flat(obj: dict) -> tuple[dict, dict[str, str]]:
    return weights_in(obj, "state_dict", "model") if not is_flat(obj) else (obj, {})


def _sd(obj):  # the weights of checkpoints that keep them under state_dict (or are flat)
    return state_dict_or_flat(obj)[0] if isinstance(obj, dict) else None


def _get(obj: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(obj, dict) or p not in obj:
            return None
        obj = obj[p]
    return obj


# -- what a file states about its backbone ---------------------------------------------------------
def _own_spec(obj: dict, metadata: dict) -> dict:
    spec = obj.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("arch"), str):
        raise CheckpointError(f"a {OWN_FORMAT} file without a valid spec")
    problem = spec_problem(spec)
    if problem:
        raise CheckpointError(f"a {OWN_FORMAT} file whose spec is invalid: {problem}")
    return spec


def _safetensors_spec(obj: dict, metadata: dict) -> dict | None:
    if obj["__metadata__"].get("format") != OWN_FORMAT:
        return None
    return _own_spec({"spec": decode_json_metadata(obj["__metadata__"], "spec")}, metadata)


def _pretrain_spec(obj: dict, metadata: dict) -> dict:
    """pretrain/train.py's run config says how the backbone was built."""
    config, arch = metadata.get("config") or {}, metadata.get("arch")
    spec = {"arch": arch, "cifar_stem": config.get("cifar_stem", False),
            "img_size": config.get("img_size") if isinstance(arch, str) and is_timm(arch) else None}
    problem = spec_problem(spec) if arch is not None else None  # no arch: it is guessed from the keys
    if problem:
        raise CheckpointError(f"a {PRETRAIN_FORMAT} file whose run config is invalid: {problem}")
    return spec


def _solo_learn_spec(obj: dict, metadata: dict) -> dict | None:
    """solo-learn's CIFAR ResNets pad their 3x3 conv1 by 2 (metadata.solo_learn_stem decides and says
    why); the arch is still guessed from the shapes. Other files state nothing."""
    stem = metadata.get("cifar_stem")
    return {"cifar_stem": True, "cifar_stem_padding": stem["padding"]} if stem else None


# -- OpenSelfSup / mmselfsup 0.x: the backbone saved twice ------------------------------------------
# Their algorithms wrap backbone and neck in one Sequential and alias its first module
# (``self.backbone = self.encoder_q[0]``), so the state dict holds every backbone tensor under both
# names; mmselfsup 1.x's MoCo v3 does the reverse (``base_encoder = Sequential(backbone, neck)``).
# Sequential -> what it is.
MM_ALIASES = {"encoder_q.": "query encoder (MoCo, DenseCL)", "encoder.": "encoder (SimSiam)",
              "online_net.": "online network (BYOL)", "base_encoder.": "base encoder (MoCo v3)"}


def _mm_aliases(state: Any) -> list[str]:
    """The Sequentials of ``MM_ALIASES`` whose module 0 ``state`` holds beside ``backbone.*``."""
    if not any_key(state, ("backbone.",)):
        return []
    return [seq for seq in MM_ALIASES if any_key(state, (seq + "0.",))]


def _mm_alias_differs(state: dict) -> str | None:
    """Why the file cannot be read: the ``<seq>.0.*`` tensors of an alias are not exactly its
    ``backbone.*`` ones (then which is the backbone cannot be told), or None."""
    backbone = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    for seq in _mm_aliases(state):
        alias = {k[len(seq) + 2:]: v for k, v in state.items() if k.startswith(seq + "0.")}
        only = sorted(set(alias) ^ set(backbone))
        differ = sorted(k for k in set(alias) & set(backbone)
                        if not torch.equal(torch.as_tensor(alias[k]), torch.as_tensor(backbone[k])))
        if only or differ:
            what = "; ".join(([f"keys under one name only: {', '.join(only[:5])}"] if only else [])
                             + ([f"tensors that differ: {', '.join(differ[:5])}"] if differ else []))
            return (f"an OpenSelfSup / mmselfsup layout whose {seq}0.* (the {MM_ALIASES[seq]}'s backbone) should "
                    f"be the same tensors as backbone.*, but they are not ({what}); which is the backbone cannot "
                    "be told")
    return None


CAFFE2_NAME = re.compile(r"(conv1|res\d+_\d+_branch\w+|res_conv1_bn|fc1000)_[a-z]+")


def foreign_names(obj: Any) -> str | None:
    """Why ``obj`` cannot be read whatever format it looks like, or None: Caffe2/Detectron names
    (``conv1_w``, ``res2_0_branch2a_w``; detectron2's ImageNet ``.pkl`` models, Detectron's
    ``{"blobs": ...}``), which no rename table here maps and which would otherwise read as an
    unknown architecture. Checked before any format is detected."""
    for weights in (obj, _get(obj, "blobs"), _get(obj, "model")):
        if isinstance(weights, dict) and any(isinstance(k, str) and CAFFE2_NAME.fullmatch(k) for k in weights):
            return ("Caffe2 names (conv1_w, res2_0_branch2a_w, ...: a Detectron / detectron2 ImageNet .pkl); "
                    "convert them with detectron2 (DetectionCheckpointer renames them when it loads the file "
                    "into a model; save that model's state_dict) and read the result")
    return None


def _detectron2_stride(obj: dict, state: dict) -> tuple[bool | None, str]:
    """Where a detectron2 ResNet's stride is: a config setting (MODEL.RESNETS.STRIDE_IN_1X1) that
    its weights do not store, so it is decided from what the file shows of its origin."""
    author = obj.get("__author__")
    if "pixel_mean" not in state and author in RGB_AUTHORS:
        return False, f"__author__ {author!r}: {RGB_AUTHORS[author].split(' (')[0]} converts torchvision ResNets"
    if "pixel_mean" in state:
        conv = detectron2_convention(obj, state)
        mean, std = conv["mean"], conv["std"]
        scale = 255.0 if conv["scale"] == "0-255" else 1.0
        if conv["channels"] == "BGR" and conv["scale"] == "0-255" and std == [1.0, 1.0, 1.0]:
            return True, ("the file's pixel_mean/pixel_std are detectron2's defaults (MSRA: BGR 0-255, std 1), "
                          "trained with its default MODEL.RESNETS.STRIDE_IN_1X1 True")
        if conv["channels"] == "RGB" and is_torchvision([m / scale for m in mean], [s / scale for s in std]):
            return False, ("the file's pixel_mean/pixel_std are torchvision's (RGB), which detectron2's configs for "
                           "converted torchvision ResNets pair with STRIDE_IN_1X1 False")
        return None, (f"its pixel_mean {mean} / pixel_std {std} are neither MSRA's (BGR, std 1) nor torchvision's, "
                      "and the stride's place (MODEL.RESNETS.STRIDE_IN_1X1) is not stored in the weights")
    return None, (f"it has no pixel_mean/pixel_std and no known __author__ ({author!r}), and the stride's place "
                  "(MODEL.RESNETS.STRIDE_IN_1X1: True in MSRA models and detectron2's default, False in converted "
                  "torchvision ones) is not stored in the weights")


# -- the table (first match wins) ----------------------------------------------------------------
# the ViTs of MoCo v3's vits.py that timm's names and shapes describe (its vit_conv_* have a conv stem)
MOCO_V3_VITS = ("vit_small", "vit_base")

MOMENTUM_DROPS = (("module.encoder_k.", "momentum encoder (encoder_k)"), ("encoder_k.", "momentum encoder (encoder_k)"),
                  ("module.queue", "queue (and its pointer)"), ("queue", "queue (and its pointer)"),
                  ("module.label_queue", "label queue"), ("label_queue", "label queue"))

FORMATS: dict[str, Format] = {
    OWN_FORMAT: Format(
        OWN_FORMAT, "this project's exported backbones (RUN_DIR/backbone.pth, mocobench convert --to mocobench)",
        detect=lambda o: isinstance(o, dict) and o.get("format") == OWN_FORMAT and isinstance(o.get("state_dict"), dict),
        weights=lambda o: (o["state_dict"], {}),
        keep=("",), heads=(), metadata=meta.own_backbone, spec=_own_spec),
    PRETRAIN_FORMAT: Format(
        PRETRAIN_FORMAT, "this project's pretrain/ (RUN_DIR/checkpoints/step_*.pth)",
        detect=lambda o: isinstance(o, dict) and o.get("format") == PRETRAIN_FORMAT,
        weights=lambda o: weights_in(o, "model", "state_dict"),
        keep=("module.encoder_q.", "encoder_q.", "module.backbone.", "backbone."),
        # MoCo / UniMoCo (pretrain/moco.py, unimoco.py) and SMoG (pretrain/smog.py) state; queues
        # and the bank are pretrain.ring_buffer.RingBuffer modules (queue.keys, queue.labels, ...)
        drop=(("queue.labels", "label queue"),) + MOMENTUM_DROPS + (("backbone_k.", "momentum encoder (backbone_k)"),
                               ("projector_k.", "momentum projector"), ("projector.", "projection head"),
                               ("predictor.", "predictor MLP"), ("groups", "SMoG group features"),
                               ("bank", "SMoG feature bank (and its pointer/count)"),
                               ("iteration", "SMoG iteration counter")),
        metadata=meta.own_pretrain, spec=_pretrain_spec),
    # before moco, moco-v3, pycontrast and mmpretrain, whose prefixes these files also hold
    "mmselfsup-0.x": Format(
        "mmselfsup-0.x", "OpenSelfSup / mmselfsup 0.x ({meta, state_dict}; backbone.* aliased as encoder_q.0.*, "
        "encoder.0.*, online_net.0.*; also mmselfsup 1.x MoCo v3's base_encoder.0.*)",
        detect=lambda o: isinstance(o, dict) and "meta" in o and bool(_mm_aliases(o.get("state_dict"))),
        weights=lambda o: weights_in(o, "state_dict"),
        keep=("backbone.",),
        drop=tuple((seq + "0.", f"the same tensors as backbone.* ({MM_ALIASES[seq]}'s backbone; checked equal)")
                   for seq in MM_ALIASES)
        + tuple((seq + "1.", f"neck (projection; {MM_ALIASES[seq]}'s)") for seq in MM_ALIASES)
        + (("neck.", "neck (projection)"), ("head.", "head"), ("predictor.", "predictor MLP"),
           ("encoder_k.", "momentum encoder"), ("target_net.", "momentum encoder"),
           ("momentum_encoder.", "momentum encoder"), ("queue", "queue (and its pointer)"),
           ("data_preprocessor.", "data preprocessor buffers")),
        metadata=meta.mm, refuse=_mm_alias_differs),
    "moco": Format(
        "moco", "official MoCo v1/v2 (main_moco.py), UniMoCo, PCL (same layout)",
        detect=lambda o: any_key(_sd(o), ("module.encoder_q.", "encoder_q.")),
        weights=state_dict_or_flat,
        keep=("module.encoder_q.", "encoder_q."),
        drop=MOMENTUM_DROPS,
        metadata=meta.moco),
    "moco-v3": Format(
        "moco-v3", "official MoCo v3 (ResNet and ViT)",
        detect=lambda o: any_key(_sd(o), ("module.base_encoder.", "base_encoder.")),
        weights=state_dict_or_flat,
        keep=("module.base_encoder.", "base_encoder."),
        drop=(("module.momentum_encoder.", "momentum encoder"), ("momentum_encoder.", "momentum encoder"),
              ("module.predictor.", "predictor MLP"), ("predictor.", "predictor MLP")),
        metadata=meta.moco_v3,
        # NOTE: MoCo v3's ViT-S uses 12 attention heads (timm's vit_small has 6); same shapes, so
        # only the format says so. DINO's ViT-S has 6, like timm.
        extra=lambda arch: {"timm_kwargs": {"num_heads": 12}} if arch == "timm:vit_small_patch16_224" else {}),
    "moco-v3-linear": Format(
        "moco-v3-linear", "official MoCo v3 linear classification (main_lincls.py) of its ViTs",
        detect=lambda o: isinstance(o, dict) and o.get("arch") in MOCO_V3_VITS and "best_acc1" in o
        and any_key(o.get("state_dict"), ("module.",)),
        weights=lambda o: weights_in(o, "state_dict"),
        keep=("module.",),
        metadata=meta.moco_v3_linear,
        # the same ViT-S of 12 heads as its pretraining checkpoints (moco-v3 above)
        extra=lambda arch: {"timm_kwargs": {"num_heads": 12}} if arch == "timm:vit_small_patch16_224" else {}),
    "dino": Format(
        "dino", "official DINO full checkpoints (teacher/student)",
        detect=lambda o: isinstance(o, dict) and isinstance(o.get("teacher"), dict)
        and any_key(o["teacher"], ("backbone.", "module.backbone.")),
        weights=lambda o: weights_in(o, "teacher"),
        keep=("module.backbone.", "backbone."),
        drop=(("module.head.", "DINO projection head"), ("head.", "DINO projection head")),
        metadata=meta.dino),
    "swav": Format(
        "swav", "SwAV, DeepCluster-v2, SeLa-v2 (facebookresearch/swav)",
        detect=lambda o: any_key(_sd(o), ("module.prototypes", "module.projection_head.")),
        weights=state_dict_or_flat,
        keep=("module.",),
        drop=(("module.projection_head.", "projection head"), ("module.prototypes", "prototypes")),
        metadata=meta.swav),
    "pycontrast": Format(
        "pycontrast", "InsDis, PIRL, InfoMin (PyContrast: model = encoder + head)",
        detect=lambda o: any_key(_sd(o), ("module.encoder.", "encoder.")),
        weights=lambda o: weights_in(o, "model", "state_dict"),
        keep=("module.encoder.", "encoder."),
        drop=(("module.head", "projection head"), ("head", "projection head"),
              ("module.jigsaw", "PIRL jigsaw head"), ("jigsaw", "PIRL jigsaw head")),
        metadata=meta.pycontrast,
        # NOTE: PyContrast's model_ema is the momentum encoder its contrast is computed with (as MoCo's
        # encoder_k), not an EMA release of the model: it is dropped, not offered as a branch.
        ema_pairs=(("state_dict", "state_dict_ema"),)),
    "solo-learn": Format(
        "solo-learn", "solo-learn / PyTorch Lightning .ckpt",
        detect=lambda o: isinstance(o, dict) and isinstance(o.get("state_dict"), dict)
        and ("pytorch-lightning_version" in o or "hyper_parameters" in o),
        weights=lambda o: weights_in(o, "state_dict"),
        keep=("backbone.",),
        drop=(("momentum_backbone.", "momentum encoder"), ("momentum_projector.", "momentum projector"),
              ("projector.", "projection head"), ("predictor.", "predictor MLP"),
              ("prototypes.", "prototypes"), ("classifier.", "online linear classifier"),
              ("momentum_classifier.", "online linear classifier (momentum)"),
              ("queue", "queue (and its pointer)"),
              # solo-learn's DINO: its projection head, the teacher's copy, the loss's center
              ("head.", "DINO projection head"), ("momentum_head.", "momentum projection head"),
              ("dino_loss_func.", "DINO loss state (center)")),
        metadata=meta.lightning, spec=_solo_learn_spec),
    "mmpretrain": Format(
        "mmpretrain", "mmselfsup / mmpretrain / mmseg / mmdet ({meta, state_dict})",
        detect=lambda o: isinstance(o, dict) and "meta" in o and isinstance(o.get("state_dict"), dict)
        and any_key(o["state_dict"], ("backbone.",)),
        weights=lambda o: weights_in(o, "state_dict"),
        keep=("backbone.",),
        drop=(("neck.", "neck (projection)"), ("head.", "head"), ("momentum_encoder.", "momentum encoder"),
              ("encoder_k.", "momentum encoder"), ("target_net.", "momentum encoder"),
              ("teacher.", "momentum encoder"), ("queue", "queue (and its pointer)"),
              ("data_preprocessor.", "data preprocessor buffers"), ("decode_head.", "decode head"),
              ("auxiliary_head.", "auxiliary head"),
              # mmdet detectors: two-stage (rpn_head, roi_head) and one-stage (bbox_head)
              ("rpn_head.", "RPN head"), ("roi_head.", "ROI heads"), ("bbox_head.", "detection head")),
        metadata=meta.mm),
    "vissl": Format(
        "vissl", "VISSL (classy_state_dict -> base_model -> model -> trunk)",
        detect=lambda o: isinstance(_get(o, "classy_state_dict", "base_model", "model", "trunk"), dict),
        weights=lambda o: (o["classy_state_dict"]["base_model"]["model"]["trunk"],
                           {k: TOP_LEVEL_REASONS.get(k, "not backbone weights (metadata)")
                            for k in o if k != "classy_state_dict"}
                           | {"classy_state_dict.base_model.model.heads": "heads"}),
        keep=("_feature_blocks.", "module._feature_blocks.", "trunk._feature_blocks."),
        metadata=meta.vissl),
    "detectron2": Format(
        "detectron2", "detectron2 .pkl / model_final.pth (stem., res2..res5)",
        detect=lambda o: isinstance(o, dict) and isinstance(o.get("model"), dict)
        and any_key(o["model"], ("stem.", "res2.", "backbone.bottom_up.", "backbone.stem.", "backbone.res")),
        weights=lambda o: weights_in(o, "model"),
        keep=("backbone.bottom_up.", "backbone.", ""),
        drop=(("proposal_generator.", "RPN"), ("roi_heads.", "ROI heads"), ("backbone.fpn_", "FPN"),
              ("pixel_mean", "input normalisation"), ("pixel_std", "input normalisation"),
              ("fc1000.", HEAD_REASON), ("stem.fc.", HEAD_REASON)),
        rules=DETECTRON2_TO_TORCHVISION,
        metadata=meta.detectron2, convention=detectron2_convention, stride_in_1x1=_detectron2_stride),
    "safetensors": Format(
        "safetensors", "safetensors files (torchvision/timm names, optional module. prefix; "
        "our own exports also state their spec)",
        detect=lambda o: isinstance(o, dict) and "__safetensors__" in o,
        weights=lambda o: (o["__safetensors__"], {}),
        keep=("module.", ""),
        metadata=meta.safetensors, spec=_safetensors_spec, timm_convention=True, says_whose_model=False),
    "torchvision/timm": Format(
        "torchvision/timm", "plain torchvision / timm state dicts (also DINO's and Barlow Twins' "
        "backbone-only releases, timm train checkpoints)",
        detect=lambda o: is_flat(_sd(o)),
        weights=state_dict_or_flat,
        keep=("module.", ""),
        metadata=meta.plain_state_dict,
        label=lambda arch: "timm" if is_timm(arch) else "torchvision", timm_convention=True, says_whose_model=False,
        convention=lambda obj, state: torchvision_convention("default (torchvision's; a plain state dict states none)")),
}


def detect_format(obj: Any) -> Format | None:
    return next((fmt for fmt in FORMATS.values() if fmt.detect(obj)), None)
