"""The detection and segmentation scenes: VOCdevkit (VOC2007, VOC2012) and COCO instances JSON.

A scene is a cluttered background with 1-4 annotated objects of six kinds (the first six shapes of
the classification classes, with their textures), unannotated clutter of the other four kinds, and
sometimes a *crowd*: 4-7 tiny objects of one kind packed together. Objects overlap (later ones
occlude earlier ones) and may be cut by the image border.

- VOC XML: 1-based inclusive integer pixel boxes of the object's polygon clipped to the image;
  ``truncated`` when clipped, ``difficult`` when less than 40 % is visible, when the box is tiny,
  and for crowd members. An object less than 15 % visible is not annotated (its pixels are 255 in
  the segmentation PNGs).
- COCO JSON (the same VOC2007 scenes: trainval -> train2017, test -> val2017): polygon masks,
  ``area`` = polygon area, ``bbox`` = the polygon's extent, real COCO category ids; each crowd is one
  ``iscrowd=1`` annotation with an uncompressed RLE mask of its visible pixels.
  NOTE: real COCO polygons outline the visible part of an object; ours are the whole (amodal) shape
  clipped to the image, because tracing the visible outline needs a contour tracer (cv2); the
  difference only matters for heavily occluded objects, which are rare and marked in VOC.
- VOC2012 ``SegmentationClass`` / ``SegmentationObject``: P-mode PNGs with the VOC palette, class
  (or instance) index per pixel, 255 on a 2 px band along every object outline, as the real ones.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from mocobench.datasets.synth import draw
from mocobench.datasets.synth.encode import jpeg_bytes, palette_png_bytes, write_file

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")
# object kind k (shape k with texture k) -> VOC class; and the same category in COCO (real ids)
KINDS = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus")
COCO_CATEGORIES = {
    "aeroplane": (5, "airplane", "vehicle"),
    "bicycle": (2, "bicycle", "vehicle"),
    "bird": (16, "bird", "animal"),
    "boat": (9, "boat", "vehicle"),
    "bottle": (44, "bottle", "kitchen"),
    "bus": (6, "bus", "vehicle"),
}
# Each kind's usual width / height, as real VOC classes have one (bottles stand, buses and boats lie
# along the ground); an object's own varies around it by up to 1.4x either way (log-uniform). Without
# it the rotated shapes give nearly square boxes, and a detector that swaps width and height when it
# decodes its boxes loses nothing (issue 14's regression gate).
KIND_ASPECT = {"aeroplane": 1.8, "bicycle": 1.5, "bird": 1.0, "boat": 1.7, "bottle": 0.4, "bus": 2.2}
ASPECT_JITTER = 1.4
MIN_VISIBLE = 0.15     # below: not annotated
DIFFICULT_VISIBLE = 0.4
DIFFICULT_SIDE = 0.06  # box side below this fraction of min(h, w): difficult


def render_scene(rng: np.random.Generator, h: int, w: int):
    """Return ``(image uint8 HxWx3, objects, instance map)``.

    ``objects``: dicts with ``kind``, ``name``, ``poly`` (clipped, rounded to 0.01 px),
    ``truncated``, ``difficult``, ``crowd`` (group id or -1), ``visible`` (fraction) and ``id`` (its
    value in the instance map). Unannotated objects are left out and their pixels are -1 in the
    instance map.
    """
    img = draw.background(rng, h, w)
    m = min(h, w)
    n_shapes = len(draw.SHAPE_NAMES)
    inst = np.zeros((h, w), np.int32)

    def put(shape, texture, cx, cy, r, aspect=1.0):
        ang = rng.uniform(0, 2 * np.pi)
        full = draw.place(draw.SHAPES[draw.SHAPE_NAMES[shape]], cx, cy, r, ang, rng.uniform(0.8, 1.25))
        if aspect != 1.0:  # after the turn, so the box's width / height is the kind's
            full = draw.stretch(full, cx, cy, aspect)
        mask = draw.paint_object(img, full, draw.TEXTURE_NAMES[texture], cx, cy, r, ang, rng)
        return full, mask

    def kind_aspect(k):
        return KIND_ASPECT[KINDS[k]] * np.exp(rng.uniform(-np.log(ASPECT_JITTER), np.log(ASPECT_JITTER)))

    # clutter: kinds that are not annotated (shapes 6-9, any other texture)
    for _ in range(rng.integers(1, 4)):
        s = int(rng.integers(len(KINDS), n_shapes))
        t = int((s + rng.integers(1, n_shapes)) % n_shapes)
        put(s, t, rng.uniform(0, w), rng.uniform(0, h), m * rng.uniform(0.05, 0.15))

    placed = []  # (kind, full polygon, crowd group)
    if rng.random() < 0.2:
        k = int(rng.integers(len(KINDS)))
        gx, gy = rng.uniform(0.2 * w, 0.8 * w), rng.uniform(0.2 * h, 0.8 * h)
        for _ in range(rng.integers(4, 8)):
            r = m * rng.uniform(0.03, 0.05)
            placed.append((k, *put(k, k, gx + rng.normal(0, 2.5 * r), gy + rng.normal(0, 2.5 * r), r,
                                   kind_aspect(k)), 0))
    for _ in range(rng.integers(1, 5)):
        k = int(rng.integers(len(KINDS)))
        r = m * np.exp(rng.uniform(np.log(0.06), np.log(0.3)))
        placed.append((k, *put(k, k, rng.uniform(0.05, 0.95) * w, rng.uniform(0.05, 0.95) * h, r, kind_aspect(k)), -1))
    for j, (_, _, mask, _) in enumerate(placed):  # painter's order: later objects cover earlier ones
        inst[mask] = j + 1

    objects = []
    for j, (k, full, mask, group) in enumerate(placed):
        visible = float((inst == j + 1).sum()) / max(1, int(mask.sum()))
        poly = np.round(draw.clip_polygon(full, w, h), 2)
        if visible < MIN_VISIBLE or len(poly) < 3 or draw.polygon_area(poly) < 1:
            inst[inst == j + 1] = -1
            continue
        x0, y0 = poly.min(0)
        x1, y1 = poly.max(0)
        small = min(x1 - x0, y1 - y0) < DIFFICULT_SIDE * m
        objects.append({
            "id": j + 1, "kind": k, "name": KINDS[k], "poly": poly, "crowd": group, "visible": visible,
            "truncated": bool(len(poly) != len(full) or np.abs(poly - full).max() > 0.01),
            "difficult": bool(visible < DIFFICULT_VISIBLE or small or group >= 0),
        })
    return draw.finish(img, rng), objects, inst


def voc_box(poly: np.ndarray, h: int, w: int) -> tuple[int, int, int, int]:
    """1-based inclusive pixel box covering the polygon (VOC convention)."""
    x0, y0 = poly.min(0)
    x1, y1 = poly.max(0)
    xmin, ymin = int(np.floor(x0)) + 1, int(np.floor(y0)) + 1
    xmax, ymax = int(np.ceil(x1)), int(np.ceil(y1))
    xmin, ymin = min(max(xmin, 1), w), min(max(ymin, 1), h)
    return xmin, ymin, max(min(xmax, w), xmin), max(min(ymax, h), ymin)


def voc_xml(folder: str, filename: str, h: int, w: int, objects: list, segmented: bool) -> bytes:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = folder
    ET.SubElement(root, "filename").text = filename
    src = ET.SubElement(root, "source")
    ET.SubElement(src, "database").text = "mocobench synth"
    ET.SubElement(src, "annotation").text = "mocobench synth"
    ET.SubElement(src, "image").text = "procedural"
    size = ET.SubElement(root, "size")
    for tag, val in (("width", w), ("height", h), ("depth", 3)):
        ET.SubElement(size, tag).text = str(val)
    ET.SubElement(root, "segmented").text = str(int(segmented))
    for o in objects:
        ob = ET.SubElement(root, "object")
        ET.SubElement(ob, "name").text = o["name"]
        ET.SubElement(ob, "pose").text = "Unspecified"
        ET.SubElement(ob, "truncated").text = str(int(o["truncated"]))
        ET.SubElement(ob, "difficult").text = str(int(o["difficult"]))
        box = ET.SubElement(ob, "bndbox")
        for tag, val in zip(("xmin", "ymin", "xmax", "ymax"), voc_box(o["poly"], h, w)):
            ET.SubElement(box, tag).text = str(val)
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="utf-8") + b"\n"


def rle_uncompressed(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths of the column-major mask, starting with a 0-run."""
    flat = np.asfortranarray(mask).ravel(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return {"counts": counts, "size": [int(mask.shape[0]), int(mask.shape[1])]}


def coco_annotations(image_id: int, objects: list, inst: np.ndarray, next_id: int) -> list[dict]:
    anns = []
    for o in objects:
        if o["crowd"] >= 0:
            continue
        p = o["poly"]
        x0, y0 = p.min(0)
        x1, y1 = p.max(0)
        anns.append({"id": next_id + len(anns), "image_id": image_id,
                     "category_id": COCO_CATEGORIES[o["name"]][0],
                     "segmentation": [[round(float(c), 2) for c in p.ravel()]],
                     "area": round(draw.polygon_area(p), 2),
                     "bbox": [round(float(x0), 2), round(float(y0), 2), round(float(x1 - x0), 2),
                              round(float(y1 - y0), 2)],
                     "iscrowd": 0})
    members = [o for o in objects if o["crowd"] >= 0]
    if members:
        mask = np.isin(inst, [o["id"] for o in members])
        ys, xs = np.nonzero(mask)
        anns.append({"id": next_id + len(anns), "image_id": image_id,
                     "category_id": COCO_CATEGORIES[members[0]["name"]][0],
                     "segmentation": rle_uncompressed(mask), "area": float(mask.sum()),
                     "bbox": [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
                              float(ys.max() - ys.min() + 1)],
                     "iscrowd": 1})
    return anns


def outline_ignore(inst: np.ndarray) -> np.ndarray:
    """The 2 px band along every object outline (both sides of a change of instance id)."""
    band = np.zeros(inst.shape, bool)
    dh = (inst[:, 1:] != inst[:, :-1]) & ((inst[:, 1:] != 0) | (inst[:, :-1] != 0))
    dv = (inst[1:, :] != inst[:-1, :]) & ((inst[1:, :] != 0) | (inst[:-1, :] != 0))
    band[:, 1:] |= dh
    band[:, :-1] |= dh
    band[1:, :] |= dv
    band[:-1, :] |= dv
    return band


def segmentation_pngs(objects: list, inst: np.ndarray) -> tuple[bytes, bytes]:
    """(SegmentationClass, SegmentationObject) PNG bytes."""
    cls = np.zeros(inst.shape, np.uint8)
    obj = np.zeros(inst.shape, np.uint8)
    for n, o in enumerate(objects):
        cls[inst == o["id"]] = VOC_CLASSES.index(o["name"]) + 1
        obj[inst == o["id"]] = n + 1
    ignore = outline_ignore(inst) | (inst < 0)
    cls[ignore] = 255
    obj[ignore] = 255
    return palette_png_bytes(cls), palette_png_bytes(obj)


def write_image_sets(main: Path, splits: dict[str, list[str]], labels: dict[str, list]) -> None:
    """``ImageSets/Main/<split>.txt`` and ``<cls>_<split>.txt`` (``id  1`` / ``id -1`` / ``id  0``)."""
    for split, ids in splits.items():
        write_file(main / f"{split}.txt", "".join(f"{i}\n" for i in ids).encode())
        for c in VOC_CLASSES:
            lines = []
            for i in ids:
                flags = [o["difficult"] for o in labels[i] if o["name"] == c]
                flag = -1 if not flags else (0 if all(flags) else 1)
                lines.append(f"{i} {flag:2d}\n")
            write_file(main / f"{c}_{split}.txt", "".join(lines).encode())


def generate_voc(root: Path, year: str, seed: int, splits: dict[str, int], size: tuple, progress,
                 segmentation: bool, coco_root: Path | None = None, coco_names=None) -> dict:
    """Write ``root/VOC<year>``; ``splits`` maps a scene split (trainval/test or train/val) to a
    count. With ``coco_root``, the same scenes also go to COCO (``coco_names``: split -> COCO split).
    """
    voc = root / f"VOC{year}"
    (wmin, wmax), (hmin, hmax) = size
    ids_of, labels, coco = {}, {}, {}
    serial = 0
    jobs = []
    for split, n in splits.items():
        ids_of[split] = []
        for index in range(n):
            serial += 1
            image_id = f"{serial:06d}" if year == "2007" else f"2008_{serial:06d}"
            ids_of[split].append(image_id)
            jobs.append((split, index, image_id))
    n_objects = n_difficult = 0
    for split, index, image_id in progress(jobs, desc=f"synth VOC{year}", unit="img"):
        rng = draw.image_rng(seed, f"voc{year}/{split}", index)
        w, h = int(rng.integers(wmin, wmax + 1)), int(rng.integers(hmin, hmax + 1))
        img, objects, inst = render_scene(rng, h, w)
        labels[image_id] = objects
        n_objects += len(objects)
        n_difficult += sum(o["difficult"] for o in objects)
        jpg = jpeg_bytes(img)
        write_file(voc / "JPEGImages" / f"{image_id}.jpg", jpg)
        write_file(voc / "Annotations" / f"{image_id}.xml",
                   voc_xml(f"VOC{year}", f"{image_id}.jpg", h, w, objects, segmentation))
        if segmentation:
            cls_png, obj_png = segmentation_pngs(objects, inst)
            write_file(voc / "SegmentationClass" / f"{image_id}.png", cls_png)
            write_file(voc / "SegmentationObject" / f"{image_id}.png", obj_png)
        if coco_root is not None:
            cs = coco_names[split]
            write_file(coco_root / cs / f"{int(image_id):012d}.jpg", jpg)
            d = coco.setdefault(cs, {"images": [], "annotations": []})
            d["images"].append({"id": int(image_id), "file_name": f"{int(image_id):012d}.jpg",
                                "width": w, "height": h})
            d["annotations"] += coco_annotations(int(image_id), objects, inst, len(d["annotations"]) + 1)

    main_sets = dict(ids_of)
    if "trainval" in ids_of:  # VOC2007: train / val halves of trainval
        main_sets["train"] = ids_of["trainval"][0::2]
        main_sets["val"] = ids_of["trainval"][1::2]
    else:  # VOC2012 (trainval only): train and val make trainval
        main_sets["trainval"] = sorted(ids_of["train"] + ids_of["val"])
    write_image_sets(voc / "ImageSets" / "Main", main_sets, labels)
    if segmentation:
        for split in ("train", "val"):
            write_file(voc / "ImageSets" / "Segmentation" / f"{split}.txt",
                       "".join(f"{i}\n" for i in main_sets[split]).encode())
        write_file(voc / "ImageSets" / "Segmentation" / "trainval.txt",
                   "".join(f"{i}\n" for i in main_sets["trainval"]).encode())

    summary = {"images": {s: len(v) for s, v in main_sets.items()}, "objects": n_objects,
               "difficult": n_difficult, "segmentation": segmentation}
    if coco_root is not None:
        import json

        categories = [{"id": cid, "name": name, "supercategory": sup}
                      for cid, name, sup in sorted(COCO_CATEGORIES.values())]
        for cs, d in coco.items():
            doc = {"info": {"description": "mocobench synth (procedural)", "version": "1.0", "year": 2026},
                   "licenses": [], "images": d["images"], "annotations": d["annotations"],
                   "categories": categories}
            write_file(coco_root / "annotations" / f"instances_{cs}.json",
                       json.dumps(doc, separators=(",", ":")).encode())
        summary["coco"] = {cs: {"images": len(d["images"]), "annotations": len(d["annotations"]),
                                "crowd": sum(a["iscrowd"] for a in d["annotations"])}
                           for cs, d in coco.items()}
    return summary
