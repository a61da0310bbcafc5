"""VOC 2012 SegmentationClass reader on the real labelme example files (palette PNGs, 255 borders)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from mocobench.datasets import voc_seg

# classes each labelme example image contains (from labelme's own .npy export, -1 = border)
LABELME_CLASSES = {
    "2011_000003": {"background", "bottle", "person"},
    "2011_000006": {"background", "chair", "person", "sofa"},
    "2011_000025": {"background", "bus", "car"},
}


@pytest.fixture()
def labelme_voc(labelme_dir):
    return labelme_dir / "semantic_segmentation" / "data_dataset_voc"


def test_class_order_matches_labelme_class_names(labelme_voc):
    names = (labelme_voc / "class_names.txt").read_text().split("\n")
    names = [n.strip() for n in names if n.strip()]
    assert len(names) == voc_seg.NUM_CLASSES
    norm = lambda s: s.lower().replace(" ", "").replace("/", "").replace("_", "")
    assert [norm(n) for n in names[1:]] == [norm(n) for n in voc_seg.CLASSES[1:]]


def test_labelme_palette_pngs_read_as_class_indices(labelme_voc):
    for stem, classes in LABELME_CLASSES.items():
        mask = voc_seg.read_mask(labelme_voc / "SegmentationClassPNG" / f"{stem}.png")
        # independent statement of the same labels: labelme's int32 array with -1 for borders
        ref = np.load(labelme_voc / "SegmentationClass" / f"{stem}.npy")
        assert (mask == np.where(ref == -1, 255, ref)).all()
        present = {voc_seg.CLASSES[c] for c in np.unique(mask) if c != 255}
        assert present == classes
        assert ((mask == 255).any()) == ((ref == -1).any())


def test_perfect_prediction_scores_100_over_present_classes(labelme_voc, tmp_path):
    from mocobench.transfer.segmentation.score import score_voc, write_voc_prediction

    split = tmp_path / "val.txt"
    split.write_text("\n".join(LABELME_CLASSES) + "\n")
    for stem in LABELME_CLASSES:
        gt = voc_seg.read_mask(labelme_voc / "SegmentationClassPNG" / f"{stem}.png")
        write_voc_prediction(tmp_path / "pred" / f"{stem}.png", np.where(gt == 255, 0, gt))
    out = score_voc(labelme_voc / "SegmentationClassPNG", tmp_path / "pred", split)
    m = out["metrics"]
    present = set().union(*LABELME_CLASSES.values())
    assert {k[4:] for k in m if k.startswith("IoU/")} == present
    assert m["mIoU"] == 100.0 and m["mAcc"] == 100.0 and m["aAcc"] == 100.0


def test_voc2012_layout_and_train_aug(labelme_voc, tmp_path):
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    shutil.copytree(labelme_voc / "JPEGImages", voc / "JPEGImages")
    shutil.copytree(labelme_voc / "SegmentationClassPNG", voc / "SegmentationClass")
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("2011_000003\n2011_000025\n")
    ds = voc_seg.VOCSegmentation(tmp_path, "val")
    image, target, name = ds[1]
    assert name == "2011_000025" and image.shape == (375, 500, 3) and target.shape == (375, 500)
    with pytest.raises(voc_seg.VOCSegError, match="SegmentationClassAug"):
        voc_seg.VOCSegmentation(tmp_path, "train_aug")
    # SBD-augmented masks are single-channel PNGs in SegmentationClassAug, listed by train_aug.txt
    (voc / "SegmentationClassAug").mkdir()
    Image.fromarray(target).save(voc / "SegmentationClassAug" / "2011_000025.png")
    (voc / "ImageSets" / "Segmentation" / "train_aug.txt").write_text(
        "/JPEGImages/2011_000025.jpg /SegmentationClassAug/2011_000025.png\n")
    aug = voc_seg.VOCSegmentation(tmp_path, "train_aug")
    assert (aug[0][1] == target).all()


def test_rgb_masks_and_missing_masks_are_clear_errors(tmp_path):
    p = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(p)
    with pytest.raises(voc_seg.VOCSegError, match="rgb.png: mode RGB"):
        voc_seg.read_mask(p)
    bad = tmp_path / "bad.png"
    Image.fromarray(np.full((4, 4), 40, np.uint8)).save(bad)
    with pytest.raises(voc_seg.VOCSegError, match=r"bad.png: values \[40\]"):
        voc_seg.read_mask(bad)
    voc = tmp_path / "VOC2012"
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("x1\n")
    with pytest.raises(voc_seg.VOCSegError, match="x1.png: mask missing"):
        voc_seg.VOCSegmentation(voc, "val")


def test_embedded_voc2012_reads(synth_tiny):
    for split in ("train", "val"):
        ds = voc_seg.VOCSegmentation(synth_tiny / "VOCdevkit", split)
        image, target, _ = ds[0]
        assert image.shape[:2] == target.shape
        assert set(np.unique(target).tolist()) <= set(range(21)) | {255}
