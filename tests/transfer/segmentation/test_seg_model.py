"""FCN / DeepLabV3 heads, protocols, schedule, augmentation and sliding-window inference."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch
import torch.nn as nn

from mocobench.transfer.segmentation.data import PositionBatches, augment
from mocobench.transfer.segmentation.inference import predict_slide, predict_whole
from mocobench.transfer.segmentation.model import HEADS, OS16, FCNHead, SegmentationModel
from mocobench.transfer.segmentation.protocols import PROTOCOLS, get_protocol, override


@pytest.fixture(scope="module")
def dilated_r18():
    from mocobench.checkpoints.load import load_backbone

    return load_backbone("random:resnet18", dilation=OS16)[0]


def test_fcn_head_is_the_moco_appendix_head():
    head = FCNHead(2048, 19)
    convs = [m for m in head if isinstance(m, nn.Conv2d)]
    assert [(c.kernel_size, c.dilation, c.out_channels) for c in convs] == [
        ((3, 3), (6, 6), 256), ((3, 3), (6, 6), 256), ((1, 1), (1, 1), 19)]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in head) == 2
    assert sum(isinstance(m, nn.ReLU) for m in head) == 2


@pytest.mark.parametrize("head", list(HEADS))
def test_output_stride_16_and_full_size_logits(dilated_r18, head):
    x = torch.randn(2, 3, 32, 48)
    assert dilated_r18.feature_maps(x, stages=("res5",))["res5"].shape[-2:] == (2, 3)  # stride 16
    model = SegmentationModel(dilated_r18, head, 5).eval()
    assert model(x).shape == (2, 5, 32, 48)


def test_step_schedule_drops_at_70_and_90_percent():
    p = get_protocol("moco-fcn", "cityscapes")
    assert p.lr_schedule().lr(p.lr, 0) == 0.01 and p.lr_schedule().lr(p.lr, 62_999) == 0.01
    assert p.lr_schedule().lr(p.lr, 63_000) == pytest.approx(0.001) and p.lr_schedule().lr(p.lr, 80_999) == pytest.approx(0.001)
    assert p.lr_schedule().lr(p.lr, 81_000) == pytest.approx(0.0001)
    q = get_protocol("mmseg-fcn-40k", "cityscapes")
    assert q.lr_schedule().lr(q.lr, 0) == 0.01
    assert q.lr_schedule().lr(q.lr, 20_000) == pytest.approx((0.01 - 1e-4) * 0.5 ** 0.9 + 1e-4)


@pytest.mark.parametrize("name,dataset", [(n, d) for n, ds in PROTOCOLS.items() for d in ds])
def test_presets_are_valid(name, dataset):
    p = get_protocol(name, dataset)
    assert p.name == name and p.head in HEADS and p.schedule in ("step", "poly")
    assert p.inference in ("whole", "slide") and len(p.crop) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.lr = 1.0


def test_moco_presets_follow_the_paper():
    cs, voc = get_protocol("moco-fcn", "cityscapes"), get_protocol("moco-fcn", "voc2012")
    assert (cs.crop, cs.lr, cs.iters, cs.batch_size, cs.weight_decay) == ((769, 769), 0.01, 90_000, 16, 1e-4)
    assert (voc.crop, voc.lr, voc.iters) == ((513, 513), 0.003, 30_000)
    assert cs.scale_range == (0.5, 2.0) and cs.flip and cs.sync_bn and cs.lr_steps == (0.7, 0.9)


def test_overrides():
    p = override(get_protocol("tiny", "cityscapes"), ["--crop=32x48", "iters=7", "flip=false", "head=deeplabv3"])
    assert (p.crop, p.iters, p.flip, p.head) == ((32, 48), 7, False, "deeplabv3")
    with pytest.raises(ValueError, match="unknown option --lrr"):
        override(p, ["lrr=1"])


@pytest.mark.parametrize("name,dataset", [(n, d) for n, ds in PROTOCOLS.items() for d in ds])
def test_a_sliding_window_without_slide_inference_is_refused(name, dataset):
    """Every preset infers on the whole image: a window given with it would not run (neither engine
    reads it), while run.preset_changes listed it."""
    p = get_protocol(name, dataset)
    assert p.inference == "whole"
    with pytest.raises(ValueError, match=re.escape(
            "--slide_crop does not apply to --inference=whole; only --inference=slide uses it")):
        override(p, ["--slide_crop=512x512", "--slide_stride=100x100"])


@pytest.mark.parametrize("given,says", [
    (["--slide-stride=100x100"], "--slide-stride does not apply to --inference=whole"),   # the key as typed
    (["--inference=whole", "--slide_stride=100x100"], "--slide_stride does not apply to --inference=whole"),
    (["--schedule=step", "--min_lr=0.001"], "--min_lr does not apply to --schedule=step; only --schedule=poly"),
    (["--schedule=step", "--poly_power=1.0"], "--poly_power does not apply to --schedule=step"),
    (["--schedule=poly", "--lr_steps=0.5"], "--lr_steps does not apply to --schedule=poly; only --schedule=step"),
    (["--inference=multiscale"], "--inference=multiscale: must be one of whole, slide"),
])
def test_a_field_the_chosen_mode_does_not_read_is_refused(given, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        override(get_protocol("moco-fcn", "cityscapes"), given)


def test_a_field_is_accepted_with_the_mode_that_reads_it():
    p = override(get_protocol("moco-fcn", "cityscapes"),
                 ["--inference=slide", "--slide_crop=512x512", "--slide_stride=100x100"])
    assert (p.inference, p.slide_crop, p.slide_stride) == ("slide", (512, 512), (100, 100))
    q = override(get_protocol("moco-fcn", "cityscapes"), ["--schedule=poly", "--min_lr=0.001", "--poly_power=1.0"])
    assert (q.schedule, q.min_lr, q.poly_power, q.lr_steps) == ("poly", 0.001, 1.0, ())


def test_augment_crops_pads_and_keeps_labels():
    rng = np.random.default_rng(0)
    image = torch.randn(3, 20, 30)
    target = torch.from_numpy(np.random.default_rng(1).integers(0, 4, (20, 30)).astype(np.uint8))
    for _ in range(5):
        im, t = augment(image, target, rng, (32, 32), (0.5, 2.0), True)
        assert im.shape == (3, 32, 32) and t.shape == (32, 32)
        assert set(t.unique().tolist()) <= {0, 1, 2, 3, 255}  # nearest resize: no new labels


def test_batches_split_the_global_batch_across_ranks():
    a = list(PositionBatches(2, 4, 4, rank=0, world=2))
    b = list(PositionBatches(2, 4, 4, rank=1, world=2))
    assert a == [[8, 9], [12, 13]] and b == [[10, 11], [14, 15]]


def test_sliding_window_equals_whole_image_for_a_pointwise_model():
    model = nn.Conv2d(3, 4, 1)
    x = torch.randn(1, 3, 37, 53)
    slide = predict_slide(model, x, crop=(16, 20), stride=(10, 13))
    assert torch.allclose(slide, predict_whole(model, x), atol=1e-6)
