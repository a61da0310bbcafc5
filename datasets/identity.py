"""The one name of a dataset in records, baselines and the leaderboard, whatever its folder is called.

A leaderboard column is ``(task, protocol, dataset, engine, metric)``, and ``reported.csv`` files the
papers' numbers under these ids, so a measured record lands beside the paper's number only when both
spell the dataset the same way:

- ``imagenet``: an image folder whose ``train/`` holds ImageNet's 1000 WordNet-id classes
  (``n01440764`` ...), whether the folder is called ``imagenet``, ``ILSVRC2012`` or ``CLS-LOC``;
  any other image folder keeps its folder's name (``imagenet-100``, ``flowers``);
- ``voc07+12`` (VOC 2007+2012 trainval, tested on VOC 2007 test), ``coco``, ``cityscapes``,
  ``voc2012`` (VOC 2012 segmentation);
- the embedded data keep their own ids, never a real dataset's: ``synth-<scale>`` for its
  ImageNet-layout folder and ``synth-<scale>-<id>`` for its VOC, COCO and Cityscapes layouts
  (``synth-small-voc07+12``), ``fashion-mnist`` for that export.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

REAL = ("imagenet", "voc07+12", "coco", "cityscapes", "voc2012")
WNID = re.compile(r"^n\d{8}$")
IMAGENET_CLASSES = 1000


def embedded(path: str | os.PathLike) -> str | None:
    """``synth-<scale>`` or ``fashion-mnist`` when ``path`` lies in an embedded dataset (its info file is
    in ``path`` or one of the three folders above it), else None."""
    here = Path(path).resolve()
    for folder in [here, *here.parents][:4]:
        if (folder / "fashion_mnist_info.json").is_file():
            return "fashion-mnist"
        info = folder / "synth_info.json"
        if info.is_file():
            try:
                scale = json.loads(info.read_text()).get("scale")
            except (OSError, ValueError):
                scale = None
            return f"synth-{scale}" if scale else "synth"
    return None


def is_imagenet(folder: str | os.PathLike) -> bool:
    """Whether ``folder/train`` holds exactly ImageNet's 1000 WordNet-id class folders."""
    train = Path(folder) / "train"
    if not train.is_dir():
        return False
    classes = [e.name for e in os.scandir(train) if e.is_dir()]
    return len(classes) == IMAGENET_CLASSES and all(WNID.match(c) for c in classes)


def dataset_id(kind: str, root: str | os.PathLike) -> str:
    """The id of the data at ``root`` read as ``kind`` (one of :data:`REAL`; ``imagenet`` means any
    ImageNet-layout image folder)."""
    if kind not in REAL:
        raise ValueError(f"unknown dataset kind {kind!r} (known: {', '.join(REAL)})")
    own = embedded(root)
    if own is not None:
        return own if kind == "imagenet" else f"{own}-{kind}"
    if kind == "imagenet":
        return "imagenet" if is_imagenet(root) else Path(root).resolve().name
    return kind


def checked_name(given: str | None, kind: str, root: str | os.PathLike) -> str:
    """:func:`dataset_id`, or a name the user gave where it does not contradict the data: the embedded
    datasets keep their ids, and a real dataset's id (the papers' column) needs that dataset."""
    found = dataset_id(kind, root)
    if given is None or given == found:
        return found
    own = embedded(root)
    if own is not None:
        raise ValueError(f"--dataset-name {given}: {root} is the embedded dataset {own} (its info file says "
                         f"so); its results are filed as {found}")
    if given in REAL:
        raise ValueError(f"--dataset-name {given}: that is the papers' column for {given}, and {root} is not "
                         f"{given} (it reads as {found}); name it otherwise")
    return given


def data_identity(path: Path) -> str:
    """A dataset folder's identity, for keys that must change when the data do (the pipeline's
    paper-mode stages, every evaluation's work folder): the sha256 of its listing, each file's path
    under ``path``, size and mtime, read with ``os.scandir`` and one ``stat`` per file (symlinks
    followed). No file is read: an ImageNet-sized folder costs
    one pass over its 1.3M entries (docs/run_all.md gives the measured cost), where hashing it would
    read 150 GB. A file added, removed, renamed, resized or rewritten changes it; so does a copy that
    does not keep mtimes (``cp`` without ``-p``; ``rsync -a`` and ``tar`` keep them). A name that is
    not UTF-8 hashes as its bytes (``os.fsencode``)."""
    h = hashlib.sha256()
    try:
        st = path.stat()
    except OSError:
        return "absent"
    if not path.is_dir():
        h.update(f"{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return f"listing:{h.hexdigest()[:16]}"
    seen = {(st.st_dev, st.st_ino)}   # a symlink loop is listed once
    todo = [(str(path), "")]
    while todo:
        folder, rel = todo.pop()
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        below = []
        for e in entries:
            name = rel + e.name
            try:
                st = e.stat()
                if e.is_dir():
                    if (st.st_dev, st.st_ino) not in seen:
                        seen.add((st.st_dev, st.st_ino))
                        below.append((e.path, name + "/"))
                    h.update(os.fsencode(name) + b"/\n")
                else:
                    h.update(os.fsencode(name) + f"\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError:   # a broken symlink
                h.update(os.fsencode(name) + b"\0broken\n")
        todo += reversed(below)   # depth first, in name order
    return f"listing:{h.hexdigest()[:16]}"
