"""The mmseg engine's VOC lists: an unreadable training image is left out of mmseg's ``ann_file`` and
counted for the record, as our engine counts it, never dropped without a trace; an unreadable val
image is refused, as mmseg would score the val set without it."""

from __future__ import annotations

import io
import types
import warnings

import numpy as np
import pytest
from PIL import Image

from mocobench.datasets.voc_seg import VOCSegError
from mocobench.transfer.segmentation.mmseg_engine import data_folders


def test_voc_unreadable_image_is_left_out_of_the_list_and_counted(tmp_path):
    d = tmp_path / "VOC2012"
    (d / "ImageSets" / "Segmentation").mkdir(parents=True)
    (d / "SegmentationClass").mkdir()
    (d / "JPEGImages").mkdir()
    ids = ["a", "b", "c"]
    for i, image_id in enumerate(ids):
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(buf, "JPEG")
        data = buf.getvalue()
        (d / "JPEGImages" / f"{image_id}.jpg").write_bytes(data[: len(data) // 2] if image_id == "b" else data)
        mask = np.zeros((32, 48), dtype=np.uint8)
        mask[4:20, 4:20] = 3
        Image.fromarray(mask, "L").save(d / "SegmentationClass" / f"{image_id}.png")
    (d / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids) + "\n")
    (d / "ImageSets" / "Segmentation" / "val.txt").write_text("a\nc\n")
    protocol = types.SimpleNamespace(train_split="train", val_split="val")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root, folders, sizes, skipped = data_folders("voc2012", str(tmp_path), protocol, tmp_path / "work", True)
        assert sizes == {"train": 2, "val": 2} and skipped == {"skipped_train": 1, "skipped_val": 0}
        assert (tmp_path / "work" / "splits" / "train.txt").read_text().split() == ["a", "c"]
        # the unreadable image in val: refused before mmseg runs, naming it
        (d / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids) + "\n")
        with pytest.raises(VOCSegError, match=r"b\.jpg: unreadable val image.*1 such"):
            data_folders("voc2012", str(tmp_path), protocol, tmp_path / "work2", True)


def test_cityscapes_unreadable_training_image_is_left_out_and_a_val_one_refused(synth_tiny, tmp_path):
    """mmseg read Cityscapes' whole image folders, so an unreadable image was refused in either split;
    its images are listed in an ``ann_file`` now, as VOC's are."""
    import shutil

    from mocobench.datasets.cityscapes import CityscapesError

    root = tmp_path / "cityscapes"
    shutil.copytree(synth_tiny / "cityscapes", root)
    train = sorted((root / "leftImg8bit" / "train").rglob("*_leftImg8bit.png"))
    train[2].write_bytes(train[2].read_bytes()[:-200])
    protocol = types.SimpleNamespace(train_split="train", val_split="val")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, folders, sizes, skipped = data_folders("cityscapes", str(tmp_path), protocol, tmp_path / "work", True)
        listed = (tmp_path / "work" / "splits" / "cityscapes_train.txt").read_text().split()
        assert sizes["train"] == len(train) - 1 and skipped == {"skipped_train": 1, "skipped_val": 0}
        assert listed == [f"{p.parent.name}/{p.name[:-len('_leftImg8bit.png')]}" for p in train if p != train[2]]
        assert folders["train"]["ann_file"].endswith("cityscapes_train.txt")
        # each listed line names an image and a train-id mask where mmseg's CityscapesDataset looks
        for line in listed:
            assert (root / "leftImg8bit" / "train" / f"{line}_leftImg8bit.png").is_file()
            assert (tmp_path / "work" / "labelTrainIds" / "train" / f"{line}_gtFine_labelTrainIds.png").is_file()
        val = sorted((root / "leftImg8bit" / "val").rglob("*_leftImg8bit.png"))[0]
        val.write_bytes(val.read_bytes()[:-200])
        with pytest.raises(CityscapesError, match="unreadable val image"):
            data_folders("cityscapes", str(tmp_path), protocol, tmp_path / "work2", True)
