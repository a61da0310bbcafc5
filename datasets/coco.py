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
            check_instances(coco.dataset, path)
            anns = coco.dataset.get("annotations", [])
            lowest = min((a["id"] for a in anns), default=1)
            if lowest < 1:
                # NOTE: COCOeval marks matches by annotation id and treats id 0 as "no match", so a
                # ground truth with id 0 can never be a true positive. labelme's export numbers
                # annotations from 0; we shift every id up (in memory only) so all are >= 1.
                for a in anns:
                    a["id"] += 1 - lowest
                coco.createIndex()
    except COCOFormatError:
        raise
    except (ValueError, KeyError, TypeError, AssertionError) as e:
        raise COCOFormatError(f"{path}: not a COCO instances file ({type(e).__name__}: {e})") from None
    return coco


def check_instances(data, path: Path) -> None:
    """The structure of an instances file, checked when it is opened: ``images``, ``annotations`` and
    ``categories`` lists; unique integer ids; every annotation's ``image_id`` and ``category_id``
    known; boxes of four finite numbers with no negative size; an ``area`` (a finite number >= 0) and
    an ``iscrowd`` (0 or 1) on every annotation, which COCOeval reads. A problem is one
    :class:`COCOFormatError` naming the file, the entry and the rule (pycocotools itself would drop
    orphan annotations silently, or fail later with a bare ``KeyError``)."""
    import math

    if not isinstance(data, dict):
        raise COCOFormatError(f"{path}: not a COCO instances file (the top level is not an object)")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise COCOFormatError(f"{path}: no {key!r} list (a COCO instances file has images, annotations "
                                  "and categories)")
    if not data["categories"]:
        raise COCOFormatError(f"{path}: 'categories' is empty")

    def ids(key: str) -> set:
        seen = set()
        for entry in data[key]:
            i = entry.get("id") if isinstance(entry, dict) else None
            if not isinstance(i, int) or isinstance(i, bool):
                raise COCOFormatError(f"{path}: an entry of {key!r} has no integer 'id': {str(entry)[:120]}")
            if i in seen:
                raise COCOFormatError(f"{path}: {key!r} id {i} appears twice")
            seen.add(i)
        return seen

    images, categories = ids("images"), ids("categories")
    ids("annotations")
    for im in data["images"]:
        if not im.get("file_name") or not all(isinstance(im.get(k), int) and im[k] > 0 for k in ("width", "height")):
            raise COCOFormatError(f"{path}: image id {im['id']} needs a file_name and positive integer "
                                  f"width and height: {str(im)[:120]}")
    for a in data["annotations"]:
        where = f"{path}: annotation id {a['id']}"
        if a.get("image_id") not in images:
            raise COCOFormatError(f"{where}: image_id {a.get('image_id')!r} is not in 'images'")
        if a.get("category_id") not in categories:
            raise COCOFormatError(f"{where}: category_id {a.get('category_id')!r} is not in 'categories' "
                                  f"({sorted(categories)[:10]}...)")
        box = a.get("bbox")
        if (not isinstance(box, list) or len(box) != 4
                or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in box) or box[2] < 0 or box[3] < 0):
            raise COCOFormatError(f"{where}: bbox must be [x, y, w, h] of finite numbers with w, h >= 0, "
                                  f"not {box!r}")
        # COCOeval reads both of every ground truth (area ranges, crowd matching) and fails with a
        # bare KeyError, after training, on an annotation without them
        for key in ("area", "iscrowd"):
            if key not in a:
                raise COCOFormatError(f"{where} has no {key!r}")
        area = a["area"]
        if not isinstance(area, (int, float)) or isinstance(area, bool) or not math.isfinite(area) or area < 0:
            raise COCOFormatError(f"{where}: area must be a finite number >= 0, not {area!r}")
        if a["iscrowd"] not in (0, 1):
            raise COCOFormatError(f"{where}: iscrowd must be 0 or 1, not {a['iscrowd']!r}")


def check_masks(data, path: Path) -> None:
    """Every annotation has a usable segmentation: a non-empty list of polygons of at least three
    points each, or an RLE dict; checked before training an instance-segmentation model."""
    for a in data["annotations"]:
        seg = a.get("segmentation")
        if isinstance(seg, dict) and "counts" in seg and "size" in seg:
            continue
        if (not isinstance(seg, list) or not seg
                or not all(isinstance(poly, list) and len(poly) >= 6 and len(poly) % 2 == 0 for poly in seg)):
            raise COCOFormatError(f"{path}: annotation id {a['id']}: segmentation must be polygons of at least "
                                  f"3 points [x1, y1, x2, y2, ...] or an RLE dict, not {str(seg)[:80]}")


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
        if with_masks:
            check_masks(self.coco.dataset, self.annotation_file)
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
        if not ids or not any(not a.get("iscrowd", 0) for a in self.coco.dataset["annotations"]):
            raise COCOFormatError(f"{self.annotation_file}: no image with an object that is not a crowd "
                                  f"region ({len(self.coco.dataset['images'])} images): nothing to train on or score")
        self.ids = ids
        self.skipped: list[str] = []
        self._check_sizes()

    def _check_sizes(self) -> None:
        """Every image's size (read from its header, without decoding) is the one the JSON states:
        boxes and polygons are in the stated pixel grid, so another size misplaces them silently.
        An image that does not open is left as it is: reading it skips and counts it."""
        from PIL import Image

        from mocobench.core.io import progress
        from mocobench.datasets.images import UNREADABLE

        for index in progress(range(len(self.ids)), total=len(self.ids), desc="check images", unit="img"):
            info = self.coco.imgs[self.ids[index]]
            path = self.image_path(index)
            try:
                with Image.open(path) as im:
                    size = im.size
            except UNREADABLE:
                continue
            if size != (info["width"], info["height"]):
                raise COCOFormatError(f"{self.annotation_file}: image id {info['id']} is {info['width']}x"
                                      f"{info['height']} in the JSON but {path} is {size[0]}x{size[1]}")

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
