"""PASCAL VOC 2012 semantic segmentation: ``SegmentationClass`` palette PNGs.

Layout (the official devkit one, also written by ``mocobench data synth``)::

    VOC2012/JPEGImages/<id>.jpg
    VOC2012/SegmentationClass/<id>.png          palette PNG: pixel index = class, 255 = border/ignore
    VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt
    VOC2012/SegmentationClassAug/<id>.png       optional: SBD-augmented masks (single channel, same indices)
    VOC2012/ImageSets/Segmentation/train_aug.txt  optional: the 10,582-image list that goes with them

A palette PNG stores class indices; its colours are only for display. Reading it with
``np.array(Image.open(p))`` gives the indices; converting it to RGB first would give colours, which
is the classic bug this module avoids (RGB masks are rejected with a message saying so).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mocobench.datasets.images import check_segmentation_split, to_rgb

IGNORE = 255
CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor")
NUM_CLASSES = len(CLASSES)  # 21 with background
# split -> (list file in ImageSets/Segmentation, mask folder)
SPLITS = {
    "train": ("train.txt", "SegmentationClass"),
    "val": ("val.txt", "SegmentationClass"),
    "trainval": ("trainval.txt", "SegmentationClass"),
    "train_aug": ("train_aug.txt", "SegmentationClassAug"),
}


class VOCSegError(ValueError):
    """A VOC folder or file that cannot be used; the message names it and the problem."""


def find_voc2012(root: str | os.PathLike) -> Path:
    """``root`` itself if it is a VOC2012 folder, else ``root/VOC2012`` or ``root/VOCdevkit/VOC2012``."""
    root = Path(root)
    for cand in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (cand / "ImageSets" / "Segmentation").is_dir():
            return cand
    raise VOCSegError(f"{root}: no VOC2012 folder with ImageSets/Segmentation (looked in {root}, "
                      f"{root / 'VOC2012'}, {root / 'VOCdevkit' / 'VOC2012'})")


def read_split(path: str | os.PathLike) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise VOCSegError(f"{path}: split file not found")
    ids = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            # train_aug lists from some sources hold "/JPEGImages/x.jpg /SegmentationClassAug/x.png"
            ids.append(Path(line.split()[0]).stem)
    if not ids:
        raise VOCSegError(f"{path}: split file is empty")
    return ids


def read_mask(path: str | os.PathLike, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """A class-index mask (palette ``P`` or grayscale ``L`` PNG) as H x W uint8; 255 = ignore."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise VOCSegError(f"{path}: mode {im.mode} mask; expected a palette (P) or grayscale (L) "
                                  "PNG of class indices (RGB colour masks must be converted to indices)")
            arr = np.array(im)
    except VOCSegError:
        raise
    except Exception as e:
        raise VOCSegError(f"{path}: unreadable mask ({e})") from e
    bad = (arr >= num_classes) & (arr != IGNORE)
    if bad.any():
        raise VOCSegError(f"{path}: values {sorted(np.unique(arr[bad]).tolist())[:10]} are neither a class "
                          f"index (0..{num_classes - 1}) nor {IGNORE}")
    return arr.astype(np.uint8)


class VOCSegmentation:
    """Map-style dataset: ``ds[i]`` -> (RGB uint8 H x W x 3, class indices uint8 H x W, image id).

    Opening it checks the split (:func:`~mocobench.datasets.images.check_segmentation_split`):
    ``skipped`` names the image files left out because they cannot be read."""

    classes = CLASSES
    num_classes = NUM_CLASSES
    name = "VOC2012"

    def __init__(self, root: str | os.PathLike, split: str = "train"):
        if split not in SPLITS:
            raise VOCSegError(f"unknown VOC segmentation split {split!r} (known: {', '.join(SPLITS)})")
        self.root = find_voc2012(root)
        self.split = split
        list_name, mask_dir = SPLITS[split]
        if split == "train_aug" and not (self.root / mask_dir).is_dir():
            raise VOCSegError(f"{self.root / mask_dir}: train_aug needs the SBD-augmented masks "
                              "(SegmentationClassAug) next to SegmentationClass")
        self.ids = read_split(self.root / "ImageSets" / "Segmentation" / list_name)
        self.mask_dir = self.root / mask_dir
        missing = [i for i in self.ids if not (self.mask_dir / f"{i}.png").is_file()]
        if missing:
            raise VOCSegError(f"{self.mask_dir / (missing[0] + '.png')}: mask missing "
                              f"({len(missing)} of {len(self.ids)} listed in {list_name})")
        # every mask's values and size, before any training; unreadable images are skipped (files)
        kept, skipped = check_segmentation_split(
            [(self.root / "JPEGImages" / f"{i}.jpg", self.mask_dir / f"{i}.png") for i in self.ids], read_mask,
            lambda mask: (mask != IGNORE).sum(), VOCSegError,
            f"{self.root / 'ImageSets' / 'Segmentation' / list_name}")
        self._skipped_ids = [self.ids[i] for i in skipped]
        self.ids = [self.ids[i] for i in kept]

    @property
    def skipped(self) -> list[str]:
        """The image files left out because they cannot be read."""
        return [str(self.root / "JPEGImages" / f"{i}.jpg") for i in self._skipped_ids]

    def missed_targets(self):
        """``(image id, class-index mask)`` of each image skipped as unreadable: a val split scores
        their pixels as missed (``transfer.segmentation.inference.evaluate``)."""
        for image_id in self._skipped_ids:
            yield image_id, read_mask(self.mask_dir / f"{image_id}.png")

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, i: int) -> Path:
        return self.root / "JPEGImages" / f"{self.ids[i]}.jpg"

    def __getitem__(self, i: int):
        from PIL import Image

        path = self.image_path(i)
        try:
            with Image.open(path) as im:
                image = np.array(to_rgb(im))
        except Exception as e:
            raise VOCSegError(f"{path}: unreadable image ({e})") from e
        mask_path = self.mask_dir / f"{self.ids[i]}.png"
        target = read_mask(mask_path)
        if target.shape != image.shape[:2]:
            raise VOCSegError(f"{mask_path}: mask is {target.shape[1]}x{target.shape[0]} but the image "
                              f"is {image.shape[1]}x{image.shape[0]}")
        return image, target, self.ids[i]
