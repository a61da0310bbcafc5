"""Our Cityscapes mIoU equals cityscapesscripts' own evalPixelLevelSemanticLabeling (the reference).

Predictions are written as official label-id PNGs and scored by both. The script averages IoU over
the 19 evaluated classes whose IoU is defined (NaN, i.e. no ground truth and never predicted, is
skipped); a class predicted somewhere but absent from the ground truth has IoU 0 and counts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mocobench.datasets import cityscapes as cs
from mocobench.transfer.segmentation.score import score_cityscapes


def cityscapes_root(path: Path) -> Path:
    return path / "cityscapes" if (path / "cityscapes" / "gtFine").is_dir() else path


def write_predictions(gt_files, out: Path, rng: np.random.Generator, void_fraction=0.05) -> list[Path]:
    """Perturbed ground truth: most pixels right, some another evaluated class, some an ignored
    label id (unlabeled / static), never predicting 'bicycle' so one class has NaN or 0 IoU."""
    evaluated = cs.TRAIN_ID_TO_LABEL_ID[:-1]  # label ids of train ids 0..17 (no bicycle)
    paths = []
    for g in gt_files:
        gt = np.array(Image.open(g))
        pred = gt.copy()
        pred[cs.LABEL_ID_TO_TRAIN_ID[gt] == 255] = rng.choice(evaluated, size=int((cs.LABEL_ID_TO_TRAIN_ID[gt] == 255).sum()))
        wrong = rng.random(gt.shape) < 0.25
        pred[wrong] = rng.choice(evaluated, size=int(wrong.sum()))
        void = rng.random(gt.shape) < void_fraction
        pred[void] = rng.choice([0, 4], size=int(void.sum()))
        pred[pred == 33] = 26  # bicycle -> car
        p = out / f"{g.name[:-len(cs.LABEL_SUFFIX)]}_leftImg8bit.png"
        Image.fromarray(pred).save(p)
        paths.append(p)
    return paths


def _check_dir(root: Path, tmp_path: Path, seed: int, cs_reference) -> None:
    gt_files = cs.list_ground_truth(root / "gtFine" / "val")
    pred_dir = tmp_path / f"pred{seed}"
    pred_dir.mkdir()
    pred_files = write_predictions(gt_files, pred_dir, np.random.default_rng(seed))
    ours = score_cityscapes(root / "gtFine" / "val", pred_dir)["metrics"]
    ref = cs_reference.scores(gt_files, pred_files)
    cs_reference.compare(ours, ref)
    # the script's averaging really did skip or zero a class here (bicycle is never predicted)
    assert "IoU/bicycle" not in ours or ours["IoU/bicycle"] == 0.0


def test_score_matches_cityscapesscripts_on_embedded_val(synth_tiny, tmp_path, cs_reference):
    root = cityscapes_root(synth_tiny)
    _check_dir(root, tmp_path, 0, cs_reference)


def test_score_matches_cityscapesscripts_on_written_scenes(cityscapes_small, tmp_path, cs_reference):
    _check_dir(cityscapes_small, tmp_path, 1, cs_reference)


def test_an_unreadable_val_image_scores_as_cityscapesscripts_scores_an_unlabeled_prediction(
        synth_tiny, tmp_path, cs_reference):
    """Our evaluation predicts no class for a val image it cannot read, and writes it as label id 0
    (``unlabeled``): the official script, given every written prediction, agrees with the figures
    our evaluation recorded, so the image's pixels count against their classes in both."""
    import shutil
    import warnings

    import torch

    from mocobench.transfer.segmentation.inference import evaluate, prediction_writer

    root = tmp_path / "cityscapes"
    shutil.copytree(cityscapes_root(synth_tiny), root)
    victim = sorted((root / "leftImg8bit" / "val").rglob("*_leftImg8bit.png"))[1]
    victim.write_bytes(victim.read_bytes()[:-200])   # its last chunks cut: verify() fails
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        val = cs.CityscapesSegmentation(root, "val")
    assert val.skipped == [str(victim)]
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, cs.NUM_CLASSES, 1)   # any per-pixel classifier
    pred_dir = tmp_path / "pred"
    ours = evaluate(model, val, device=torch.device("cpu"), mean=(0.5,) * 3, std=(0.25,) * 3,
                    write_prediction=prediction_writer("cityscapes", pred_dir)).scores(val.classes)
    gt_files = cs.list_ground_truth(root / "gtFine" / "val")
    pred_files = sorted(pred_dir.glob("*.png"))
    assert len(pred_files) == len(gt_files)
    written = np.array(Image.open(pred_dir / f"{victim.name[:-len('_leftImg8bit.png')]}_pred_labelIds.png"))
    assert (written == 0).all()
    cs_reference.compare({k: v for k, v in ours.items() if not k.startswith("Acc/")},
                         cs_reference.scores(gt_files, pred_files))
