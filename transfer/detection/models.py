"""Detectors built from ``torchvision.models.detection`` parts around a mocobench backbone.

Two designs, as in MoCo's detection configs:

**R50-C4** (``build_c4``), detectron2's ``Res5ROIHeads`` with MoCo's extra norm::

    image -> stem, res2, res3, res4 (stride 16)  --> RPN (one level, 15 anchors per position)
                                                  \\-> RoIAlign 14x14 (aligned) -> res5 (its
                                                       first block has stride 2: 7x7) -> BN
                                                       ("Res5ROIHeadsExtraNorm") -> mean pool
                                                       -> class scores + class-specific boxes
    Mask R-CNN C4: the same res5 + BN on the foreground RoIs -> 2x2 deconv (stride 2) -> 1x1
    conv -> 14x14 mask logits per class. (The CPU ``tiny`` protocol pools 8x8 instead of 14x14:
    res5 on every RoI is most of the C4 detector's compute.)

The backbone's own ``layer4`` (res5, with its pretrained weights) *moves* into the box head: it
is the same module object, not a copy, so the detector's parameters are exactly the
backbone's plus the new heads. No stage is frozen (``FREEZE_AT 0``) and every BN layer trains
(nn.BatchNorm2d, turned into SyncBatchNorm under DDP).

**R50-FPN** (``build_fpn``): res2..res5 -> FPN (256 channels, BN, max-pool P6) -> RPN on
P2..P6; RoIAlign 7x7 -> 4 conv + 1 fc box head with BN; Mask R-CNN: RoIAlign 14x14 -> 4-conv
mask head with BN -> deconv -> 1x1, as MoCo's ``coco_R_50_FPN_*`` configs (``NORM: SyncBN``).

Input: RGB in [0, 1], normalised with the backbone's mean/std inside the model
(``GeneralizedRCNNTransform``), which is how torchvision-style checkpoints were pretrained.
NOTE: detectron2 computes box regression for K classes and torchvision's predictor for K + 1
(the background row is unused); detectron2's C4 mask head reuses the box branch's res5 output
of the foreground RoIs during training, while torchvision's RoIHeads pools them again and runs
res5 a second time (same weights, same result up to BN batch statistics, more compute).
NOTE: the FPN RoI pooler is torchvision's ``MultiScaleRoIAlign`` (``aligned=False``);
detectron2 uses ``ROIAlignV2`` (``aligned=True``). The C4 pooler below is aligned.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign, roi_align
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from mocobench.checkpoints.backbones import Backbone


class C4Trunk(nn.Module):
    """stem + res2..res4 of a ResNet backbone (the same modules), one stride-16 map named ``"0"``."""

    def __init__(self, backbone: Backbone):
        super().__init__()
        net = backbone.net
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3
        self.out_channels = backbone.stage_channels["res4"]

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))  # N x C4 x H/16 x W/16
        return OrderedDict([("0", x)])


class Res5ExtraNorm(nn.Module):
    """res5 followed by one BatchNorm (MoCo's ``Res5ROIHeadsExtraNorm``): R x C x 14 x 14 -> R x C5 x 7 x 7."""

    def __init__(self, res5: nn.Module, channels: int):
        super().__init__()
        self.res5 = res5
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.res5(x))


class PooledRes5(nn.Module):
    """Box head: res5 + extra norm, then the mean over the 7 x 7 positions -> R x C5."""

    def __init__(self, res5_norm: Res5ExtraNorm):
        super().__init__()
        self.res5_norm = res5_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res5_norm(x).mean(dim=(2, 3))


class AlignedRoIPool(MultiScaleRoIAlign):
    """RoIAlign on the single stride-16 map with ``aligned=True`` (detectron2's ROIAlignV2).

    A MultiScaleRoIAlign subclass only because torchvision's FasterRCNN checks the type.
    """

    def __init__(self, output_size: int, stride: int = 16, sampling_ratio: int = 0):
        super().__init__(["0"], output_size, sampling_ratio)
        self.scale = 1.0 / stride

    def forward(self, features, proposals, image_shapes):
        return roi_align(features["0"], proposals, self.output_size, spatial_scale=self.scale,
                         sampling_ratio=self.sampling_ratio, aligned=True)


class FPNTrunk(nn.Module):
    """res2..res5 of any backbone -> FPN with BN -> {"0".."3", "pool"} (strides 4..64), 256 channels."""

    def __init__(self, backbone: Backbone, out_channels: int = 256):
        super().__init__()
        self.body = backbone
        self.stages = ("res2", "res3", "res4", "res5")
        self.fpn = FeaturePyramidNetwork([backbone.stage_channels[s] for s in self.stages], out_channels,
                                         extra_blocks=LastLevelMaxPool(), norm_layer=nn.BatchNorm2d)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        maps = self.body.feature_maps(x, stages=self.stages)
        return self.fpn(OrderedDict((str(i), maps[s]) for i, s in enumerate(self.stages)))


def _common_kwargs(protocol, backbone: Backbone) -> dict:
    p = protocol
    return dict(
        min_size=p.min_size_train, max_size=p.max_size_train,
        image_mean=list(backbone.mean), image_std=list(backbone.std),
        rpn_pre_nms_top_n_train=p.rpn_pre_nms_top_n_train, rpn_post_nms_top_n_train=p.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=p.rpn_pre_nms_top_n_test, rpn_post_nms_top_n_test=p.rpn_post_nms_top_n_test,
        rpn_batch_size_per_image=p.rpn_batch_size_per_image, box_batch_size_per_image=p.roi_batch_size_per_image,
        box_score_thresh=p.score_thresh_test, box_nms_thresh=p.nms_thresh_test,
        box_detections_per_img=p.detections_per_img)


def build_c4(backbone: Backbone, num_classes: int, protocol, mask: bool = False) -> nn.Module:
    """R50-C4 Faster R-CNN (or Mask R-CNN with ``mask``); ``num_classes`` excludes background."""
    if backbone.family != "resnet" or backbone.spec.cifar_stem:
        raise ValueError(f"the C4 detector needs a torchvision ResNet backbone with the ImageNet stem, "
                         f"not {backbone.arch}{' (CIFAR stem)' if backbone.spec.cifar_stem else ''}")
    trunk = C4Trunk(backbone)
    c5 = backbone.stage_channels["res5"]
    res5_norm = Res5ExtraNorm(backbone.net.layer4, c5)  # the pretrained res5 itself, not a copy
    anchors = AnchorGenerator((tuple(protocol.anchor_sizes),), (tuple(protocol.aspect_ratios),))
    rpn_head = RPNHead(trunk.out_channels, len(protocol.anchor_sizes) * len(protocol.aspect_ratios))
    kwargs = _common_kwargs(protocol, backbone)
    box = dict(box_roi_pool=AlignedRoIPool(protocol.roi_pool_size), box_head=PooledRes5(res5_norm),
               box_predictor=FastRCNNPredictor(c5, num_classes + 1))
    if not mask:
        return FasterRCNN(trunk, rpn_anchor_generator=anchors, rpn_head=rpn_head, **box, **kwargs)
    return MaskRCNN(trunk, rpn_anchor_generator=anchors, rpn_head=rpn_head, **box,
                    mask_roi_pool=AlignedRoIPool(protocol.roi_pool_size), mask_head=res5_norm,
                    mask_predictor=MaskRCNNPredictor(c5, 256, num_classes + 1), **kwargs)


def build_fpn(backbone: Backbone, num_classes: int, protocol, mask: bool = False) -> nn.Module:
    """R50-FPN Faster R-CNN (or Mask R-CNN) with BN in FPN and heads."""
    trunk = FPNTrunk(backbone, protocol.fpn_channels)
    c = trunk.out_channels
    n_levels = 5  # P2..P6
    sizes = tuple(protocol.anchor_sizes)
    if len(sizes) != n_levels:  # one size per level, as detectron2's FPN default (32..512)
        sizes = tuple(sizes[0] * 2 ** i for i in range(n_levels))
    anchors = AnchorGenerator(tuple((s,) for s in sizes), (tuple(protocol.aspect_ratios),) * n_levels)
    rpn_head = RPNHead(c, len(protocol.aspect_ratios))
    names = ["0", "1", "2", "3"]
    kwargs = _common_kwargs(protocol, backbone)
    box = dict(box_roi_pool=MultiScaleRoIAlign(names, 7, 0),
               box_head=FastRCNNConvFCHead((c, 7, 7), [c] * 4, [1024], norm_layer=nn.BatchNorm2d),
               box_predictor=FastRCNNPredictor(1024, num_classes + 1))
    if not mask:
        return FasterRCNN(trunk, rpn_anchor_generator=anchors, rpn_head=rpn_head, **box, **kwargs)
    return MaskRCNN(trunk, rpn_anchor_generator=anchors, rpn_head=rpn_head, **box,
                    mask_roi_pool=MultiScaleRoIAlign(names, 14, 0),
                    mask_head=MaskRCNNHeads(c, [c] * 4, 1, norm_layer=nn.BatchNorm2d),
                    mask_predictor=MaskRCNNPredictor(c, c, num_classes + 1), **kwargs)


MODELS = {"c4": build_c4, "fpn": build_fpn}


def build_detector(backbone: Backbone, num_classes: int, protocol, mask: bool = False) -> nn.Module:
    return MODELS[protocol.model](backbone, num_classes, protocol, mask=mask)
