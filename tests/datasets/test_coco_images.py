"""COCO detection reader: an image whose size is not the one its JSON entry states is refused when
the file is opened (its boxes and masks would be misplaced); an unreadable image is skipped and
counted when read, as before."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from mocobench.datasets.coco import COCODetection, COCOFormatError


def coco_split(tmp_path, stated: list[tuple[int, int]], real: list[tuple[int, int] | None]):
    """Images ``0.jpg ...`` of the ``real`` sizes (None: not an image) listed with the ``stated``
    sizes, one car each; the annotation file's path."""
    (tmp_path / "img").mkdir()
    images, anns = [], []
    for i, ((w, h), size) in enumerate(zip(stated, real)):
        if size is None:
            (tmp_path / "img" / f"{i}.jpg").write_bytes(b"not a jpeg")
        else:
            Image.new("RGB", size).save(tmp_path / "img" / f"{i}.jpg")
        images.append({"id": 10 + i, "file_name": f"{i}.jpg", "width": w, "height": h})
        anns.append({"id": i + 1, "image_id": 10 + i, "category_id": 3, "bbox": [10, 10, 30, 20], "area": 600,
                     "iscrowd": 0, "segmentation": [[10, 10, 40, 10, 40, 30, 10, 30]]})
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 3, "name": "car"}]}))
    return path


def test_image_size_other_than_the_json_is_refused_at_open(tmp_path):
    ann = coco_split(tmp_path, [(100, 80), (100, 80)], [(100, 80), (200, 160)])
    with pytest.raises(COCOFormatError) as e:
        COCODetection(tmp_path / "img", ann)
    assert str(e.value) == (f"{ann}: image id 11 is 100x80 in the JSON but {tmp_path / 'img' / '1.jpg'} "
                            "is 200x160")


def test_unreadable_image_is_still_skipped_and_counted_when_read(tmp_path):
    ann = coco_split(tmp_path, [(100, 80), (100, 80)], [None, (100, 80)])
    ds = COCODetection(tmp_path / "img", ann)
    assert len(ds) == 2 and ds.skipped == []
    with pytest.warns(UserWarning, match="0.jpg: unreadable image skipped"):
        assert ds.read(0) is None
    assert ds.skipped == [str(tmp_path / "img" / "0.jpg")]
    image, target = ds.read(1)
    assert image.shape == (3, 80, 100) and target["masks"].shape == (1, 80, 100)
