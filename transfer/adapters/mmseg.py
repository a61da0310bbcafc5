"""OpenMMLab checkpoints (mmseg / mmdet / mmpretrain) and the MMSegmentation FCN config.

Checkpoint: ``{"meta": {...}, "state_dict": {"backbone.<torchvision name>": tensor}}``. OpenMMLab's
``ResNet`` (``style='pytorch'``) names its layers like torchvision (``conv1``, ``bn1``,
``layer1.0.downsample.1``), so only the ``backbone.`` prefix is added. ``meta`` holds plain Python
values only, so the file loads under ``torch.load(weights_only=True)``; the source checkpoint's own
metadata goes under ``meta["mocobench"]`` (read back by ``checkpoints.formats``).

Config: a complete MMSegmentation 1.x Python config (no ``_base_`` files) equal to mmseg's
``fcn_r50-d8_4xb2-{40k,80k}_cityscapes-512x1024.py`` except for the backbone:

NOTE: mmseg's FCN R50-D8 uses ``ResNetV1c`` (a 3-conv deep stem) initialised from
``open-mmlab://resnet50_v1c``; a torchvision-layout checkpoint (every SSL release) has the 7x7
stem, so we use ``type='ResNet'`` with ``style='pytorch'`` and load it through
``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')``, as mmselfsup's own
segmentation benchmark configs do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from checkpoints.keymaps import MM_BACKBONE_PREFIX
from core.io import atomic_torch_save, atomic_write_text

# protocol -> (iterations, checkpoint/validation interval)
PROTOCOLS = {
    "fcn-r50-d8-cityscapes-40k": (40000, 4000),
    "fcn-r50-d8-cityscapes-80k": (80000, 8000),
}


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


CONFIG_TEMPLATE = '''# FCN R50-D8, Cityscapes 512x1024, {iters} iterations -- written by mocobench
# (transfer/adapters/mmseg.py). Same as mmseg's fcn_r50-d8_4xb2-{short}_cityscapes-512x1024.py
# (4 GPUs x 2 images) except the backbone: torchvision-layout ResNet-50 (style='pytorch', 7x7 stem)
# initialised from the converted checkpoint below.
checkpoint = {ckpt!r}
data_root = {data_root!r}
norm_cfg = dict(type={norm!r}, requires_grad=True)
crop_size = (512, 1024)
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
        depth=50,
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
        in_channels=2048,
        in_index=3,
        channels=512,
        num_convs=2,
        concat_input=True,
        dropout_ratio=0.1,
        num_classes=19,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels=1024,
        in_index=2,
        channels=256,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=19,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

dataset_type = 'CityscapesDataset'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(2048, 1024), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 1024), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size={batch_size},
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='leftImg8bit/train', seg_map_path='gtFine/train'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0005)
optim_wrapper = dict(type='OptimWrapper', optimizer=optimizer, clip_grad=None)
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end={iters}, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters={iters}, val_interval={interval})
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
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


def write_mmseg_config(protocol: str, ckpt_path: str | os.PathLike, out_path: str | os.PathLike, *,
                       data_root: str | os.PathLike = "data/cityscapes/", norm: str = "SyncBN",
                       batch_size: int = 2, max_iters: int | None = None) -> Path:
    """Write the MMSegmentation config for ``protocol`` (see :data:`PROTOCOLS`).

    ``batch_size`` is per GPU (mmseg's default 2 on 4 GPUs); ``max_iters`` shortens the schedule
    for smoke runs; ``norm="BN"`` for a single process without distributed init.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown mmseg protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    iters, interval = PROTOCOLS[protocol]
    if max_iters:
        iters, interval = max_iters, max(1, min(interval, max_iters))
    text = CONFIG_TEMPLATE.format(iters=iters, short=protocol.rsplit("-", 1)[-1], ckpt=str(ckpt_path),
                                  data_root=str(data_root), norm=norm, batch_size=batch_size,
                                  interval=interval)
    return atomic_write_text(out_path, text)
