"""Fashion-MNIST's gzipped IDX files -> numpy arrays -> an ImageNet-layout folder of PNGs.

The IDX format (LeCun's MNIST format, which Fashion-MNIST keeps): a big-endian header of a magic
number ``0x00000800 | ndim`` preceded by the element type (``0x08`` = uint8), i.e. 2049 for the
1-d label files and 2051 for the 3-d image files, then one uint32 size per dimension, then the data.

``export_imagefolder`` writes ``OUT/train/<class>/train_<nnnnn>.png`` (the 60k training images) and
``OUT/val/<class>/test_<nnnnn>.png`` (the 10k test images), so the classification probes read it
with :class:`mocobench.datasets.imagefolder.ImageFolder` like any ImageNet-layout folder.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np

from mocobench.core.io import atomic_write_json, progress

# label index -> folder name (the dataset's class names, with "/" and " " made path-safe)
CLASSES = ("T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle_boot")
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
SPLIT_SIZES = {"train": 60000, "test": 10000}
IDX_MAGIC = {2049: 1, 2051: 3}  # magic -> number of dimensions (uint8 data)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """A gzipped (or plain) uint8 IDX file as an array; a clear error on a corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file {path} does not exist")
    try:
        with open(path, "rb") as f:
            raw = f.read()
        data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{path}: corrupt or truncated gzip stream ({e})") from None
    if len(data) < 8:
        raise ValueError(f"{path}: {len(data)} bytes is too short for an IDX header")
    magic, = struct.unpack(">I", data[:4])
    if magic not in IDX_MAGIC:
        raise ValueError(f"{path}: magic number {magic} is not an IDX uint8 label (2049) or image (2051) file")
    ndim = IDX_MAGIC[magic]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise ValueError(f"{path}: header says {dims} ({expected} bytes) but the file has {len(data)} bytes"
                         f" ({'truncated' if len(data) < expected else 'trailing data'})")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def load_split(src_dir: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images N x 28 x 28 uint8, labels N uint8)`` of ``split`` (``train`` or ``test``)."""
    src = Path(src_dir)
    img_file, lab_file = FILES[split]
    images, labels = read_idx(src / img_file), read_idx(src / lab_file)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"{src / img_file}: expected N x 28 x 28 images, got {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{src / lab_file}: {labels.shape[0]} labels for {len(images)} images in {img_file}")
    if labels.max() >= len(CLASSES):
        raise ValueError(f"{src / lab_file}: label {labels.max()} outside 0..{len(CLASSES) - 1}")
    return images, labels


def export_imagefolder(src_dir: str | os.PathLike, out_dir: str | os.PathLike,
                       limit_per_class: int | None = None) -> dict[str, int]:
    """Write ``out_dir/{train,val}/<class>/*.png`` (val = the 10k test set); return counts per split.

    ``limit_per_class`` keeps the first N images of each class (in file order) per split. The
    folders are written to a staging folder and renamed into place; ``fashion_mnist_info.json``
    (written last, atomically) records the source files and counts.
    """
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for d in ("train", "val"):
        if (out / d).exists() and not (out / "fashion_mnist_info.json").exists():
            raise FileExistsError(f"{out / d} exists and is not a Fashion-MNIST export; choose an empty --out")
    stage = out / f".fashion-mnist-staging-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    counts = {}
    try:
        for split, folder in (("train", "train"), ("test", "val")):
            images, labels = load_split(src_dir, split)
            keep = np.arange(len(labels))
            if limit_per_class is not None:
                keep = np.concatenate([np.flatnonzero(labels == k)[:limit_per_class] for k in range(len(CLASSES))])
                keep.sort()
            for c in CLASSES:
                (stage / folder / c).mkdir(parents=True)
            for i in progress(keep.tolist(), total=len(keep), desc=f"fashion-mnist {split}", unit="img"):
                Image.fromarray(images[i]).save(
                    stage / folder / CLASSES[labels[i]] / f"{split}_{i:05d}.png", format="PNG")
            counts[folder] = int(len(keep))
        (out / "fashion_mnist_info.json").unlink(missing_ok=True)
        for folder in ("train", "val"):
            if (out / folder).exists():
                shutil.rmtree(out / folder)
            os.replace(stage / folder, out / folder)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    atomic_write_json(out / "fashion_mnist_info.json", {
        "source": str(Path(src_dir).resolve()), "classes": list(CLASSES), "counts": counts,
        "limit_per_class": limit_per_class, "splits": {"train": "train", "val": "test (t10k)"}})
    return counts
