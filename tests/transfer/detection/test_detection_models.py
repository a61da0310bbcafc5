"""The C4 and FPN detectors: structure (res5 moved, extra BN, no frozen BN) and a forward pass."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from mocobench.checkpoints import load_backbone, save_backbone
from mocobench.transfer.detection.models import MODELS, AlignedRoIPool, PooledRes5, build_detector
from mocobench.transfer.detection.protocols import TINY

SMALL = dataclasses.replace(TINY, min_size_train=(64,), max_size_train=96, min_size_test=64, max_size_test=96)


def batch(n=2, size=(64, 80), with_masks=False):
    images = [torch.rand(3, *size) for _ in range(n)]
    targets = []
    for k in range(n):
        t = {"boxes": torch.tensor([[8.0, 10.0, 40.0, 50.0]]), "labels": torch.tensor([k + 1])}
        if with_masks:
            m = torch.zeros(1, *size, dtype=torch.uint8)
            m[0, 10:50, 8:40] = 1
            t["masks"] = m
        targets.append(t)
    return images, targets


def test_c4_moves_the_pretrained_res5_into_the_box_head(tmp_path):
    torch.manual_seed(1)
    src, _ = load_backbone("random:resnet18:7")
    path = save_backbone(tmp_path / "bb.pth", src, {"method": "test"})
    backbone, _ = load_backbone(path)
    model = build_detector(backbone, 20, SMALL)
    head = model.roi_heads.box_head
    assert isinstance(head, PooledRes5)
    # the very modules of the backbone, not copies
    assert head.res5_norm.res5 is backbone.net.layer4
    assert model.backbone.layer3 is backbone.net.layer3 and model.backbone.conv1 is backbone.net.conv1
    # ... holding the checkpoint's weights
    state = model.state_dict()
    for k, v in src.net.state_dict().items():
        if k.startswith("layer4."):
            assert torch.equal(state["roi_heads.box_head.res5_norm.res5." + k[len("layer4."):]], v)
        elif not k.startswith("fc"):
            assert torch.equal(state["backbone." + k], v)
    # extra BN after res5 (MoCo's Res5ROIHeadsExtraNorm), with res5's output channels
    assert isinstance(head.res5_norm.norm, nn.BatchNorm2d) and head.res5_norm.norm.num_features == 512
    # RPN and RoIAlign on res4 (stride 16), aligned as detectron2's ROIAlignV2
    assert isinstance(model.roi_heads.box_roi_pool, AlignedRoIPool)
    with torch.no_grad():
        assert model.backbone(torch.zeros(1, 3, 64, 96))["0"].shape == (1, 256, 4, 6)
    # every parameter appears once, all trainable (FREEZE_AT 0), BN layers are plain trainable BN
    names = [n for n, _ in model.named_parameters()]
    assert len(names) == len(set(id(p) for p in model.parameters()))
    assert all(p.requires_grad for p in model.parameters())
    assert not any("Frozen" in type(m).__name__ for m in model.modules())


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("mask", [False, True])
def test_train_and_eval_forward(kind, mask):
    torch.manual_seed(0)
    backbone, _ = load_backbone("random:resnet18")
    model = build_detector(backbone, 5, dataclasses.replace(SMALL, model=kind), mask=mask)
    images, targets = batch(with_masks=mask)
    model.train()
    losses = model(images, targets)
    expected = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"} | ({"loss_mask"} if mask else set())
    assert set(losses) == expected and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.roi_heads.box_predictor.cls_score.weight.grad is not None
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert out[0]["boxes"].shape[1] == 4 and ("masks" in out[0]) == mask
    if mask:
        assert out[0]["masks"].shape[-2:] == (64, 80)  # pasted back to the input size
    if kind == "c4" and mask:
        # the mask branch runs the same res5 (+ extra BN) as the box branch
        assert model.roi_heads.mask_head is model.roi_heads.box_head.res5_norm


def test_c4_refuses_non_resnets():
    backbone, _ = load_backbone("random:mobilenet_v2")
    with pytest.raises(ValueError, match="ResNet"):
        build_detector(backbone, 3, SMALL)
