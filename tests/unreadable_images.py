"""Small image files for the reader tests: intact JPEGs and PNGs, and JPEGs whose header opens but
whose data is cut short (what a download or copy interrupted midway leaves)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def jpeg_bytes(w: int, h: int, seed: int) -> bytes:
    """A noisy RGB JPEG (noise keeps its entropy-coded data far longer than its header)."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def write_jpeg(path: Path, w: int, h: int, seed: int, truncated: bool = False) -> Path:
    data = jpeg_bytes(w, h, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: len(data) // 2] if truncated else data)
    if truncated:
        # the case under test: PIL opens it (size known) and verify() passes; only decoding fails
        with Image.open(path) as im:
            assert im.size == (w, h)
            im.verify()
    return path


def colour_classes(root: Path, per_split: dict[str, int], classes: int = 3, size: int = 36) -> Path:
    """``root/imagenet/<split>/n0<c>/n0<c>_<split><i>.JPEG``: ``classes`` classes told apart by their
    mean colour, ``per_split[split]`` images each (seeded noise around 60 + 70 c)."""
    rng = np.random.default_rng(0)
    for split, n in per_split.items():
        for c in range(classes):
            d = root / "imagenet" / split / f"n0{c}"
            d.mkdir(parents=True)
            for i in range(n):
                a = np.clip(rng.normal(60 + 70 * c, 30, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(a).save(d / f"n0{c}_{split}{i}.JPEG")
    return root
