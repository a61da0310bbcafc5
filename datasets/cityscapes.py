"""Cityscapes fine annotations: ``leftImg8bit`` images paired with ``gtFine`` label-id masks.

Layout (the official one, also written by ``mocobench data synth``)::

    ROOT/leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    ROOT/gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

Masks store Cityscapes *label ids* (0..33). Training and evaluation use the 19 *train ids*
(255 = ignore); the mapping is built from ``cityscapesscripts.helpers.labels`` (the official
table), never typed by hand. Predictions for the official evaluation are written back as label ids
(:data:`TRAIN_ID_TO_LABEL_ID`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cityscapesscripts.helpers.labels import labels as CITYSCAPES_LABELS

from mocobench.datasets.images import check_segmentation_split, to_rgb

IGNORE = 255
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
# <city>_<seq>_<frame>, e.g. frankfurt_000000_000294 (the stem is everything before the suffix)
STEM = re.compile(r"^(?P<city>.+)_(?P<seq>\d+)_(?P<frame>\d+)$")


def _train_classes() -> tuple[str, ...]:
    by_train_id = {l.trainId: l.name for l in CITYSCAPES_LABELS if 0 <= l.trainId < IGNORE}
    assert sorted(by_train_id) == list(range(len(by_train_id))), "train ids are not contiguous"
    return tuple(by_train_id[i] for i in range(len(by_train_id)))


# the 19 evaluated classes, indexed by train id: road, sidewalk, building, ..., bicycle
CLASSES: tuple[str, ...] = _train_classes()
NUM_CLASSES = len(CLASSES)


def _label_to_train_lut() -> np.ndarray:
    """256-entry table: label id -> train id (255 for ignored label ids and undefined values)."""
    lut = np.full(256, IGNORE, dtype=np.uint8)
    for l in CITYSCAPES_LABELS:
        if l.id >= 0 and 0 <= l.trainId < IGNORE:
            lut[l.id] = l.trainId
    return lut


LABEL_ID_TO_TRAIN_ID: np.ndarray = _label_to_train_lut()
# label ids that exist in the official table (0..33); any other value in a mask is an error
VALID_LABEL_IDS: np.ndarray = np.zeros(256, dtype=bool)
VALID_LABEL_IDS[[l.id for l in CITYSCAPES_LABELS if l.id >= 0]] = True
# train id -> label id, for writing predictions in the official format
TRAIN_ID_TO_LABEL_ID: np.ndarray = np.array(
    [next(l.id for l in CITYSCAPES_LABELS if l.trainId == t and l.id >= 0) for t in range(NUM_CLASSES)],
    dtype=np.uint8)


class CityscapesError(ValueError):
    """A Cityscapes folder or file that cannot be used; the message names it and the problem."""


@dataclass(frozen=True)
class Sample:
    stem: str          # <city>_<seq>_<frame>
    image: Path
    label: Path


def read_label_ids(path: str | os.PathLike) -> np.ndarray:
    """A ``*_gtFine_labelIds.png`` (or a label-id prediction) as an H x W uint8 array of label ids."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16"):
                raise CityscapesError(f"{path}: expected a single-channel label-id PNG, got mode {im.mode}")
            arr = np.array(im)
    except CityscapesError:
        raise
    except Exception as e:  # PIL raises many types for broken files
        raise CityscapesError(f"{path}: unreadable label image ({e})") from e
    if arr.ndim != 2:
        raise CityscapesError(f"{path}: expected a single-channel label-id PNG, got shape {arr.shape}")
    if arr.max(initial=0) > 255 or arr.min(initial=0) < 0 or not VALID_LABEL_IDS[arr.astype(np.int64)].all():
        bad = sorted(set(np.unique(arr).tolist()) - set(np.flatnonzero(VALID_LABEL_IDS).tolist()))
        raise CityscapesError(f"{path}: values {bad[:10]} are not Cityscapes label ids (0..33)")
    return arr.astype(np.uint8)


def to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    return LABEL_ID_TO_TRAIN_ID[label_ids]


def list_samples(root: str | os.PathLike, split: str) -> list[Sample]:
    """Every image of ``split`` with its fine label-id mask, sorted by stem.

    An image without its mask is an error naming both files: silently dropping images would
    change the val set behind the user's back.
    """
    root = Path(root)
    img_dir = root / "leftImg8bit" / split
    gt_dir = root / "gtFine" / split
    if not img_dir.is_dir():
        raise CityscapesError(f"{img_dir}: no such folder (expected ROOT/leftImg8bit/{split}/<city>/*{IMAGE_SUFFIX})")
    samples = []
    for image in sorted(img_dir.glob(f"*/*{IMAGE_SUFFIX}")):
        stem = image.name[: -len(IMAGE_SUFFIX)]
        if not STEM.match(stem):
            raise CityscapesError(f"{image}: file name is not <city>_<seq>_<frame>{IMAGE_SUFFIX}")
        label = gt_dir / image.parent.name / f"{stem}{LABEL_SUFFIX}"
        if not label.is_file():
            raise CityscapesError(f"{image}: its fine annotation {label} is missing")
        samples.append(Sample(stem, image, label))
    if not samples:
        raise CityscapesError(f"{img_dir}: no *{IMAGE_SUFFIX} images under <city>/ folders")
    return samples


def list_ground_truth(gt_dir: str | os.PathLike) -> list[Path]:
    """``*_gtFine_labelIds.png`` files under ``gt_dir`` (a ``gtFine/val`` folder or any parent of it)."""
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise CityscapesError(f"{gt_dir}: no such folder")
    files = sorted(gt_dir.rglob(f"*{LABEL_SUFFIX}"))
    if not files:
        raise CityscapesError(f"{gt_dir}: no *{LABEL_SUFFIX} files found")
    return files


def match_predictions(gt_files: list[Path], pred_dir: str | os.PathLike) -> list[Path]:
    """For each ground-truth file the one prediction ``<city>_<seq>_<frame>*.png`` under ``pred_dir``.

    The same rule as cityscapesscripts' ``getPrediction``: searched recursively; none or several
    matches for one ground truth is an error naming it.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise CityscapesError(f"{pred_dir}: no such prediction folder")
    by_stem: dict[str, list[Path]] = {}
    stems = {g.name[: -len(LABEL_SUFFIX)] for g in gt_files}
    for p in pred_dir.rglob("*.png"):
        # the stem is <city>_<seq>_<frame>; a prediction name starts with it
        m = re.match(r"^(.+?_\d+_\d+)", p.name)
        if m and m.group(1) in stems:
            by_stem.setdefault(m.group(1), []).append(p)
    out = []
    for g in gt_files:
        stem = g.name[: -len(LABEL_SUFFIX)]
        found = by_stem.get(stem, [])
        if not found:
            raise CityscapesError(f"{g}: no prediction {stem}*.png under {pred_dir}")
        if len(found) > 1:
            raise CityscapesError(f"{g}: several predictions match {stem}*.png: "
                                  f"{', '.join(str(f) for f in sorted(found)[:5])}")
        out.append(found[0])
    return out


class CityscapesSegmentation:
    """Map-style dataset: ``ds[i]`` -> (RGB uint8 H x W x 3, train ids uint8 H x W, stem).

    Opening it checks the split (:func:`~mocobench.datasets.images.check_segmentation_split`):
    ``skipped`` names the image files left out because they cannot be read."""

    classes = CLASSES
    num_classes = NUM_CLASSES
    name = "Cityscapes"

    def __init__(self, root: str | os.PathLike, split: str = "train"):
        self.root = Path(root)
        self.split = split
        samples = list_samples(self.root, split)
        # every mask's values and size, before any training; unreadable images are skipped (files)
        kept, skipped = check_segmentation_split(
            [(s.image, s.label) for s in samples], read_label_ids,
            lambda ids: (to_train_ids(ids) != IGNORE).sum(), CityscapesError, str(self.root / "gtFine" / split))
        self.samples = [samples[i] for i in kept]
        self._skipped_samples = [samples[i] for i in skipped]

    @property
    def skipped(self) -> list[str]:
        """The image files left out because they cannot be read."""
        return [str(s.image) for s in self._skipped_samples]

    def missed_targets(self):
        """``(stem, train-id mask)`` of each image skipped as unreadable: a val split scores their
        pixels as missed (``transfer.segmentation.inference.evaluate``)."""
        for s in self._skipped_samples:
            yield s.stem, to_train_ids(read_label_ids(s.label))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        from PIL import Image

        s = self.samples[i]
        try:
            with Image.open(s.image) as im:
                image = np.array(to_rgb(im))
        except Exception as e:
            raise CityscapesError(f"{s.image}: unreadable image ({e})") from e
        target = to_train_ids(read_label_ids(s.label))
        if target.shape != image.shape[:2]:
            raise CityscapesError(f"{s.label}: mask is {target.shape[1]}x{target.shape[0]} but "
                                  f"{s.image.name} is {image.shape[1]}x{image.shape[0]}")
        return image, target, s.stem
