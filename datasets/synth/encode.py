"""Image encoders with fixed settings (so the same pixels always give the same bytes) and the
plain file write used inside the staging folder."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def jpeg_bytes(arr: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def png_bytes(im: Image.Image | np.ndarray) -> bytes:
    if isinstance(im, np.ndarray):
        im = Image.fromarray(im)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def voc_palette() -> list[int]:
    """PASCAL VOC's colour map: index ``i``'s bits 0/1/2 (then 3/4/5, ...) fill the high bits of
    R/G/B; 0 is black, 1 (aeroplane) dark red (128, 0, 0), 255 (ignore) (224, 224, 192)."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


VOC_PALETTE = voc_palette()


def palette_png_bytes(index: np.ndarray) -> bytes:
    """A P-mode PNG with the VOC palette, as VOC's ``SegmentationClass/*.png``."""
    index = np.ascontiguousarray(index, dtype=np.uint8)
    im = Image.frombytes("P", (index.shape[1], index.shape[0]), index.tobytes())
    im.putpalette(VOC_PALETTE)
    return png_bytes(im)


def write_file(path: Path, data: bytes) -> None:
    """Plain write: only used inside the staging folder that ``generate`` renames into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
