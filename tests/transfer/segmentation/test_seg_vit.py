"""Segmentation on a plain ViT: the FCN head on its native stride-16 map; CNNs keep the dilated path."""

from __future__ import annotations

import torch

from mocobench.transfer.segmentation.model import OS16, SegmentationModel, build_model


def _head_input(model, x):
    seen = []
    hook = model.head.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape))
    with torch.no_grad():
        out = model.eval()(x)
    hook.remove()
    return seen[0], out


def test_vit_head_reads_the_stride_16_map_undilated():
    model, report = build_model("random:timm:test_vit", "fcn", 7)
    assert report.arch == "timm:test_vit" and model.stage == "res4"
    x = torch.randn(1, 3, 64, 96)
    head_in, out = _head_input(model, x)
    assert tuple(head_in[-2:]) == (64 // 16, 96 // 16) and head_in[1] == model.backbone.net.embed_dim
    assert out.shape == (1, 7, 64, 96)
    assert model.features_used() == {"feature_stage": "res4", "feature_stride": 16,
                                     "backbone_dilation": [False, False, False], "backbone_single_stride": True,
                                     "backbone_frozen": False}


def test_cnn_path_is_the_dilated_res5_path_as_before():
    from mocobench.checkpoints.load import load_backbone

    # the previous build_model, stated directly: dilated backbone, head on res5, same global RNG
    torch.manual_seed(0)
    ref = SegmentationModel(load_backbone("random:resnet18", dilation=OS16)[0], "fcn", 5).eval()
    torch.manual_seed(0)
    model, _ = build_model("random:resnet18", "fcn", 5)
    model.eval()
    assert model.stage == "res5" and model.backbone.spec.dilation == OS16
    a, b = ref.state_dict(), model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(2, 3, 48, 64)
    head_in, out = _head_input(model, x)
    assert tuple(head_in[-2:]) == (3, 4)
    with torch.no_grad():
        assert torch.equal(out, ref(x))
    assert model.features_used()["backbone_dilation"] == [False, False, True]


def test_eval_cli_on_a_vit_writes_a_record(synth_tiny, tmp_path):
    from mocobench.core.records import load_records
    from mocobench.transfer.segmentation.cli import eval_main

    code = eval_main("segmentation", [
        "--checkpoint", "random:timm:test_vit", "--dataset", "cityscapes", "--data", str(synth_tiny),
        "--protocol", "tiny", "--results", str(tmp_path / "res"), "--max-iters", "3", "--crop=32,48",
        "--device", "cpu"])
    assert code == 0
    records, problems = load_records(tmp_path / "res")
    assert not problems and len(records) == 1
    r = records[0]
    assert r["checkpoint"]["arch"] == "timm:test_vit" and r["task"] == "segmentation"
    assert r["config"]["feature_stage"] == "res4" and r["config"]["feature_stride"] == 16
    assert r["config"]["backbone_dilation"] == [False, False, False] and r["config"]["iters"] == 3
    assert 0.0 <= r["metrics"]["mIoU"] <= 100.0
