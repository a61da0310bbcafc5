"""One detection evaluation per seed with the torchvision engine (what ``mocobench eval detection``
calls): datasets, fine-tuning (``train.py``), precise BN, sharded inference and scoring
(``evaluate.py``), and rank 0's record."""

from __future__ import annotations

from pathlib import Path

from mocobench.core.io import atomic_write_json
from mocobench.core.settings import protocol_and_run
from mocobench.transfer.detection.data import build_datasets
from mocobench.transfer.detection.protocols import preset_changes
from mocobench.core.dist import unwrap
from mocobench.transfer.detection.train import freeze_bn, precise_bn, train


def evaluation(checkpoint: str, protocol, dataset: str, data_root, seeds, results_dir, work_root, *,
               device: str | None = None, resume: str = "auto", engine: str = "torchvision",
               opts: list[str] | tuple[str, ...] = (), preflight: str | None = None, check_only: bool = False,
               branch: str | None = None, input_convention: str | None = None,
               stride_in_1x1: bool | None = None):
    """The ``runner.Evaluation`` of a detection command (either engine)."""
    from mocobench.transfer import runner

    if protocol.dataset not in (dataset, "any"):
        raise runner.UsageError(f"protocol {protocol.name} is for {protocol.dataset}, not {dataset}")
    settings = {"protocol": protocol.to_dict(), "dataset": dataset, "data": str(Path(data_root).resolve()),
                "engine": engine, "opts": list(opts)}
    if engine == "detectron2":
        from mocobench.transfer.detection.detectron2_engine import check_protocol, refuse_owned_opts, run_seed as d2_seed

        check_protocol(protocol)
        refuse_owned_opts(list(opts))   # before the checkpoint is read
        run = lambda r: d2_seed(r, protocol, dataset, data_root, device=device, opts=list(opts))  # noqa: E731
        tag = f"{protocol.name}-detectron2"  # beside our engine's folder for the same run, never the same one
    else:
        run = lambda r: run_seed(r, protocol, dataset, data_root)  # noqa: E731
        tag = None
    return runner.Evaluation(task="detection", protocol=protocol.name, dataset=dataset, settings=settings,
                             run=run, checkpoint=checkpoint, seeds=list(seeds), results=Path(results_dir),
                             work_root=Path(work_root), device=device, resume=resume, folder_tag=tag,
                             resumes_from_file=engine == "torchvision", preflight=preflight,
                             check_only=check_only, branch=branch, input_convention=input_convention,
                             stride_in_1x1=stride_in_1x1)


def run_eval(checkpoint: str, protocol, dataset: str, data_root, seeds, results_dir, work_root, *,
             device: str | None = None, resume: str = "auto", engine: str = "torchvision",
             opts: list[str] | tuple[str, ...] = ()) -> list[Path]:
    """Fine-tune and evaluate ``checkpoint`` under ``protocol`` once per seed with ``engine``
    (``transfer/runner.py`` runs the seeds); rank 0 writes one record per seed (their paths)."""
    from mocobench.transfer import runner

    ev = evaluation(checkpoint, protocol, dataset, data_root, seeds, results_dir, work_root, device=device,
                    resume=resume, engine=engine, opts=opts)
    runner.evaluate(ev)
    return ev.written


def run_seed(r, protocol, dataset: str, data_root, *, stop_at: int | None = None):
    """One seed with the torchvision engine: an Outcome on rank 0, None on the others."""
    from mocobench.transfer import runner
    from mocobench.transfer.detection.evaluate import coco_results, predict, score_coco, score_voc
    from mocobench.transfer.detection.models import build_detector

    p = protocol
    backbone = r.backbone
    if p.frozen_bn:
        freeze_bn(backbone)
    mask = p.uses_masks(dataset)
    train_set, test_set, info = build_datasets(dataset, data_root, with_masks=mask)
    model = build_detector(backbone, len(train_set.classes), p, mask=mask)
    resume = r.resume if isinstance(r.resume, Path) else r.resume == "auto"
    summary = train(model, train_set, p, r.seed, r.work, r.device, resume=resume, stop_at=stop_at,
                    fingerprint={"checkpoint": r.report.record_fields(), "dataset": info},
                    desc=f"{p.name} s{r.seed}")
    if stop_at is not None and stop_at < p.max_iter:
        return None
    net = unwrap(model)
    # On every process: under DDP the BN layers are SyncBatchNorm and synchronise.
    bn_iters = precise_bn(net, train_set, p, r.seed, r.device)
    predictions = predict(net, test_set, p, r.device, desc=f"{p.name} s{r.seed} test")
    if not r.dist.main:
        return None
    if dataset == "voc":
        result = score_voc(predictions, test_set, r.work / "detections", year=2007)
        from mocobench.transfer.detection.voc_eval import metrics_for_record

        metrics = metrics_for_record(result)
        extra = {"classes_without_gt": result["classes_without_gt"], "ap_metric": result["metric"]}
    else:
        results = coco_results(predictions, test_set, mask)
        atomic_write_json(r.work / "coco_results.json", results)
        metrics = score_coco(results, test_set.coco, ("bbox", "segm") if mask else ("bbox",))
        metrics = {k: v for k, v in metrics.items() if v == v}  # drop NaN (no GT in an area range)
        extra = {}
    protocol_fields, run_settings = protocol_and_run(p)
    config = {"protocol": protocol_fields, "model": f"{p.model}-{'mask' if mask else 'faster'}-rcnn",
              "dataset": dataset, "lr": summary["lr"], "bf16": summary["bf16"], "precise_bn_iters": bn_iters,
              **extra}
    # SyncBN and the images per GPU follow from the world size; the loss and the skipped images are
    # what this run met. The test images that could not be read are counted apart: they are scored
    # with no detections (their objects missed), so they lower the figures above.
    run = {**run_settings, **{k: summary[k] for k in ("world_size", "ims_per_gpu", "sync_bn")},
           "resumed_from_iteration": summary["start_iteration"], "final_loss": summary["final_loss"],
           "skipped_train": len(train_set.skipped), "skipped_test": len(test_set.skipped),
           "preset_changes": preset_changes(p)}
    return runner.Outcome(metrics=metrics, dataset=info, config=config, run=run)
