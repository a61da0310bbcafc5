"""PASCAL VOC detection AP, as the VOC devkit (``VOCevaldet.m``) defines it.

The definition, for one class and one IoU threshold ``t``:

- boxes are 1-based inclusive pixel coordinates, so widths, heights and areas carry ``+1``:
  ``IoU = iw*ih / ((x2-x1+1)(y2-y1+1) + (gx2-gx1+1)(gy2-gy1+1) - iw*ih)`` with
  ``iw = min(x2, gx2) - max(x1, gx1) + 1`` (no overlap when ``iw <= 0`` or ``ih <= 0``);
- detections of the class over all images are taken in decreasing score order; each is matched
  to the ground-truth box of its image with the largest IoU (the first one on ties); if that IoU
  is ``>= t`` (the devkit's ``ovmax >= VOCopts.minoverlap``): a ``difficult`` ground truth makes
  the detection neither a true nor a false positive; an unmatched ground truth makes it a true
  positive (and marks it matched); a ground truth matched before makes it a false positive
  (duplicate). Otherwise it is a false positive;
- recall = cumulative TP / number of non-difficult ground truths; precision = cumulative TP /
  (cumulative TP + cumulative FP);
- AP: the VOC2007 11-point interpolation (mean over ``r in {0, 0.1, ..., 1}`` of the maximum
  precision at recall ``>= r``, 0 if none) for VOC2007, and the area under the monotone
  (non-increasing) precision envelope for VOC2010 and later (``use_07_metric`` selects).

``evaluate_voc`` then reports, as detectron2's ``PascalVOCDetectionEvaluator`` does for MoCo's
tables, ``AP50`` and ``AP75`` (class-mean AP at ``t = 0.5``, ``0.75``) and ``AP`` (the mean over
``t = 0.50, 0.55, ..., 0.95``), in percent.

NOTE: detectron2's ``voc_eval`` and py-faster-rcnn's, Python ports of the devkit, match when the IoU
is ``> t`` (strictly); we follow the devkit. The two differ only for a detection whose IoU is
exactly ``t``, which needs boxes whose ``+1`` areas give that ratio exactly.
NOTE: ties in score are taken in input order (a stable sort), as MATLAB's ``sort`` in the devkit
does; py-faster-rcnn's ``np.argsort(-confidence)`` is not stable, so its order among equal
scores is unspecified. NOTE: a class with no non-difficult ground truth has no defined recall; the
devkit and detectron2 then compute AP from NaN recalls (0 for the 11-point rule); we leave such a
class out of the means and report it under ``classes_without_gt``. On the real VOC2007 test set
every class has positives, so the figures are the same.
"""

from __future__ import annotations

import math
import os
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from mocobench.datasets.voc import VOC_CLASSES, VOCAnnotation, load_annotations
from mocobench.core.io import atomic_write_text

IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.50:0.05:0.95


class VOCResultsError(ValueError):
    """A detections file that cannot be scored; the message names the file and the problem."""


def voc_ap(rec: np.ndarray, prec: np.ndarray, use_07_metric: bool) -> float:
    """AP from the recall/precision curve of the detections in decreasing score order."""
    rec, prec = np.asarray(rec, dtype=np.float64), np.asarray(prec, dtype=np.float64)
    if use_07_metric:
        ap = 0.0
        # NOTE: thresholds k * 0.1 in floating point (0.30000000000000004...), as detectron2's and
        # py-faster-rcnn's ``np.arange(0.0, 1.1, 0.1)``; a recall of exactly 3/10 then misses 0.3.
        for r in np.arange(0.0, 1.1, 0.1):
            above = prec[rec >= r]
            ap += (above.max() if above.size else 0.0) / 11.0
        return float(ap)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # the non-increasing envelope
    steps = np.nonzero(mrec[1:] != mrec[:-1])[0]  # where recall changes
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def box_iou_voc(box: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """IoU of one 1-based inclusive box (4,) with M ground truths (M x 4), with the devkit's +1."""
    iw = np.minimum(box[2], gts[:, 2]) - np.maximum(box[0], gts[:, 0]) + 1.0
    ih = np.minimum(box[3], gts[:, 3]) - np.maximum(box[1], gts[:, 1]) + 1.0
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    union = ((box[2] - box[0] + 1.0) * (box[3] - box[1] + 1.0)
             + (gts[:, 2] - gts[:, 0] + 1.0) * (gts[:, 3] - gts[:, 1] + 1.0) - inter)
    return np.where(inter > 0, inter / union, 0.0)


def match_class(gt: dict[str, tuple[np.ndarray, np.ndarray]], image_ids: list[str], scores: np.ndarray,
                boxes: np.ndarray, iou_threshold: float) -> tuple[np.ndarray, np.ndarray, int]:
    """TP and FP flags (in decreasing score order) and the number of non-difficult positives.

    ``gt``: ``{image_id: (boxes M x 4, difficult M bool)}`` of one class for every test image
    (images without objects of the class map to empty arrays or are absent).
    """
    npos = int(sum((~d).sum() for _, d in gt.values()))
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    used = {i: np.zeros(len(d), dtype=bool) for i, (_, d) in gt.items()}
    tp = np.zeros(len(order))
    fp = np.zeros(len(order))
    for rank, k in enumerate(order):
        image_id = image_ids[k]
        g, difficult = gt.get(image_id, (np.zeros((0, 4)), np.zeros(0, dtype=bool)))
        if len(g) == 0:
            fp[rank] = 1
            continue
        ious = box_iou_voc(boxes[k], g)
        j = int(np.argmax(ious))  # first among equal IoUs, like MATLAB's max
        if ious[j] >= iou_threshold:  # the devkit's >=, not the Python ports' > (module NOTE)
            if difficult[j]:
                continue  # neither TP nor FP
            if not used[image_id][j]:
                tp[rank] = 1
                used[image_id][j] = True
            else:
                fp[rank] = 1  # duplicate detection
        else:
            fp[rank] = 1
    return tp, fp, npos


def class_ap(gt, image_ids, scores, boxes, iou_threshold: float, use_07_metric: bool) -> float:
    """AP of one class at one IoU threshold (NaN when the class has no non-difficult ground truth)."""
    tp, fp, npos = match_class(gt, image_ids, scores, boxes, iou_threshold)
    if npos == 0:
        return float("nan")
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    rec = tp / npos
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return voc_ap(rec, prec, use_07_metric)


def gt_by_class(annotations: dict[str, VOCAnnotation], classes=VOC_CLASSES):
    """``{class: {image_id: (boxes M x 4, difficult M)}}`` with an entry for every test image."""
    out = {c: {} for c in classes}
    for image_id, ann in annotations.items():
        for c in classes:
            objs = [o for o in ann.objects if o.name == c]
            out[c][image_id] = (np.array([o.bbox for o in objs], dtype=np.float64).reshape(-1, 4),
                                np.array([o.difficult for o in objs], dtype=bool))
    return out


def evaluate_voc(annotations: dict[str, VOCAnnotation], detections: dict[str, list], *,
                 use_07_metric: bool, classes=VOC_CLASSES) -> dict:
    """Score detections against the ground truth.

    ``annotations``: ``{image_id: VOCAnnotation}`` of the test split (``load_annotations``).
    ``detections``: ``{class: [(image_id, score, xmin, ymin, xmax, ymax), ...]}`` in 1-based
    inclusive coordinates (the devkit's results format). Returns ``{"AP", "AP50", "AP75",
    "per_class": {class: {"AP", "AP50", "AP75"}}, "classes_without_gt": [...], "num_images",
    "metric"}``, APs in percent.
    """
    strange = sorted({(i, o.name) for i, a in annotations.items() for o in a.objects if o.name not in classes})
    if strange:
        # NOTE: dropping them would change the AP silently; `eval detection` refuses them too.
        raise VOCResultsError(f"ground truth names classes outside the {len(classes)} scored ones: "
                              + ", ".join(f"{n!r} in image {i}" for i, n in strange[:5]))
    unknown = sorted(set(detections) - set(classes))
    if unknown:
        raise VOCResultsError(f"detections for unknown classes {unknown}")
    gts = gt_by_class(annotations, classes)
    per_class, missing_gt = {}, []
    for c in classes:
        dets = detections.get(c, [])
        image_ids = [str(d[0]) for d in dets]
        bad = sorted(set(image_ids) - set(annotations))
        if bad:
            raise VOCResultsError(f"class {c}: detections for images not in the test set, e.g. {bad[:5]}")
        scores = np.array([float(d[1]) for d in dets], dtype=np.float64)
        boxes = np.array([[float(v) for v in d[2:6]] for d in dets], dtype=np.float64).reshape(-1, 4)
        aps = [class_ap(gts[c], image_ids, scores, boxes, t, use_07_metric) for t in IOU_THRESHOLDS]
        if np.isnan(aps[0]):
            missing_gt.append(c)
            continue
        per_class[c] = {"AP": 100 * float(np.mean(aps)), "AP50": 100 * aps[0], "AP75": 100 * aps[5]}
    if not per_class:
        raise VOCResultsError("no class has a non-difficult ground-truth object in the test set")
    mean = {k: float(np.mean([v[k] for v in per_class.values()])) for k in ("AP", "AP50", "AP75")}
    return {**mean, "per_class": per_class, "classes_without_gt": missing_gt,
            "num_images": len(annotations), "metric": "voc07-11point" if use_07_metric else "area"}


def metrics_for_record(result: dict) -> dict[str, float]:
    """The flat ``metrics`` of a result record: AP, AP50, AP75 and ``AP50/<class>``."""
    out = {k: result[k] for k in ("AP", "AP50", "AP75")}
    out.update({f"AP50/{c}": v["AP50"] for c, v in result["per_class"].items()})
    return out


# -- the devkit's results files -------------------------------------------------------------------

def results_filename(split: str, cls: str, comp: str = "comp4") -> str:
    return f"{comp}_det_{split}_{cls}.txt"


def write_voc_results(out_dir: str | os.PathLike, split: str, detections: dict[str, list],
                      classes=VOC_CLASSES, comp: str = "comp4") -> list[Path]:
    """One ``comp4_det_<split>_<class>.txt`` per class: ``image_id score xmin ymin xmax ymax``.

    Coordinates must already be 1-based inclusive (a detector's continuous ``x0 y0 x1 y1`` box
    becomes ``x0 + 1, y0 + 1, x1, y1``, as detectron2 writes them).
    NOTE: detectron2 writes scores with 3 decimals, which creates ties; we keep 6.
    """
    paths = []
    for c in classes:
        lines = [f"{d[0]} {float(d[1]):.6f} {float(d[2]):.2f} {float(d[3]):.2f} {float(d[4]):.2f} "
                 f"{float(d[5]):.2f}\n" for d in detections.get(c, [])]
        paths.append(atomic_write_text(Path(out_dir) / results_filename(split, c, comp), "".join(lines)))
    return paths


def read_voc_results(det_dir: str | os.PathLike, split: str, classes=VOC_CLASSES) -> tuple[dict, list[str]]:
    """``({class: [(image_id, score, x1, y1, x2, y2)]}, classes whose file is missing)``.

    Accepts any competition prefix (``comp3``, ``comp4``...): ``<comp>_det_<split>_<class>.txt``.
    A missing file means no detections for that class (AP 0); the caller reports it.
    """
    det_dir = Path(det_dir)
    if not det_dir.is_dir():
        raise VOCResultsError(f"{det_dir}: detections folder not found")
    out, missing = {}, []
    for c in classes:
        files = sorted(p for p in det_dir.glob(f"*_det_{split}_{c}.txt")
                       if re.fullmatch(rf"[^_]+_det_{re.escape(split)}_{re.escape(c)}\.txt", p.name))
        if len(files) > 1:
            raise VOCResultsError(f"{det_dir}: several results files for class {c}: "
                                  f"{', '.join(p.name for p in files)}")
        if not files:
            missing.append(c)
            continue
        rows = []
        try:
            text = files[0].read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise VOCResultsError(f"{files[0]}: not a text results file (binary content)") from None
        for n, line in enumerate(text.splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise VOCResultsError(f"{files[0]}:{n}: expected 'image_id score xmin ymin xmax ymax', got {line!r}")
            try:
                values = [float(v) for v in parts[1:]]
            except ValueError:
                raise VOCResultsError(f"{files[0]}:{n}: not numbers: {line!r}") from None
            if not all(math.isfinite(v) for v in values):
                raise VOCResultsError(f"{files[0]}:{n}: score and box must be finite: {line!r}")
            # 1-based inclusive: a continuous box under one pixel wide is written with xmax in
            # [xmin - 1, xmin) (as detectron2's VOC evaluator writes it); only less is inverted
            if values[3] < values[1] - 1 or values[4] < values[2] - 1:
                raise VOCResultsError(f"{files[0]}:{n}: inverted box (xmax < xmin - 1 or ymax < ymin - 1): "
                                      f"{line!r}")
            rows.append((parts[0], *values))
        out[c] = rows
    return out, missing


def year_of(devkit_dir: str | os.PathLike) -> int | None:
    """2007 for ``.../VOC2007``; None when the folder name carries no year."""
    m = re.search(r"VOC(\d{4})", Path(devkit_dir).resolve().name)
    return int(m.group(1)) if m else None


def score_voc_dir(year_dir: str | os.PathLike, split: str, det_dir: str | os.PathLike,
                  year: int | None = None, classes=VOC_CLASSES) -> dict:
    """Score a folder of results files against ``VOC<year>/Annotations`` of ``split``."""
    year = year or year_of(year_dir)
    if year is None:
        raise VOCResultsError(f"{year_dir}: cannot tell the VOC year from the folder name; pass --year")
    annotations = load_annotations(year_dir, split)
    detections, missing = read_voc_results(det_dir, split, classes)
    result = evaluate_voc(annotations, detections, use_07_metric=year < 2010, classes=classes)
    result["year"] = year
    result["missing_results_files"] = missing
    return result


def detections_from_predictions(predictions, image_ids: list[str], classes=VOC_CLASSES) -> dict:
    """Detector outputs (continuous ``x0 y0 x1 y1`` boxes, labels 1..K) to the devkit's format.

    ``predictions[i]`` is ``{"boxes", "scores", "labels"}`` for ``image_ids[i]``.
    """
    out = defaultdict(list)
    for image_id, p in zip(image_ids, predictions):
        boxes = np.asarray(p["boxes"], dtype=np.float64).reshape(-1, 4)
        for (x0, y0, x1, y1), s, lab in zip(boxes, np.asarray(p["scores"]), np.asarray(p["labels"])):
            out[classes[int(lab) - 1]].append((image_id, float(s), x0 + 1.0, y0 + 1.0, x1, y1))
    return dict(out)
