"""detectron2 weights (``.pkl``) and configs for MoCo's detection transfer protocols.

Weights: a plain pickle (detectron2 cannot read a torch zip file named ``.pkl``) of
``{"model": {name: ndarray}, "__author__": "mocobench", "matching_heuristics": True}``. Without
``__author__`` detectron2 assumes a Caffe2 file and renames keys. Names follow MoCo's
``convert-pretrain-to-detectron2.py`` (``checkpoints.keymaps.TORCHVISION_TO_DETECTRON2``). We also
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

from checkpoints.keymaps import TORCHVISION_TO_DETECTRON2, apply_rules
from core.io import atomic_write, atomic_write_text

ROI_HEAD_NAME = "Res5ROIHeadsExtraNorm"
NORMS = ("naiveSyncBN", "SyncBN", "BN", "FrozenBN", "GN")
# torchvision's ImageNet normalisation in detectron2's 0-255 pixel units (RGB order).
PIXEL_MEAN = [123.675, 116.280, 103.530]
PIXEL_STD = [58.395, 57.120, 57.375]

VOC_TRAIN_SIZES = list(range(480, 801, 32))  # 480, 512, ..., 800
COCO_TRAIN_SIZES = list(range(640, 801, 32))  # 640, 672, ..., 800

# protocol -> settings; solver numbers are for IMS_PER_BATCH 16 (MoCo's) and scale linearly.
PROTOCOLS: dict[str, dict[str, Any]] = {
    "moco-voc-c4-24k": dict(head="C4", mask=False, num_classes=20, train_sizes=VOC_TRAIN_SIZES,
                            train=["voc_2007_trainval", "voc_2012_trainval"], test=["voc_2007_test"],
                            steps=[18000, 22000], max_iter=24000, warmup=100,
                            description="VOC07+12 Faster R-CNN R50-C4, 24k iterations (MoCo)"),
    "coco-c4-1x": dict(head="C4", mask=True, num_classes=80, train_sizes=COCO_TRAIN_SIZES,
                       train=["coco_2017_train"], test=["coco_2017_val"],
                       steps=[60000, 80000], max_iter=90000, warmup=1000,
                       description="COCO Mask R-CNN R50-C4 1x (MoCo)"),
    "coco-c4-2x": dict(head="C4", mask=True, num_classes=80, train_sizes=COCO_TRAIN_SIZES,
                       train=["coco_2017_train"], test=["coco_2017_val"],
                       steps=[120000, 160000], max_iter=180000, warmup=1000,
                       description="COCO Mask R-CNN R50-C4 2x (MoCo)"),
    "coco-fpn-1x": dict(head="FPN", mask=True, num_classes=80, train_sizes=COCO_TRAIN_SIZES,
                        train=["coco_2017_train"], test=["coco_2017_val"],
                        steps=[60000, 80000], max_iter=90000, warmup=1000,
                        description="COCO Mask R-CNN R50-FPN 1x (MoCo)"),
    "coco-fpn-2x": dict(head="FPN", mask=True, num_classes=80, train_sizes=COCO_TRAIN_SIZES,
                        train=["coco_2017_train"], test=["coco_2017_val"],
                        steps=[120000, 160000], max_iter=180000, warmup=1000,
                        description="COCO Mask R-CNN R50-FPN 2x (MoCo)"),
}


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
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown detectron2 protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if ims_per_batch % num_gpus:
        raise ValueError(f"ims_per_batch={ims_per_batch} is not divisible by num_gpus={num_gpus}")
    p = PROTOCOLS[protocol]
    # Linear scaling rule from MoCo's batch 16 / lr 0.02 (identity at the default batch size).
    scale = ims_per_batch / 16
    schedule_iter = round(p["max_iter"] / scale)
    total = max_iter or schedule_iter
    steps = [round(s / scale * total / schedule_iter) for s in p["steps"]]
    warmup = min(p["warmup"], max(total // 2, 1))

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
        "SOLVER": {"IMS_PER_BATCH": ims_per_batch, "BASE_LR": round(0.02 * scale, 8), "STEPS": steps,
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
    text = "\n".join(header) + "\n" + yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None, width=100)
    return atomic_write_text(out_path, text)


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
