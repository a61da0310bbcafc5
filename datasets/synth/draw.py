"""Drawing primitives of the embedded dataset: shapes, textures, backgrounds, polygons.

Everything is numpy (textures, compositing) plus PIL's polygon rasteriser; no cv2. Images are
float32 ``H x W x 3`` arrays in [0, 255] while they are composed, and ``uint8`` when written.

An object is a *shape* (a polygon in object coordinates, radius ~1, centred at 0) filled with a
*texture* (a function of the object coordinates ``u, v`` giving a mix weight in [0, 1] between two
colours). The two colours are drawn at random for every object, independent of its kind, so the
kind is defined by shape + texture and never by colour.
"""

from __future__ import annotations

import zlib

import numpy as np
from PIL import Image, ImageDraw


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one image: a pure function of (seed, split name, index)."""
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


# --------------------------------------------------------------------------------------------
# shapes: unit polygons, (n, 2) arrays of (x, y) with y pointing down


def _regular(n: int, r: float = 1.0, phase: float = -np.pi / 2) -> np.ndarray:
    a = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


def _star(points=5, inner=0.45) -> np.ndarray:
    outer, inn = _regular(points), _regular(points, inner, -np.pi / 2 + np.pi / points)
    return np.stack([outer, inn], 1).reshape(-1, 2)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    p = np.stack([x, y], 1) / 16.5
    return p - p.mean(0)


SHAPES = {
    "circle": _regular(40),
    "square": np.array([[-0.8, -0.8], [0.8, -0.8], [0.8, 0.8], [-0.8, 0.8]]),
    "triangle": _regular(3, 1.1, -np.pi / 2) + [0, 0.2],
    "star": _star(),
    "cross": np.array([[-0.3, -1], [0.3, -1], [0.3, -0.3], [1, -0.3], [1, 0.3], [0.3, 0.3], [0.3, 1],
                       [-0.3, 1], [-0.3, 0.3], [-1, 0.3], [-1, -0.3], [-0.3, -0.3]]),
    "hexagon": _regular(6, 1.0, 0.0),
    "arrow": np.array([[-1, -0.3], [0.2, -0.3], [0.2, -0.8], [1, 0], [0.2, 0.8], [0.2, 0.3], [-1, 0.3]]),
    "heart": _heart(),
    "chevron": np.array([[-0.9, -0.9], [-0.2, -0.9], [0.9, 0], [-0.2, 0.9], [-0.9, 0.9], [0.2, 0]]),
    "oval": _regular(40) * [1.0, 0.5],
}
SHAPE_NAMES = list(SHAPES)


# --------------------------------------------------------------------------------------------
# textures: (u, v, rng) -> weight in [0, 1]; u, v are object coordinates (about -1..1)


def _stripes(u, v, f, ph):
    return (np.sin(np.pi * f * u + ph) > 0).astype(np.float32)


def _checker(u, v, f, ph):
    return ((np.floor(f * u / 1.5 + ph) + np.floor(f * v / 1.5 + ph)) % 2).astype(np.float32)


def _dots(u, v, f, ph):
    s = 1.6 / f
    du, dv = (u + ph) % s - s / 2, (v + ph) % s - s / 2
    return (du * du + dv * dv < (0.3 * s) ** 2).astype(np.float32)


def _rings(u, v, f, ph):
    return (np.sin(np.pi * f * np.sqrt(u * u + v * v) + ph) > 0).astype(np.float32)


def _grid(u, v, f, ph):
    s = 2.2 / f
    return (((u + ph) % s < 0.25 * s) | ((v + ph) % s < 0.25 * s)).astype(np.float32)


def _zigzag(u, v, f, ph):
    tri = np.abs(((u * f / 2 + ph) % 1.0) - 0.5)
    return (np.sin(np.pi * f * (v + 0.8 * tri)) > 0).astype(np.float32)


def _gradient(u, v, f, ph):
    return np.clip(0.5 + 0.5 * (u + 0.3 * np.sin(ph) * v), 0, 1).astype(np.float32)


def _waves(u, v, f, ph):
    return (np.sin(np.pi * f * v + 2.0 * np.sin(np.pi * f * u / 2 + ph)) > 0).astype(np.float32)


def _halves(u, v, f, ph):
    return (u + 0.25 * np.sin(3 * v + ph) > 0).astype(np.float32)


def _diamonds(u, v, f, ph):
    s = 2.0 / f
    return (((np.abs((u + ph) % s - s / 2) + np.abs((v + ph) % s - s / 2)) < 0.3 * s)).astype(np.float32)


TEXTURES = {
    "stripes": _stripes, "checker": _checker, "dots": _dots, "rings": _rings, "grid": _grid,
    "zigzag": _zigzag, "gradient": _gradient, "waves": _waves, "halves": _halves, "diamonds": _diamonds,
}
TEXTURE_NAMES = list(TEXTURES)


def random_colour_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two colours far enough apart that the texture shows (any hue for either)."""
    a = rng.uniform(0, 255, 3)
    for _ in range(20):
        b = rng.uniform(0, 255, 3)
        if np.abs(a - b).sum() > 150:
            break
    return a.astype(np.float32), b.astype(np.float32)


# --------------------------------------------------------------------------------------------
# polygons


def place(unit: np.ndarray, cx: float, cy: float, r: float, angle: float, aspect: float = 1.0) -> np.ndarray:
    """Scale (``r`` px, x stretched by ``aspect``), rotate by ``angle`` and move a unit polygon."""
    c, s = np.cos(angle), np.sin(angle)
    p = unit * [r * aspect, r]
    return np.stack([c * p[:, 0] - s * p[:, 1] + cx, s * p[:, 0] + c * p[:, 1] + cy], 1)


def stretch(poly: np.ndarray, cx: float, cy: float, aspect: float) -> np.ndarray:
    """Stretch x by sqrt(aspect) and shrink y by as much about (cx, cy): the area stays, the
    extent's width / height is multiplied by ``aspect``."""
    s = np.sqrt(aspect)
    return (poly - [cx, cy]) * [s, 1 / s] + [cx, cy]


def clip_polygon(poly: np.ndarray, w: float, h: float) -> np.ndarray:
    """Sutherland-Hodgman clip of ``poly`` (any simple polygon) to the rectangle [0, w] x [0, h]."""
    out = poly
    for axis, bound, keep_less in ((0, 0.0, False), (0, w, True), (1, 0.0, False), (1, h, True)):
        if len(out) == 0:
            break
        inside = out[:, axis] <= bound if keep_less else out[:, axis] >= bound
        res = []
        for i in range(len(out)):
            p, q = out[i - 1], out[i]
            ip, iq = inside[i - 1], inside[i]
            if iq:
                if not ip:
                    res.append(_cross(p, q, axis, bound))
                res.append(q)
            elif ip:
                res.append(_cross(p, q, axis, bound))
        out = np.array(res).reshape(-1, 2)
    return out


def _cross(p, q, axis, bound):
    t = (bound - p[axis]) / (q[axis] - p[axis])
    return p + t * (q - p)


def polygon_area(poly: np.ndarray) -> float:
    """Shoelace area."""
    x, y = poly[:, 0], poly[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def rasterize(poly: np.ndarray, h: int, w: int) -> np.ndarray:
    """Boolean ``h x w`` mask of the pixels whose centres PIL fills for ``poly``."""
    im = Image.new("L", (w, h), 0)
    ImageDraw.Draw(im).polygon([(float(x), float(y)) for x, y in poly], fill=1)
    return np.asarray(im, dtype=bool)


# --------------------------------------------------------------------------------------------
# compositing


def paint_object(img: np.ndarray, poly: np.ndarray, texture: str, cx: float, cy: float, r: float,
                 angle: float, rng: np.random.Generator, colours=None) -> np.ndarray:
    """Fill ``poly`` in ``img`` (in place) with ``texture`` in object coordinates; return its mask.

    The texture turns with the object (it is evaluated at the object's own ``u, v``), so pose
    changes the pattern's orientation in the image as it would for a real textured object.
    """
    h, w = img.shape[:2]
    mask = rasterize(poly, h, w)
    if not mask.any():
        return mask
    ys, xs = np.nonzero(mask)
    c, s = np.cos(angle), np.sin(angle)
    dx, dy = (xs + 0.5 - cx) / r, (ys + 0.5 - cy) / r
    u, v = c * dx + s * dy, -s * dx + c * dy
    f = rng.uniform(2.5, 4.5)
    t = TEXTURES[texture](u, v, f, rng.uniform(0, 2 * np.pi))[:, None]
    a, b = random_colour_pair(rng) if colours is None else colours
    col = a * (1 - t) + b * t
    shade = 1.0 + rng.uniform(0.1, 0.25) * np.clip(-(v * np.cos(angle) + u * np.sin(angle)), -1, 1)[:, None]
    img[ys, xs] = np.clip(col * shade, 0, 255)
    return mask


def background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A cluttered background: smooth colour blobs, a faint global pattern and random patches."""
    gh, gw = rng.integers(2, 6, size=2)
    coarse = Image.fromarray(rng.uniform(30, 225, (gh, gw, 3)).astype(np.uint8))
    img = np.asarray(coarse.resize((w, h), Image.BILINEAR), dtype=np.float32).copy()
    # a faint pattern over the whole image, in a random orientation and scale
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ang = rng.uniform(0, np.pi)
    scale = rng.uniform(0.08, 0.25) * min(h, w)
    u = (np.cos(ang) * xx + np.sin(ang) * yy) / scale
    v = (-np.sin(ang) * xx + np.cos(ang) * yy) / scale
    tex = TEXTURES[TEXTURE_NAMES[rng.integers(len(TEXTURE_NAMES))]](u, v, 1.0, rng.uniform(0, 6.3))
    img *= (1 - rng.uniform(0.1, 0.3) * tex)[..., None]
    # textured rectangles ("clutter" that is not any object kind)
    for _ in range(rng.integers(1, 4)):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        x1, y1 = x0 + rng.integers(w // 8, w // 2), y0 + rng.integers(h // 8, h // 2)
        a, b = random_colour_pair(rng)
        t = tex[y0:y1, x0:x1, None]
        img[y0:y1, x0:x1] = 0.5 * img[y0:y1, x0:x1] + 0.5 * (a * (1 - t) + b * t)
    return img


def finish(img: np.ndarray, rng: np.random.Generator, noise: float = 6.0) -> np.ndarray:
    """Sensor noise and a global brightness/contrast change, then ``uint8``."""
    gain, bias = rng.uniform(0.8, 1.2), rng.uniform(-20, 20)
    out = (img - 128) * gain + 128 + bias + rng.normal(0, noise, img.shape)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
