"""VOC detection reader: images that cannot be read are skipped and counted, never a crash, and
evaluation can read one image without moving on to the next."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from PIL import Image

from mocobench.datasets.voc import VOCDetection, read_rgb

from unreadable_images import write_jpeg


def voc_test_split(root: Path, sizes: list[tuple[int, int]], truncated=()) -> Path:
    """``root/VOC2007`` with a ``test`` split of one dog per image, images ``000001`` ... ."""
    d = root / "VOC2007"
    (d / "ImageSets" / "Main").mkdir(parents=True)
    (d / "Annotations").mkdir()
    ids = [f"{i + 1:06d}" for i in range(len(sizes))]
    for i, (image_id, (w, h)) in enumerate(zip(ids, sizes)):
        write_jpeg(d / "JPEGImages" / f"{image_id}.jpg", w, h, seed=i, truncated=i in truncated)
        (d / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><filename>{image_id}.jpg</filename><size><width>{w}</width><height>{h}</height>"
            f"</size><object><name>dog</name><difficult>0</difficult><bndbox><xmin>{2 + i}</xmin>"
            f"<ymin>3</ymin><xmax>{20 + i}</xmax><ymax>30</ymax></bndbox></object></annotation>")
    (d / "ImageSets" / "Main" / "test.txt").write_text("\n".join(ids) + "\n")
    return d


def test_read_is_the_image_itself_or_none(tmp_path):
    voc_test_split(tmp_path, [(64, 48)] * 3, truncated={1})
    ds = VOCDetection(tmp_path, sets=[("2007", "test")])
    assert len(ds) == 3 and ds.skipped == []   # the header opens: nothing is known at open time
    with pytest.warns(UserWarning, match="000002.jpg: unreadable image skipped"):
        assert ds.read(1) is None
    assert ds.skipped == [str(ds.image_path(1))]
    image, target = ds.read(2)
    assert target["image_id"] == 2 and target["boxes"][0, 0].item() == 2 + 2 - 1
    # training's ds[i] moves on to the next readable image: another image is as good there
    assert ds[1][1]["image_id"] == 2


def test_decompression_bomb_is_skipped_and_counted(tmp_path, monkeypatch):
    d = voc_test_split(tmp_path, [(64, 48), (128, 96), (64, 48)])
    # PIL refuses an image of more than twice MAX_IMAGE_PIXELS with DecompressionBombError (no OSError);
    # 128 x 96 = 12288 > 2 x 4000, while 64 x 48 = 3072 stays under the limit
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(d / "JPEGImages" / "000002.jpg")
    with pytest.warns(UserWarning, match="000002.jpg: unreadable image skipped"):
        ds = VOCDetection(tmp_path, sets=[("2007", "test")])   # open-time check
    assert len(ds) == 2 and ds.skipped == [str(d / "JPEGImages" / "000002.jpg")]
    skipped: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert read_rgb(d / "JPEGImages" / "000002.jpg", skipped) is None   # read time
    assert skipped == [str(d / "JPEGImages" / "000002.jpg")]
