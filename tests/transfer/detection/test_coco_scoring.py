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
