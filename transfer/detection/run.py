"""One detection evaluation per seed with the torchvision engine (what ``mocobench eval detection``
calls): datasets, fine-tuning (``train.py``), precise BN, sharded inference and scoring
(``evaluate.py``), and rank 0's record."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from mocobench.core import dist
from mocobench.core.io import atomic_write_json
from mocobench.transfer.detection.train import freeze_bn, precise_bn, train, unwrap


def build_datasets(dataset: str, data_root: str | os.PathLike, with_masks: bool):
    """(train set, test set, dataset record dict) for ``voc`` (07+12 trainval / 07 test) or ``coco``."""
    root = Path(data_root)
    if dataset == "voc":
        from mocobench.datasets.voc import VOC07_TEST, VOC0712_TRAIN, VOCDetection

        train_set = VOCDetection(root, sets=VOC0712_TRAIN)
        test_set = VOCDetection(root, sets=VOC07_TEST)
        info = {"name": "VOC07+12", "path": str(root), "test": "VOC2007 test",
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
    info = {"name": "COCO", "path": str(root), "test": "val2017",
            "splits": {"train2017": len(train_set), "val2017": len(test_set)}}
    return train_set, test_set, info


def run_eval(checkpoint: str, protocol, dataset: str, data_root, seeds, results_dir, work_root, *,
             device: str | None = None, resume: bool = True, stop_at: int | None = None) -> list[Path]:
    """Fine-tune and evaluate ``checkpoint`` under ``protocol`` once per seed, each seed in its own
    folder under ``work_root``; rank 0 writes one record per seed (returns their paths)."""
    import random

    from mocobench.checkpoints.load import load_backbone
    from mocobench.core.records import new_record, write_record
    from mocobench.transfer.detection.evaluate import coco_results, predict, score_coco, score_voc
    from mocobench.transfer.detection.models import build_detector
    from mocobench.transfer.run_options import run_dir

    p = protocol
    if p.dataset not in (dataset, "any"):
        raise ValueError(f"protocol {p.name} is for {p.dataset}, not {dataset}")
    info_dist, dev = dist.setup(device)
    written = []
    for seed in seeds:
        t0 = time.time()
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        backbone, report = load_backbone(checkpoint)
        if p.frozen_bn:
            freeze_bn(backbone)
        mask = p.uses_masks(dataset)
        train_set, test_set, info = build_datasets(dataset, data_root, with_masks=mask)
        model = build_detector(backbone, len(train_set.classes), p, mask=mask)
        seed_dir = run_dir(work_root, report.record_fields(), p.name, dataset, seed)
        summary = train(model, train_set, p, seed, seed_dir, dev, resume=resume, stop_at=stop_at,
                        fingerprint={"checkpoint": report.record_fields(), "dataset": info},
                        desc=f"{p.name} s{seed}")
        if stop_at is not None and stop_at < p.max_iter:
            continue
        net = unwrap(model)
        # On every process: under DDP the BN layers are SyncBatchNorm and synchronise.
        bn_iters = precise_bn(net, train_set, p, seed, dev)
        predictions = predict(net, test_set, p, dev, desc=f"{p.name} s{seed} test")
        if not info_dist.main:
            continue
        if dataset == "voc":
            result = score_voc(predictions, test_set, seed_dir / "detections", year=2007)
            from mocobench.transfer.detection.voc_eval import metrics_for_record

            metrics = metrics_for_record(result)
            extra = {"classes_without_gt": result["classes_without_gt"], "ap_metric": result["metric"]}
        else:
            results = coco_results(predictions, test_set, mask)
            atomic_write_json(seed_dir / "coco_results.json", results)
            metrics = score_coco(results, test_set.coco, ("bbox", "segm") if mask else ("bbox",))
            metrics = {k: v for k, v in metrics.items() if v == v}  # drop NaN (no GT in an area range)
            extra = {}
        ran = {k: summary[k] for k in ("lr", "world_size", "ims_per_gpu", "sync_bn", "bf16")}
        config = {"protocol": p.to_dict(), "model": f"{p.model}-{'mask' if mask else 'faster'}-rcnn",
                  "dataset": dataset, **ran, "precise_bn_iters": bn_iters,
                  "resumed_from_iteration": summary["start_iteration"], "final_loss": summary["final_loss"],
                  "skipped_images": len(train_set.skipped) + len(test_set.skipped),
                  "work_dir": str(seed_dir), **extra}
        rec = new_record(checkpoint=report.record_fields(), task="detection", protocol=p.name,
                         dataset=info, metrics=metrics, config=config, seed=seed,
                         wall_time_s=time.time() - t0, device=dist.device_name(dev), engine="torchvision")
        written.append(write_record(results_dir, rec))
    return written
