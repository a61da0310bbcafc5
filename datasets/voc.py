"""PASCAL VOC detection data in the VOCdevkit layout.

::

    VOCdevkit/VOC2007/Annotations/<id>.xml
    VOCdevkit/VOC2007/JPEGImages/<id>.jpg
    VOCdevkit/VOC2007/ImageSets/Main/{train,val,trainval,test}.txt   (one image id per line)

Boxes are kept as the XML holds them: ``xmin ymin xmax ymax`` in **1-based, inclusive** pixel
coordinates (a box covering the whole W x H image is ``1 1 W H``). The evaluation
(``transfer/detection/voc_eval.py``) works in that convention, like the devkit; the detector
training converts to 0-based, exclusive-corner coordinates (``x - 1``, as detectron2's
``load_voc_instances`` does) in :class:`VOCDetection`.

Real-world XML varies: labelme writes float coordinates and empty ``<difficult/>`` elements;
both are accepted (empty or missing ``difficult`` means 0).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

# The 20 PASCAL VOC classes in the devkit's order (index i <-> detector label i + 1).
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)

# MoCo's VOC protocol: train on 07 trainval + 12 trainval, test on 07 test.
VOC0712_TRAIN = (("2007", "trainval"), ("2012", "trainval"))
VOC07_TEST = (("2007", "test"),)


class VOCFormatError(ValueError):
    """A VOC file that cannot be read; the message names the file and the problem."""


@dataclass(frozen=True)
class VOCObject:
    name: str
    bbox: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax; 1-based inclusive
    difficult: bool = False
    truncated: bool = False


@dataclass(frozen=True)
class VOCAnnotation:
    filename: str
    width: int
    height: int
    objects: tuple[VOCObject, ...] = field(default_factory=tuple)


def _flag(node: ET.Element | None, path: Path) -> bool:
    """``<difficult>1</difficult>`` -> True; ``<difficult/>``, ``0`` or missing -> False.

    Anything else (``no``, ``2``, ``0.5``) is refused: a flag that changes which objects count
    in the AP must not be guessed."""
    if node is None or node.text is None or not node.text.strip():
        return False
    text = node.text.strip()
    if text not in ("0", "1"):
        raise VOCFormatError(f"{path}: <{node.tag}> must be 0 or 1, not {text!r}")
    return text == "1"


def _number(obj: ET.Element, tag: str, path: Path) -> float:
    node = obj.find(tag)
    if node is None or node.text is None or not node.text.strip():
        raise VOCFormatError(f"{path}: <{tag}> is missing or empty")
    try:
        return float(node.text.strip())
    except ValueError:
        raise VOCFormatError(f"{path}: <{tag}> is not a number: {node.text!r}") from None


def parse_voc_xml(path: str | os.PathLike) -> VOCAnnotation:
    """Read one VOC annotation file (filename, size, objects with name, box and flags)."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise VOCFormatError(f"{path}: not a readable VOC XML file ({e})") from None
    filename = (root.findtext("filename") or "").strip() or path.stem + ".jpg"
    size = root.find("size")
    if size is None:
        raise VOCFormatError(f"{path}: <size> is missing")
    width, height = int(_number(size, "width", path)), int(_number(size, "height", path))
    objects = []
    for obj in root.findall("object"):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise VOCFormatError(f"{path}: an <object> without <name>")
        box = obj.find("bndbox")
        if box is None:
            raise VOCFormatError(f"{path}: object {name!r} has no <bndbox>")
        bbox = tuple(_number(box, t, path) for t in ("xmin", "ymin", "xmax", "ymax"))
        if bbox[2] < bbox[0] or bbox[3] < bbox[1]:
            raise VOCFormatError(f"{path}: object {name!r} has an inverted box {bbox}")
        # VOC boxes are 1-based and inclusive (xmax may equal the width); a box that leaves the
        # image by more than a pixel is a broken annotation, not something to train on.
        if bbox[0] < -1 or bbox[1] < -1 or bbox[2] > width + 1 or bbox[3] > height + 1:
            raise VOCFormatError(f"{path}: object {name!r} box {bbox} lies outside the "
                                 f"{width}x{height} image")
        objects.append(VOCObject(name=name, bbox=bbox, difficult=_flag(obj.find("difficult"), path),
                                 truncated=_flag(obj.find("truncated"), path)))
    return VOCAnnotation(filename=filename, width=width, height=height, objects=tuple(objects))


def read_image_set(year_dir: str | os.PathLike, split: str) -> list[str]:
    """Image ids listed in ``ImageSets/Main/<split>.txt`` (first column; blank lines skipped). An id
    listed twice is refused: the split is keyed by id, so one of the two would vanish silently."""
    path = Path(year_dir) / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        raise VOCFormatError(f"{path}: image set file not found (is {year_dir} a VOCdevkit/VOC<year> folder?)")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    seen = set()
    for image_id in ids:
        if image_id in seen:
            raise VOCFormatError(f"{path}: image id {image_id!r} is listed twice")
        seen.add(image_id)
    return ids


def year_dir(devkit_root: str | os.PathLike, year: str) -> Path:
    """``VOCdevkit/VOC<year>``; ``devkit_root`` may also be the folder that holds ``VOCdevkit``."""
    root = Path(devkit_root)
    for candidate in (root / f"VOC{year}", root / "VOCdevkit" / f"VOC{year}"):
        if candidate.is_dir():
            return candidate
    raise VOCFormatError(f"{root}: no VOC{year} folder (expected {root}/VOC{year} or "
                         f"{root}/VOCdevkit/VOC{year})")


def load_annotations(year_dir_: str | os.PathLike, split: str) -> dict[str, VOCAnnotation]:
    """``{image_id: annotation}`` for every image of ``split``."""
    d = Path(year_dir_)
    return {i: parse_voc_xml(d / "Annotations" / f"{i}.xml") for i in read_image_set(d, split)}


class SkipUnreadable:
    """``dataset[i]`` -> ``(image, target)`` of the first readable image from ``i`` on (wrapping
    around), transformed by ``self.transforms`` if set: for training, where another image is as good.
    An unreadable image is skipped and counted in ``self.skipped``; ``self.no_image_error()`` is
    raised when no image can be read. ``dataset.read(i)`` is image ``i`` itself or None, for
    evaluation, where an image's detections must be its own. The detection datasets provide
    ``image_path(i)``, ``target(i)``, ``skipped`` and ``transforms``."""

    def __getitem__(self, index: int):
        for offset in range(len(self)):
            item = self.read((index + offset) % len(self))
            if item is not None:
                return item
        raise self.no_image_error()

    def read(self, index: int):
        """``(image, target)`` of image ``index``, transformed; None (counted in ``self.skipped``) if
        it cannot be read."""
        image = read_rgb(self.image_path(index), self.skipped)
        if image is None:
            return None
        target = self.target(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


class VOCDetection(SkipUnreadable):
    """Images and targets of one or more VOC splits, as torchvision detection models take them.

    ``dataset[i]`` -> ``(image, target)``: ``image`` is a float tensor 3 x H x W in [0, 1] (RGB);
    ``target`` holds ``boxes`` (K x 4, continuous ``x0 y0 x1 y1``: the XML's 1-based inclusive
    ``xmin ymin`` minus 1, ``xmax ymax`` as they are, so ``1 .. W`` becomes ``0 .. W``, as
    detectron2's VOC loader does; detections go back with ``+1`` on the minimum corner, see
    ``voc_eval.write_voc_results``), ``labels`` (K, 1..20;
    0 is background), ``difficult`` (K, bool) and ``image_id`` (the VOC id string is in
    ``self.ids[i]``). Difficult objects are dropped from training targets when
    ``keep_difficult=False`` (detectron2's default for VOC training keeps them: ``keep_difficult``
    defaults to True).
    ``transforms(image, target) -> (image, target)`` runs last.
    """

    def __init__(self, devkit_root: str | os.PathLike, sets=VOC0712_TRAIN, transforms=None,
                 classes=VOC_CLASSES, keep_difficult: bool = True):
        self.devkit_root = Path(devkit_root)
        self.sets = tuple(tuple(s) for s in sets)
        self.transforms = transforms
        self.classes = tuple(classes)
        self.keep_difficult = keep_difficult
        self.items: list[tuple[Path, str, VOCAnnotation]] = []
        for year, split in self.sets:
            d = year_dir(self.devkit_root, year)
            for image_id, ann in load_annotations(d, split).items():
                unknown = [o.name for o in ann.objects if o.name not in self.classes]
                if unknown:
                    raise VOCFormatError(f"{d / 'Annotations' / (image_id + '.xml')}: unknown classes "
                                         f"{sorted(set(unknown))} (known: {', '.join(self.classes)})")
                self.items.append((d, image_id, ann))
        self.skipped: list[str] = []
        self.items = self._check_images()
        self.ids = [f"{d.name}/{i}" for d, i, _ in self.items]
        if not any(o for _, _, ann in self.items for o in ann.objects if not o.difficult):
            raise VOCFormatError(f"{self.devkit_root}: {' + '.join(f'VOC{y} {s}' for y, s in self.sets)} has "
                                 f"no object that is not difficult in its {len(self.items)} images: nothing to "
                                 "train on or score")

    def _check_images(self):
        """The items whose image opens, with the size their XML states; the others are skipped and
        named (``self.skipped``). An XML whose stated size is not its image's is refused: boxes are
        checked against the stated size, so a wrong one hides boxes outside the real image."""
        from PIL import Image

        from mocobench.core.io import progress
        from mocobench.datasets.images import UNREADABLE

        kept = []
        for index in progress(range(len(self.items)), total=len(self.items), desc="check images", unit="img"):
            d, image_id, ann = self.items[index]
            path = self.image_path(index)
            try:
                with Image.open(path) as im:
                    size = im.size
            except UNREADABLE as e:
                _skip(path, e, self.skipped)
                continue
            if size != (ann.width, ann.height):
                raise VOCFormatError(f"{d / 'Annotations' / (image_id + '.xml')}: <size> says {ann.width}x"
                                     f"{ann.height} but {path} is {size[0]}x{size[1]}")
            kept.append(self.items[index])
        if not kept:
            raise self.no_image_error()
        return kept

    def __len__(self) -> int:
        return len(self.items)

    def image_path(self, index: int) -> Path:
        d, image_id, ann = self.items[index]
        path = d / "JPEGImages" / f"{image_id}.jpg"
        return path if path.exists() else d / "JPEGImages" / ann.filename

    def target(self, index: int):
        import torch

        _, _, ann = self.items[index]
        objs = [o for o in ann.objects if self.keep_difficult or not o.difficult]
        boxes = torch.tensor([[o.bbox[0] - 1, o.bbox[1] - 1, o.bbox[2], o.bbox[3]] for o in objs],
                             dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([self.classes.index(o.name) + 1 for o in objs], dtype=torch.int64)
        difficult = torch.tensor([o.difficult for o in objs], dtype=torch.bool)
        return {"boxes": boxes, "labels": labels, "difficult": difficult,
                "image_id": index, "size": (ann.height, ann.width)}

    def no_image_error(self) -> Exception:
        return VOCFormatError(f"{self.devkit_root}: no readable image in {self.sets}")


def read_rgb(path: Path, skipped: list[str] | None = None):
    """3 x H x W float tensor in [0, 1] (RGB), or None (path appended to ``skipped``) if unreadable."""
    import numpy as np
    import torch
    from PIL import Image

    from mocobench.datasets.images import UNREADABLE, to_rgb

    try:
        with Image.open(path) as im:
            arr = np.asarray(to_rgb(im), dtype=np.uint8)
    except UNREADABLE as e:
        if skipped is None:
            raise VOCFormatError(f"{path}: unreadable image ({e})") from None
        _skip(path, e, skipped)
        return None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def _skip(path: Path, error: Exception, skipped: list[str]) -> None:
    """Name an unreadable image once (a file, however often it is drawn) in ``skipped`` and a warning."""
    if str(path) not in skipped:
        skipped.append(str(path))
        import warnings

        warnings.warn(f"{path}: unreadable image skipped ({error}); {len(skipped)} skipped so far")
