"""COCO scoring through pycocotools on labelme's real COCO export."""

from __future__ import annotations

import pytest
import torch

from mocobench.datasets.coco import COCODetection
from mocobench.transfer.detection.evaluate import coco_results, score_coco


def predictions_from_targets(ds, drop=()):
    preds = []
    for i in range(len(ds)):
        t = ds.target(i)
        keep = [k for k in range(len(t["labels"])) if (i, k) not in drop]
        preds.append({"boxes": t["boxes"][keep], "labels": t["labels"][keep],
                      "scores": torch.linspace(1.0, 0.5, len(keep)),
                      "masks": t["masks"][keep].float()[:, None]})  # N x 1 x H x W, as torchvision returns
    return preds


def test_ground_truth_as_detections_scores_100(labelme_dir):
    d = labelme_dir / "instance_segmentation" / "data_dataset_coco"
    ds = COCODetection(d, d / "annotations.json")
    # labelme numbers annotations from 0, which COCOeval cannot match; the reader shifts them
    assert min(a["id"] for a in ds.coco.dataset["annotations"]) == 1
    results = coco_results(predictions_from_targets(ds), ds, with_masks=True)
    assert len(results) == 12 and {r["category_id"] for r in results} == {5, 6, 7, 9, 15, 18}
    m = score_coco(results, ds.coco)
    assert m["bbox_AP"] == pytest.approx(100) and m["bbox_AP50"] == pytest.approx(100)
    assert m["segm_AP"] == pytest.approx(100)


def test_one_dropped_instance_lowers_recall(labelme_dir):
    d = labelme_dir / "instance_segmentation" / "data_dataset_coco"
    ds = COCODetection(d, d / "annotations.json")
    # persons (category 15) occur 6 times; dropping the one of image 0 caps their recall at 5/6.
    t0 = ds.target(0)
    k = t0["labels"].tolist().index(ds.label_of_cat[15])
    results = coco_results(predictions_from_targets(ds, drop={(0, k)}), ds, with_masks=True)
    m = score_coco(results, ds.coco, ("bbox",))
    # COCO AP = mean over categories of the 101-point interpolated precision; person's precision is 1
    # up to recall 5/6 (recall points 0, .01, ..., .83: 84 of 101) and 0 beyond; 5 other categories at 1.
    n_cats = 6
    assert m["bbox_AP"] == pytest.approx(100 * (5 + 84 / 101) / n_cats, abs=1e-6)
    assert score_coco([], ds.coco, ("bbox",))["bbox_AP"] == 0.0


def test_area_ranges_without_ground_truth_are_nan_with_or_without_detections(tmp_path):
    import json

    from pycocotools.coco import COCO

    # only small objects (area < 32^2): COCOeval has no figure (-1) for the medium and large ranges
    anns = [{"id": i + 1, "image_id": 1, "category_id": 4, "bbox": [5 + 20 * i, 5, 10, 10], "area": 100.0,
             "iscrowd": 0} for i in range(2)]
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 40}],
                                "annotations": anns, "categories": [{"id": 4, "name": "cup"}]}))
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
    far_away = [{"image_id": 1, "category_id": 4, "bbox": [70.0, 25.0, 8.0, 8.0], "score": 0.9}]  # a false positive
    one = score_coco(far_away, gt, ("bbox",))
    none = score_coco([], gt, ("bbox",))
    nan_keys = {k for k, v in one.items() if v != v}
    assert nan_keys == {"bbox_APm", "bbox_APl"}
    assert {k for k, v in none.items() if v != v} == nan_keys
    assert {k: v for k, v in none.items() if k not in nan_keys} == {k: 0.0 for k in one if k not in nan_keys}


def _l_shape(x: int, y: int, size: int = 60, width: int = 4):
    """A thin L: its mask covers under 32² pixels (small), its box 60² (medium)."""
    import numpy as np

    m = np.zeros((200, 200), np.uint8)
    m[y:y + size, x:x + width] = 1
    m[y + size - width:y + size, x:x + size] = 1
    return m


def test_mask_area_ranges_go_by_the_masks_area_not_the_boxs(tmp_path):
    """A false positive whose mask is small but whose box is medium counts against segm APs, as in
    COCOeval given the mask alone (pycocotools' loadRes gives a result with a box the box's area)."""
    import contextlib
    import io
    import json

    import numpy as np
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def rle(m):
        r = mask_utils.encode(np.asfortranarray(m))
        return {"size": r["size"], "counts": r["counts"].decode("ascii")}

    gt_mask, fp_mask = _l_shape(10, 10), _l_shape(110, 110)
    assert gt_mask.sum() < 32 ** 2 < 60 ** 2
    g = rle(gt_mask)
    (tmp_path / "gt.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "1.jpg", "width": 200, "height": 200}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": float(gt_mask.sum()),
                         "bbox": [float(v) for v in mask_utils.toBbox(g)], "segmentation": g}],
        "categories": [{"id": 1, "name": "thing"}]}))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(tmp_path / "gt.json"))
    results = [{"image_id": 1, "category_id": 1, "score": score, "segmentation": rle(m),
                "bbox": [float(v) for v in mask_utils.toBbox(rle(m))]}
               for m, score in ((fp_mask, 0.9), (gt_mask, 0.8))]   # the false positive ranks first
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes([{k: v for k, v in r.items() if k != "bbox"} for r in results]), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    ours = score_coco(results, gt, ("segm",))
    assert ours["segm_APs"] == pytest.approx(100 * ev.stats[3]) and ours["segm_APs"] < 100
    assert ours["segm_AP"] == pytest.approx(100 * ev.stats[0])
