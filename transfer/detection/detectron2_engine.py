"""``--engine detectron2``: run MoCo's detection protocols with detectron2 itself.

Steps per evaluation: load the checkpoint strictly (``checkpoints.load_backbone``), convert it
with the detectron2 adapter (``transfer/adapters/detectron2.py``: ``write_detectron2_pkl``,
``write_detectron2_config``), register the ``Res5ROIHeadsExtraNorm`` ROI head (the adapter's
``register_roi_heads``) and the user's datasets under mocobench-specific names, then for each
seed train with detectron2's ``DefaultTrainer`` (``detectron2.engine.launch`` over every visible
GPU), evaluate with ``PascalVOCDetectionEvaluator`` (VOC) or ``COCOEvaluator`` (COCO), and write
one result record per seed with ``engine="detectron2"``.

When detectron2 cannot be imported, :func:`run_detectron2` fails at once (before any work) with
:class:`Detectron2Unavailable`, whose message says how to install it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

INSTALL_HINT = (
    "detectron2 is not installed (import detectron2 failed). Install it for your torch and CUDA:\n"
    "  pip install 'git+https://github.com/facebookresearch/detectron2.git'\n"
    "(it compiles CUDA ops: a CUDA toolkit matching torch.version.cuda and a C++ compiler are needed; "
    "see https://detectron2.readthedocs.io/en/latest/tutorials/install.html), "
    "or use the default --engine torchvision, which runs the same protocols without it."
)


class Detectron2Unavailable(RuntimeError):
    """detectron2 cannot be imported; the message says how to install it."""


def require_detectron2():
    try:
        import detectron2  # noqa: F401
    except ImportError as e:
        raise Detectron2Unavailable(f"{INSTALL_HINT}\n(import error: {e})") from None
    return detectron2


def register_datasets(dataset: str, data_root: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Register the user's VOC or COCO folders under ``mocobench_*`` names; (train, test) names."""
    from detectron2.data import DatasetCatalog
    from detectron2.data.datasets import register_coco_instances, register_pascal_voc

    root = Path(data_root)
    if dataset == "voc":
        from core.data.voc import year_dir

        specs = [("mocobench_voc_2007_trainval", "2007", "trainval"),
                 ("mocobench_voc_2012_trainval", "2012", "trainval"),
                 ("mocobench_voc_2007_test", "2007", "test")]
        for name, year, split in specs:
            if name not in DatasetCatalog.list():
                register_pascal_voc(name, str(year_dir(root, year)), split, int(year))
        return [s[0] for s in specs[:2]], [specs[2][0]]
    from core.data.coco import coco_split_paths

    if not (root / "annotations").is_dir() and (root / "coco").is_dir():
        root = root / "coco"
    names = []
    for split in ("train2017", "val2017"):
        name = f"mocobench_coco_{split}"
        images, ann = coco_split_paths(root, split)
        if name not in DatasetCatalog.list():
            register_coco_instances(name, {}, str(ann), str(images))
        names.append(name)
    return [names[0]], [names[1]]


def _metrics(results: dict, dataset: str) -> dict[str, float]:
    """detectron2's evaluator output (already in percent) -> record metric names."""
    if dataset == "voc":
        bbox = results["bbox"]
        return {"AP": bbox["AP"], "AP50": bbox["AP50"], "AP75": bbox["AP75"]}
    out = {}
    for iou_type in ("bbox", "segm"):
        for k, v in results.get(iou_type, {}).items():
            if k in ("AP", "AP50", "AP75", "APs", "APm", "APl") and v == v:
                out[f"{iou_type}_{k}"] = float(v)
    return out


def _train_and_test(config_path: str, seed: int, train_names, test_names, dataset: str, out_dir: str):
    """One detectron2 run (inside ``launch``); returns the evaluator's results on the main process."""
    from detectron2.config import get_cfg
    from detectron2.engine import DefaultTrainer, default_setup
    from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator

    from transfer.adapters.detectron2 import register_roi_heads

    register_roi_heads()

    class Trainer(DefaultTrainer):
        @classmethod
        def build_evaluator(cls, cfg, dataset_name, output_folder=None):
            if dataset == "voc":
                return PascalVOCDetectionEvaluator(dataset_name)
            return COCOEvaluator(dataset_name, output_dir=output_folder or os.path.join(cfg.OUTPUT_DIR, "inference"))

    cfg = get_cfg()
    cfg.merge_from_file(config_path)
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = tuple(train_names), tuple(test_names)
    cfg.SEED = seed
    cfg.OUTPUT_DIR = out_dir
    cfg.freeze()
    default_setup(cfg, None)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=True)  # continues from OUTPUT_DIR/last_checkpoint if present
    trainer.train()
    return Trainer.test(cfg, trainer.model)


def run_detectron2(checkpoint: str, protocol, dataset: str, data_root, seeds, results_dir, work_dir) -> list[Path]:
    """Convert, configure, train and evaluate with detectron2; one record per seed."""
    require_detectron2()
    import torch
    from detectron2.engine import launch

    from checkpoints.load import load_backbone
    from core.records import new_record, write_record
    from transfer.adapters.detectron2 import PROTOCOLS as D2_PROTOCOLS, write_detectron2_config, write_detectron2_pkl

    if protocol.name not in D2_PROTOCOLS:
        raise ValueError(f"protocol {protocol.name} has no detectron2 config (known: {', '.join(D2_PROTOCOLS)}); "
                         "the tiny protocol runs with --engine torchvision")
    backbone, report = load_backbone(checkpoint)
    if backbone.arch != "resnet50":
        raise ValueError(f"the detectron2 configs are for ResNet-50 (MoCo's protocols), not {backbone.arch}")
    work = Path(work_dir) / f"{report.name}-{(report.sha256 or 'nosha')[:8]}-{protocol.name}-detectron2"
    weights = write_detectron2_pkl(work / "backbone.pkl", backbone.net.state_dict(), report.record_fields())
    num_gpus = max(torch.cuda.device_count(), 1)
    ims = protocol.ims_per_batch
    train_names, test_names = register_datasets(dataset, data_root)
    written = []
    for seed in seeds:
        t0 = time.time()
        out_dir = work / f"s{seed}"
        config = write_detectron2_config(protocol.name, weights, out_dir / "config.yaml",
                                         dataset_root=str(data_root), num_gpus=num_gpus, ims_per_batch=ims,
                                         max_iter=protocol.max_iter if protocol.max_iter != D2_PROTOCOLS[protocol.name]["max_iter"] else None,
                                         output_dir=str(out_dir))
        results = {}

        def main():
            register_datasets(dataset, data_root)  # again in each spawned process
            results.update(_train_and_test(str(config), seed, train_names, test_names, dataset, str(out_dir)) or {})

        launch(main, num_gpus_per_machine=num_gpus if torch.cuda.is_available() else 1)
        if not results:  # worker processes keep results to themselves; rank 0 ran in-process for 1 GPU
            raise RuntimeError(f"{out_dir}: detectron2 returned no evaluation results "
                               "(multi-GPU: see the log in that folder)")
        rec = new_record(checkpoint=report.record_fields(), task="detection", protocol=protocol.name,
                         dataset={"name": "VOC07+12" if dataset == "voc" else "COCO", "path": str(data_root),
                                  "test": "VOC2007 test" if dataset == "voc" else "val2017", "splits": {}},
                         metrics=_metrics(results, dataset),
                         config={"protocol": protocol.to_dict(), "detectron2_config": str(config),
                                 "num_gpus": num_gpus, "ims_per_batch": ims,
                                 "lr_scaling": f"linear: 0.02 x {ims} / 16"},
                         seed=seed, wall_time_s=time.time() - t0,
                         device=f"{num_gpus}x{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'}",
                         engine="detectron2")
        written.append(write_record(results_dir, rec))
    return written
