"""Decoding a PIL image to 8-bit RGB for every reader, with deep greyscale scaled, not clipped.

PIL's ``convert("RGB")`` clips 16-bit greyscale (``I;16``, a common PNG and TIFF depth) at 255, so
every such image turns white with no error. Here 16-bit values are scaled to 8 bits
(``round(v * 255 / 65535)``, what libpng's 16-to-8 strip does up to rounding). A 32-bit integer
image (``I``) is scaled the same way when its values fit 16 bits (older Pillow opens 16-bit PNGs
as ``I``); otherwise, and for float images (``F``), the scale of the values is unknown and the image
is refused: the caller names the file and counts it as unreadable.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
# What PIL raises for a file that is no image it can read: OSError covers UnidentifiedImageError and
# "image file is truncated"; SyntaxError comes from some broken headers; DecompressionBombError (an
# image over twice ``Image.MAX_IMAGE_PIXELS``) derives from none of them.
UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


class UnknownScaleError(ValueError):
    """An image whose pixel values have no known 8-bit scale (float, or integers beyond 16 bits)."""


def to_rgb(im: Image.Image) -> Image.Image:
    """``im`` as an 8-bit RGB image (decoding it fully, so a truncated file raises here)."""
    if im.mode in SIXTEEN_BIT_MODES or im.mode == "I":
        values = np.asarray(im).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise UnknownScaleError(f"{im.mode} image with values {values.min()}..{values.max()}, beyond "
                                    "16 bits: their 8-bit scale is unknown (convert it to 8 or 16 bits)")
        grey = ((values * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if im.mode == "F":
        raise UnknownScaleError("floating-point image: the 8-bit scale of its values is unknown "
                                "(convert it to 8 or 16 bits)")
    return im.convert("RGB")


def check_data(im: Image.Image) -> None:
    """Read every byte of an opened image's data, so truncated or corrupt data raises here.

    ``verify()`` checks a PNG's chunk CRCs to the end of the file but does not read a JPEG's data at
    all, so a truncated JPEG passes it. A JPEG is decoded instead at the smallest scale libjpeg
    offers (``draft``: 1/8 per side): the entropy-coded data is still read to its end, but most of
    the decoding work (inverse DCT, upsampling, colour conversion) is skipped. ``im`` is unusable
    afterwards; open the file again to read the pixels.
    """
    if im.format == "JPEG":
        im.draft(im.mode, (max(1, im.size[0] // 8), max(1, im.size[1] // 8)))
        im.load()
    else:
        im.verify()


def find_unreadable(paths, desc: str = "check image data", threads: int | None = None) -> list[str]:
    """The files of ``paths`` whose data does not read to its end (:func:`check_data`: a truncated
    JPEG too), in the order given: for engines that read every listed image and cannot skip one
    (detectron2's loaders), so that such a file is found before training, not hours into it.
    ``threads`` (default: the machine's cores) decode in parallel: PIL releases the GIL while it
    decodes. docs/detection.md gives the cost."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    from mocobench.core.io import progress

    paths = list(paths)

    def bad(path) -> bool:
        try:
            with Image.open(path) as im:
                check_data(im)
        except UNREADABLE:
            return True
        return False

    with ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1) as pool:
        flags = list(progress(pool.map(bad, paths), total=len(paths), desc=desc, unit="img"))
    return [str(p) for p, b in zip(paths, flags) if b]


def check_segmentation_split(pairs, read_mask, evaluated, error: type[Exception], split: str):
    """Every ``(image, mask)`` pair of a segmentation split, checked when the dataset is opened, before
    any training: ``(indices kept, indices of the image files skipped)``.

    An image that cannot be opened or whose data is broken (:func:`check_data`: a truncated JPEG
    too) is skipped (named in a warning, counted once as a file); its mask is still checked, as
    scoring a val split counts its pixels as missed (``missed_targets`` of the datasets). A mask is
    read in full:
    ``read_mask(path)`` raises ``error`` on values that are no label;
    a mask whose size differs from its image's is ``error``, and so is a split with no readable
    image or with no pixel that ``evaluated(mask)`` counts (every pixel ignored: nothing to learn or
    score). The problem is one line naming the file and the rule.
    """
    import warnings

    from mocobench.core.io import progress

    kept, skipped, pixels = [], [], 0
    for i, (image, mask) in enumerate(progress(pairs, total=len(pairs), desc=f"check {split}", unit="img")):
        try:
            with Image.open(image) as im:
                size = im.size
                check_data(im)
        except Exception as e:  # PIL raises many types for broken files
            warnings.warn(f"{image}: unreadable image skipped ({type(e).__name__}: {e})", stacklevel=2)
            skipped.append(i)
            read_mask(mask)   # its values are checked all the same
            continue
        labels = read_mask(mask)
        if labels.shape[::-1] != tuple(size):
            raise error(f"{mask}: mask is {labels.shape[1]}x{labels.shape[0]} but its image {image} is "
                        f"{size[0]}x{size[1]}")
        pixels += int(evaluated(labels))
        kept.append(i)
    if not kept:
        raise error(f"{split}: none of its {len(pairs)} images is readable")
    if pixels == 0:
        raise error(f"{split}: no pixel of an evaluated class in any of its {len(kept)} masks (every pixel "
                    "is ignored), so there is nothing to train or score")
    return kept, skipped
