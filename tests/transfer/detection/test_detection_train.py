"""Protocols, schedule, data stream, exact resume, and whole-pipeline smoke runs (``slow``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mocobench.transfer.detection.protocols import PROTOCOLS, TINY, ProtocolError, resolve_protocol
from mocobench.transfer.detection.train import IterationBatches, hflip, lr_at, scaled_lr


def make_voc(root, n_trainval=6, n_test=3, size=(64, 80)):
    """A VOCdevkit with VOC2007 trainval/test and VOC2012 trainval of coloured rectangles."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for year, splits in (("2007", {"trainval": n_trainval, "test": n_test}), ("2012", {"trainval": 2})):
        d = root / "VOCdevkit" / f"VOC{year}"
        for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        k = 0
        for split, n in splits.items():
            ids = []
            for _ in range(n):
                k += 1
                image_id = f"{year}_{k:06d}"
                ids.append(image_id)
                h, w = size
                arr = (rng.random((h, w, 3)) * 60).astype(np.uint8)
                objs = []
                for name, colour in (("dog", (250, 40, 40)), ("cat", (40, 40, 250))):
                    x0, y0 = int(rng.integers(0, w - 24)), int(rng.integers(0, h - 24))
                    x1, y1 = x0 + int(rng.integers(12, 24)), y0 + int(rng.integers(12, 24))
                    arr[y0:y1, x0:x1] = colour
                    objs.append(f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x0 + 1}</xmin>"
                                f"<ymin>{y0 + 1}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")
                Image.fromarray(arr).save(d / "JPEGImages" / f"{image_id}.jpg", quality=95)
                (d / "Annotations" / f"{image_id}.xml").write_text(
                    f"<annotation><filename>{image_id}.jpg</filename><size><width>{w}</width>"
                    f"<height>{h}</height><depth>3</depth></size>{''.join(objs)}</annotation>")
            (d / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root / "VOCdevkit"


SMALL = dataclasses.replace(TINY, ims_per_batch=2, reference_batch=2, min_size_train=(56, 64), max_size_train=96,
                            min_size_test=64, max_size_test=96, precise_bn_iters=1, max_iter=3, steps=(2,),
                            warmup_iters=2)


# -- protocols and schedule ------------------------------------------------------------------------

def test_moco_presets():
    voc = PROTOCOLS["moco-voc-c4-24k"]
    assert (voc.ims_per_batch, voc.base_lr, voc.max_iter, voc.steps, voc.warmup_iters) == (16, 0.02, 24000, (18000, 22000), 100)
    assert voc.min_size_train == tuple(range(480, 801, 32)) and voc.min_size_test == 800
    assert voc.model == "c4" and not voc.uses_masks("voc")
    assert PROTOCOLS["coco-c4-2x"].max_iter == 180000 and PROTOCOLS["coco-c4-2x"].uses_masks("coco")
    assert PROTOCOLS["coco-fpn-1x"].model == "fpn" and PROTOCOLS["coco-fpn-1x"].steps == (60000, 80000)
    assert all(p.name == name for name, p in PROTOCOLS.items())


def test_overrides():
    p = resolve_protocol("moco-voc-c4-24k", {"max_iter": "2400", "base_lr": "0.01", "hflip": "false"})
    assert p.max_iter == 2400 and p.base_lr == 0.01 and p.hflip is False
    assert p.steps == (1800, 2200)  # a shortened run keeps the schedule's shape
    p = resolve_protocol("tiny", {"min_size_train": "64,80", "mask_on": "true", "model": "fpn"})
    assert p.min_size_train == (64, 80) and p.mask_on is True and p.model == "fpn"
    with pytest.raises(ProtocolError, match="unknown option --lrr"):
        resolve_protocol("tiny", {"lrr": "1"})
    with pytest.raises(ProtocolError, match="max_iter"):
        resolve_protocol("tiny", {"max_iter": "ten"})
    with pytest.raises(ProtocolError, match="unknown detection protocol"):
        resolve_protocol("voc", {})


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_records_state_what_they_changed_from_the_preset(name):
    """run.preset_changes (what the torchvision engine's record states): {} for the preset as shipped,
    which the leaderboard compares with the paper's number; each changed protocol field otherwise, a
    shortened run's moved steps too; run settings (workers, checkpoint period) are no change."""
    from mocobench.transfer.detection.protocols import preset_changes

    preset = PROTOCOLS[name]
    assert preset_changes(resolve_protocol(name, {})) == {}
    assert preset_changes(resolve_protocol(name, {"num_workers": "0", "checkpoint_period": "7"})) == {}
    changed = resolve_protocol(name, {"max_iter": "20", "base_lr": "0.05"})
    assert preset_changes(changed) == {"max_iter": {"preset": preset.max_iter, "ran": 20},
                                       "base_lr": {"preset": preset.base_lr, "ran": 0.05},
                                       "steps": {"preset": list(preset.steps), "ran": list(changed.steps)}}


def test_lr_schedule_and_linear_scaling():
    p = dataclasses.replace(PROTOCOLS["moco-voc-c4-24k"], ims_per_batch=8)
    assert scaled_lr(p) == pytest.approx(0.01)  # 0.02 x 8 / 16
    assert lr_at(0, p) == pytest.approx(0.01 * 0.001)
    assert lr_at(50, p) == pytest.approx(0.01 * (0.001 * 0.5 + 0.5))
    assert lr_at(100, p) == pytest.approx(0.01)
    assert lr_at(17999, p) == pytest.approx(0.01)
    assert lr_at(18000, p) == pytest.approx(0.001)
    assert lr_at(22000, p) == pytest.approx(0.0001)


def test_iteration_stream_is_a_permutation_per_epoch_and_flips_are_consistent():
    class Fake:
        def __len__(self):
            return 5

        def __getitem__(self, i):
            t = {"boxes": torch.tensor([[1.0, 2.0, 4.0, 6.0]]), "labels": torch.tensor([1])}
            t["masks"] = torch.zeros(1, 8, 10, dtype=torch.uint8)
            t["masks"][0, 2:6, 1:4] = 1
            return torch.arange(80.0).reshape(1, 8, 10).expand(3, 8, 10).clone(), t

    b = IterationBatches(Fake(), batch_size=2, seed=3)
    seen = [i for it in range(5) for i in b.indices(it)]  # 10 images = 2 epochs
    assert sorted(seen[:5]) == list(range(5)) and sorted(seen[5:]) == list(range(5))
    assert b.indices(4) == IterationBatches(Fake(), batch_size=2, seed=3).indices(4)
    assert b.indices(0) != IterationBatches(Fake(), batch_size=2, seed=4).indices(0) or \
        b.indices(1) != IterationBatches(Fake(), batch_size=2, seed=4).indices(1)
    image, t = Fake()[0]
    fimage, ft = hflip(image, t)
    ys, xs = np.nonzero(ft["masks"][0].numpy())
    assert ft["boxes"][0].tolist() == [float(xs.min()), 2.0, float(xs.max() + 1), 6.0]  # box = mask extent
    assert torch.equal(fimage[0, :, 0], image[0, :, -1])
    # per-(seed, iteration, position) flips: repeated reads give the same batch
    a, c = b[7], b[7]
    assert all(torch.equal(x[0], y[0]) for x, y in zip(a, c))


# exact resume after a kill, and the loss history: test_detection_dist.py


# -- whole pipeline -------------------------------------------------------------------------------

@pytest.mark.slow
def test_eval_detection_voc_and_coco_write_records(synth_tiny, tmp_path):
    from mocobench.core.records import load_records
    from mocobench.transfer.detection.cli import eval_main

    small = ["--max-iters", "2", "--min_size_train=64", "--min_size_test=64", "--max_size_train=96",
             "--max_size_test=96", "--precise_bn_iters=1", "--warmup_iters=1"]
    assert eval_main("detection", ["--checkpoint", "random:resnet18", "--dataset", "voc", "--data",
                                   str(synth_tiny / "VOCdevkit"), "--protocol", "tiny", "--results",
                                   str(tmp_path / "res"), *small]) == 0
    assert eval_main("detection", ["--checkpoint", "random:resnet18", "--dataset", "coco", "--data",
                                   str(synth_tiny), "--protocol", "tiny", "--results", str(tmp_path / "res"),
                                   *small]) == 0
    records, problems = load_records(tmp_path / "res")
    assert problems == [] and len(records) == 2
    voc = next(r for r in records if r["dataset"]["name"] == "synth-tiny-voc07+12")   # the embedded data, never the papers' column
    coco = next(r for r in records if r["dataset"]["name"] == "synth-tiny-coco")
    assert voc["task"] == "detection" and voc["protocol"] == "tiny" and voc["engine"] == "torchvision"
    assert {"AP", "AP50", "AP75"} <= set(voc["metrics"]) and 0 <= voc["metrics"]["AP50"] <= 100
    assert voc["config"]["protocol"]["max_iter"] == 2 and voc["config"]["lr"] == pytest.approx(0.01)
    assert voc["run"]["world_size"] == 1 and voc["env"]["device"] == "cpu"
    # --max-iters and the --key= overrides: not the tiny protocol as preset (the leaderboard says so)
    tiny = PROTOCOLS["tiny"]
    assert voc["run"]["preset_changes"] == coco["run"]["preset_changes"] == {
        "max_iter": {"preset": 80, "ran": 2}, "steps": {"preset": [60], "ran": voc["config"]["protocol"]["steps"]},
        "min_size_train": {"preset": list(tiny.min_size_train), "ran": [64]},
        "min_size_test": {"preset": tiny.min_size_test, "ran": 64},
        "max_size_train": {"preset": tiny.max_size_train, "ran": 96},
        "max_size_test": {"preset": tiny.max_size_test, "ran": 96},
        "precise_bn_iters": {"preset": tiny.precise_bn_iters, "ran": 1},
        "warmup_iters": {"preset": tiny.warmup_iters, "ran": 1}}
    assert {"bbox_AP", "bbox_AP50", "segm_AP"} <= set(coco["metrics"])
    assert coco["config"]["model"] == "c4-mask-rcnn"
    # the VOC detections were written in the devkit's format and scored from those files
    work = list((tmp_path / "work" / "detection").glob("*-voc-*-s0"))[0]
    assert (work / "detections" / "comp4_det_test_aeroplane.txt").exists()


def test_detectron2_engine_fails_at_once_without_detectron2(tmp_path, capsys, hide_package):
    hide_package("detectron2")
    from mocobench.transfer.detection.cli import eval_main

    rc = eval_main("detection", ["--checkpoint", "random:resnet50", "--dataset", "voc", "--data", str(tmp_path),
                                 "--protocol", "moco-voc-c4-24k", "--engine", "detectron2",
                                 "--results", str(tmp_path / "r")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "detectron2 is not installed" in err and "pip install" in err
    assert not (tmp_path / "r").exists()


def test_frozen_bn_keeps_the_loaded_statistics_while_training():
    """``frozen_bn`` (detectron2's FrozenBN): every backbone BN becomes a fixed affine map of its
    loaded statistics; in train mode it computes what the BN computed in eval mode, and a training
    step changes neither its statistics nor its scale and shift."""
    from torch import nn

    from mocobench.checkpoints.backbones import build_backbone
    from mocobench.transfer.detection.train import freeze_bn

    torch.manual_seed(0)
    backbone = build_backbone("mobilenet_v2")
    for m in backbone.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = backbone.eval()(x)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in backbone.modules())
    assert freeze_bn(backbone) == n_bn > 0
    assert not any(isinstance(m, nn.BatchNorm2d) for m in backbone.modules())
    backbone.train()
    torch.testing.assert_close(backbone(x), expected)
    frozen = {k: v.clone() for k, v in backbone.state_dict().items() if "running" in k or k.endswith((".weight", ".bias"))}
    opt = torch.optim.SGD(backbone.parameters(), lr=0.1)
    backbone(x).sum().backward()
    opt.step()
    bn_keys = [k for k in frozen if "running_mean" in k]
    for k in bn_keys:
        prefix = k[: -len("running_mean")]
        for leaf in ("running_mean", "running_var", "weight", "bias"):
            assert torch.equal(backbone.state_dict()[prefix + leaf], frozen[prefix + leaf]), prefix + leaf
