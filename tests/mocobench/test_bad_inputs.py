"""Hostile but realistic input: every case is one clear line and the documented exit code.

Each row is a command line (with files the row makes) and what the answer must hold: exit 2 for
usage errors (argparse or a setting out of range), 1 for a failure on input; no traceback ever
(``--debug`` would show one); the one line names the file or setting at fault. Nothing in a row
may write a record or a "passed" gate.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mocobench.cli import main

VOC_XML = """<annotation><filename>{name}.jpg</filename><size><width>64</width><height>48</height>
<depth>3</depth></size><object><name>{cls}</name><difficult>{difficult}</difficult><bndbox><xmin>{x0}</xmin>
<ymin>4</ymin><xmax>{x1}</xmax><ymax>30</ymax></bndbox></object></annotation>"""


class Evil:
    def __reduce__(self):
        return (shutil.rmtree, ("/nonexistent-mocobench-test",))


def voc_devkit(root: Path, *, cls="dog", difficult="0", x0="4", x1="40", raw: str | None = None) -> Path:
    dev = root / "VOC2007"
    (dev / "Annotations").mkdir(parents=True)
    (dev / "ImageSets" / "Main").mkdir(parents=True)
    (dev / "ImageSets" / "Main" / "test.txt").write_text("000001\n")
    xml = raw if raw is not None else VOC_XML.format(name="000001", cls=cls, difficult=difficult, x0=x0, x1=x1)
    (dev / "Annotations" / "000001.xml").write_text(xml)
    return dev


def detections(root: Path, text: str | bytes, name: str = "det.txt") -> Path:
    path = root / name
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


def voc_results(root: Path, text: str | bytes) -> Path:
    """A devkit results folder holding one class file, ``comp4_det_test_dog.txt``."""
    folder = root / "results"
    folder.mkdir()
    detections(folder, text, "comp4_det_test_dog.txt")
    return folder


def tiny_checkpoint(root: Path, name="w.pth", *, nan=False) -> Path:
    from torchvision.models import resnet18

    sd = resnet18().state_dict()
    if nan:
        sd["layer1.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    path = root / name
    torch.save(sd, path)
    return path


def _tiny_pretrain(t: Path, s: Path, *extra: str) -> list[str]:
    """A pretraining command that would run 1 step of the CPU preset, were it accepted."""
    return ["pretrain", "--method", "moco_v2", "--preset", "tiny", "--data", str(s), "--out", str(t / "r"),
            "--epochs=1", "--max_steps_per_epoch=1", *extra]


def own_backbone(root: Path, **spec) -> Path:
    """Our exported-backbone file whose spec has the fields ``spec`` replaces (the weights are never
    reached: the spec is refused first)."""
    path = root / "own.pth"
    full = {"arch": "resnet18", "cifar_stem": False, "dilation": [False] * 3, "img_size": None, "extra": {}} | spec
    torch.save({"format": "mocobench-backbone", "version": 1, "spec": full,
                "state_dict": {"conv1.weight": torch.zeros(1)}, "meta": {}}, path)
    return path


def pretrain_state(root: Path, config) -> Path:
    path = root / "step_1.pth"
    torch.save({"format": "mocobench-pretrain", "version": 2, "config": config,
                "model": {"encoder_q.conv1.weight": torch.zeros(1)}}, path)
    return path


def raw_pickle(root: Path, data: bytes, name: str = "odd.pkl") -> Path:
    path = root / name
    path.write_bytes(data)
    return path


class HugeBytearray:
    def __reduce__(self):
        return (bytearray, (2 ** 56,))


def baseline(root: Path, obj) -> Path:
    path = root / "baseline.json"
    if isinstance(obj, dict):
        obj = json.dumps({"format": "mocobench-baseline", "version": 1, **obj})
    path.write_text(obj)
    (root / "results").mkdir(exist_ok=True)
    return path


# (id, builder(tmp) -> argv, exit code, words the message must contain)
CASES = [
    # -- settings out of range (class 1): exit 2, the setting named
    ("pretrain-epochs-negative", lambda t, s: ["pretrain", "--method", "moco_v2", "--data", str(s), "--out", str(t / "r"), "--epochs=-3"], 2, ["epochs"]),
    ("pretrain-label-fraction-negative", lambda t, s: ["pretrain", "--method", "unimoco", "--data", str(s), "--out", str(t / "r"), "--label-fraction", "-0.5"], 2, ["label"]),
    ("pretrain-lr-nan", lambda t, s: ["pretrain", "--method", "moco_v2", "--data", str(s), "--out", str(t / "r"), "--lr=nan"], 2, ["lr"]),
    ("pretrain-K-zero", lambda t, s: ["pretrain", "--method", "moco_v2", "--data", str(s), "--out", str(t / "r"), "--K=0"], 2, ["K"]),
    # -- settings that would not run as recorded: exit 2 before a file is written
    ("pretrain-schedule-unknown", lambda t, s: _tiny_pretrain(t, s, "--schedule=foo"), 2, ["--schedule=foo"]),
    ("pretrain-precision-fp16", lambda t, s: _tiny_pretrain(t, s, "--precision=fp16"), 2, ["--precision=fp16"]),
    ("pretrain-optimizer-unknown", lambda t, s: _tiny_pretrain(t, s, "--optimizer=foo"), 2, ["--optimizer=foo"]),
    ("pretrain-method-as-override", lambda t, s: _tiny_pretrain(t, s, "--Method=smog"), 2, ["--Method"]),
    ("pretrain-lr-twice", lambda t, s: _tiny_pretrain(t, s, "--lr=0.1", "--lr=0.5"), 2, ["--lr", "twice"]),
    ("pretrain-smog-field-on-moco", lambda t, s: _tiny_pretrain(t, s, "--n_groups=10"), 2, ["--n_groups"]),
    ("linear-l2-grid-empty", lambda t, s: ["eval", "linear", "--protocol", "fast", "--checkpoint", "random:resnet18", "--data", str(s), "--results", str(t / "res"), "--l2-grid="], 2, ["--l2-grid"]),
    ("linear-holdout-zero", lambda t, s: ["eval", "linear", "--protocol", "fast", "--checkpoint", "random:resnet18", "--data", str(s), "--results", str(t / "res"), "--holdout_fraction=0"], 2, ["--holdout_fraction"]),
    ("semi-lr-grid-empty", lambda t, s: ["eval", "semi", "--labels", "10percent", "--checkpoint", "random:resnet18", "--data", str(s), "--results", str(t / "res"), "--lr-grid="], 2, ["--lr-grid"]),
    ("linear-epochs-negative", lambda t, s: ["eval", "linear", "--checkpoint", "random:resnet18", "--data", str(s), "--results", str(t / "res"), "--epochs", "-3"], 2, ["epochs"]),
    ("knn-k-negative", lambda t, s: ["eval", "knn", "--checkpoint", "random:resnet18", "--data", str(s), "--results", str(t / "res"), "--k=-5"], 2, ["k"]),
    ("detection-max-iters-negative", lambda t, s: ["eval", "detection", "--checkpoint", "random:resnet18", "--dataset", "voc", "--data", str(s / "VOCdevkit"), "--protocol", "tiny", "--results", str(t / "res"), "--max-iters", "-1"], 2, ["max"]),
    ("segmentation-max-iters-zero", lambda t, s: ["eval", "segmentation", "--checkpoint", "random:resnet18", "--dataset", "cityscapes", "--data", str(s / "cityscapes"), "--protocol", "tiny", "--results", str(t / "res"), "--max-iters", "0"], 2, ["max"]),
    # -- checkpoints (class 3): exit 1, the file named
    ("inspect-missing-file", lambda t, s: ["inspect", str(t / "nope.pth")], 1, ["nope.pth"]),
    ("inspect-text-file", lambda t, s: ["inspect", str(detections(t, "hello\n"))], 1, ["det.txt"]),
    ("inspect-truncated", lambda t, s: ["inspect", str(_truncate(tiny_checkpoint(t)))], 1, ["w.pth"]),
    ("inspect-unknown-arch", lambda t, s: ["inspect", str(tiny_checkpoint(t)), "--arch", "resnet9000"], 1, ["resnet9000"]),
    ("inspect-pickle-with-code", lambda t, s: ["inspect", str(_evil(t))], 1, ["evil.pth"]),
    ("inspect-nan-weights", lambda t, s: ["inspect", str(tiny_checkpoint(t, nan=True))], 1, ["w.pth", "finite"]),
    ("convert-onto-own-input", lambda t, s: ["convert", str(tiny_checkpoint(t)), "--to", "torchvision", "-o", str(t / "w.pth")], 1, ["w.pth"]),
    ("convert-onto-a-directory", lambda t, s: ["convert", str(tiny_checkpoint(t)), "--to", "torchvision", "-o", str(t)], 1, ["folder"]),
    ("fetch-unknown-name", lambda t, s: ["fetch", "no_such_checkpoint_xyz"], 2, ["no_such_checkpoint_xyz"]),
    ("linear-missing-checkpoint", lambda t, s: ["eval", "linear", "--checkpoint", str(t / "nope.pth"), "--data", str(s), "--results", str(t / "res")], 1, ["nope.pth"]),
    ("resume-from-text-file", lambda t, s: ["pretrain", "--method", "moco_v2", "--data", str(s), "--out", str(t / "r"), "--preset", "tiny", "--resume", str(detections(t, "not a checkpoint"))], 1, ["det.txt"]),
    # -- scoring detections (classes 1 and 3)
    ("score-voc-binary-detections", lambda t, s: ["score", "voc", "--devkit", str(voc_devkit(t)), "--detections", str(voc_results(t, b"\x00\x01\xff" * 50)), "--split", "test"], 1, ["comp4_det_test_dog.txt"]),
    ("score-voc-nan-score", lambda t, s: ["score", "voc", "--devkit", str(voc_devkit(t)), "--detections", str(voc_results(t, "000001 nan 4 4 40 30\n")), "--split", "test"], 1, ["comp4_det_test_dog.txt"]),
    ("score-voc-unknown-class-in-gt", lambda t, s: ["score", "voc", "--devkit", str(voc_devkit(t, cls="unicorn")), "--detections", str(voc_results(t, "000001 0.9 4 4 40 30\n")), "--split", "test"], 1, ["unicorn"]),
    ("score-voc-difficult-no", lambda t, s: ["score", "voc", "--devkit", str(voc_devkit(t, difficult="no")), "--detections", str(voc_results(t, "000001 0.9 4 4 40 30\n")), "--split", "test"], 1, ["difficult"]),
    ("score-voc-malformed-xml", lambda t, s: ["score", "voc", "--devkit", str(voc_devkit(t, raw="<annotation><object>")), "--detections", str(voc_results(t, "000001 0.9 4 4 40 30\n")), "--split", "test"], 1, ["000001.xml"]),
    ("score-voc-box-outside-image", lambda t, s: ["score", "voc", "--devkit", str(voc_devkit(t, x0="4", x1="4000")), "--detections", str(voc_results(t, "000001 0.9 4 4 40 30\n")), "--split", "test"], 1, ["000001.xml"]),
    ("score-cityscapes-missing-gt", lambda t, s: ["score", "cityscapes", "--gt", str(t / "nope"), "--pred", str(t)], 1, ["nope"]),
    # -- leaderboard gate (class 1: a gate that checks nothing fails)
    ("check-baseline-string-value", lambda t, s: ["leaderboard", "check", "--baseline", str(baseline(t, {"entries": [{"checkpoint": "moco_v2", "task": "knn", "protocol": "dino-knn", "metric": "top1", "value": "high", "tolerance": 1}]})), "--results", str(t / "results")], 2, ["baseline.json", "value", "high"]),
    ("check-baseline-empty", lambda t, s: ["leaderboard", "check", "--baseline", str(baseline(t, {"entries": []})), "--results", str(t / "results")], 2, ["baseline.json"]),
    ("check-baseline-not-json", lambda t, s: ["leaderboard", "check", "--baseline", str(baseline(t, "{not json")), "--results", str(t / "results")], 2, ["baseline.json"]),
    ("leaderboard-missing-results", lambda t, s: ["leaderboard", "--results", str(t / "nope")], 2, ["nope"]),
    # -- writing (class 4)
    ("synth-onto-a-file", lambda t, s: ["data", "synth", "--out", str(detections(t, "x")), "--scale", "tiny"], 1, ["det.txt"]),
    ("unknown-option", lambda t, s: ["eval", "knn", "--checkpoint", "random:resnet18", "--data", str(s), "--results", str(t / "res"), "--no-such-flag=1"], 2, ["no-such-flag"]),
    ("pretrain-unknown-method", lambda t, s: ["pretrain", "--method", "byol", "--data", str(s), "--out", str(t / "r")], 2, ["byol"]),
    ("inspect-empty-file", lambda t, s: ["inspect", str(detections(t, b""))], 1, ["det.txt", "empty"]),
    # -- checkpoint contents a reader must name (the file and what is wrong), not trip over
    ("inspect-pickled-numpy-array", lambda t, s: ["inspect", str(raw_pickle(t, pickle.dumps(np.zeros(3), protocol=2)))], 1, ["odd.pkl", "unrecognised"]),
    ("inspect-pickle-allocating-2**56-bytes", lambda t, s: ["inspect", str(raw_pickle(t, pickle.dumps(HugeBytearray(), protocol=2)))], 1, ["odd.pkl", "allocate"]),
    ("inspect-pretrain-config-not-a-dict", lambda t, s: ["inspect", str(pretrain_state(t, "notadict"))], 1, ["step_1.pth", "'config'"]),
    ("inspect-own-spec-dilation-5", lambda t, s: ["inspect", str(own_backbone(t, dilation=5))], 1, ["own.pth", "dilation 5"]),
    ("inspect-own-spec-img-size-string", lambda t, s: ["inspect", str(own_backbone(t, img_size="abc"))], 1, ["own.pth", "img_size 'abc'"]),
    ("inspect-own-spec-unknown-arch", lambda t, s: ["inspect", str(own_backbone(t, arch="nosuch"))], 1, ["own.pth", "'nosuch'"]),
    ("inspect-own-spec-timm-checkpoint-path", lambda t, s: ["inspect", str(own_backbone(t, arch="timm:test_vit", extra={"timm_kwargs": {"checkpoint_path": "/x.pth", "pretrained": True}}))], 1, ["own.pth", "checkpoint_path", "pretrained"]),
    ("inspect-random-timm-without-a-name", lambda t, s: ["inspect", "random:timm"], 2, ["random:timm", "random:timm:NAME"]),
    ("inspect-random-unknown-arch", lambda t, s: ["inspect", "random:resnet9000"], 2, ["resnet9000"]),
    ("inspect-random-with-arch", lambda t, s: ["inspect", "random:resnet18", "--arch", "resnet50"], 2, ["--arch", "random:resnet18"]),
    ("inspect-random-with-branch", lambda t, s: ["inspect", "random:resnet18", "--branch", "ema", "--input-convention", "bgr255"], 2, ["--branch", "--input-convention"]),
    # options a random initialisation has no use for: every evaluation took them and ignored them
    ("knn-random-with-arch", lambda t, s: ["eval", "knn", "--checkpoint", "random:resnet18", "--arch", "resnet50", "--data", str(s), "--results", str(t / "res")], 2, ["--arch", "random:resnet18"]),
    ("detection-random-with-branch", lambda t, s: ["eval", "detection", "--checkpoint", "random:resnet18", "--branch", "ema", "--dataset", "voc", "--data", str(s / "VOCdevkit"), "--protocol", "tiny", "--results", str(t / "res")], 2, ["--branch", "random:resnet18"]),
    ("segmentation-random-with-convention", lambda t, s: ["eval", "segmentation", "--checkpoint", "random:resnet18", "--input-convention", "bgr255", "--dataset", "cityscapes", "--data", str(s / "cityscapes"), "--protocol", "tiny", "--results", str(t / "res")], 2, ["--input-convention", "random:resnet18"]),
    ("knn-random-unknown-arch", lambda t, s: ["eval", "knn", "--checkpoint", "random:resnet9000", "--data", str(s), "--results", str(t / "res")], 2, ["resnet9000"]),
    ("fetch-url-for-two-names", lambda t, s: ["fetch", "moco_v2_200ep", "moco_v2_800ep", "--url", "file:///nonexistent.pth", "--cache-dir", str(t / "cache")], 2, ["--url", "exactly one"]),
    ("convert-norm-for-torchvision", lambda t, s: ["convert", str(tiny_checkpoint(t)), "--to", "torchvision", "-o", str(t / "out.pth"), "--norm", "BN"], 2, ["--norm", "--to detectron2"]),
    ("convert-unknown-mmseg-config", lambda t, s: ["convert", str(tiny_checkpoint(t)), "--to", "mmseg", "-o", str(t / "out.pth"), "--config", "nosuch"], 2, ["--config nosuch", "fcn-r50-d8-cityscapes-40k"]),
]


# -- data that is wrong in ways a reader must see when it opens it (issue 27, part 2) -------------------
def _copy(t: Path, s: Path, name: str) -> Path:
    """A copy of the embedded dataset's ``name`` folder (``cityscapes``, ``VOCdevkit``, ``coco``) in ``t``."""
    dest = t / "data" / name
    shutil.copytree(s / name, dest)
    return dest


def _masks(root: Path, split: str) -> list[Path]:
    return sorted((root / "gtFine" / split).rglob("*_gtFine_labelIds.png"))


def cityscapes_with(t: Path, s: Path, fault: str) -> Path:
    """The embedded Cityscapes with one fault: ``label-50`` (a value that is no label id in a train
    mask), ``val-all-ignored`` (every val pixel is label id 0, unlabeled), ``corrupt-image`` (a train
    image's bytes cut, which is skipped and counted)."""
    import numpy as np
    from PIL import Image

    root = _copy(t, s, "cityscapes")
    if fault == "label-50":
        mask = _masks(root, "train")[0]
        arr = np.array(Image.open(mask))
        arr[0, 0] = 50
        Image.fromarray(arr).save(mask)
    elif fault == "val-all-ignored":
        for mask in _masks(root, "val"):
            Image.fromarray(np.zeros_like(np.array(Image.open(mask)))).save(mask)
    return root.parent


def voc_with(t: Path, s: Path, fault: str) -> Path:
    """The embedded VOC with ``test-without-objects`` (every VOC2007 test XML's objects removed) or
    ``size-too-large`` (one trainval XML states a larger size than its JPEG)."""
    import re

    root = _copy(t, s, "VOCdevkit")
    year = root / "VOC2007"
    if fault == "test-without-objects":
        for i in (year / "ImageSets" / "Main" / "test.txt").read_text().split():
            xml = year / "Annotations" / f"{i}.xml"
            xml.write_text(re.sub(r"<object>.*?</object>", "", xml.read_text(), flags=re.S))
    else:
        first = (year / "ImageSets" / "Main" / "trainval.txt").read_text().split()[0]
        xml = year / "Annotations" / f"{first}.xml"
        xml.write_text(re.sub(r"<width>(\d+)</width>", lambda m: f"<width>{int(m.group(1)) + 50}</width>",
                              xml.read_text(), count=1))
    return root


def coco_with(t: Path, s: Path, fault: str) -> Path:
    """The embedded COCO with one fault in ``instances_train2017.json``: ``no-categories``,
    ``unknown-category`` (999), ``orphan-annotation`` (an image id no image has), ``empty-segmentation``."""
    root = _copy(t, s, "coco")
    path = root / "annotations" / "instances_train2017.json"
    data = json.loads(path.read_text())
    ann = next(a for a in data["annotations"] if not a.get("iscrowd"))
    if fault == "no-categories":
        del data["categories"]
    elif fault == "unknown-category":
        ann["category_id"] = 999
    elif fault == "orphan-annotation":
        ann["image_id"] = 987654
    else:
        ann["segmentation"] = []
    path.write_text(json.dumps(data))
    return root


def one_class_labels(t: Path, s: Path) -> Path:
    """A "10 %" list holding every image of one class (10 classes: exactly 10 % of train)."""
    train = s / "imagenet" / "train"
    first = sorted(p for p in train.iterdir() if p.is_dir())[0]
    path = t / "10percent_one_class.txt"
    path.write_text("".join(f"{first.name}/{f.name}\n" for f in sorted(first.iterdir())))
    return path


def _eval(task: str, t: Path, *argv: str) -> list[str]:
    return ["eval", task, "--checkpoint", "random:resnet18", "--results", str(t / "res"), *argv]


def _det(t: Path, dataset: str, data: Path, *argv: str) -> list[str]:
    return _eval("detection", t, "--dataset", dataset, "--data", str(data), "--protocol", "tiny",
                 "--max-iters", "1", "--work-dir", str(t / "work"), *argv)


def _seg(t: Path, data: Path) -> list[str]:
    return _eval("segmentation", t, "--dataset", "cityscapes", "--data", str(data), "--protocol", "tiny",
                 "--max-iters", "1", "--work-dir", str(t / "work"))


DATA_CASES = [
    ("cityscapes-mask-value-50", lambda t, s: _seg(t, cityscapes_with(t, s, "label-50")), 1, ["_gtFine_labelIds.png", "[50]", "label ids"]),
    ("cityscapes-val-every-pixel-ignored", lambda t, s: _seg(t, cityscapes_with(t, s, "val-all-ignored")), 1, ["gtFine/val", "no pixel of an evaluated class"]),
    ("voc-test-without-objects", lambda t, s: _det(t, "voc", voc_with(t, s, "test-without-objects")), 1, ["VOC2007 test", "no object"]),
    ("voc-xml-size-larger-than-image", lambda t, s: _det(t, "voc", voc_with(t, s, "size-too-large")), 1, [".xml", "<size> says"]),
    ("coco-without-categories", lambda t, s: _det(t, "coco", coco_with(t, s, "no-categories")), 1, ["instances_train2017.json", "categories"]),
    ("coco-unknown-category-id", lambda t, s: _det(t, "coco", coco_with(t, s, "unknown-category")), 1, ["instances_train2017.json", "category_id 999"]),
    ("coco-annotation-of-no-image", lambda t, s: _det(t, "coco", coco_with(t, s, "orphan-annotation")), 1, ["instances_train2017.json", "image_id 987654"]),
    ("coco-empty-segmentation", lambda t, s: _det(t, "coco", coco_with(t, s, "empty-segmentation")), 1, ["instances_train2017.json", "segmentation"]),
    # -- settings that would change what a number means (part 3)
    ("dataset-name-imagenet-on-synth", lambda t, s: _eval("knn", t, "--data", str(s), "--dataset-name", "imagenet"), 2, ["--dataset-name imagenet", "synth"]),
    ("semi-label-pct-contradicts-file", lambda t, s: _eval("semi", t, "--data", str(s), "--labels", "10percent", "--label-pct", "1", "--epochs", "1"), 1, ["--label-pct 1", "10percent"]),
    ("semi-labels-of-one-class", lambda t, s: _eval("semi", t, "--data", str(s), "--labels", str(one_class_labels(t, s)), "--epochs", "1"), 1, ["10percent_one_class.txt", "every class"]),
    ("detection-bf16-on-cpu", lambda t, s: _det(t, "voc", s / "VOCdevkit", "--bf16=true", "--device", "cpu"), 2, ["bf16", "cpu"]),
]


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


def _evil(root: Path) -> Path:
    path = root / "evil.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": Evil()}, path)
    return path


@pytest.mark.parametrize("case", CASES + DATA_CASES, ids=[c[0] for c in CASES + DATA_CASES])
def test_bad_input_is_one_clear_line(case, tmp_path, capsys, monkeypatch, synth_tiny):
    name, build, code, words = case
    monkeypatch.delenv("MOCOBENCH_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)
    argv = build(tmp_path, synth_tiny)
    made = set(tmp_path.rglob("*.json"))   # the row's own files (a copied COCO's annotations)
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse
        rc = e.code
    out = capsys.readouterr()
    err = out.err.strip()
    assert "Traceback" not in out.err + out.out, f"{name}: traceback\n{out.err}"
    assert rc == code, f"{name}: exit {rc}, expected {code}; stderr:\n{err}"
    last = err.splitlines()[-1] if err else ""
    assert last.startswith("mocobench") or last.startswith("usage") or ": error:" in last, last
    for w in words:
        assert w.lower() in err.lower(), f"{name}: {w!r} not in the message:\n{err}"
    wrote = set(tmp_path.rglob("*.json")) - made
    assert not wrote or name.startswith("check") or name.startswith("leaderboard"), f"{name}: wrote {wrote}"


def test_the_table_is_large_enough():
    assert len(CASES) >= 30
