"""Trainer: deterministic stream, exact resume, CLI records, score CLI, mmseg engine refusal."""

from __future__ import annotations

import json

import pytest
import torch

from mocobench.datasets.cityscapes import CityscapesSegmentation
from mocobench.transfer.segmentation.data import TrainStream
from mocobench.transfer.segmentation.model import build_model
from mocobench.transfer.segmentation.protocols import get_protocol, override
from mocobench.transfer.segmentation.train import train

PROTO = override(get_protocol("tiny", "cityscapes"),
                 ["crop=32,32", "batch_size=2", "iters=3", "checkpoint_every=1", "lr=0.05"])


def _fresh(root):
    torch.manual_seed(0)
    model, report = build_model("random:resnet18", PROTO.head, 19)
    ds = CityscapesSegmentation(root, "train")
    stream = TrainStream(ds, 0, PROTO.crop, PROTO.scale_range, PROTO.flip, model.backbone.mean, model.backbone.std)
    return model, stream, report.record_fields()


def test_stream_is_a_function_of_seed_and_position(cityscapes_small):
    _, s1, _ = _fresh(cityscapes_small)
    _, s2, _ = _fresh(cityscapes_small)
    a, b = s1[13], s2[13]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(s1[13][0], s1[14][0])


def test_exact_resume(cityscapes_small, tmp_path):
    dev = torch.device("cpu")
    model, stream, ck = _fresh(cityscapes_small)
    full = train(model, stream, PROTO, device=dev, seed=0, checkpoint=ck)
    model2, stream2, ck2 = _fresh(cityscapes_small)
    part = train(model2, stream2, PROTO, device=dev, seed=0, work_dir=tmp_path, checkpoint=ck2, stop_at=1)
    assert part.iterations == 1
    model3, stream3, ck3 = _fresh(cityscapes_small)
    rest = train(model3, stream3, PROTO, device=dev, seed=0, resume=tmp_path / "last.pth", checkpoint=ck3)
    assert rest.iterations == 3
    assert part.losses + rest.losses == full.losses
    s_full, s_res = model.state_dict(), model3.state_dict()
    assert all(torch.equal(s_full[k], s_res[k]) for k in s_full)
    # a different protocol refuses to resume from that state
    with pytest.raises(ValueError, match="different protocol"):
        train(model3, stream3, override(PROTO, ["lr=0.1"]), device=dev, seed=0,
              resume=tmp_path / "last.pth", checkpoint=ck3)
    # run settings (log and checkpoint intervals) may differ: the same losses
    model4, stream4, ck4 = _fresh(cityscapes_small)
    again = train(model4, stream4, override(PROTO, ["log_every=7", "checkpoint_every=9"]), device=dev, seed=0,
                  resume=tmp_path / "last.pth", checkpoint=ck4)
    assert again.losses == rest.losses


def _presets() -> list[tuple[str, str]]:
    from mocobench.transfer.segmentation.protocols import PROTOCOLS

    return [(name, dataset) for name, by_dataset in PROTOCOLS.items() for dataset in by_dataset]


@pytest.mark.parametrize("name,dataset", _presets())
def test_records_state_what_they_changed_from_the_preset(name, dataset):
    """run.preset_changes (what both engines' records state): {} for the preset as the command
    resolves it with no overrides, which the leaderboard compares with the paper's number; each
    changed protocol field otherwise; run settings (workers, intervals) are no change."""
    from mocobench.transfer.segmentation.protocols import preset_changes

    preset = get_protocol(name, dataset)
    assert preset_changes(override(preset, []), dataset) == {}
    assert preset_changes(override(preset, ["--num_workers=0", "--log_every=3"]), dataset) == {}
    assert preset_changes(override(preset, ["--iters=7", "--lr=0.5"]), dataset) == {
        "iters": {"preset": preset.iters, "ran": 7}, "lr": {"preset": preset.lr, "ran": 0.5}}


@pytest.mark.slow
def test_eval_cli_writes_one_record_per_seed(synth_tiny, tmp_path, capsys, cs_reference):
    from mocobench.core.records import load_records
    from mocobench.transfer.segmentation.cli import eval_main

    code = eval_main("segmentation", [
        "--checkpoint", "random:resnet18", "--dataset", "cityscapes", "--data", str(synth_tiny),
        "--protocol", "tiny", "--results", str(tmp_path / "res"), "--seeds", "0", "3", "--max-iters", "1",
        "--crop=32,32", "--save-predictions", str(tmp_path / "pred")])
    assert code == 0
    records, problems = load_records(tmp_path / "res")
    assert not problems and len(records) == 2 and {r["seed"] for r in records} == {0, 3}
    r = records[0]
    assert r["run"]["world_size"] == 1 and r["env"]["device"] == "cpu"
    # the default work dir, as every task: work/<task> next to RESULTS, a folder per seed
    work = sorted((tmp_path / "work" / "segmentation").glob("random-resnet18-nosha-tiny-cityscapes-*-s*"))
    assert [w.name[-2:] for w in work] == ["s0", "s3"] and all((w / "last.pth").is_file() for w in work)
    assert r["task"] == "segmentation" and r["dataset"]["name"] == "synth-tiny-cityscapes" and r["protocol"] == "tiny"
    assert {"mIoU", "mAcc", "aAcc"} <= set(r["metrics"]) and r["config"]["iters"] == 1
    # --max-iters and --crop=: not the tiny protocol as preset (the leaderboard says so)
    assert r["run"]["preset_changes"] == {"iters": {"preset": 40, "ran": 1},
                                          "crop": {"preset": [96, 96], "ran": [32, 32]}}
    assert any(k.startswith("IoU/") for k in r["metrics"])
    # the predictions it wrote score to the same mIoU through `mocobench score cityscapes`
    from mocobench.transfer.segmentation.cli import score_main

    capsys.readouterr()
    seed0 = next(x for x in records if x["seed"] == 0)
    assert score_main("cityscapes", ["--gt", str(synth_tiny / "cityscapes" / "gtFine" / "val"),
                                     "--pred", str(tmp_path / "pred" / "s0")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metrics"]["mIoU"] == pytest.approx(seed0["metrics"]["mIoU"], abs=1e-9)
    # and the evaluation's own numbers equal cityscapesscripts on those label-id PNGs
    from mocobench.datasets import cityscapes as cs

    gt_files = cs.list_ground_truth(synth_tiny / "cityscapes" / "gtFine" / "val")
    ref = cs_reference.scores(gt_files, cs.match_predictions(gt_files, tmp_path / "pred" / "s0"))
    cs_reference.compare(seed0["metrics"], ref)


def test_score_voc_cli_and_errors(voc_small, tmp_path, capsys):
    from mocobench.transfer.segmentation.cli import score_main

    voc = voc_small / "VOCdevkit" / "VOC2012"
    args = ["--gt", str(voc / "SegmentationClass"), "--pred", str(voc / "SegmentationClass"),
            "--split", str(voc / "ImageSets" / "Segmentation" / "val.txt")]
    assert score_main("voc-seg", args) == 0
    m = json.loads(capsys.readouterr().out)["metrics"]
    # ground truth scored against itself: 255 borders are ignored, everything else is right
    assert m["mIoU"] == 100.0 and m["aAcc"] == 100.0
    # a prediction folder that lacks an image's file: a failure (exit 1), as any missing or bad file
    assert score_main("voc-seg", args[:3] + [str(tmp_path)] + args[4:]) == 1
    assert "prediction for" in capsys.readouterr().err


def test_mmseg_engine_fails_at_once_saying_why(tmp_path, capsys, hide_package):
    from mocobench.transfer.segmentation.cli import eval_main
    from mocobench.transfer.segmentation.mmseg_engine import why_unavailable

    for name in ("mmengine", "mmcv", "mmseg"):   # missing whether or not the engine is installed here
        hide_package(name)
    assert "mmengine is not importable" in why_unavailable() and "tools/engines/mmseg.sh" in why_unavailable()
    code = eval_main("segmentation", ["--checkpoint", "random:resnet50", "--dataset", "cityscapes",
                                      "--data", str(tmp_path), "--protocol", "mmseg-fcn-40k",
                                      "--engine", "mmseg", "--results", str(tmp_path)])
    assert code == 2
    assert "--engine mmseg is not usable here" in capsys.readouterr().err


def test_voc_evaluation_and_written_predictions_agree(voc_small, tmp_path):
    """evaluate() on VOC (sliding window) and `score voc-seg` on the palette PNGs it wrote."""
    from mocobench.datasets.voc_seg import VOCSegmentation
    from mocobench.transfer.segmentation.inference import evaluate, prediction_writer
    from mocobench.transfer.segmentation.score import score_voc

    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 21, 1)  # any per-pixel classifier
    val = VOCSegmentation(voc_small, "val")
    cm = evaluate(model, val, device=torch.device("cpu"), mean=(0.5,) * 3, std=(0.25,) * 3,
                  inference="slide", slide_crop=(32, 32), slide_stride=(20, 20),
                  write_prediction=prediction_writer("voc2012", tmp_path))
    voc = voc_small / "VOCdevkit" / "VOC2012"
    scored = score_voc(voc / "SegmentationClass", tmp_path, voc / "ImageSets" / "Segmentation" / "val.txt")
    assert val.skipped == [] and scored["metrics"] == cm.scores(val.classes)


def test_frozen_backbone_trains_the_head_only(cityscapes_small):
    """``tiny-frozen``: the backbone's weights and BN statistics stay as loaded; the head learns."""
    from mocobench.transfer.segmentation.model import load_for_segmentation, segmentation_model
    from mocobench.transfer.segmentation.mmseg_engine import check_protocol

    proto = override(get_protocol("tiny-frozen", "cityscapes"),
                     ["crop=32,32", "batch_size=2", "iters=3", "checkpoint_every=1", "lr=0.05"])
    assert proto.frozen_backbone and not PROTO.frozen_backbone
    torch.manual_seed(0)
    backbone, report = load_for_segmentation("random:resnet18")
    model = segmentation_model(backbone, proto.head, 19, frozen_backbone=proto.frozen_backbone)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ds = CityscapesSegmentation(cityscapes_small, "train")
    stream = TrainStream(ds, 0, proto.crop, proto.scale_range, proto.flip, backbone.mean, backbone.std)
    train(model, stream, proto, device=torch.device("cpu"), seed=0, checkpoint=report.record_fields())
    after = model.state_dict()
    moved = {k for k in after if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith("head.") for k in moved), sorted(moved)[:5]
    assert any(k.startswith("backbone.") and "running_mean" in k for k in after)   # BN stats were there to move
    assert model.features_used()["backbone_frozen"] is True
    # mmseg fine-tunes the whole network: asked to freeze, it refuses rather than ignore it
    with pytest.raises(ValueError, match="frozen_backbone=true runs on --engine torchvision"):
        check_protocol(override(get_protocol("mmseg-fcn-40k", "cityscapes"), ["frozen_backbone=true"]), "cityscapes")
