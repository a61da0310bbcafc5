"""COCO instances files: an annotation without ``area`` or ``iscrowd``, which COCOeval reads, is
refused when the file is opened, not met as a bare KeyError after training."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from mocobench.datasets.coco import COCOFormatError, load_coco


def instances(**drop_from_second):
    anns = [{"id": i, "image_id": 1, "category_id": 3, "bbox": [2, 2, 10 + i, 8], "area": 80.0 + 8 * i,
             "iscrowd": 0, "segmentation": [[2, 2, 12, 2, 12, 10]]} for i in (1, 2)]
    for key in drop_from_second:
        del anns[1][key]
    return {"images": [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30}],
            "categories": [{"id": 3, "name": "dog"}], "annotations": anns}


@pytest.mark.parametrize("key", ["area", "iscrowd"])
def test_missing_field_is_refused_at_open(tmp_path, key):
    path = tmp_path / "instances_val2017.json"
    path.write_text(json.dumps(instances(**{key: True})))
    with pytest.raises(COCOFormatError) as e:
        load_coco(path)
    assert str(e.value) == f"{path}: annotation id 2 has no {key!r}"
    # why: pycocotools' COCOeval itself fails on such a file with a bare KeyError naming the field
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
        dt = gt.loadRes([{"image_id": 1, "category_id": 3, "bbox": [2, 2, 11, 8], "score": 1.0}])
        ev = COCOeval(gt, dt, "bbox")
        with pytest.raises(KeyError, match=key):
            ev.evaluate()
            ev.accumulate()


@pytest.mark.parametrize("key, value", [("area", -1), ("area", "80"), ("area", float("nan")), ("iscrowd", 2),
                                        ("iscrowd", None)])
def test_bad_values_are_refused(tmp_path, key, value):
    data = instances()
    data["annotations"][1][key] = value
    path = tmp_path / "i.json"
    path.write_text(json.dumps(data))
    with pytest.raises(COCOFormatError, match=rf"i\.json: annotation id 2: {key} must be"):
        load_coco(path)


def test_complete_file_opens(tmp_path):
    path = tmp_path / "i.json"
    path.write_text(json.dumps(instances()))
    assert len(load_coco(path).anns) == 2
