"""Segmentation networks: a dilated backbone (output stride 16) plus an FCN or DeepLabV3 head.

MoCo's appendix (FCN-16s, the head every MoCo segmentation number uses): res5's 3x3 convolutions
get dilation 2 and stride 1, so res5 is stride 16; then two extra 3x3 convolutions of 256 channels
with BN and ReLU and dilation 6; then a 1x1 convolution for per-pixel classification; the logits
are upsampled bilinearly to the input size.

Plain ViTs (every block at the patch stride, 16) cannot be dilated and need not be: the same head
runs on their native stride-16 map (``res4``), not on the pooled stride-32 ``res5`` of the
backbone's parameter-free pyramid. NOTE: MoCo's protocol is for ResNets only; this ViT path is the
FCN head of the MoCo appendix at the same output stride, not a published ViT segmentation recipe.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mocobench.core.registry import Registry

# res5 dilated -> stride 16 (the MoCo FCN); pass as ``load_backbone(..., dilation=OS16)``
OS16 = (False, False, True)


class FCNHead(nn.Sequential):
    """MoCo's FCN head: 2 x (3x3 conv 256, dilation 6, BN, ReLU) + 1x1 classifier."""

    def __init__(self, in_channels: int, num_classes: int, channels: int = 256, dilation: int = 6):
        layers = []
        c = in_channels
        for _ in range(2):
            layers += [nn.Conv2d(c, channels, 3, padding=dilation, dilation=dilation, bias=False),
                       nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
            c = channels
        layers.append(nn.Conv2d(channels, num_classes, 1))
        super().__init__(*layers)


def deeplabv3_head(in_channels: int, num_classes: int) -> nn.Module:
    """torchvision's DeepLabV3 head (ASPP + 3x3 conv + 1x1 classifier).

    NOTE: torchvision's default atrous rates (12, 24, 36) are for output stride 8; at output stride
    16 the DeepLabV3 paper uses (6, 12, 18), which we use.
    """
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead

    return DeepLabHead(in_channels, num_classes, atrous_rates=(6, 12, 18))


HEADS = Registry("segmentation head", {
    "fcn": FCNHead,
    "deeplabv3": deeplabv3_head,
})


class SegmentationModel(nn.Module):
    """``backbone`` (a :class:`mocobench.checkpoints.backbones.Backbone`) + head on its stride-16 map:
    ``res5`` of a dilated CNN, ``res4`` of a plain ViT (``stage``)."""

    def __init__(self, backbone: nn.Module, head: str, num_classes: int, stage: str = "res5",
                 frozen_backbone: bool = False):
        super().__init__()
        build_head = HEADS.lookup(head)
        self.backbone = backbone
        self.stage = stage
        self.head = build_head(backbone.stage_channels[stage], num_classes)
        self.num_classes = num_classes
        self.frozen_backbone = frozen_backbone
        if frozen_backbone:
            backbone.requires_grad_(False)

    def train(self, mode: bool = True) -> "SegmentationModel":
        super().train(mode)
        if self.frozen_backbone:   # BN statistics stay as loaded, as in a linear probe
            self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: N x 3 x H x W (normalised) -> logits N x K x H x W
        feats = self.backbone.feature_maps(x, stages=(self.stage,))[self.stage]  # N x C x H/16 x W/16
        logits = self.head(feats)                                                 # N x K x H/16 x W/16
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def features_used(self) -> dict:
        """What the head reads, for the record: the stage, its stride, whether res5 was dilated."""
        b = self.backbone
        return {"feature_stage": self.stage, "feature_stride": 16,
                "backbone_dilation": list(b.spec.dilation), "backbone_single_stride": b.single_stride,
                "backbone_frozen": self.frozen_backbone}


def load_for_segmentation(checkpoint: str, arch: str | None = None, **choices):
    """Load ``checkpoint`` strictly the way segmentation uses it: a CNN dilated (OS16, the head on
    res5), a plain ViT as it is (the head on res4). Returns ``(backbone, LoadReport)``; ``choices``
    (``branch``, ``input_convention``, ``stride_in_1x1``) go to the loader."""
    from mocobench.checkpoints.load import load_backbone

    # Whether the backbone is a plain ViT shows only once it is built. Loading it undilated first
    # (the global RNG untouched, so the head's initialisation does not depend on it) and loading a
    # CNN again dilated keeps the CNN path exactly what it was; the file's sha256 is memoised.
    with torch.random.fork_rng(devices=[]):
        backbone, report = load_backbone(checkpoint, arch=arch, **choices)
    if not backbone.single_stride:
        del backbone
        backbone, report = load_backbone(checkpoint, arch=arch, dilation=OS16, **choices)
    return backbone, report


def segmentation_model(backbone, head: str, num_classes: int, sync_bn: bool = False,
                       frozen_backbone: bool = False) -> SegmentationModel:
    """``head`` on ``backbone``'s stride-16 map (res4 of a plain ViT, res5 of a dilated CNN).
    ``sync_bn`` converts every BN (backbone and head) to SyncBN, as in the MoCo protocol; it only
    matters under torchrun with more than one process. ``frozen_backbone``: only the head trains."""
    model = SegmentationModel(backbone, head, num_classes, stage="res4" if backbone.single_stride else "res5",
                              frozen_backbone=frozen_backbone)
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def build_model(checkpoint: str, head: str, num_classes: int, sync_bn: bool = False):
    """:func:`load_for_segmentation` then :func:`segmentation_model`: ``(model, LoadReport)``."""
    backbone, report = load_for_segmentation(checkpoint)
    return segmentation_model(backbone, head, num_classes, sync_bn), report
