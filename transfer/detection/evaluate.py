"""Detection inference and scoring: sharded prediction, the VOC devkit's AP, COCOeval's AP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from mocobench.core import dist, precision
from mocobench.core.io import progress


@torch.no_grad()
def predict(model: nn.Module, dataset, protocol, device: torch.device, desc: str = "inference") -> list[dict] | None:
    """Detections for every image of ``dataset`` in its original pixel coordinates (CPU tensors),
    in dataset order, on rank 0; ``None`` on the other ranks.

    Distributed evaluation as detectron2's evaluators: each rank predicts its shard
    (``mocobench.core.dist.shard_indices``: every image once, no padding) and rank 0 gathers the pieces.

    An image that cannot be read gets no detections, under its own id, and is named in
    ``dataset.skipped`` on rank 0 (whichever rank met it). Its ground truth stays in the score, so
    its objects count as missed: the official protocols score a fixed test set (the devkit reads
    every id of the split, COCOeval every image of the annotation file), and a smaller one would
    give numbers that cannot be set beside anyone else's.
    """
    rank, world = dist.rank(), dist.world_size()
    model.eval()
    transform = dist.unwrap(model).transform
    saved = transform.min_size, transform.max_size
    transform.min_size, transform.max_size = (protocol.min_size_test,), protocol.max_size_test
    mine = {}
    try:
        for i in progress(dist.shard_indices(len(dataset), rank, world), desc=desc, unit="img",
                          disable=None if rank == 0 else True):
            # NOTE: never dataset[i], which moves on to the next readable image: its detections
            # would be scored as image i's
            item = dataset.read(i)
            if item is None:
                mine[i] = None
                continue
            with precision.evaluation_autocast(device, protocol.bf16):
                pred = model([item[0].to(device)])[0]
            mine[i] = {k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in pred.items()}
    finally:
        transform.min_size, transform.max_size = saved
    parts = dist.gather_to_main(mine)
    if parts is None:
        return None
    merged = {i: pred for part in parts for i, pred in part.items()}
    if sorted(merged) != list(range(len(dataset))):
        raise RuntimeError(f"gathered predictions for {len(merged)} of {len(dataset)} images")
    unreadable = [i for i in range(len(dataset)) if merged[i] is None]
    for i in unreadable:
        path = str(dataset.image_path(i))
        if path not in dataset.skipped:  # met on another rank
            dataset.skipped.append(path)
    if unreadable:
        import warnings

        warnings.warn(f"{len(unreadable)} test images unreadable, scored with no detections (their objects count "
                      f"as missed): {', '.join(str(dataset.image_path(i)) for i in unreadable[:5])}", stacklevel=2)
    return [merged[i] if merged[i] is not None else no_detections() for i in range(len(dataset))]


def no_detections() -> dict:
    """A detector output with no detection (what an unreadable test image is scored with)."""
    return {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}


def score_voc(predictions: list[dict], test_set, det_dir: Path, year: int = 2007) -> dict:
    """Write the devkit's results files and score them (the path ``mocobench score voc`` takes)."""
    from mocobench.transfer.detection.voc_eval import detections_from_predictions, score_voc_dir, write_voc_results

    if len(test_set.sets) != 1 or not test_set.items:
        raise ValueError(f"the VOC test set must be one non-empty split, not {test_set.sets}")
    year_dir, split = test_set.items[0][0], test_set.sets[0][1]
    image_ids = [image_id for _, image_id, _ in test_set.items]
    detections = detections_from_predictions(predictions, image_ids, test_set.classes)
    write_voc_results(det_dir, split, detections, test_set.classes)
    return score_voc_dir(year_dir, split, det_dir, year=year, classes=test_set.classes)


def coco_results(predictions: list[dict], test_set, with_masks: bool) -> list[dict]:
    """Detector outputs to COCO's results format (xywh boxes, RLE masks, real category ids)."""
    from pycocotools import mask as mask_utils

    results = []
    for image_id, p in zip(test_set.ids, predictions):
        boxes = p["boxes"].numpy()
        masks = (p["masks"][:, 0] > 0.5).numpy() if with_masks and "masks" in p else None
        for k, (box, score, label) in enumerate(zip(boxes, p["scores"].tolist(), p["labels"].tolist())):
            r = {"image_id": int(image_id), "category_id": int(test_set.cat_of_label[int(label)]),
                 "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])],
                 "score": float(score)}
            if masks is not None:
                rle = mask_utils.encode(np.asfortranarray(masks[k].astype(np.uint8)))
                r["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
            results.append(r)
    return results


COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def score_coco(results: list[dict], coco_gt, iou_types=("bbox", "segm")) -> dict[str, float]:
    """COCOeval's AP, AP50, AP75, APs, APm, APl per IoU type, in percent (``bbox_AP``...); NaN where
    COCOeval has no figure (an area range without ground truth), with detections or without."""
    import contextlib
    import io

    from pycocotools.cocoeval import COCOeval

    metrics = {}
    for iou_type in iou_types:
        with contextlib.redirect_stdout(io.StringIO()):
            # loadRes rejects an empty list; an empty results index goes through COCOeval all the same,
            # so no detections score 0 where there is ground truth and -1 (NaN below) where there is none
            # a mask scored with its box beside it would take the box's area in loadRes, so APs/APm/APl
            # would sort detections by box size: the mask's own area counts (detectron2's
            # COCOEvaluator drops the box for the same reason)
            dt = (coco_gt.loadRes([{k: v for k, v in r.items() if not (iou_type == "segm" and k == "bbox")}
                                   for r in results]) if results else _empty_results(coco_gt))
            ev = COCOeval(coco_gt, dt, iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        # stats of an area range with no ground truth are -1 in COCOeval; we keep -1 out (NaN).
        metrics.update({f"{iou_type}_{n}": (100.0 * float(v) if v >= 0 else float("nan"))
                        for n, v in zip(COCO_STAT_NAMES, ev.stats[:6])})
    return metrics


def _empty_results(coco_gt):
    """A pycocotools results index with no detection, over ``coco_gt``'s images and categories."""
    from pycocotools.coco import COCO

    dt = COCO()
    dt.dataset = {"images": list(coco_gt.dataset["images"]), "categories": list(coco_gt.dataset["categories"]),
                  "annotations": []}
    dt.createIndex()
    return dt
