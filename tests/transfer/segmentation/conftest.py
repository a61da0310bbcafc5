"""Small Cityscapes- and VOC-format folders written by the tests themselves (real file formats)."""

from __future__ import annotations

from pathlib import Path

import math

import numpy as np
import pytest
from PIL import Image

from mocobench.datasets import cityscapes as cs

# label id -> RGB colour of its texture; label ids from the official table (road, building,
# vegetation, sky, car, and 0 = unlabeled, which is ignored)
CS_COLOURS = {7: (128, 64, 128), 11: (70, 70, 70), 21: (107, 142, 35), 23: (70, 130, 180),
              26: (0, 0, 142), 0: (0, 0, 0)}


def _scene(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A street-like label-id layout: sky, buildings/vegetation, road, a few cars, an unlabeled rim."""
    lab = np.full((h, w), 11, np.uint8)
    horizon = int(rng.integers(h // 4, h // 2))
    lab[:horizon] = 23
    road = int(rng.integers(h // 2 + h // 8, 3 * h // 4))
    lab[road:] = 7
    for _ in range(int(rng.integers(1, 3))):
        x0 = int(rng.integers(0, w - w // 4))
        lab[horizon:road, x0:x0 + int(rng.integers(w // 8, w // 4))] = 21
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = int(rng.integers(road - h // 8, h - h // 10)), int(rng.integers(0, w - w // 6))
        lab[max(cy - h // 12, 0):cy, cx:cx + w // 6] = 26
    lab[-2:] = 0
    return lab


def write_cityscapes(root: Path, splits=(("train", 8), ("val", 4)), size=(64, 128), seed=0) -> Path:
    rng = np.random.default_rng(seed)
    h, w = size
    for split, n in splits:
        for i in range(n):
            city = ("aachen", "bochum")[i % 2]
            stem = f"{city}_{i:06d}_{19 + i:06d}"
            lab = _scene(rng, h, w)
            img = np.zeros((h, w, 3), np.float64)
            for lid, col in CS_COLOURS.items():
                img[lab == lid] = col
            img += rng.normal(0, 20, img.shape)
            (root / "leftImg8bit" / split / city).mkdir(parents=True, exist_ok=True)
            (root / "gtFine" / split / city).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
                root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
            Image.fromarray(lab).save(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")
    return root


def write_voc(root: Path, splits=(("train", 6), ("val", 3)), size=(48, 64), seed=0) -> Path:
    """VOCdevkit/VOC2012 with palette SegmentationClass PNGs (255 borders) and split lists."""
    from mocobench.transfer.segmentation.score import voc_palette

    rng = np.random.default_rng(seed)
    voc = root / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / d).mkdir(parents=True, exist_ok=True)
    h, w = size
    k = 0
    for split, n in splits:
        ids = []
        for _ in range(n):
            name = f"2012_{k:06d}"
            k += 1
            mask = np.zeros((h, w), np.uint8)
            cls = int(rng.integers(1, 21))
            y0, x0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
            mask[y0:y0 + h // 3, x0:x0 + w // 3] = cls
            mask[y0:y0 + h // 3, x0] = 255  # a border line
            img = np.where(mask[..., None] == 0, 40, 40 + 10 * cls).astype(np.float64)
            img = img + rng.normal(0, 10, (h, w, 3))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(voc / "JPEGImages" / f"{name}.jpg")
            m = Image.fromarray(mask)
            m.putpalette(voc_palette())
            m.save(voc / "SegmentationClass" / f"{name}.png")
            ids.append(name)
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


@pytest.fixture(scope="session")
def cityscapes_small(tmp_path_factory) -> Path:
    return write_cityscapes(tmp_path_factory.mktemp("cityscapes"))


@pytest.fixture(scope="session")
def voc_small(tmp_path_factory) -> Path:
    return write_voc(tmp_path_factory.mktemp("voc"))


# -- the reference: cityscapesscripts' evalPixelLevelSemanticLabeling -------------------------
def _reference_scores(gt_files: list[Path], pred_files: list[Path]) -> dict:
    """Run the official script's evaluation functions with its args set programmatically."""
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as ev

    args = ev.args
    args.evalInstLevelScore = False  # needs *_instanceIds.png, and is not part of mIoU
    args.evalPixelAccuracy = False
    args.JSONOutput = False
    args.quiet = True
    restore = not hasattr(np, "in1d")
    if restore:  # NOTE: the script calls np.in1d, removed in numpy 2.4; restored for the test only
        np.in1d = np.isin
    try:
        return ev.evaluateImgLists([str(p) for p in pred_files], [str(g) for g in gt_files], args)
    finally:
        if restore:
            del np.in1d


def _compare(ours: dict, ref: dict) -> None:
    names = [n for n in cs.CLASSES]
    for name in names:
        r = ref["classScores"][name]
        if math.isnan(r):
            assert f"IoU/{name}" not in ours
        else:
            assert abs(ours[f"IoU/{name}"] / 100 - r) < 1e-6, name
    assert abs(ours["mIoU"] / 100 - ref["averageScoreClasses"]) < 1e-6
    # aAcc from the script's confusion matrix over evaluated ground-truth rows
    C = np.array(ref["confMatrix"], dtype=np.float64)
    ev = [int(i) for i in cs.TRAIN_ID_TO_LABEL_ID]
    assert abs(ours["aAcc"] / 100 - C[ev, ev].sum() / C[ev].sum()) < 1e-9



@pytest.fixture(scope="session")
def cs_reference():
    """``.scores(gt_files, pred_files)`` runs the official script; ``.compare(ours, ref)`` asserts
    equality of per-class IoU and mIoU to 1e-6 (and aAcc from the script's confusion matrix)."""
    import types

    return types.SimpleNamespace(scores=_reference_scores, compare=_compare)


@pytest.fixture(autouse=True)
def _one_thread():
    """These tests run ResNet-18 on 32-128 px inputs, where a second intra-op thread gains little
    and, on a busy machine, spin-waiting threads make each step many times slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def mmseg_ready():
    """MMSegmentation importable and usable: in CI its absence fails (``.ci/run`` installs it), elsewhere
    the tests that need it skip and say why."""
    import os

    from mocobench.transfer.segmentation.mmseg_engine import why_unavailable

    reason = why_unavailable()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"MMSegmentation must run in CI: {reason}")
        pytest.skip(f"MMSegmentation is not installed: {reason}")
