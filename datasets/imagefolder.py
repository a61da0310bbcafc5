"""ImageNet-layout image folders: ``root/<class>/<image>``, read by pretraining and the probes.

``root`` is one split folder (``.../imagenet/train``). Classes are the sorted sub-folder names, so
the same class set always gets the same indices (``n01440764`` -> 0, ...), as torchvision's
``ImageFolder`` does.

Label subsets (the semi-supervised 1 % / 10 % protocols, UniMoCo's ``--supervised-list``) are text
files with one image per line. Two spellings exist in the wild and both are accepted:

- SimCLR's ``1percent.txt`` / ``10percent.txt``: a bare file name, ``n01440764_10026.JPEG``;
- UniMoCo-style lists: a path relative to the split folder, ``n01440764/n01440764_10026.JPEG``.

An unreadable or corrupt image never stops a run: ``__getitem__`` warns, names the file and returns
``None``; :func:`collate_skip` drops those items and reports how many it dropped, so a training loop
can count skipped images instead of silently training on fewer.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch.utils.data
from PIL import Image

from mocobench.core.io import atomic_write_text
from mocobench.datasets.images import UNREADABLE, to_rgb

# Compared lower-case: ImageNet's files are ``.JPEG``, most others ``.jpg``/``.png``.
IMG_EXTENSIONS = (".jpeg", ".jpg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


class ImageFolder(torch.utils.data.Dataset):
    """Images in ``root/<class>/<file>``; item ``i`` is ``(transform(rgb_pil), label)`` or ``None``.

    ``subset`` restricts the samples to the listed images: a path to a subset file, or an iterable
    of names (bare file names or ``class/file`` paths relative to ``root``). ``classes`` forces the
    class list (e.g. a validation split that lacks a class must still use the train indices);
    by default it is the sorted list of sub-folders of ``root``.

    Attributes: ``root``, ``classes``, ``class_to_idx``, ``samples`` (list of ``(path, label)`` in
    sorted class-then-file order), ``targets`` (the labels, same order), ``n_skipped`` (corrupt
    images met so far by this process; DataLoader workers keep their own count, so count with
    :func:`collate_skip` in training loops).
    """

    def __init__(self, root: str | os.PathLike, transform: Callable | None = None,
                 subset: str | os.PathLike | Iterable[str] | None = None,
                 classes: Sequence[str] | None = None):
        self.root = Path(root)
        self.transform = transform
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist or is not a folder")
        found = sorted(e.name for e in os.scandir(self.root) if e.is_dir() and not e.name.startswith("."))
        if classes is None:
            classes = found
        else:
            classes = list(classes)
            missing = [c for c in found if c not in set(classes)]
            if missing:
                raise ValueError(f"{self.root}: class folders {missing[:5]} are not among the "
                                 f"{len(classes)} given classes")
        if not classes:
            raise FileNotFoundError(f"image folder {self.root} has no class sub-folders "
                                    f"(expected {self.root}/<class>/<image>.JPEG)")
        self.classes = list(classes)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

        samples = []
        for c in self.classes:
            folder = self.root / c
            if not folder.is_dir():
                continue
            # listed by name: a symlink is a file entry even when its target is gone (is_file() would
            # drop it without a trace); reading it then skips and counts it as unreadable
            names = sorted(e.name for e in os.scandir(folder)
                           if (e.is_symlink() or e.is_file()) and is_image_file(e.name))
            samples += [(str(folder / n), self.class_to_idx[c]) for n in names]
        if not samples:
            raise FileNotFoundError(f"image folder {self.root} has no images with extensions "
                                    f"{', '.join(IMG_EXTENSIONS)} in its {len(self.classes)} class folders")

        self.subset_source = None
        if subset is not None:
            if isinstance(subset, (str, os.PathLike)):
                self.subset_source = str(subset)
                names = read_subset_file(subset)
            else:
                self.subset_source = "<list>"
                names = [str(n) for n in subset]
            samples = _select(samples, self.root, names, self.subset_source)
        self.samples: list[tuple[str, int]] = samples
        self.targets: list[int] = [label for _, label in samples]
        self.n_skipped = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        try:
            with open(path, "rb") as f:
                img = Image.open(f)
                img = to_rgb(img)  # converting forces the full decode, so truncation shows here
        except UNREADABLE as e:
            self.n_skipped += 1
            warnings.warn(f"skipping unreadable image {path}: {type(e).__name__}: {e}", stacklevel=2)
            return None
        if self.transform is not None:
            img = self.transform(img)
        return img, label

    def __repr__(self) -> str:
        sub = f", subset={self.subset_source}" if self.subset_source else ""
        return (f"ImageFolder(root={str(self.root)!r}, {len(self.classes)} classes, "
                f"{len(self.samples)} images{sub})")


def _select(samples: list[tuple[str, int]], root: Path, names: list[str], source: str):
    """Keep the samples named in ``names`` (bare file names or ``class/file``), in folder order."""
    by_name: dict[str, int] = {}
    by_rel: dict[str, int] = {}
    ambiguous = set()
    for i, (path, _) in enumerate(samples):
        p = Path(path)
        rel = f"{p.parent.name}/{p.name}"
        by_rel[rel] = i
        if p.name in by_name:
            ambiguous.add(p.name)
        by_name[p.name] = i
    keep, unknown = set(), []
    for n in names:
        key = n.strip().replace(os.sep, "/")
        while key.startswith("./"):
            key = key[2:]
        if "/" in key:
            # "train/n01440764/x.JPEG" or an absolute path: the last two parts name the image
            rel = "/".join(key.split("/")[-2:])
            idx = by_rel.get(rel)
        else:
            if key in ambiguous:
                raise ValueError(f"subset {source}: {key!r} names images in several class folders of "
                                 f"{root}; write it as class/{key}")
            idx = by_name.get(key)
        if idx is None:
            unknown.append(n)
        else:
            keep.add(idx)
    if unknown:
        raise ValueError(f"subset {source}: {len(unknown)} of {len(names)} names are not images of "
                         f"{root}, e.g. {unknown[:5]}")
    if not keep:
        raise ValueError(f"subset {source} is empty")
    return [samples[i] for i in sorted(keep)]


def collate_skip(batch: list):
    """``collate_fn`` that drops ``None`` items: returns ``(default_collate(kept), n_skipped)``.

    With a multi-view transform (a list of views per image) the collated images are a list of
    ``N x C x H x W`` tensors, as with ``default_collate``. When every item is ``None`` the result is
    ``(None, len(batch))``; a training loop adds ``n_skipped`` to its counter and skips the step.
    """
    kept = [b for b in batch if b is not None]
    n_skipped = len(batch) - len(kept)
    if not kept:
        return None, n_skipped
    return torch.utils.data.default_collate(kept), n_skipped


def read_subset_file(path: str | os.PathLike) -> list[str]:
    """Names listed in a subset file: one per line; blank lines and ``#`` comments ignored.

    A line may carry extra whitespace-separated columns (some lists append the label); only the
    first column is the name.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"subset file {path} does not exist")
    names = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                names.append(line.split()[0])
    if not names:
        raise ValueError(f"subset file {path} lists no images")
    return names


def write_subset_file(path: str | os.PathLike, names: Iterable[str]) -> Path:
    """Write one name per line (atomically)."""
    return atomic_write_text(path, "".join(f"{n}\n" for n in names))


def labeled_subset(dataset: ImageFolder, fraction: float, seed: int = 0) -> list[str]:
    """A class-balanced random ``fraction`` of ``dataset``'s images, as bare file names.

    Each class contributes ``max(1, round(fraction * n_class))`` images drawn without replacement
    with ``numpy.random.default_rng([seed, class_index])``, so adding a class does not change the
    draw of the others. The names come back in the dataset's order.

    NOTE: SimCLR's released 1 %/10 % lists are a fixed draw of ~13 / ~128 images per class; UniMoCo
    draws its lists per class at random. Both are class-balanced like this one.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    per_class: dict[int, list[int]] = {}
    for i, label in enumerate(dataset.targets):
        per_class.setdefault(label, []).append(i)
    chosen = []
    for label, idx in sorted(per_class.items()):
        k = min(len(idx), max(1, round(fraction * len(idx))))
        rng = np.random.default_rng([seed, label])
        chosen += [idx[j] for j in rng.choice(len(idx), size=k, replace=False)]
    names = [Path(p).name for p, _ in dataset.samples]
    dup = {n for n, c in Counter(names).items() if c > 1}
    # a file name found in several class folders is written as class/file so the list stays exact
    return [names[i] if names[i] not in dup else "/".join(Path(dataset.samples[i][0]).parts[-2:])
            for i in sorted(chosen)]
