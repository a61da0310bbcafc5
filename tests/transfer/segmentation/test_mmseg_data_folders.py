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
