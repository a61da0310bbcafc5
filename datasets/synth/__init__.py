"""The embedded dataset: procedurally generated images in the real datasets' on-disk formats.

``generate(out_dir, seed, scale)`` writes, under ``out_dir``::

    imagenet/{train,val}/<class>/*.JPEG          + 1percent.txt, 10percent.txt,
                                                   unimoco_{10,30,60}percent.txt
    VOCdevkit/VOC2007/{JPEGImages,Annotations,ImageSets/Main}          (trainval, test)
    VOCdevkit/VOC2012/{..., SegmentationClass, SegmentationObject,
                       ImageSets/Segmentation}                        (train, val)
    coco/{train2017,val2017}/*.jpg + coco/annotations/instances_{train2017,val2017}.json
    cityscapes/{leftImg8bit,gtFine}/{train,val}/<city>/...
    synth_info.json                                                   (written last)

Every image has its own ``numpy.random.Generator`` seeded from (seed, split, index), and the
encoders use fixed settings, so a seed always gives byte-identical files.

NOTE: the rest of the suite writes every file with ``mocobench.core.io.atomic_*`` (temp file, fsync,
rename). Thousands of small images would spend more time in fsync than in drawing, so the dataset is
written into a staging folder inside ``out_dir`` and each top-level folder is renamed into place at
the end; ``synth_info.json`` (atomic) is written last and marks a complete dataset.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from mocobench.core.io import atomic_write_json, progress as _progress

FORMAT_VERSION = 1

# Image counts and sizes per scale. ``small`` is what ./run_all.sh uses.
SCALES = {
    "tiny": {
        "imagenet": {"n_classes": 10, "n_train": 10, "n_val": 4, "size": 40},
        "voc2007": {"splits": {"trainval": 16, "test": 8}, "size": ((96, 128), (80, 112))},
        "voc2012": {"splits": {"train": 8, "val": 4}, "size": ((96, 128), (80, 112))},
        "cityscapes": {"splits": {"train": 8, "val": 4}, "size": (64, 128)},
    },
    "small": {
        "imagenet": {"n_classes": 10, "n_train": 120, "n_val": 40, "size": 64},
        "voc2007": {"splits": {"trainval": 200, "test": 100}, "size": ((128, 160), (112, 144))},
        "voc2012": {"splits": {"train": 80, "val": 40}, "size": ((128, 160), (112, 144))},
        "cityscapes": {"splits": {"train": 60, "val": 20}, "size": (128, 256)},
    },
}
PARTS = ("imagenet", "VOCdevkit", "coco", "cityscapes")


def generate(out_dir: str | os.PathLike, seed: int = 0, scale: str = "tiny", force: bool = False,
             show_progress: bool = True) -> dict:
    """Write the embedded dataset to ``out_dir`` and return its summary (also ``synth_info.json``).

    If ``out_dir`` already holds a complete dataset of the same seed, scale and format version, it
    is kept (the summary gets ``"reused": True``) unless ``force``. Folders of ``out_dir`` that this
    function would replace must come from an earlier generation (a ``synth_info.json`` is present);
    anything else is an error rather than a deletion.
    """
    from mocobench.datasets.synth import detection, imagenet, street

    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: --out is a file, not a folder; choose a folder to generate into")
    out.mkdir(parents=True, exist_ok=True)
    info_path = out / "synth_info.json"
    key = {"format_version": FORMAT_VERSION, "seed": int(seed), "scale": scale}
    if info_path.exists() and not force:
        import json

        info = json.loads(info_path.read_text())
        if all(info.get(k) == v for k, v in key.items()) and all((out / p).is_dir() for p in PARTS):
            return info | {"reused": True, "out_dir": str(out)}
    existing = [p for p in PARTS if (out / p).exists()]
    if existing and not info_path.exists():
        raise FileExistsError(f"{out} already has {', '.join(existing)} but no synth_info.json: it does "
                              f"not look like a generated dataset; choose an empty --out")

    cfg = SCALES[scale]
    progress = (lambda it, **kw: _progress(it, total=len(it), **kw)) if show_progress else (lambda it, **kw: it)
    t0 = time.perf_counter()
    stage = out / f".synth-staging-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    try:
        summary = dict(key)
        summary["imagenet"] = imagenet.generate(stage / "imagenet", seed, progress=progress, **cfg["imagenet"])
        c7, c12 = cfg["voc2007"], cfg["voc2012"]
        summary["voc2007"] = detection.generate_voc(
            stage / "VOCdevkit", "2007", seed, c7["splits"], c7["size"], progress, segmentation=False,
            coco_root=stage / "coco", coco_names={"trainval": "train2017", "test": "val2017"})
        summary["coco"] = summary["voc2007"].pop("coco")
        summary["voc2012"] = detection.generate_voc(
            stage / "VOCdevkit", "2012", seed, c12["splits"], c12["size"], progress, segmentation=True)
        cs = cfg["cityscapes"]
        summary["cityscapes"] = street.generate(stage / "cityscapes", seed, cs["splits"], cs["size"], progress)
        info_path.unlink(missing_ok=True)  # the dataset is incomplete from here until the end
        for p in PARTS:
            if (out / p).exists():
                shutil.rmtree(out / p)
            os.replace(stage / p, out / p)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    atomic_write_json(info_path, summary)
    return summary | {"seconds": round(time.perf_counter() - t0, 2), "out_dir": str(out)}
