"""The dry run's GPU-hours use the engine a stage runs: detectron2's and mmseg's own rates where the
device check measured them (its engine rows), our engine's otherwise."""

from __future__ import annotations

import pytest

from mocobench import plan_check


def test_engine_stages_are_projected_from_the_engines_own_rows(monkeypatch):
    rates = {("features", "resnet50", "as the probes (bf16+NHWC on GPU)"): 3000.0,
             ("detection", "resnet50-C4", "moco-voc-c4-24k, bf16 on GPU"): 20.0,
             ("segmentation", "resnet50-FCN", "moco-fcn, bf16 on GPU"): 8.0}
    monkeypatch.setattr(plan_check, "_rates", lambda: rates)
    voc = ["eval", "detection", "--protocol", "moco-voc-c4-24k", "--dataset", "voc", "--engine", "detectron2"]
    hours, how = plan_check.gpu_hours(voc)
    assert hours == pytest.approx(24000 * 16 / 20.0 / 3600) and "our engine" in how   # not measured: ours
    assert "detectron2 runs fp32" in how and "a lower bound" in how   # which way the proxy errs
    _, how = plan_check.gpu_hours(["eval", "detection", "--protocol", "coco-c4-1x", "--engine", "torchvision"])
    assert "mask head not counted" in how and "fp32" not in how
    _, how = plan_check.gpu_hours(["eval", "detection", "--protocol", "moco-voc-c4-24k", "--engine", "torchvision"])
    assert "lower bound" not in how
    rates[("engines", "detectron2 Faster R-CNN R50-C4", "moco-voc-c4-24k")] = 10.0
    rates[("engines", "detectron2 Mask R-CNN R50-C4", "coco-c4-1x")] = 5.0
    hours, how = plan_check.gpu_hours(voc)
    assert hours == pytest.approx(24000 * 16 / 10.0 / 3600) and "detectron2 Faster R-CNN" in how
    hours, _ = plan_check.gpu_hours(["eval", "detection", "--protocol", "coco-c4-1x", "--engine", "detectron2"])
    assert hours == pytest.approx(90000 * 16 / 5.0 / 3600)
    hours, _ = plan_check.gpu_hours(["eval", "detection", "--protocol", "moco-voc-c4-24k", "--engine", "torchvision"])
    assert hours == pytest.approx(24000 * 16 / 20.0 / 3600)
    seg = ["eval", "segmentation", "--protocol", "mmseg-fcn-40k", "--dataset", "cityscapes", "--engine", "mmseg"]
    # no mmseg row yet: our FCN's 769 px rate, by pixel count to mmseg's 512x1024 crops
    assert plan_check.gpu_hours(seg)[0] == pytest.approx(40000 * 8 / (8.0 * 769 * 769 / (512 * 1024)) / 3600)
    rates[("engines", "mmseg FCN R50-D8", "mmseg-fcn-40k, Cityscapes")] = 4.0
    hours, how = plan_check.gpu_hours(seg)
    assert hours == pytest.approx(40000 * 8 / 4.0 / 3600) and "mmseg's FCN" in how
    # each protocol's own crops: VOC's 513 px from the 769 px rate by pixel count (it said "769 px")
    voc_seg = ["eval", "segmentation", "--protocol", "moco-fcn", "--dataset", "voc2012"]
    hours, how = plan_check.gpu_hours(voc_seg)
    assert hours == pytest.approx(30000 * 16 / (8.0 * 769 * 769 / (513 * 513)) / 3600)
    assert "crops of 513x513" in how and "measured at 769x769, scaled by pixel count" in how
    hours, how = plan_check.gpu_hours(["eval", "segmentation", "--protocol", "moco-fcn", "--dataset", "cityscapes"])
    assert hours == pytest.approx(90000 * 16 / 8.0 / 3600) and "scaled" not in how
    linear = ["eval", "linear", "--protocol", "paper"]
    assert plan_check.gpu_hours(linear)[0] == pytest.approx((100 * 1_281_167 + 50_000) / 3000.0 / 3600)
    rates[("linear", "resnet50", "paper protocol step")] = 2500.0
    hours, how = plan_check.gpu_hours(linear)
    assert hours == pytest.approx((100 * 1_281_167 + 50_000) / 2500.0 / 3600) and "training step" in how
