"""The COCO reader on labelme's real COCO export, masks through pycocotools."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from mocobench.datasets.coco import COCODetection, COCOFormatError


def coco_folder(labelme_dir):
    return labelme_dir / "instance_segmentation" / "data_dataset_coco"


def test_labelme_coco_values(labelme_dir):
    d = coco_folder(labelme_dir)
    ds = COCODetection(d, d / "annotations.json")
    assert len(ds) == 3
    # labelme exports 21 categories with ids 0 (_background_) .. 20; labels are ids + 1.
    assert len(ds.classes) == 21 and ds.classes[15] == "person" and ds.label_of_cat[15] == 16
    image, t = ds[0]  # image id 0 = 2011_000003.jpg: person, person, bottle
    assert image.shape == (3, 338, 500)
    assert t["labels"].tolist() == [16, 16, 6]
    # bbox [191, 107, 123, 221] (x, y, w, h) -> x0 y0 x1 y1
    assert t["boxes"][0].tolist() == [191.0, 107.0, 314.0, 328.0]
    assert t["masks"].shape == (3, 338, 500) and t["masks"].dtype.is_floating_point is False
    assert t["iscrowd"].tolist() == [False] * 3
    # Polygon masks rasterised by pycocotools: their pixel count is close to the polygons' area
    # (shoelace formula), and the mask lies inside its box.
    anns = ds.coco.loadAnns(ds.coco.getAnnIds(imgIds=[0]))
    for k, a in enumerate(anns):
        m = t["masks"][k].numpy()
        shoelace = 0.0
        for poly in a["segmentation"]:
            x, y = np.array(poly[0::2]), np.array(poly[1::2])
            shoelace += 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
        assert abs(int(m.sum()) - shoelace) / shoelace < 0.03
        ys, xs = np.nonzero(m)
        x0, y0, x1, y1 = t["boxes"][k].tolist()
        assert xs.min() >= x0 - 1 and xs.max() <= x1 and ys.min() >= y0 - 1 and ys.max() <= y1
    total = sum(len(ds.target(i)["labels"]) for i in range(len(ds)))
    assert total == 12


def test_rle_and_crowd(tmp_path):
    from PIL import Image

    (tmp_path / "img").mkdir()
    Image.new("RGB", (20, 10)).save(tmp_path / "img" / "a.jpg")
    m = np.zeros((10, 20), dtype=np.uint8, order="F")
    m[2:6, 3:9] = 1
    rle = mask_utils.encode(m)
    rle_json = {"size": rle["size"], "counts": rle["counts"].decode()}
    doc = {"images": [{"id": 7, "file_name": "a.jpg", "width": 20, "height": 10}],
           "categories": [{"id": 3, "name": "cat"}, {"id": 9, "name": "dog"}],
           "annotations": [
               {"id": 1, "image_id": 7, "category_id": 9, "bbox": [3, 2, 6, 4], "area": 24, "iscrowd": 0,
                "segmentation": [[3, 2, 9, 2, 9, 6, 3, 6]]},
               {"id": 2, "image_id": 7, "category_id": 3, "bbox": [3, 2, 6, 4], "area": 24, "iscrowd": 1,
                "segmentation": rle_json},
           ]}
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    ds = COCODetection(tmp_path / "img", tmp_path / "ann.json")
    _, t = ds[0]
    assert t["labels"].tolist() == [2]  # the crowd region is dropped from training targets
    crowd = COCODetection(tmp_path / "img", tmp_path / "ann.json", keep_crowd=True)
    _, t = crowd[0]
    assert t["labels"].tolist() == [2, 1] and t["iscrowd"].tolist() == [False, True]
    assert np.array_equal(t["masks"][1].numpy(), m)  # the RLE decodes to the mask
    assert int(t["masks"][0].sum()) >= 24


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(COCOFormatError, match="nope.json"):
        COCODetection(tmp_path, tmp_path / "nope.json")
