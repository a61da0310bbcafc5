"""detectron2 weights (``.pkl``) and configs for MoCo's detection transfer protocols.

Weights: a plain pickle (detectron2 cannot read a torch zip file named ``.pkl``) of
``{"model": {name: ndarray}, "__author__": "mocobench", "matching_heuristics": True}``. Without
``__author__`` detectron2 assumes a Caffe2 file and renames keys. Names follow MoCo's
``convert-pretrain-to-detectron2.py`` (``mocobench.checkpoints.keymaps.TORCHVISION_TO_DETECTRON2``). We also
store ``"__mocobench__"`` (the source checkpoint's metadata); detectron2 ignores extra top-level
keys.

Configs: complete, self-contained YAML (no ``_BASE_``) for the protocols in :data:`PROTOCOLS`,
with MoCo's settings (``detection/configs`` of the official repo): RGB input with torchvision
mean/std in 0-255 units, ``STRIDE_IN_1X1: False``, ``FREEZE_AT: 0``, SyncBN-family norm in the
backbone, ``TEST.PRECISE_BN`` on, and (C4) a res5 ROI head with an extra norm after res5
(:data:`ROI_HEAD_NAME`, registered by :func:`register_roi_heads` when detectron2 is installed).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mocobench.checkpoints.keymaps import DETECTRON2_TO_TORCHVISION, TORCHVISION_TO_DETECTRON2, apply_rules
from mocobench.core.io import atomic_write, atomic_write_text
from mocobench.core.registry import Registry
from mocobench.transfer.detection.protocols import PROTOCOLS as DETECTION_PROTOCOLS

ROI_HEAD_NAME = "Res5ROIHeadsExtraNorm"
NORMS = ("naiveSyncBN", "SyncBN", "BN", "FrozenBN", "GN")
# torchvision's ImageNet normalisation in detectron2's 0-255 pixel units (RGB order).
PIXEL_MEAN = [123.675, 116.280, 103.530]
PIXEL_STD = [58.395, 57.120, 57.375]

VOC_TRAIN_SIZES = list(range(480, 801, 32))  # 480, 512, ..., 800
COCO_TRAIN_SIZES = list(range(640, 801, 32))  # 640, 672, ..., 800

# protocol -> settings; the solver (steps, iterations, warmup) is read from the protocol of the same
# name in mocobench.transfer.detection.protocols, stated for IMS_PER_BATCH 16 (MoCo's) and scaled
# linearly with the batch.
PROTOCOLS: Registry[dict[str, Any]] = Registry("detectron2 protocol", {
    "moco-voc-c4-24k": dict(head="C4", mask=False, num_classes=20, train_sizes=VOC_TRAIN_SIZES,
                            train=["voc_2007_trainval", "voc_2012_trainval"], test=["voc_2007_test"],
                            description="VOC07+12 Faster R-CNN R50-C4, 24k iterations (MoCo)"),
    "coco-c4-1x": dict(head="C4", mask=True, num_classes=80, train_sizes=COCO_TRAIN_SIZES,
                       train=["coco_2017_train"], test=["coco_2017_val"],
                       description="COCO Mask R-CNN R50-C4 1x (MoCo)"),
    "coco-c4-2x": dict(head="C4", mask=True, num_classes=80, train_sizes=COCO_TRAIN_SIZES,
                       train=["coco_2017_train"], test=["coco_2017_val"],
                       description="COCO Mask R-CNN R50-C4 2x (MoCo)"),
    "coco-fpn-1x": dict(head="FPN", mask=True, num_classes=80, train_sizes=COCO_TRAIN_SIZES,
                        train=["coco_2017_train"], test=["coco_2017_val"],
                        description="COCO Mask R-CNN R50-FPN 1x (MoCo)"),
    "coco-fpn-2x": dict(head="FPN", mask=True, num_classes=80, train_sizes=COCO_TRAIN_SIZES,
                        train=["coco_2017_train"], test=["coco_2017_val"],
                        description="COCO Mask R-CNN R50-FPN 2x (MoCo)"),
})


# -- weights ------------------------------------------------------------------------------------
def to_detectron2(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Canonical torchvision ResNet state dict -> detectron2 names (the classifier is dropped)."""
    if "layer1.0.conv1.weight" not in state:
        raise ValueError("detectron2 export supports torchvision ResNets only "
                         f"(got keys like {sorted(state)[:3]})")
    out = {}
    for k, v in state.items():
        if k.startswith("fc."):
            continue
        out[apply_rules(k, TORCHVISION_TO_DETECTRON2)] = v.detach().cpu().numpy()
    return out


def detectron2_checkpoint(state: dict[str, torch.Tensor], meta: dict | None = None) -> dict:
    return {"model": to_detectron2(state), "__author__": "mocobench", "matching_heuristics": True,
            "__mocobench__": dict(meta or {})}


def write_detectron2_pkl(path: str | os.PathLike, state: dict, meta: dict | None = None) -> Path:
    """Write a detectron2 ``.pkl``; ``state`` is a canonical state dict or ``detectron2_checkpoint``."""
    obj = state if "model" in state and "__author__" in state else detectron2_checkpoint(state, meta)
    return atomic_write(path, lambda f: pickle.dump(obj, f, protocol=4))


# -- configs ------------------------------------------------------------------------------------
def detectron2_config(protocol: str, weights_path: str | os.PathLike, *, dataset_root: str | None = None,
                      norm: str = "naiveSyncBN", num_gpus: int = 8, ims_per_batch: int = 16,
                      max_iter: int | None = None, output_dir: str | None = None,
                      eval_period: int = 0) -> dict:
    """The config as a nested dict (see :func:`write_detectron2_config`)."""
    p = PROTOCOLS.lookup(protocol)
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if ims_per_batch % num_gpus:
        raise ValueError(f"ims_per_batch={ims_per_batch} is not divisible by num_gpus={num_gpus}")
    solver = DETECTION_PROTOCOLS[protocol]
    # Linear scaling rule from MoCo's batch 16 / lr 0.02 (identity at the default batch size).
    scale = ims_per_batch / 16
    schedule_iter = round(solver.max_iter / scale)
    total = max_iter or schedule_iter
    steps = [round(s / scale * total / schedule_iter) for s in solver.steps]
    warmup = min(solver.warmup_iters, max(total // 2, 1))

    model: dict[str, Any] = {
        "META_ARCHITECTURE": "GeneralizedRCNN",
        "WEIGHTS": str(weights_path),
        "MASK_ON": p["mask"],
        "PIXEL_MEAN": PIXEL_MEAN,
        "PIXEL_STD": PIXEL_STD,
        "BACKBONE": {"NAME": "build_resnet_backbone" if p["head"] == "C4" else "build_resnet_fpn_backbone",
                     "FREEZE_AT": 0},
        "RESNETS": {"DEPTH": 50, "NORM": norm, "STRIDE_IN_1X1": False,
                    "OUT_FEATURES": ["res4"] if p["head"] == "C4" else ["res2", "res3", "res4", "res5"]},
    }
    if p["head"] == "C4":
        model["RPN"] = {"IN_FEATURES": ["res4"], "PRE_NMS_TOPK_TEST": 6000, "POST_NMS_TOPK_TEST": 1000}
        model["ROI_HEADS"] = {"NAME": ROI_HEAD_NAME, "IN_FEATURES": ["res4"], "NUM_CLASSES": p["num_classes"]}
    else:
        # NOTE: MoCo released C4 configs only; for R50-FPN we use detectron2's Base-RCNN-FPN
        # (its per-level RPN top-k 2000/1000 train, 1000/1000 test) and, as the MoCo paper
        # describes for FPN, the same norm in the FPN and the mask head.
        model["FPN"] = {"IN_FEATURES": ["res2", "res3", "res4", "res5"], "NORM": norm}
        model["ANCHOR_GENERATOR"] = {"SIZES": [[32], [64], [128], [256], [512]],
                                     "ASPECT_RATIOS": [[0.5, 1.0, 2.0]]}
        model["RPN"] = {"IN_FEATURES": ["p2", "p3", "p4", "p5", "p6"], "PRE_NMS_TOPK_TRAIN": 2000,
                        "PRE_NMS_TOPK_TEST": 1000, "POST_NMS_TOPK_TRAIN": 1000, "POST_NMS_TOPK_TEST": 1000}
        model["ROI_HEADS"] = {"NAME": "StandardROIHeads", "IN_FEATURES": ["p2", "p3", "p4", "p5"],
                              "NUM_CLASSES": p["num_classes"]}
        model["ROI_BOX_HEAD"] = {"NAME": "FastRCNNConvFCHead", "NUM_FC": 2, "POOLER_RESOLUTION": 7}
        model["ROI_MASK_HEAD"] = {"NAME": "MaskRCNNConvUpsampleHead", "NUM_CONV": 4,
                                  "POOLER_RESOLUTION": 14, "NORM": norm}
    cfg: dict[str, Any] = {
        "MODEL": model,
        "INPUT": {"FORMAT": "RGB", "MIN_SIZE_TRAIN": p["train_sizes"], "MIN_SIZE_TEST": 800,
                  "MAX_SIZE_TRAIN": 1333, "MAX_SIZE_TEST": 1333},
        "DATASETS": {"TRAIN": p["train"], "TEST": p["test"]},
        "DATALOADER": {"NUM_WORKERS": 4},
        "SOLVER": {"IMS_PER_BATCH": ims_per_batch,
                   "BASE_LR": round(solver.base_lr * ims_per_batch / solver.reference_batch, 8), "STEPS": steps,
                   "MAX_ITER": total, "WARMUP_ITERS": warmup, "CHECKPOINT_PERIOD": max(total // 4, 1)},
        "TEST": {"PRECISE_BN": {"ENABLED": True}, "EVAL_PERIOD": eval_period},
        "VERSION": 2,
    }
    if output_dir:
        cfg["OUTPUT_DIR"] = str(output_dir)
    return cfg


def write_detectron2_config(protocol: str, weights_path: str | os.PathLike, out_path: str | os.PathLike,
                            *, dataset_root: str | None = None, norm: str = "naiveSyncBN",
                            num_gpus: int = 8, ims_per_batch: int = 16, max_iter: int | None = None,
                            output_dir: str | None = None, eval_period: int = 0) -> Path:
    """Write a complete detectron2 YAML config for ``protocol`` loading ``weights_path``.

    ``norm``: ``naiveSyncBN`` (the official MoCo repo's final choice: "SyncBN seems to cause larger
    variance"), or ``SyncBN``/``BN``/... . ``ims_per_batch`` other than 16 rescales the learning
    rate and schedule linearly; ``max_iter`` shortens the schedule (steps scale with it), for smoke
    runs. ``dataset_root`` is where detectron2 finds ``VOC2007``/``VOC2012``/``coco``: detectron2
    reads it from ``$DETECTRON2_DATASETS``, so it is written as a comment for the runner.
    """
    return atomic_write_text(out_path, detectron2_config_text(
        protocol, weights_path, dataset_root=dataset_root, norm=norm, num_gpus=num_gpus,
        ims_per_batch=ims_per_batch, max_iter=max_iter, output_dir=output_dir, eval_period=eval_period))


def detectron2_config_text(protocol: str, weights_path: str | os.PathLike, *, dataset_root: str | None = None,
                           norm: str = "naiveSyncBN", num_gpus: int = 8, ims_per_batch: int = 16,
                           max_iter: int | None = None, output_dir: str | None = None, eval_period: int = 0) -> str:
    """The YAML :func:`write_detectron2_config` writes; every option is checked here, so a caller
    can refuse a bad one before it writes anything (``mocobench convert``)."""
    import yaml

    cfg = detectron2_config(protocol, weights_path, dataset_root=dataset_root, norm=norm,
                            num_gpus=num_gpus, ims_per_batch=ims_per_batch, max_iter=max_iter,
                            output_dir=output_dir, eval_period=eval_period)
    header = [f"# {PROTOCOLS[protocol]['description']} -- written by mocobench (transfer/adapters/detectron2.py)",
              f"# protocol: {protocol}; {num_gpus} GPU(s) x {ims_per_batch // num_gpus} images",
              f"# ROI head {ROI_HEAD_NAME} must be registered first (transfer.adapters.detectron2.register_roi_heads)"
              if cfg["MODEL"]["ROI_HEADS"]["NAME"] == ROI_HEAD_NAME else "# standard detectron2 heads"]
    if dataset_root:
        header.append(f"# export DETECTRON2_DATASETS={dataset_root}")
    return "\n".join(header) + "\n" + yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None, width=100)


def register_roi_heads() -> str:
    """Register :data:`ROI_HEAD_NAME` in detectron2's ROI_HEADS_REGISTRY (idempotent); needs detectron2.

    MoCo's extra norm: the res5 stage of the C4 box head is followed by one more norm layer of
    ``MODEL.RESNETS.NORM`` (the pretrained res5 ends in a conv+BN residual sum, not a norm).
    """
    from detectron2.layers import get_norm
    from detectron2.modeling import ROI_HEADS_REGISTRY
    from detectron2.modeling.roi_heads import Res5ROIHeads

    if ROI_HEAD_NAME in ROI_HEADS_REGISTRY:
        return ROI_HEAD_NAME

    class Res5ROIHeadsExtraNorm(Res5ROIHeads):
        # a classmethod in detectron2 >= 0.3 (from_config calls cls._build_res5_block(cfg))
        @classmethod
        def _build_res5_block(cls, cfg):
            seq, out_channels = super()._build_res5_block(cfg)
            seq.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, out_channels))
            return seq, out_channels

    ROI_HEADS_REGISTRY.register(Res5ROIHeadsExtraNorm)
    return ROI_HEAD_NAME


# -- full R50-C4 Faster R-CNN: detectron2 <-> our torchvision-engine model ----------------------
# (our prefix, detectron2 prefix, block rules for the remainder or None). Ours is
# ``mocobench.transfer.detection.models.build_c4``; detectron2's is GeneralizedRCNN with ROI_HEAD_NAME.
# The res5 blocks go through the same torchvision<->detectron2 ResNet rules as a backbone,
# under a ``layer4.``/``res5.`` stage name.
C4_PREFIXES = (
    ("backbone.", "backbone.", "resnet"),
    ("roi_heads.box_head.res5_norm.norm.", "roi_heads.res5.norm.", None),  # before res5.: first match wins
    ("roi_heads.box_head.res5_norm.res5.", "roi_heads.res5.", "res5"),
    ("rpn.head.conv.0.0.", "proposal_generator.rpn_head.conv.", None),
    ("rpn.head.cls_logits.", "proposal_generator.rpn_head.objectness_logits.", None),
    ("rpn.head.bbox_pred.", "proposal_generator.rpn_head.anchor_deltas.", None),
    ("roi_heads.box_predictor.", "roi_heads.box_predictor.", None),
)


def _anchor_order(n_sizes: int, n_ratios: int) -> list[int]:
    """``order[t]`` = detectron2's anchor index for torchvision's anchor ``t`` at one position.

    detectron2's ``DefaultAnchorGenerator`` lists the cell anchors size-major (``for size: for
    ratio``), torchvision's ``AnchorGenerator`` ratio-major; the RPN head's output channels follow.
    """
    return [i * n_ratios + j for j in range(n_ratios) for i in range(n_sizes)]


def _rename(key: str, to_d2: bool) -> str:
    for ours, theirs, rules in C4_PREFIXES:
        src, dst = (ours, theirs) if to_d2 else (theirs, ours)
        if key.startswith(src):
            rest = key[len(src):]
            if rules == "res5":
                stage = "layer4." if to_d2 else "res5."
                rest = apply_rules(stage + rest, TORCHVISION_TO_DETECTRON2 if to_d2 else DETECTRON2_TO_TORCHVISION)
                rest = rest[len("res5." if to_d2 else "layer4."):]
            elif rules == "resnet":
                rest = apply_rules(rest, TORCHVISION_TO_DETECTRON2 if to_d2 else DETECTRON2_TO_TORCHVISION)
            return dst + rest
    raise KeyError(f"{key!r} is not a key of an R50-C4 Faster R-CNN "
                   f"({'ours' if to_d2 else 'detectron2'}; known prefixes: "
                   f"{', '.join(p[0 if to_d2 else 1] for p in C4_PREFIXES)})")


def _convert_c4(state: dict, n_sizes: int, n_ratios: int, to_d2: bool) -> dict[str, torch.Tensor]:
    order = torch.tensor(_anchor_order(n_sizes, n_ratios))  # ours -> detectron2's index
    perm = torch.argsort(order) if to_d2 else order
    out = {}
    for k, v in state.items():
        v = torch.as_tensor(v)
        name = _rename(k, to_d2)
        ours = k if to_d2 else name
        if ours.startswith("rpn.head.cls_logits."):
            v = v[perm]
        elif ours.startswith("rpn.head.bbox_pred."):
            v = v.reshape(len(order), 4, *v.shape[1:])[perm].reshape(v.shape)
        elif ours.startswith("roi_heads.box_predictor.cls_score."):
            v = v.roll(-1 if to_d2 else 1, dims=0)  # background: our first row <-> detectron2's last
        elif ours.startswith("roi_heads.box_predictor.bbox_pred."):
            v = v[4:] if to_d2 else torch.cat([torch.zeros_like(v[:4]), v])  # our background box
        out[name] = v.clone()
    return out


def c4_detector_to_detectron2(state: dict[str, torch.Tensor], n_sizes: int, n_ratios: int) -> dict[str, torch.Tensor]:
    """Our R50-C4 Faster R-CNN state dict -> detectron2's (``n_sizes`` x ``n_ratios`` anchors).

    Classes: ours has background at row 0 of ``cls_score`` and a (unused) background box at rows
    0..3 of ``bbox_pred``; detectron2 has background last in ``cls_score`` and K class boxes.
    """
    return _convert_c4(state, n_sizes, n_ratios, to_d2=True)


def c4_detector_from_detectron2(state: dict, n_sizes: int, n_ratios: int) -> dict[str, torch.Tensor]:
    """detectron2's R50-C4 Faster R-CNN state dict (tensors or arrays) -> ours; inverse of
    :func:`c4_detector_to_detectron2` (the background box rows, unused by both, become zeros)."""
    return _convert_c4(state, n_sizes, n_ratios, to_d2=False)


# -- every field of a resolved DetectionProtocol, in detectron2's config ----------------------------
# field -> the detectron2 key(s) it sets; "-" marks a field that names or selects rather than sets
# (checked against the detectron2 config instead). tests check this covers every protocol field.
PROTOCOL_KEYS = {
    "name": "-", "dataset": "-", "model": "- (must match the config's head)", "mask_on": "MODEL.MASK_ON",
    "ims_per_batch": "SOLVER.IMS_PER_BATCH", "reference_batch": "SOLVER.BASE_LR (linear scaling)",
    "base_lr": "SOLVER.BASE_LR", "momentum": "SOLVER.MOMENTUM", "weight_decay": "SOLVER.WEIGHT_DECAY",
    "max_iter": "SOLVER.MAX_ITER", "steps": "SOLVER.STEPS", "gamma": "SOLVER.GAMMA",
    "warmup_iters": "SOLVER.WARMUP_ITERS", "warmup_factor": "SOLVER.WARMUP_FACTOR",
    "min_size_train": "INPUT.MIN_SIZE_TRAIN", "max_size_train": "INPUT.MAX_SIZE_TRAIN",
    "min_size_test": "INPUT.MIN_SIZE_TEST", "max_size_test": "INPUT.MAX_SIZE_TEST", "hflip": "INPUT.RANDOM_FLIP",
    "anchor_sizes": "MODEL.ANCHOR_GENERATOR.SIZES", "aspect_ratios": "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS",
    "fpn_channels": "MODEL.FPN.OUT_CHANNELS (FPN only)",
    "rpn_pre_nms_top_n_train": "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "rpn_post_nms_top_n_train": "MODEL.RPN.POST_NMS_TOPK_TRAIN",
    "rpn_pre_nms_top_n_test": "MODEL.RPN.PRE_NMS_TOPK_TEST", "rpn_post_nms_top_n_test": "MODEL.RPN.POST_NMS_TOPK_TEST",
    "rpn_batch_size_per_image": "MODEL.RPN.BATCH_SIZE_PER_IMAGE",
    "roi_batch_size_per_image": "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "roi_pool_size": "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION (C4)",
    "score_thresh_test": "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "nms_thresh_test": "MODEL.ROI_HEADS.NMS_THRESH_TEST",
    "detections_per_img": "TEST.DETECTIONS_PER_IMAGE", "precise_bn_iters": "TEST.PRECISE_BN.{ENABLED,NUM_ITER}",
    "frozen_bn": "MODEL.RESNETS.NORM (FrozenBN when true, else the config's SyncBN-family norm)",
    "checkpoint_period": "SOLVER.CHECKPOINT_PERIOD", "num_workers": "DATALOADER.NUM_WORKERS",
    "bf16": "- (fp32 by default with this engine; an explicit bf16=true is refused on CUDA: detectron2 0.6 has fp16 AMP only)",
}


def solver_steps(steps, max_iter: int) -> list[int]:
    """LR steps detectron2 accepts: increasing, each in 1..max_iter-1 (a step at or past
    ``max_iter`` never acts; fvcore's scheduler refuses it, and a repeated one)."""
    return sorted({int(s) for s in steps if 0 < int(s) < max_iter})


def protocol_settings(protocol, dataset: str, num_classes: int, device: str) -> dict[str, Any]:
    """``{detectron2 key: value}`` for every field of the resolved ``protocol`` (see
    :data:`PROTOCOL_KEYS`), plus the dataset's class count and the device. A field detectron2
    cannot honour raises ``ValueError`` naming it."""
    p = protocol
    if p.name not in PROTOCOLS:
        raise ValueError(f"protocol {p.name} has no detectron2 config (known: {', '.join(PROTOCOLS)})")
    head = PROTOCOLS[p.name]["head"].lower()
    if p.model != head:
        raise ValueError(f"model={p.model}: the detectron2 config of {p.name} is {head.upper()}; "
                         f"choose a {p.model.upper()} protocol instead")
    mask = p.uses_masks(dataset)
    if mask and dataset == "voc":
        raise ValueError("mask_on=true: detectron2's VOC datasets have boxes only")
    if head == "fpn" and p.roi_pool_size != 14:
        raise ValueError(f"roi_pool_size={p.roi_pool_size}: the FPN heads pool 7x7 (box) and 14x14 (mask), "
                         "as in our engine; roi_pool_size applies to C4 only")
    if p.bf16 and device.startswith("cuda"):
        raise ValueError("bf16=true: detectron2 0.6 trains in fp32 or fp16 AMP, not bf16; pass --bf16=false "
                         "(fp32), and add --opts SOLVER.AMP.ENABLED True for fp16 AMP")
    sizes = [list(p.anchor_sizes)] if head == "c4" else [[s] for s in (
        p.anchor_sizes if len(p.anchor_sizes) == 5 else [p.anchor_sizes[0] * 2 ** i for i in range(5)])]
    out = {
        "MODEL.DEVICE": device, "MODEL.MASK_ON": mask, "MODEL.ROI_HEADS.NUM_CLASSES": num_classes,
        "SOLVER.IMS_PER_BATCH": p.ims_per_batch,
        "SOLVER.BASE_LR": p.base_lr * p.ims_per_batch / p.reference_batch,
        "SOLVER.MOMENTUM": p.momentum, "SOLVER.WEIGHT_DECAY": p.weight_decay, "SOLVER.MAX_ITER": p.max_iter,
        "SOLVER.STEPS": solver_steps(p.steps, p.max_iter), "SOLVER.GAMMA": p.gamma,
        "SOLVER.WARMUP_ITERS": p.warmup_iters, "SOLVER.WARMUP_FACTOR": p.warmup_factor,
        "SOLVER.CHECKPOINT_PERIOD": p.checkpoint_period,
        "INPUT.MIN_SIZE_TRAIN": list(p.min_size_train), "INPUT.MAX_SIZE_TRAIN": p.max_size_train,
        "INPUT.MIN_SIZE_TEST": p.min_size_test, "INPUT.MAX_SIZE_TEST": p.max_size_test,
        "INPUT.RANDOM_FLIP": "horizontal" if p.hflip else "none",
        "MODEL.ANCHOR_GENERATOR.SIZES": sizes, "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": [list(p.aspect_ratios)],
        "MODEL.RPN.PRE_NMS_TOPK_TRAIN": p.rpn_pre_nms_top_n_train,
        "MODEL.RPN.POST_NMS_TOPK_TRAIN": p.rpn_post_nms_top_n_train,
        "MODEL.RPN.PRE_NMS_TOPK_TEST": p.rpn_pre_nms_top_n_test,
        "MODEL.RPN.POST_NMS_TOPK_TEST": p.rpn_post_nms_top_n_test,
        "MODEL.RPN.BATCH_SIZE_PER_IMAGE": p.rpn_batch_size_per_image,
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": p.roi_batch_size_per_image,
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST": p.score_thresh_test,
        "MODEL.ROI_HEADS.NMS_THRESH_TEST": p.nms_thresh_test,
        "TEST.DETECTIONS_PER_IMAGE": p.detections_per_img,
        "TEST.PRECISE_BN.ENABLED": p.precise_bn_iters > 0, "TEST.PRECISE_BN.NUM_ITER": max(p.precise_bn_iters, 1),
        "DATALOADER.NUM_WORKERS": p.num_workers,
    }
    if p.frozen_bn:
        out["MODEL.RESNETS.NORM"] = "FrozenBN"
    if head == "c4":
        out["MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION"] = p.roi_pool_size
    else:
        out["MODEL.FPN.OUT_CHANNELS"] = p.fpn_channels
    return out
