"""The classification part: an ImageNet-layout folder with label-subset files.

``imagenet/{train,val}/<class>/<file>.JPEG``. Class ``k`` is the ``k``-th shape filled with the
``k``-th texture (``s03_star`` is a star with concentric rings). As in natural images, colour
is a partial cue: in 80 % of the images the object's main colour has the class's hue (±0.03 of the
hue circle) and its second colour is a dark, desaturated complement; in the rest both colours are
random. Every image shows one dominant object of its class on a cluttered background, with 1-2
smaller distractors whose shape and texture never form a class (shape ``i`` with texture ``j != i``), and
sometimes a distractor that occludes part of the main object.

File names follow ImageNet: ``<class>_<n>.JPEG`` in train and ``synth_val_<nnnnnnnn>.JPEG`` in val
(ImageNet's ``ILSVRC2012_val_00000001.JPEG`` after the usual move into class folders).
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np

from mocobench.datasets.synth import draw
from mocobench.datasets.synth.encode import jpeg_bytes, write_file

# SimCLR's 1 % / 10 % lists and UniMoCo-style 10/30/60 % lists: file name -> label fraction
SUBSET_FILES = {
    "1percent.txt": 0.01,
    "10percent.txt": 0.10,
    "unimoco_10percent.txt": 0.10,
    "unimoco_30percent.txt": 0.30,
    "unimoco_60percent.txt": 0.60,
}


def class_names(n_classes: int) -> list[str]:
    return [f"s{k:02d}_{draw.SHAPE_NAMES[k]}" for k in range(n_classes)]


# how often the object's colours come from its class's palette (the rest: random colours)
CLASS_COLOUR_P = 0.8


def class_colours(rng: np.random.Generator, k: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Class ``k``'s palette: a saturated, bright colour of hue ``k / n`` (± 0.03) and a dark,
    desaturated colour of the complementary hue (so the texture stays visible)."""
    hue = (k / n + rng.normal(0, 0.03)) % 1.0
    a = colorsys.hsv_to_rgb(hue, rng.uniform(0.55, 1.0), rng.uniform(0.6, 1.0))
    b = colorsys.hsv_to_rgb((hue + 0.5) % 1.0, rng.uniform(0.2, 0.6), rng.uniform(0.15, 0.45))
    return np.float32(a) * 255, np.float32(b) * 255


def render(rng: np.random.Generator, size: int, k: int) -> np.ndarray:
    """One ``size x size`` RGB image of class ``k``."""
    n = len(draw.SHAPE_NAMES)
    img = draw.background(rng, size, size)

    def distractor(cx, cy, r):
        s = int(rng.integers(n))
        t = int((s + rng.integers(1, n)) % n)  # t != s: never a class's shape+texture pair
        ang = rng.uniform(0, 2 * np.pi)
        poly = draw.place(draw.SHAPES[draw.SHAPE_NAMES[s]], cx, cy, r, ang, rng.uniform(0.8, 1.25))
        draw.paint_object(img, poly, draw.TEXTURE_NAMES[t], cx, cy, r, ang, rng)

    for _ in range(rng.integers(1, 3)):
        distractor(rng.uniform(0, size), rng.uniform(0, size), size * rng.uniform(0.08, 0.16))
    # the dominant object: 55-85 % of the image wide, near the centre, any pose
    r = size * rng.uniform(0.28, 0.42)
    cx, cy = size * (0.5 + rng.uniform(-0.15, 0.15, 2))
    ang = rng.uniform(0, 2 * np.pi)
    poly = draw.place(draw.SHAPES[draw.SHAPE_NAMES[k]], cx, cy, r, ang, rng.uniform(0.8, 1.25))
    colours = class_colours(rng, k, n) if rng.random() < CLASS_COLOUR_P else None
    draw.paint_object(img, poly, draw.TEXTURE_NAMES[k], cx, cy, r, ang, rng, colours=colours)
    if rng.random() < 0.25:  # an occluder in front of the object's rim
        a = rng.uniform(0, 2 * np.pi)
        distractor(cx + r * np.cos(a), cy + r * np.sin(a), size * rng.uniform(0.1, 0.18))
    return draw.finish(img, rng)


def generate(root: Path, seed: int, n_classes: int, n_train: int, n_val: int, size: int,
             progress) -> dict:
    """Write ``root/{train,val}/<class>/*.JPEG`` and the subset files; return the counts."""
    from mocobench.datasets.imagefolder import ImageFolder, labeled_subset, write_subset_file

    classes = class_names(n_classes)
    jobs = []
    for split, per_class in (("train", n_train), ("val", n_val)):
        for k, c in enumerate(classes):
            for i in range(per_class):
                index = k * per_class + i
                name = f"{c}_{i}.JPEG" if split == "train" else f"synth_val_{index + 1:08d}.JPEG"
                jobs.append((split, index, k, root / split / c / name))
    for split, index, k, path in progress(jobs, desc="synth imagenet", unit="img"):
        rng = draw.image_rng(seed, f"imagenet/{split}", index)
        write_file(path, jpeg_bytes(render(rng, size, k)))

    train = ImageFolder(root / "train")
    subsets = {}
    for j, (fname, fraction) in enumerate(SUBSET_FILES.items()):
        names = labeled_subset(train, fraction, seed=seed * 100 + j)
        write_subset_file(root / fname, names)
        subsets[fname] = len(names)
    return {"classes": n_classes, "train": n_classes * n_train, "val": n_classes * n_val,
            "size": size, "subsets": subsets}
