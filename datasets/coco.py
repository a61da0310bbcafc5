"""COCO instances (boxes, labels, polygon and RLE masks, ``iscrowd``) read through pycocotools.

::

    coco/train2017/*.jpg   coco/annotations/instances_train2017.json
    coco/val2017/*.jpg     coco/annotations/instances_val2017.json

COCO boxes are ``[x, y, w, h]`` in continuous pixel coordinates (no ``+1``); targets use
``x0 y0 x1 y1 = x y x+w y+h``. Category ids are arbitrary integers (1..90 in COCO, 0..20 in
labelme's export); :class:`COCODetection` maps them to contiguous detector labels ``1..K`` in
increasing id order (0 is background) and keeps the inverse map for writing results.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

from mocobench.datasets.voc import SkipUnreadable


class COCOFormatError(ValueError):
    """A COCO file that cannot be used; the message names the file and the problem."""


def load_coco(annotation_file: str | os.PathLike):
    """A ``pycocotools.coco.COCO`` index of ``annotation_file`` (its stdout chatter silenced)."""
    from pycocotools.coco import COCO

    path = Path(annotation_file)
    if not path.is_file():
        raise COCOFormatError(f"{path}: COCO annotation file not found")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(path))
            anns = coco.dataset.get("annotations", [])
            lowest = min((a["id"] for a in anns), default=1)
            if lowest < 1:
                # NOTE: COCOeval marks matches by annotation id and treats id 0 as "no match", so a
                # ground truth with id 0 can never be a true positive. labelme's export numbers
                # annotations from 0; we shift every id up (in memory only) so all are >= 1.
                for a in anns:
                    a["id"] += 1 - lowest
                coco.createIndex()
    except (ValueError, KeyError, TypeError, AssertionError) as e:
        raise COCOFormatError(f"{path}: not a COCO instances file ({type(e).__name__}: {e})") from None
    return coco


def coco_split_paths(coco_root: str | os.PathLike, split: str) -> tuple[Path, Path]:
    """``(image folder, annotation file)`` of ``train2017``/``val2017`` under a COCO root."""
    root = Path(coco_root)
    return root / split, root / "annotations" / f"instances_{split}.json"


class COCODetection(SkipUnreadable):
    """COCO images and instance targets for torchvision detection models.

    ``dataset[i]`` -> ``(image, target)``; ``target``: ``boxes`` (K x 4, ``x0 y0 x1 y1``),
    ``labels`` (K, contiguous 1..num_classes), ``masks`` (K x H x W uint8, from polygons or RLE
    through ``COCO.annToMask``; only with ``with_masks``), ``iscrowd`` (K, bool), ``area`` (K),
    ``image_id`` (the COCO image id). Crowd regions are dropped from training targets unless
    ``keep_crowd`` (detectron2 drops them too); they stay in the JSON for COCOeval, which ignores
    them. Boxes with zero width or height are dropped (they carry no gradient signal and make
    torchvision's box coder fail).
    """

    def __init__(self, image_dir: str | os.PathLike, annotation_file: str | os.PathLike,
                 transforms=None, with_masks: bool = True, keep_crowd: bool = False,
                 remove_images_without_annotations: bool = False):
        self.image_dir = Path(image_dir)
        self.annotation_file = Path(annotation_file)
        self.coco = load_coco(self.annotation_file)
        self.transforms = transforms
        self.with_masks = with_masks
        self.keep_crowd = keep_crowd
        self.cat_ids = sorted(self.coco.getCatIds())
        self.classes = tuple(self.coco.cats[c]["name"] for c in self.cat_ids)
        self.label_of_cat = {c: i + 1 for i, c in enumerate(self.cat_ids)}
        self.cat_of_label = {i + 1: c for i, c in enumerate(self.cat_ids)}
        ids = sorted(self.coco.getImgIds())
        if remove_images_without_annotations:
            ids = [i for i in ids if self._annotations(i)]
        self.ids = ids
        self.skipped: list[str] = []

    def __len__(self) -> int:
        return len(self.ids)

    def _annotations(self, image_id: int) -> list[dict]:
        anns = self.coco.loadAnns(self.coco.getAnnIds(imgIds=[image_id]))
        out = []
        for a in anns:
            x, y, w, h = a["bbox"]
            if w <= 0 or h <= 0:
                continue
            if a.get("iscrowd", 0) and not self.keep_crowd:
                continue
            out.append(a)
        return out

    def image_path(self, index: int) -> Path:
        return self.image_dir / self.coco.imgs[self.ids[index]]["file_name"]

    def target(self, index: int):
        import numpy as np
        import torch

        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        anns = self._annotations(image_id)
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                               a["bbox"][1] + a["bbox"][3]] for a in anns], dtype=torch.float32).reshape(-1, 4)
        target = {
            "boxes": boxes,
            "labels": torch.tensor([self.label_of_cat[a["category_id"]] for a in anns], dtype=torch.int64),
            "iscrowd": torch.tensor([bool(a.get("iscrowd", 0)) for a in anns], dtype=torch.bool),
            "area": torch.tensor([float(a.get("area", 0.0)) for a in anns], dtype=torch.float32),
            "image_id": image_id,
            "size": (info["height"], info["width"]),
        }
        if self.with_masks:
            if anns:
                masks = np.stack([self.coco.annToMask(a) for a in anns])  # K x H x W, {0, 1}
            else:
                masks = np.zeros((0, info["height"], info["width"]), dtype=np.uint8)
            target["masks"] = torch.from_numpy(masks)
        return target

    def no_image_error(self) -> Exception:
        return COCOFormatError(f"{self.image_dir}: no readable image")
