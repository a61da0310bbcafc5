"""The Cityscapes-layout street scenes.

``cityscapes/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` and
``cityscapes/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png`` (8-bit, Cityscapes
label *ids*, so the standard labelId -> trainId table with 255 for void applies), plus
``_gtFine_instanceIds.png`` (16-bit: ``id * 1000 + n`` for car/person instances, the id otherwise),
as in the real gtFine.

A scene is drawn as a label map first (sky, buildings with windows, vegetation, terrain, road in
perspective, sidewalks, poles with signs and lights, cars on the road, people on the sidewalks, the
ego vehicle's bonnet at the bottom and the occasional void "static" object), then coloured label by
label with textures and noise. The ids are looked up by name in
``cityscapesscripts.helpers.labels``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mocobench.datasets.synth import draw
from mocobench.datasets.synth.encode import png_bytes, write_file

CITIES = {"train": ("aachen", "bochum"), "val": ("frankfurt",)}

# label name -> base RGB colour of its pixels (varied per scene/object)
COLOURS = {
    "sky": (130, 170, 215), "building": (120, 110, 100), "vegetation": (70, 115, 45),
    "terrain": (150, 140, 90), "road": (95, 92, 98), "sidewalk": (160, 150, 150), "pole": (80, 80, 80),
    "traffic sign": (215, 200, 40), "traffic light": (40, 40, 40), "car": (0, 0, 0),
    "person": (0, 0, 0), "ego vehicle": (30, 30, 38), "static": (110, 90, 70), "fence": (140, 120, 100),
}


def _ids() -> dict[str, int]:
    from cityscapesscripts.helpers.labels import name2label

    return {name: name2label[name].id for name in COLOURS}


def render_street(rng: np.random.Generator, h: int, w: int):
    """Return ``(image uint8 HxWx3, labelIds uint8 HxW, instanceIds uint16 HxW)``."""
    ID = _ids()
    lab = Image.new("L", (w, h), ID["sky"])
    ins = Image.new("I", (w, h), ID["sky"])
    dl, di = ImageDraw.Draw(lab), ImageDraw.Draw(ins)
    colour_of = {}  # instance/segment value in the colour map -> RGB
    seg = Image.new("I", (w, h), 0)   # per-segment index for colouring
    ds = ImageDraw.Draw(seg)
    n_seg = [0]

    def fill(kind, shape, xy, rgb=None, instance=None):
        n_seg[0] += 1
        getattr(dl, shape)(xy, fill=ID[kind])
        getattr(di, shape)(xy, fill=ID[kind] * 1000 + instance if instance is not None else ID[kind])
        getattr(ds, shape)(xy, fill=n_seg[0])
        base = np.array(COLOURS[kind] if rgb is None else rgb, np.float32)
        colour_of[n_seg[0]] = (kind, np.clip(base + rng.normal(0, 12, 3), 0, 255))

    horizon = int(h * rng.uniform(0.38, 0.5))
    vx = w * rng.uniform(0.35, 0.65)
    fill("sky", "rectangle", [0, 0, w, horizon])
    # buildings along the horizon, some gaps filled with trees
    x = -int(rng.integers(0, w // 8))
    while x < w:
        bw = int(w * rng.uniform(0.08, 0.25))
        top = int(h * rng.uniform(0.05, 0.3))
        if rng.random() < 0.2:
            fill("vegetation", "ellipse", [x, top, x + bw, horizon + h // 10])
        else:
            fill("building", "rectangle", [x, top, x + bw, horizon],
                 rgb=rng.uniform(70, 190, 3))
        x += bw
    # ground: sidewalks, then the road wedge from the vanishing point
    fill("sidewalk", "rectangle", [0, horizon, w, h])
    half = w * rng.uniform(0.3, 0.45)
    fill("road", "polygon", [(vx - 2, horizon), (vx + 2, horizon), (w / 2 + half + w * 0.25, h),
                             (w / 2 - half - w * 0.25, h)])
    if rng.random() < 0.5:
        side = rng.integers(2)
        xs = (0, w * 0.12) if side == 0 else (w * 0.88, w)
        fill("terrain", "polygon", [(xs[0], h), (xs[1], h), (xs[1], horizon + h * 0.15), (xs[0], horizon + h * 0.1)])
    if rng.random() < 0.4:
        fx = w * rng.uniform(0, 0.3)
        fill("fence", "rectangle", [fx, horizon - h * 0.06, fx + w * 0.2, horizon + h * 0.02])
    # poles with signs or lights on the sidewalks
    for _ in range(rng.integers(1, 4)):
        px = w * (rng.uniform(0.02, 0.2) if rng.random() < 0.5 else rng.uniform(0.8, 0.98))
        top, bottom = h * rng.uniform(0.1, 0.3), horizon + h * rng.uniform(0.1, 0.35)
        pw = max(1.0, w * 0.006)
        fill("pole", "rectangle", [px - pw, top, px + pw, bottom])
        kind = "traffic sign" if rng.random() < 0.6 else "traffic light"
        fill(kind, "rectangle", [px - 3 * pw, top - 4 * pw, px + 3 * pw, top + 3 * pw],
             rgb=rng.uniform(30, 230, 3) if kind == "traffic sign" else None)
    # people on the sidewalks, cars on the road; sizes grow towards the bottom (perspective)
    things = []
    for n in range(rng.integers(1, 5)):
        y = rng.uniform(horizon + 0.05 * h, h * 0.9)
        s = (y - horizon) / (h - horizon)
        things.append((y, "person", n, s))
    for n in range(rng.integers(1, 5)):
        y = rng.uniform(horizon + 0.05 * h, h * 0.95)
        things.append((y, "car", n, (y - horizon) / (h - horizon)))
    for y, kind, n, s in sorted(things):  # far first, near ones occlude them
        if kind == "car":
            cw, ch = w * (0.06 + 0.3 * s), h * (0.04 + 0.16 * s)
            cx = vx + (rng.uniform(-1, 1) * half * 1.3) * s
            fill("car", "rectangle", [cx - cw / 2, y - ch, cx + cw / 2, y], rgb=rng.uniform(20, 235, 3),
                 instance=n)
            fill("car", "rectangle", [cx - cw / 3, y - ch * 1.35, cx + cw / 3, y - ch], rgb=(40, 50, 60),
                 instance=n)
        else:
            ph = h * (0.06 + 0.25 * s)
            cx = w * (rng.uniform(0.02, 0.2) if rng.random() < 0.5 else rng.uniform(0.8, 0.98))
            fill("person", "ellipse", [cx - ph * 0.15, y - ph * 0.8, cx + ph * 0.15, y],
                 rgb=rng.uniform(20, 235, 3), instance=n)
            fill("person", "ellipse", [cx - ph * 0.1, y - ph, cx + ph * 0.1, y - ph * 0.78],
                 rgb=(200, 160, 130), instance=n)
    if rng.random() < 0.5:
        sx, sy = w * rng.uniform(0.05, 0.9), horizon + h * rng.uniform(0.05, 0.3)
        fill("static", "rectangle", [sx, sy - h * 0.05, sx + w * 0.03, sy])
    # the ego vehicle's bonnet
    bx = np.linspace(-0.1 * w, 1.1 * w, 24)
    by = h - h * rng.uniform(0.06, 0.12) * np.clip(1 - ((bx - w / 2) / (0.65 * w)) ** 2, 0, 1)
    fill("ego vehicle", "polygon", list(zip(bx, by)) + [(1.1 * w, h + 1), (-0.1 * w, h + 1)])

    label = np.asarray(lab, np.uint8)
    instance = np.asarray(ins, np.int32).astype(np.uint16)
    segs = np.asarray(seg, np.int32)
    img = np.zeros((h, w, 3), np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for k, (kind, rgb) in colour_of.items():
        m = segs == k
        if not m.any():
            continue
        col = np.broadcast_to(rgb, (int(m.sum()), 3)).copy()
        if kind == "building":  # windows: a dark grid
            win = ((xx[m] % 8) < 4) & ((yy[m] % 10) < 5)
            col[win] *= 0.45
        elif kind == "sky":
            col *= (0.85 + 0.3 * yy[m] / max(1, horizon))[:, None]
        elif kind in ("road", "sidewalk", "vegetation", "terrain"):
            col *= rng.uniform(0.85, 1.15, (int(m.sum()), 1))
        img[m] = col
    return draw.finish(img, rng, noise=4.0), label, instance


def generate(root: Path, seed: int, splits: dict[str, int], size: tuple[int, int], progress) -> dict:
    """Write ``root/leftImg8bit`` and ``root/gtFine``; ``splits`` maps train/val to image counts."""
    h, w = size
    jobs = []
    for split, n in splits.items():
        cities = CITIES[split]
        for index in range(n):
            city = cities[index % len(cities)]
            seq, frame = index // len(cities), 19 + 10 * (index % 3)
            jobs.append((split, index, f"{city}_{seq:06d}_{frame:06d}", city))
    for split, index, stem, city in progress(jobs, desc="synth cityscapes", unit="img"):
        rng = draw.image_rng(seed, f"cityscapes/{split}", index)
        img, label, instance = render_street(rng, h, w)
        write_file(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", png_bytes(img))
        gt = root / "gtFine" / split / city
        write_file(gt / f"{stem}_gtFine_labelIds.png", png_bytes(label))
        write_file(gt / f"{stem}_gtFine_instanceIds.png", png_bytes(Image.fromarray(instance)))
    return {split: n for split, n in splits.items()} | {"size": [h, w], "cities": CITIES}
