"""Score prediction PNGs from any model against Cityscapes or VOC 2012 ground truth.

``mocobench score cityscapes`` / ``score voc-seg`` and the evaluation after training share
:class:`~transfer.segmentation.metrics.ConfusionMatrix`; this module adds the file formats:

- Cityscapes: predictions are *label-id* PNGs (the official submission format), one per
  ``*_gtFine_labelIds.png``, named ``<city>_<seq>_<frame>*.png`` anywhere under the prediction
  folder. Predicted label ids of ignored classes count as "void" (wrong for the true class).
- VOC: predictions are class-index PNGs (palette or grayscale) named ``<id>.png``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from mocobench.datasets import cityscapes as cs
from mocobench.datasets import voc_seg
from mocobench.core.io import progress
from mocobench.transfer.segmentation.metrics import ConfusionMatrix


def _scores(cm: ConfusionMatrix, classes, gt: str | os.PathLike, n_files: int) -> dict:
    # every ground-truth pixel ignored: mIoU, mAcc and aAcc would be NaN, which is not JSON and no score
    if int(cm.mat.sum()) == 0:
        raise ValueError(f"{gt}: no pixel of an evaluated class in any of its {n_files} ground-truth "
                         "files (every pixel is ignored), so there is nothing to score")
    return cm.scores(classes)


def cityscapes_pred_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Label ids -> train ids with ignored label ids mapped to K (the void column), as int64."""
    out = cs.LABEL_ID_TO_TRAIN_ID[label_ids].astype(np.int64)
    out[out == cs.IGNORE] = cs.NUM_CLASSES
    return out


def score_cityscapes(gt_dir: str | os.PathLike, pred_dir: str | os.PathLike,
                     device: str = "cpu") -> dict:
    gt_files = cs.list_ground_truth(gt_dir)
    pred_files = cs.match_predictions(gt_files, pred_dir)
    cm = ConfusionMatrix(cs.NUM_CLASSES, device=device)
    for g, p in progress(list(zip(gt_files, pred_files)), desc="score cityscapes", unit="img"):
        gt = cs.read_label_ids(g)
        pred = cs.read_label_ids(p)
        if pred.shape != gt.shape:
            raise cs.CityscapesError(f"{p}: prediction is {pred.shape[1]}x{pred.shape[0]} but {g.name} "
                                     f"is {gt.shape[1]}x{gt.shape[0]}")
        cm.update(torch.from_numpy(cityscapes_pred_to_train_ids(pred)),
                  torch.from_numpy(cs.to_train_ids(gt)))
    return {"dataset": "Cityscapes", "images": len(gt_files),
            "metrics": _scores(cm, cs.CLASSES, gt_dir, len(gt_files))}


def score_voc(gt_dir: str | os.PathLike, pred_dir: str | os.PathLike, split_file: str | os.PathLike,
              device: str = "cpu") -> dict:
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    ids = voc_seg.read_split(split_file)
    cm = ConfusionMatrix(voc_seg.NUM_CLASSES, device=device)
    for i in progress(ids, desc="score voc-seg", unit="img"):
        g, p = gt_dir / f"{i}.png", pred_dir / f"{i}.png"
        if not g.is_file():
            raise voc_seg.VOCSegError(f"{g}: ground truth for {i} (listed in {split_file}) is missing")
        if not p.is_file():
            raise voc_seg.VOCSegError(f"{p}: prediction for {i} is missing")
        gt = voc_seg.read_mask(g)
        # predictions may use 255 too (e.g. copied ground truth); it counts as void
        pred = voc_seg.read_mask(p)
        if pred.shape != gt.shape:
            raise voc_seg.VOCSegError(f"{p}: prediction is {pred.shape[1]}x{pred.shape[0]} but the ground "
                                      f"truth is {gt.shape[1]}x{gt.shape[0]}")
        cm.update(torch.from_numpy(pred), torch.from_numpy(gt))
    return {"dataset": "VOC2012", "images": len(ids), "metrics": _scores(cm, voc_seg.CLASSES, split_file, len(ids))}


def write_cityscapes_prediction(path: str | os.PathLike, train_ids: np.ndarray) -> Path:
    """Write an H x W train-id prediction as an official label-id PNG (atomically). Train id 255
    (no class) is written as label id 0, ``unlabeled``, which no class is scored as."""
    ids = train_ids.astype(np.int64)
    void = ids == cs.IGNORE
    return _write_png(path, np.where(void, 0, cs.TRAIN_ID_TO_LABEL_ID[np.where(void, 0, ids)]).astype(np.uint8))


def write_voc_prediction(path: str | os.PathLike, classes: np.ndarray) -> Path:
    """Write an H x W class-index prediction as a palette PNG with the VOC colour map."""
    return _write_png(path, classes.astype(np.uint8), palette=voc_palette())


def voc_palette() -> list[int]:
    """The VOC colour map (bit-interleaved class index), 256 RGB triples flattened."""
    pal = []
    for c in range(256):
        r = g = b = 0
        cid = c
        for shift in range(7, -1, -1):
            r |= ((cid >> 0) & 1) << shift
            g |= ((cid >> 1) & 1) << shift
            b |= ((cid >> 2) & 1) << shift
            cid >>= 3
        pal += [r, g, b]
    return pal


def _write_png(path, arr: np.ndarray, palette=None) -> Path:
    from PIL import Image

    from mocobench.core.io import atomic_write

    im = Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8))  # mode L
    if palette is not None:
        im.putpalette(palette)  # L -> P, indices unchanged
    return atomic_write(path, lambda f: im.save(f, format="PNG"))
