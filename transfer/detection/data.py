"""The detection datasets of a run, opened (and so checked) before any training, by either engine."""

from __future__ import annotations

import os
from pathlib import Path


def build_datasets(dataset: str, data_root: str | os.PathLike, with_masks: bool):
    """(train set, test set, dataset record dict) for ``voc`` (07+12 trainval / 07 test) or ``coco``."""
    from mocobench.datasets.identity import dataset_id

    root = Path(data_root)
    if dataset == "voc":
        from mocobench.datasets.voc import VOC07_TEST, VOC0712_TRAIN, VOCDetection

        train_set = VOCDetection(root, sets=VOC0712_TRAIN)
        test_set = VOCDetection(root, sets=VOC07_TEST)
        info = {"name": dataset_id("voc07+12", root), "path": str(root), "test": "VOC2007 test",
                "splits": {"voc_2007_trainval+voc_2012_trainval": len(train_set), "voc_2007_test": len(test_set)}}
        return train_set, test_set, info
    from mocobench.datasets.coco import COCODetection, coco_split_paths

    if not (root / "annotations").is_dir() and (root / "coco" / "annotations").is_dir():
        root = root / "coco"
    train_set = COCODetection(*coco_split_paths(root, "train2017"), with_masks=with_masks,
                              remove_images_without_annotations=True)
    test_set = COCODetection(*coco_split_paths(root, "val2017"), with_masks=False)
    if train_set.cat_ids != test_set.cat_ids:
        raise ValueError(f"{root}: train2017 and val2017 have different categories")
    info = {"name": dataset_id("coco", root), "path": str(root), "test": "val2017",
            "splits": {"train2017": len(train_set), "val2017": len(test_set)}}
    return train_set, test_set, info
