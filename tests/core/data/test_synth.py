"""The embedded dataset read back by independent readers: our ImageFolder, xml.etree, pycocotools,
PIL and cityscapesscripts' label table."""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mocobench.datasets.imagefolder import ImageFolder, read_subset_file
from mocobench.datasets.synth import SCALES, draw, generate
from mocobench.datasets.synth.detection import VOC_CLASSES, render_scene

TINY = SCALES["tiny"]


def tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def voc_objects(xml_path: Path):
    root = ET.parse(xml_path).getroot()
    size = root.find("size")
    w, h = int(size.findtext("width")), int(size.findtext("height"))
    objs = []
    for ob in root.iter("object"):
        bb = ob.find("bndbox")
        objs.append((ob.findtext("name"), int(ob.findtext("difficult")),
                     tuple(int(bb.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))))
    return w, h, objs


def test_imagenet_layout_and_subsets(synth_tiny):
    cfg = TINY["imagenet"]
    train = ImageFolder(synth_tiny / "imagenet" / "train")
    val = ImageFolder(synth_tiny / "imagenet" / "val")
    assert len(train.classes) == cfg["n_classes"] and val.classes == train.classes
    assert len(train) == cfg["n_classes"] * cfg["n_train"] and len(val) == cfg["n_classes"] * cfg["n_val"]
    assert np.bincount(train.targets).tolist() == [cfg["n_train"]] * cfg["n_classes"]
    assert all(p.endswith(".JPEG") for p, _ in train.samples)
    img, label = train[0]
    assert img.mode == "RGB" and img.size == (cfg["size"], cfg["size"]) and label == 0
    names = {Path(p).name for p, _ in train.samples}
    for fname, fraction in {"1percent.txt": 0.01, "10percent.txt": 0.1, "unimoco_30percent.txt": 0.3,
                            "unimoco_60percent.txt": 0.6}.items():
        listed = read_subset_file(synth_tiny / "imagenet" / fname)
        assert set(listed) <= names and len(set(listed)) == len(listed)
        sub = ImageFolder(synth_tiny / "imagenet" / "train", subset=synth_tiny / "imagenet" / fname)
        per_class = max(1, round(fraction * cfg["n_train"]))
        assert np.bincount(sub.targets, minlength=cfg["n_classes"]).tolist() == [per_class] * cfg["n_classes"]


@pytest.fixture(scope="module")
def synth_small_imagenet(tmp_path_factory) -> Path:
    """Only the classification part of the ``small`` scale (1600 images at 64 px)."""
    from mocobench.datasets.synth import imagenet

    root = tmp_path_factory.mktemp("small") / "imagenet"
    imagenet.generate(root, 0, progress=lambda jobs, **_: jobs, **SCALES["small"]["imagenet"])
    return root


def test_class_palette():
    """Class k's main colour has hue k/n (± a few hundredths); the second colour is darker."""
    import colorsys

    from mocobench.datasets.synth.imagenet import class_colours

    rng = np.random.default_rng(0)
    for k in range(10):
        for _ in range(50):
            a, b = class_colours(rng, k, 10)
            ha, _, va = colorsys.rgb_to_hsv(*(a / 255))
            _, _, vb = colorsys.rgb_to_hsv(*(b / 255))
            assert min(abs(ha - k / 10), 1 - abs(ha - k / 10)) < 0.15
            assert vb < va


def test_colour_is_a_partial_cue(synth_small_imagenet):
    """Nearest-class-mean on the images' mean colour beats chance but is far from solving the
    classes: shape and texture are needed (as in natural images, colour only helps)."""
    def mean_colours(split):
        ds = ImageFolder(synth_small_imagenet / split)
        return (np.array([np.asarray(Image.open(p).convert("RGB"), np.float32).mean((0, 1)) for p, _ in ds.samples]),
                np.array(ds.targets))

    x, y = mean_colours("train")
    xv, yv = mean_colours("val")
    centres = np.stack([x[y == k].mean(0) for k in range(10)])
    pred = ((xv[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
    accuracy = (pred == yv).mean()
    assert 0.1 < accuracy < 0.5, accuracy


def test_voc_xml_and_image_sets(synth_tiny):
    voc = synth_tiny / "VOCdevkit" / "VOC2007"
    main = voc / "ImageSets" / "Main"
    ids = {s: main.joinpath(f"{s}.txt").read_text().split() for s in ("trainval", "test", "train", "val")}
    assert len(ids["trainval"]) == TINY["voc2007"]["splits"]["trainval"]
    assert len(ids["test"]) == TINY["voc2007"]["splits"]["test"]
    assert sorted(ids["train"] + ids["val"]) == sorted(ids["trainval"])
    n_difficult = 0
    flags = {}
    for i in ids["trainval"]:
        w, h, objs = voc_objects(voc / "Annotations" / f"{i}.xml")
        assert Image.open(voc / "JPEGImages" / f"{i}.jpg").size == (w, h)
        assert objs, i
        for name, difficult, (x0, y0, x1, y1) in objs:
            assert name in VOC_CLASSES
            assert 1 <= x0 <= x1 <= w and 1 <= y0 <= y1 <= h
            n_difficult += difficult
            flags.setdefault((name, i), []).append(difficult)
    assert n_difficult > 0
    # per-class lists: 1 when a non-difficult object is present, 0 when only difficult ones, else -1
    for c in VOC_CLASSES:
        lines = main.joinpath(f"{c}_trainval.txt").read_text().splitlines()
        assert [ln.split()[0] for ln in lines] == ids["trainval"]
        for ln in lines:
            i, flag = ln.split()
            f = flags.get((c, i))
            assert int(flag) == (-1 if f is None else (0 if all(f) else 1)), ln
            assert ln == f"{i} {int(flag):2d}"


def test_coco_json_with_pycocotools_matches_voc(synth_tiny):
    from pycocotools.coco import COCO

    coco = COCO(str(synth_tiny / "coco" / "annotations" / "instances_train2017.json"))
    assert len(coco.getImgIds()) == TINY["voc2007"]["splits"]["trainval"]
    cats = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    assert cats[5] == "airplane" and cats[44] == "bottle"
    coco_to_voc = {"airplane": "aeroplane"}
    voc = synth_tiny / "VOCdevkit" / "VOC2007"
    n_poly = n_crowd = 0
    for img_id in coco.getImgIds():
        info = coco.loadImgs(img_id)[0]
        assert (synth_tiny / "coco" / "train2017" / info["file_name"]).is_file()
        w, h, objs = voc_objects(voc / "Annotations" / f"{img_id:06d}.xml")
        assert (w, h) == (info["width"], info["height"])
        voc_boxes = [(n, b) for n, _, b in objs]
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img_id, iscrowd=None)):
            mask = coco.annToMask(ann)
            x, y, bw, bh = ann["bbox"]
            if ann["iscrowd"]:
                n_crowd += 1
                assert mask.sum() == ann["area"]
                ys, xs = np.nonzero(mask)
                assert (xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()) == (x, y, bw, bh)
                continue
            n_poly += 1
            p = np.array(ann["segmentation"][0]).reshape(-1, 2)
            assert np.allclose([x, y, x + bw, y + bh], [*p.min(0), *p.max(0)], atol=0.011)
            # area = shoelace area of the polygon, independent of our code
            shoelace = abs(np.dot(p[:, 0], np.roll(p[:, 1], -1)) - np.dot(p[:, 1], np.roll(p[:, 0], -1))) / 2
            assert ann["area"] == pytest.approx(shoelace, rel=1e-3, abs=0.05)
            if ann["area"] > 50:
                assert abs(int(mask.sum()) - ann["area"]) < 0.15 * ann["area"] + 4
            # the same object in the VOC XML: 1-based pixel box, within a pixel of the COCO box
            name = coco_to_voc.get(cats[ann["category_id"]], cats[ann["category_id"]])
            match = [b for n, b in voc_boxes if n == name
                     and abs(b[0] - 1 - x) < 1 and abs(b[1] - 1 - y) < 1
                     and abs(b[2] - (x + bw)) < 1 and abs(b[3] - (y + bh)) < 1]
            assert match, (img_id, ann["bbox"], voc_boxes)
    assert n_poly > 10


def test_coco_polygons_match_drawn_pixels():
    """annToMask of each annotation polygon covers the object's drawn pixels (unoccluded ones)."""
    from pycocotools import mask as mask_utils

    checked = 0
    for index in range(6):
        rng = draw.image_rng(0, "test", index)
        img, objects, inst = render_scene(rng, 120, 150)
        for o in objects:
            if o["visible"] < 0.999 or o["crowd"] >= 0 or o["truncated"]:
                continue
            drawn = inst == o["id"]
            rles = mask_utils.frPyObjects([o["poly"].ravel().tolist()], 120, 150)
            coco_mask = mask_utils.decode(mask_utils.merge(rles)).astype(bool)
            iou = (drawn & coco_mask).sum() / (drawn | coco_mask).sum()
            assert iou > 0.8 if drawn.sum() > 60 else iou > 0.5, (index, o["name"], iou)
            checked += 1
    assert checked >= 5


def test_voc_segmentation_pngs(synth_tiny):
    voc = synth_tiny / "VOCdevkit" / "VOC2012"
    seg = voc / "ImageSets" / "Segmentation"
    train = seg.joinpath("train.txt").read_text().split()
    val = seg.joinpath("val.txt").read_text().split()
    assert (len(train), len(val)) == (TINY["voc2012"]["splits"]["train"], TINY["voc2012"]["splits"]["val"])
    seen = set()
    for i in train + val:
        im = Image.open(voc / "SegmentationClass" / f"{i}.png")
        assert im.mode == "P"
        assert im.getpalette()[:6] == [0, 0, 0, 128, 0, 0]  # VOC colours: background, aeroplane
        a = np.asarray(im)
        assert Image.open(voc / "JPEGImages" / f"{i}.jpg").size == im.size
        values = set(np.unique(a).tolist())
        assert values <= set(range(21)) | {255}
        seen |= values
        _, _, objs = voc_objects(voc / "Annotations" / f"{i}.xml")
        # every object class in the XML is in the PNG, and 255 sits between objects and background
        assert {VOC_CLASSES.index(n) + 1 for n, _, _ in objs} <= values
        if 255 in values:
            ys, xs = np.nonzero(a == 255)
            ys, xs = ys[(ys > 0) & (ys < a.shape[0] - 1)], xs[(ys > 0) & (ys < a.shape[0] - 1)]
            nb = np.stack([a[ys - 1, xs], a[ys + 1, xs]])
            assert ((nb != 255) & (nb != 0)).any() and (nb == 0).any()
    assert 255 in seen and 0 in seen


def test_cityscapes_label_ids(synth_tiny):
    from cityscapesscripts.helpers.labels import id2label

    cs = synth_tiny / "cityscapes"
    for split, n in TINY["cityscapes"]["splits"].items():
        images = sorted((cs / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
        assert len(images) == n
        seen = set()
        for p in images:
            city = p.parent.name
            assert p.name.startswith(city + "_")
            gt = cs / "gtFine" / split / city / p.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png")
            lab = Image.open(gt)
            assert lab.mode == "L" and lab.size == Image.open(p).size == (TINY["cityscapes"]["size"][1],
                                                                           TINY["cityscapes"]["size"][0])
            ids = set(np.unique(np.asarray(lab)).tolist())
            assert ids <= set(id2label), ids - set(id2label)
            seen |= ids
        train_ids = {id2label[i].trainId for i in seen}
        assert 255 in train_ids and {0, 1, 2, 10, 13} <= train_ids  # void, road, sidewalk, building, sky, car


@pytest.mark.slow
def test_cli_generation_is_deterministic(tmp_path, synth_tiny, capsys):
    """The same seed through the CLI gives byte-identical files; a second run reuses them."""
    from mocobench.cli import main

    out = tmp_path / "d"
    assert main(["data", "synth", "--out", str(out), "--scale", "tiny", "--seed", "0"]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and f"{out}/VOCdevkit/VOC2007" in printed
    assert tree_hash(out) == tree_hash(synth_tiny)
    info = json.loads((out / "synth_info.json").read_text())
    assert (info["seed"], info["scale"]) == (0, "tiny")
    assert main(["data", "synth", "--out", str(out), "--scale", "tiny", "--seed", "0"]) == 0
    assert "already there" in capsys.readouterr().out


@pytest.mark.slow
def test_other_seed_differs(tmp_path, synth_tiny):
    b = generate(tmp_path / "b", seed=1, scale="tiny", show_progress=False)
    assert b["imagenet"]["train"] == TINY["imagenet"]["n_classes"] * TINY["imagenet"]["n_train"]
    assert tree_hash(tmp_path / "b") != tree_hash(synth_tiny)
    # not just one file: most classification images differ
    a_files = sorted((synth_tiny / "imagenet" / "train").rglob("*.JPEG"))
    same = sum(p.read_bytes() == (tmp_path / "b" / p.relative_to(synth_tiny)).read_bytes() for p in a_files)
    assert same == 0


def test_refuses_to_replace_foreign_folders(tmp_path):
    (tmp_path / "imagenet").mkdir()
    with pytest.raises(FileExistsError, match="synth_info.json"):
        generate(tmp_path, scale="tiny", show_progress=False)
    with pytest.raises(ValueError, match="scale"):
        generate(tmp_path / "x", scale="huge")
