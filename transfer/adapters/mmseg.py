"""OpenMMLab checkpoints (mmseg / mmdet / mmpretrain) and MMSegmentation FCN configs.

Checkpoint: ``{"meta": {...}, "state_dict": {"backbone.<torchvision name>": tensor}}``. OpenMMLab's
``ResNet`` (``style='pytorch'``) names its layers like torchvision (``conv1``, ``bn1``,
``layer1.0.downsample.1``), so only the ``backbone.`` prefix is added. ``meta`` holds plain Python
values only, so the file loads under ``torch.load(weights_only=True)``; the source checkpoint's own
metadata goes under ``meta["mocobench"]`` (read back by ``mocobench.checkpoints.formats``).

Config: a complete MMSegmentation 1.x Python config (no ``_base_`` files), one :class:`FCNConfig`
per mmseg config it reproduces (:data:`MMSEG_CONFIGS`, derived from our segmentation protocols):
``fcn_r50-d8_4xb2-{40k,80k}_cityscapes-512x1024``
and ``fcn_r50-d8_4xb4-{20k,40k}_voc12aug-512x512``, equal to mmseg's except for the backbone:

NOTE: mmseg's FCN R50-D8 uses ``ResNetV1c`` (a 3-conv deep stem) initialised from
``open-mmlab://resnet50_v1c``; a torchvision-layout checkpoint (every SSL release) has the 7x7
stem, so we use ``type='ResNet'`` with ``style='pytorch'`` and load it through
``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')``, as mmselfsup's own
segmentation benchmark configs do. ResNet-18/34 get the head widths of mmseg's R18 configs.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mocobench.checkpoints.keymaps import MM_BACKBONE_PREFIX
from mocobench.core.io import atomic_torch_save, atomic_write_text
from mocobench.core.registry import Registry
from mocobench.core.settings import AT_LEAST_0, AT_LEAST_1, POSITIVE, UNIT_OPEN_TOP, setting


@dataclass(frozen=True)
class FCNConfig:
    """One MMSegmentation FCN-D8 config, in mmseg's terms (``crop`` is H, W as mmseg's
    ``crop_size``; ``scale`` is the (long edge, short edge) bound of its ``Resize``)."""

    dataset: str = "cityscapes"               # key of DATASETS
    depth: int = setting(50, range=AT_LEAST_1)                           # 18, 34, 50, 101
    crop: tuple[int, int] = setting((512, 1024), range=AT_LEAST_1)
    scale: tuple[int, int] = setting((2048, 1024), range=AT_LEAST_1)
    ratio_range: tuple[float, float] = setting((0.5, 2.0), range=POSITIVE)
    flip: bool = True
    batch_size: int = setting(2, range=AT_LEAST_1)                       # per GPU
    num_workers: int = setting(2, range=AT_LEAST_0, run=True)
    iters: int = setting(40_000, range=AT_LEAST_1)
    checkpoint_every: int = setting(4_000, range=AT_LEAST_1, run=True)
    log_every: int = setting(50, range=AT_LEAST_1, run=True)
    lr: float = setting(0.01, range=POSITIVE)
    momentum: float = setting(0.9, range=UNIT_OPEN_TOP)
    weight_decay: float = setting(5e-4, range=AT_LEAST_0)
    schedule: str = "poly"                    # "poly" (PolyLR) or "step" (MultiStepLR, x0.1)
    poly_power: float = setting(0.9, range=POSITIVE)
    min_lr: float = setting(1e-4, range=AT_LEAST_0)
    lr_steps: tuple[int, ...] = setting((), range=AT_LEAST_0)            # iterations, for schedule="step"
    norm: str = "SyncBN"
    inference: str = "whole"                  # "whole" or "slide"
    slide_crop: tuple[int, int] = setting((512, 1024), range=AT_LEAST_1)
    slide_stride: tuple[int, int] = setting((341, 683), range=AT_LEAST_1)

    def with_crop(self, crop: tuple[int, int]) -> "FCNConfig":
        """This config with training crop ``crop`` and the resize bound changed in proportion, as
        mmseg's configs keep them (Cityscapes: scale = 2 x crop; VOC: (4 W, H))."""
        (h0, w0), (l0, s0) = self.crop, self.scale
        h, w = crop
        return dataclasses.replace(self, crop=(h, w), scale=(round(l0 * w / w0), round(s0 * h / h0)))


# The mmseg configs this module writes, each derived from the protocol of ours that reproduces it
# (transfer/segmentation/protocols.py holds the numbers, once): name -> (protocol, dataset, the
# config's GPUs: "4xb2" is 4 GPUs of 2 images).
MMSEG_CONFIGS: Registry[tuple[str, str, int]] = Registry("mmseg protocol", {
    "fcn-r50-d8-cityscapes-40k": ("mmseg-fcn-40k", "cityscapes", 4),
    "fcn-r50-d8-cityscapes-80k": ("mmseg-fcn-80k", "cityscapes", 4),
    "fcn-r50-d8-voc12aug-20k": ("mmseg-fcn-20k", "voc2012", 4),
    "fcn-r50-d8-voc12aug-40k": ("mmseg-fcn-40k", "voc2012", 4),
})
# mmseg's resize bound (long edge, short edge) for its training crop (H, W), per dataset; other crops
# scale it in proportion (FCNConfig.with_crop)
RESIZE_BOUND = {"cityscapes": ((512, 1024), (2048, 1024)), "voc2012": ((512, 512), (2048, 512))}


def fcn_from_protocol(protocol, dataset: str, *, depth: int = 50, world: int = 4, norm: str = "SyncBN") -> FCNConfig:
    """The FCNConfig that runs segmentation ``protocol`` (a SegProtocol; every field of it that mmseg
    has) on ``dataset`` in ``world`` processes."""
    crop, scale = RESIZE_BOUND[dataset]
    base = FCNConfig(dataset=dataset, crop=crop, scale=scale)
    return dataclasses.replace(
        base.with_crop(tuple(protocol.crop)), depth=depth, ratio_range=tuple(protocol.scale_range),
        flip=protocol.flip, batch_size=protocol.batch_size // world, num_workers=protocol.num_workers,
        iters=protocol.iters, checkpoint_every=max(1, min(protocol.checkpoint_every, protocol.iters)),
        log_every=protocol.log_every, lr=protocol.lr, momentum=protocol.momentum,
        weight_decay=protocol.weight_decay, schedule=protocol.schedule, poly_power=protocol.poly_power,
        min_lr=protocol.min_lr, lr_steps=protocol.step_iterations() if protocol.schedule == "step" else (),
        norm=norm, inference=protocol.inference, slide_crop=tuple(protocol.slide_crop),
        slide_stride=tuple(protocol.slide_stride))


def mmseg_protocol(name: str) -> FCNConfig:
    """The mmseg config ``name`` (a key of :data:`MMSEG_CONFIGS`) as mmseg publishes it."""
    from mocobench.transfer.segmentation.protocols import get_protocol

    protocol, dataset, gpus = MMSEG_CONFIGS.lookup(name)
    return fcn_from_protocol(get_protocol(protocol, dataset), dataset, world=gpus)


# dataset -> (mmseg dataset type, classes, default data folders relative to data_root, as mmseg's
# docs lay them out: Cityscapes after mmseg's converter wrote *_gtFine_labelTrainIds.png; VOC with
# the SBD-augmented masks)
DATASETS = Registry("mmseg dataset", {
    "cityscapes": ("CityscapesDataset", 19, {
        "train": {"img_path": "leftImg8bit/train", "seg_map_path": "gtFine/train", "ann_file": ""},
        "val": {"img_path": "leftImg8bit/val", "seg_map_path": "gtFine/val", "ann_file": ""}}),
    "voc2012": ("PascalVOCDataset", 21, {
        "train": {"img_path": "JPEGImages", "seg_map_path": "SegmentationClassAug",
                  "ann_file": "ImageSets/Segmentation/train_aug.txt"},
        "val": {"img_path": "JPEGImages", "seg_map_path": "SegmentationClass",
                "ann_file": "ImageSets/Segmentation/val.txt"}}),
})
# our arch names -> mmseg ResNet depth
RESNET_DEPTHS = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101}
# depth -> (res5 channels, res4 channels, decode head width, auxiliary head width)
HEAD_WIDTHS = {18: (512, 256, 128, 64), 34: (512, 256, 128, 64), 50: (2048, 1024, 512, 256),
               101: (2048, 1024, 512, 256)}


def _plain_meta(meta: dict | None) -> dict[str, Any]:
    """Keep JSON-like values only, so the file loads with ``weights_only=True``."""
    def ok(v):
        if v is None or isinstance(v, (str, int, float, bool)):
            return v
        if isinstance(v, dict):
            return {str(k): ok(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [ok(x) for x in v]
        return repr(v)
    return ok(dict(meta or {}))


def to_mmseg(state: dict[str, torch.Tensor], meta: dict | None = None) -> dict[str, Any]:
    """Canonical state dict -> ``{"meta", "state_dict": {"backbone.<name>": tensor}}`` (no classifier)."""
    sd = {MM_BACKBONE_PREFIX + k: v.detach().cpu().clone() for k, v in state.items()
          if not k.startswith(("fc.", "classifier."))}
    return {"meta": {"mocobench": _plain_meta(meta), "author": "mocobench"}, "state_dict": sd}


def write_mmseg_checkpoint(path: str | os.PathLike, state: dict[str, torch.Tensor],
                           meta: dict | None = None) -> Path:
    """Also what mmdet and mmpretrain read (same layout)."""
    return atomic_torch_save(to_mmseg(state, meta), path)


CONFIG_TEMPLATE = '''# {title} -- written by mocobench (transfer/adapters/mmseg.py).
# mmseg's {mmseg_name} except the backbone: torchvision-layout ResNet-{depth} (style='pytorch',
# 7x7 stem) initialised from the converted checkpoint below.
checkpoint = {ckpt!r}
data_root = {data_root!r}
norm_cfg = dict(type={norm!r}, requires_grad=True)
crop_size = {crop!r}
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=crop_size)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type='ResNet',
        depth={depth},
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        dilations=(1, 1, 2, 4),
        strides=(1, 2, 1, 1),
        norm_cfg=norm_cfg,
        norm_eval=False,
        style='pytorch',
        contract_dilation=True,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    decode_head=dict(
        type='FCNHead',
        in_channels={c5},
        in_index=3,
        channels={w5},
        num_convs=2,
        concat_input=True,
        dropout_ratio=0.1,
        num_classes={num_classes},
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels={c4},
        in_index=2,
        channels={w4},
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes={num_classes},
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg={test_cfg})

dataset_type = {dataset_type!r}
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale={scale!r}, ratio_range={ratio_range!r}, keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob={flip_prob}),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale={scale!r}, keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size={batch_size},
    num_workers={num_workers},
    persistent_workers={persistent},
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path={train_img!r}, seg_map_path={train_seg!r}),
        ann_file={train_ann!r},
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers={num_workers},
    persistent_workers={persistent},
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path={val_img!r}, seg_map_path={val_seg!r}),
        ann_file={val_ann!r},
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

optimizer = dict(type='SGD', lr={lr!r}, momentum={momentum!r}, weight_decay={weight_decay!r})
optim_wrapper = dict(type='OptimWrapper', optimizer=optimizer, clip_grad=None)
param_scheduler = [
    {scheduler},
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters={iters}, val_interval={interval})
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval={log_every}, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval={interval}),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))

default_scope = 'mmseg'
env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
tta_model = dict(type='SegTTAModel')
'''


def mmseg_config_text(fcn: FCNConfig, ckpt_path: str | os.PathLike, *, data_root: str | os.PathLike,
                      folders: dict | None = None, name: str = "") -> str:
    """The config for ``fcn``; ``folders`` replaces :data:`DATASETS`' train/val data folders
    (``{"train": {"img_path", "seg_map_path", "ann_file"}, "val": {...}}``, absolute or relative
    to ``data_root``)."""
    DATASETS.lookup(fcn.dataset)
    if fcn.depth not in HEAD_WIDTHS:
        raise ValueError(f"mmseg config: ResNet depth {fcn.depth} is not one of {sorted(HEAD_WIDTHS)}")
    if fcn.schedule not in ("poly", "step") or fcn.inference not in ("whole", "slide"):
        raise ValueError(f"mmseg config: schedule {fcn.schedule!r} (poly|step) or inference "
                         f"{fcn.inference!r} (whole|slide) is not one mmseg runs")
    dataset_type, num_classes, default_folders = DATASETS[fcn.dataset]
    folders = folders or default_folders
    c5, c4, w5, w4 = HEAD_WIDTHS[fcn.depth]
    if fcn.schedule == "poly":
        scheduler = (f"dict(type='PolyLR', eta_min={fcn.min_lr!r}, power={fcn.poly_power!r}, begin=0, "
                     f"end={fcn.iters}, by_epoch=False)")
    else:
        scheduler = f"dict(type='MultiStepLR', milestones={list(fcn.lr_steps)!r}, gamma=0.1, by_epoch=False)"
    test_cfg = ("dict(mode='whole')" if fcn.inference == "whole" else
                f"dict(mode='slide', crop_size={fcn.slide_crop!r}, stride={fcn.slide_stride!r})")
    return CONFIG_TEMPLATE.format(
        title=f"FCN R{fcn.depth}-D8, {dataset_type}, crop {fcn.crop[0]}x{fcn.crop[1]}, {fcn.iters} iterations",
        mmseg_name=name or "FCN R50-D8 config", ckpt=str(ckpt_path), data_root=str(data_root),
        norm=fcn.norm, crop=tuple(fcn.crop), depth=fcn.depth, c5=c5, c4=c4, w5=w5, w4=w4,
        num_classes=num_classes, test_cfg=test_cfg, dataset_type=dataset_type, scale=tuple(fcn.scale),
        ratio_range=tuple(fcn.ratio_range), flip_prob=0.5 if fcn.flip else 0.0,
        batch_size=fcn.batch_size, num_workers=fcn.num_workers, persistent=fcn.num_workers > 0,
        train_img=folders["train"]["img_path"], train_seg=folders["train"]["seg_map_path"],
        train_ann=folders["train"]["ann_file"], val_img=folders["val"]["img_path"],
        val_seg=folders["val"]["seg_map_path"], val_ann=folders["val"]["ann_file"],
        lr=fcn.lr, momentum=fcn.momentum, weight_decay=fcn.weight_decay, scheduler=scheduler,
        iters=fcn.iters, interval=fcn.checkpoint_every, log_every=fcn.log_every)


def write_mmseg_config(protocol: str, ckpt_path: str | os.PathLike, out_path: str | os.PathLike, *,
                       data_root: str | os.PathLike | None = None, norm: str = "SyncBN",
                       arch: str = "resnet50", batch_size: int | None = None,
                       max_iters: int | None = None) -> Path:
    """Write the MMSegmentation config of ``protocol`` (a key of :data:`MMSEG_CONFIGS`) as mmseg's
    own tools read it, for a backbone of ``arch``. ``data_root`` defaults to mmseg's layout
    (``data/cityscapes/``, ``data/VOCdevkit/VOC2012/``); ``batch_size`` is per GPU; ``max_iters``
    shortens the schedule (the checkpoint interval shrinks with it); ``norm="BN"`` for one process."""
    return atomic_write_text(out_path, mmseg_protocol_config_text(
        protocol, ckpt_path, data_root=data_root, norm=norm, arch=arch, batch_size=batch_size, max_iters=max_iters))


# the norm layers the config's ResNet, decode and auxiliary heads are written with
MMSEG_NORMS = ("SyncBN", "BN")


def mmseg_protocol_config_text(protocol: str, ckpt_path: str | os.PathLike, *,
                               data_root: str | os.PathLike | None = None, norm: str = "SyncBN",
                               arch: str = "resnet50", batch_size: int | None = None,
                               max_iters: int | None = None) -> str:
    """The text :func:`write_mmseg_config` writes; every option is checked here, so a caller can
    refuse a bad one before it writes anything (``mocobench convert``)."""
    fcn = mmseg_protocol(protocol)
    if norm not in MMSEG_NORMS:
        raise ValueError(f"mmseg config: norm must be one of {', '.join(MMSEG_NORMS)}, got {norm!r}")
    if arch not in RESNET_DEPTHS:
        raise ValueError(f"mmseg config: the backbone is {arch}; mmseg's ResNet takes {', '.join(RESNET_DEPTHS)}")
    fcn = dataclasses.replace(fcn, norm=norm, depth=RESNET_DEPTHS[arch])
    if data_root is None:
        data_root = {"cityscapes": "data/cityscapes/", "voc2012": "data/VOCdevkit/VOC2012/"}[fcn.dataset]
    if batch_size:
        fcn = dataclasses.replace(fcn, batch_size=batch_size)
    if max_iters:
        fcn = dataclasses.replace(fcn, iters=max_iters, checkpoint_every=max(1, min(fcn.checkpoint_every, max_iters)))
    return mmseg_config_text(fcn, ckpt_path, data_root=data_root, name=protocol)


def _find(pipeline: list[dict], kind: str) -> dict:
    return next((t for t in pipeline if t.get("type") == kind), {})


def describe(cfg: dict, world: int) -> dict[str, Any]:
    """The settings a (merged) mmseg config runs, read back from it under the field names of
    ``mocobench.transfer.segmentation.protocols.SegProtocol`` (plus ``mmseg_``-prefixed extras)."""
    train = cfg["train_dataloader"]
    pipeline = train["dataset"]["pipeline"]
    resize, crop = _find(pipeline, "RandomResize"), _find(pipeline, "RandomCrop")
    opt = cfg["optim_wrapper"]["optimizer"]
    sched = cfg["param_scheduler"][0] if cfg.get("param_scheduler") else {}
    model = cfg["model"]
    test = model.get("test_cfg") or {}
    out = {
        "head": {"FCNHead": "fcn"}.get(model["decode_head"]["type"], model["decode_head"]["type"]),
        "crop": list(crop.get("crop_size", ())),
        "batch_size": train["batch_size"] * world, "iters": cfg["train_cfg"]["max_iters"],
        "lr": opt["lr"], "momentum": opt.get("momentum"), "weight_decay": opt.get("weight_decay"),
        "schedule": {"PolyLR": "poly", "MultiStepLR": "step"}.get(sched.get("type"), sched.get("type")),
        "scale_range": list(resize.get("ratio_range", ())),
        "flip": _find(pipeline, "RandomFlip").get("prob", 0) > 0,
        "sync_bn": model["backbone"]["norm_cfg"]["type"] == "SyncBN" and world > 1,
        "inference": test.get("mode", "whole"), "num_workers": train["num_workers"],
        "checkpoint_every": cfg["default_hooks"]["checkpoint"]["interval"],
        "log_every": cfg["default_hooks"]["logger"]["interval"],
        "mmseg_scale": list(resize.get("scale", ())), "mmseg_depth": model["backbone"]["depth"],
        # mmengine's AMP wrapper autocasts to fp16; the plain one runs fp32
        "precision": "fp16" if "Amp" in str(cfg["optim_wrapper"].get("type", "")) else "fp32",
    }
    if out["schedule"] == "poly":
        out.update(poly_power=sched.get("power"), min_lr=sched.get("eta_min"))
    elif out["schedule"] == "step":
        out.update(lr_steps=[m / out["iters"] for m in sched.get("milestones", [])])
    if out["inference"] == "slide":
        out.update(slide_crop=list(test["crop_size"]), slide_stride=list(test["stride"]))
    return out
