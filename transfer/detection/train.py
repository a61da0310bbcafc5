"""Detection fine-tuning and evaluation with the torchvision engine, one result record per seed.

Read top to bottom: data (iteration -> batch) | schedule | train loop with exact resume |
precise BN | inference and scoring | ``run_eval`` (what ``mocobench eval detection`` calls).

Conventions:
- iteration-based, as detectron2: iteration ``it`` (0-based) uses images ``it*B .. (it+1)*B - 1``
  of an endless stream made of one seeded permutation of the training set per epoch, so the
  images of an iteration depend only on (seed, it) and a resumed run sees exactly what an
  uninterrupted one would; horizontal flips are drawn from a generator seeded with (seed, it, k);
- the learning rate of iteration ``it`` is ``lr * warmup(it) * gamma ** #{s in steps: s <= it}``
  with ``lr = base_lr * ims_per_batch / reference_batch`` (linear scaling; stated in the record);
- the work checkpoint (``last.pt``) holds model, optimizer, iteration, the RNG states (torch,
  CUDA) and a fingerprint of (checkpoint, protocol, seed); resuming with a different fingerprint
  is refused;
- under torchrun (``WORLD_SIZE > 1``): DDP, BN layers become SyncBatchNorm (CUDA), each process
  takes ``ims_per_batch / world`` images of the iteration; rank 0 evaluates and writes records;
- bf16 autocast on CUDA (``protocol.bf16``); fp32 on CPU.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.io import atomic_torch_save, atomic_write_json, progress

# -- data ------------------------------------------------------------------------------------------


def _identity(x):
    return x


def hflip(image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
    """Mirror an image (3 x H x W) with its continuous ``x0 y0 x1 y1`` boxes and masks."""
    w = image.shape[-1]
    target = dict(target)
    boxes = target["boxes"].clone()
    boxes[:, 0], boxes[:, 2] = w - target["boxes"][:, 2], w - target["boxes"][:, 0]
    target["boxes"] = boxes
    if "masks" in target:
        target["masks"] = target["masks"].flip(-1)
    return image.flip(-1), target


class IterationBatches(torch.utils.data.Dataset):
    """``batches[it]`` -> this process's list of ``(image, target)`` for iteration ``it``."""

    def __init__(self, dataset, batch_size: int, seed: int, flip: bool = True, rank: int = 0, world: int = 1):
        if len(dataset) == 0:
            raise ValueError("the training set is empty")
        self.dataset, self.batch_size, self.seed, self.flip = dataset, batch_size, seed, flip
        self.rank, self.world = rank, world

    def indices(self, it: int) -> list[int]:
        n = len(self.dataset)
        out = []
        for pos in range(it * self.batch_size, (it + 1) * self.batch_size):
            epoch, k = divmod(pos, n)
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            out.append(int(torch.randperm(n, generator=g)[k]))
        return out

    def __len__(self) -> int:  # only used by samplers that need a length
        return 2 ** 62

    def __getitem__(self, it: int):
        items = []
        for k, i in enumerate(self.indices(it)[self.rank::self.world]):
            image, target = self.dataset[i]
            if self.flip and np.random.default_rng([self.seed, it, k]).random() < 0.5:
                image, target = hflip(image, target)
            items.append((image, target))
        return items


# -- schedule -------------------------------------------------------------------------------------


def scaled_lr(protocol) -> float:
    return protocol.base_lr * protocol.ims_per_batch / protocol.reference_batch


def lr_at(it: int, protocol) -> float:
    """WarmupMultiStepLR (detectron2): linear warmup from ``warmup_factor``, then steps of ``gamma``."""
    lr = scaled_lr(protocol)
    if it < protocol.warmup_iters:
        alpha = it / protocol.warmup_iters
        lr *= protocol.warmup_factor * (1 - alpha) + alpha
    return lr * protocol.gamma ** sum(1 for s in protocol.steps if s <= it)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weights and biases, none on normalisation parameters (detectron2's
    ``WEIGHT_DECAY_NORM: 0.0`` default)."""
    norm, other, seen = [], [], set()
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (norm if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm))
             else other).append(p)
    return [{"params": other, "weight_decay": weight_decay}, {"params": norm, "weight_decay": 0.0}]


# -- distributed ----------------------------------------------------------------------------------


def dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def setup_distributed(device: torch.device) -> None:
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


# -- training ---------------------------------------------------------------------------------------


def _to(device, images, targets):
    images = [im.to(device, non_blocking=True) for im in images]
    targets = [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()}
               for t in targets]
    return images, targets


def train(model: nn.Module, dataset, protocol, seed: int, work_dir: str | os.PathLike, device: torch.device,
          *, resume: bool = True, fingerprint: dict | None = None, stop_at: int | None = None,
          desc: str = "detection") -> dict:
    """Fine-tune ``model`` for ``protocol.max_iter`` iterations; returns a summary.

    ``stop_at`` ends the loop early (after saving), as a kill would; used by the resume test.
    """
    p = protocol
    rank, world, _ = dist_info()
    work_dir = Path(work_dir)
    ckpt_path = work_dir / "last.pt"
    # JSON round trip: what is stored compares equal to what a later run computes.
    fingerprint = json.loads(json.dumps(dict(fingerprint or {}, protocol=p.to_dict(), seed=seed, world=world)))
    if p.ims_per_batch % world:
        raise ValueError(f"ims_per_batch={p.ims_per_batch} is not divisible by the {world} processes")

    model.to(device)
    optimizer = torch.optim.SGD(param_groups(model, p.weight_decay), lr=lr_at(0, p), momentum=p.momentum)
    start = 0
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if state["fingerprint"] != fingerprint:
            raise RuntimeError(f"{ckpt_path}: work checkpoint of a different run (checkpoint, protocol, "
                               f"seed or world size differ); use --no-resume or another --work-dir")
        unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["iteration"]
        torch.set_rng_state(state["rng"]["torch"])
        if torch.cuda.is_available() and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    if world > 1:
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        # NOTE: SyncBatchNorm needs CUDA; CPU (gloo) runs keep per-process BN statistics.
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=False)

    def save(iteration: int) -> None:
        if rank != 0:
            return
        rng = {"torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
        atomic_torch_save({"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                           "iteration": iteration, "rng": rng, "fingerprint": fingerprint}, ckpt_path)

    end = p.max_iter if stop_at is None else min(stop_at, p.max_iter)
    losses_log: list[dict] = []
    if start < end:
        batches = IterationBatches(dataset, p.ims_per_batch, seed, p.hflip, rank, world)
        # The loader draws its worker seed from its own generator, never from the global RNG,
        # so creating it does not shift the stream a resumed run restores.
        loader = torch.utils.data.DataLoader(
            batches, batch_size=None, sampler=range(start, end), num_workers=p.num_workers,
            collate_fn=_identity, generator=torch.Generator().manual_seed(seed),
            persistent_workers=False, pin_memory=device.type == "cuda")
        model.train()
        use_bf16 = p.bf16 and device.type == "cuda"
        bar = progress(total=end - start, desc=desc, unit="it", disable=None if rank == 0 else True)
        for it, items in zip(range(start, end), loader):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(it, p)
            images, targets = _to(device, [i for i, _ in items], [t for _, t in items])
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss_dict = model(images, targets)
            loss = sum(loss_dict.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"iteration {it}: loss is {loss.item()} ({ {k: v.item() for k, v in loss_dict.items()} })")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses_log.append({"iteration": it, "lr": lr_at(it, p), "loss": loss.item(),
                               **{k: v.item() for k, v in loss_dict.items()}})
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr_at(it, p):.4g}", refresh=False)
            if (it + 1) % p.checkpoint_period == 0 or it + 1 == end:
                save(it + 1)
        bar.close()
    if rank == 0 and losses_log:
        log_path = work_dir / "losses.jsonl"
        old = log_path.read_text() if log_path.exists() and start > 0 else ""
        from core.io import atomic_write_text

        atomic_write_text(log_path, old + "".join(json.dumps(r) + "\n" for r in losses_log))
    return {"start_iteration": start, "end_iteration": end, "final_loss": losses_log[-1]["loss"] if losses_log else None}


@torch.no_grad()
def precise_bn(model: nn.Module, dataset, protocol, seed: int, device: torch.device) -> int:
    """Recompute every BN's running statistics as the average over ``precise_bn_iters`` training
    batches with the weights fixed (detectron2's ``PreciseBN`` hook, which MoCo enables)."""
    p = protocol
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or p.precise_bn_iters <= 0:
        return 0
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    batches = IterationBatches(dataset, p.ims_per_batch, seed + 1_000_000, p.hflip)
    use_bf16 = p.bf16 and device.type == "cuda"
    for it in range(p.precise_bn_iters):
        items = batches[it]
        images, targets = _to(device, [i for i, _ in items], [t for _, t in items])
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            model(images, targets)
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    return p.precise_bn_iters


# -- inference and scoring -------------------------------------------------------------------------


@torch.no_grad()
def predict(model: nn.Module, dataset, protocol, device: torch.device, desc: str = "inference") -> list[dict]:
    """Detections for every image of ``dataset`` in its original pixel coordinates (CPU tensors)."""
    model.eval()
    transform = unwrap(model).transform
    saved = transform.min_size, transform.max_size
    transform.min_size, transform.max_size = (protocol.min_size_test,), protocol.max_size_test
    out = []
    try:
        use_bf16 = protocol.bf16 and device.type == "cuda"
        for i in progress(range(len(dataset)), desc=desc, unit="img"):
            image, _ = dataset[i]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                pred = model([image.to(device)])[0]
            out.append({k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in pred.items()})
    finally:
        transform.min_size, transform.max_size = saved
    return out


def score_voc(predictions: list[dict], test_set, det_dir: Path, year: int = 2007) -> dict:
    """Write the devkit's results files and score them (the path ``mocobench score voc`` takes)."""
    from transfer.detection.voc_eval import detections_from_predictions, score_voc_dir, write_voc_results

    if len(test_set.sets) != 1 or not test_set.items:
        raise ValueError(f"the VOC test set must be one non-empty split, not {test_set.sets}")
    year_dir, split = test_set.items[0][0], test_set.sets[0][1]
    image_ids = [image_id for _, image_id, _ in test_set.items]
    detections = detections_from_predictions(predictions, image_ids, test_set.classes)
    write_voc_results(det_dir, split, detections, test_set.classes)
    return score_voc_dir(year_dir, split, det_dir, year=year, classes=test_set.classes)


def coco_results(predictions: list[dict], test_set, with_masks: bool) -> list[dict]:
    """Detector outputs to COCO's results format (xywh boxes, RLE masks, real category ids)."""
    from pycocotools import mask as mask_utils

    results = []
    for image_id, p in zip(test_set.ids, predictions):
        boxes = p["boxes"].numpy()
        masks = (p["masks"][:, 0] > 0.5).numpy() if with_masks and "masks" in p else None
        for k, (box, score, label) in enumerate(zip(boxes, p["scores"].tolist(), p["labels"].tolist())):
            r = {"image_id": int(image_id), "category_id": int(test_set.cat_of_label[int(label)]),
                 "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])],
                 "score": float(score)}
            if masks is not None:
                rle = mask_utils.encode(np.asfortranarray(masks[k].astype(np.uint8)))
                r["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
            results.append(r)
    return results


COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def score_coco(results: list[dict], coco_gt, iou_types=("bbox", "segm")) -> dict[str, float]:
    """COCOeval's AP, AP50, AP75, APs, APm, APl per IoU type, in percent (``bbox_AP``...)."""
    import contextlib
    import io

    from pycocotools.cocoeval import COCOeval

    metrics = {}
    for iou_type in iou_types:
        if not results:  # loadRes rejects an empty list; no detections score 0
            metrics.update({f"{iou_type}_{n}": 0.0 for n in COCO_STAT_NAMES})
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            dt = coco_gt.loadRes([dict(r) for r in results])
            ev = COCOeval(coco_gt, dt, iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        # stats of an area range with no ground truth are -1 in COCOeval; we keep -1 out (NaN).
        metrics.update({f"{iou_type}_{n}": (100.0 * float(v) if v >= 0 else float("nan"))
                        for n, v in zip(COCO_STAT_NAMES, ev.stats[:6])})
    return metrics


# -- datasets -------------------------------------------------------------------------------------


def build_datasets(dataset: str, data_root: str | os.PathLike, with_masks: bool):
    """(train set, test set, dataset record dict) for ``voc`` (07+12 trainval / 07 test) or ``coco``."""
    root = Path(data_root)
    if dataset == "voc":
        from core.data.voc import VOC07_TEST, VOC0712_TRAIN, VOCDetection

        train = VOCDetection(root, sets=VOC0712_TRAIN)
        test = VOCDetection(root, sets=VOC07_TEST)
        info = {"name": "VOC07+12", "path": str(root), "test": "VOC2007 test",
                "splits": {"voc_2007_trainval+voc_2012_trainval": len(train), "voc_2007_test": len(test)}}
        return train, test, info
    from core.data.coco import COCODetection, coco_split_paths

    if not (root / "annotations").is_dir() and (root / "coco" / "annotations").is_dir():
        root = root / "coco"
    train = COCODetection(*coco_split_paths(root, "train2017"), with_masks=with_masks,
                          remove_images_without_annotations=True)
    test = COCODetection(*coco_split_paths(root, "val2017"), with_masks=False)
    if train.cat_ids != test.cat_ids:
        raise ValueError(f"{root}: train2017 and val2017 have different categories")
    info = {"name": "COCO", "path": str(root), "test": "val2017",
            "splits": {"train2017": len(train), "val2017": len(test)}}
    return train, test, info


# -- one evaluation per seed ----------------------------------------------------------------------


def pick_device(device: str | None) -> torch.device:
    _, world, local_rank = dist_info()
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and world > 1:
        return torch.device("cuda", local_rank)
    return torch.device(device)


def run_eval(checkpoint: str, protocol, dataset: str, data_root, seeds, results_dir, work_dir, *, device: str | None = None,
             resume: bool = True, stop_at: int | None = None) -> list[Path]:
    """Fine-tune and evaluate ``checkpoint`` under ``protocol`` once per seed; one record per seed."""
    import random

    from checkpoints.load import load_backbone
    from core.records import new_record, write_record
    from transfer.detection.models import build_detector

    p = protocol
    if p.dataset not in (dataset, "any"):
        raise ValueError(f"protocol {p.name} is for {p.dataset}, not {dataset}")
    dev = pick_device(device)
    rank, world, _ = dist_info()
    if world > 1:
        setup_distributed(dev)
    written = []
    for seed in seeds:
        t0 = time.time()
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        backbone, report = load_backbone(checkpoint)
        mask = p.uses_masks(dataset)
        train_set, test_set, info = build_datasets(dataset, data_root, with_masks=mask)
        model = build_detector(backbone, len(train_set.classes), p, mask=mask)
        tag = f"{report.name}-{(report.sha256 or 'nosha')[:8]}-{p.name}-{dataset}-s{seed}"
        seed_dir = Path(work_dir) / tag
        summary = train(model, train_set, p, seed, seed_dir, dev, resume=resume, stop_at=stop_at,
                        fingerprint={"checkpoint": report.record_fields(), "dataset": info},
                        desc=f"{p.name} s{seed}")
        if stop_at is not None and stop_at < p.max_iter:
            continue
        net = unwrap(model)
        # On every process: under DDP the BN layers are SyncBatchNorm and synchronise.
        bn_iters = precise_bn(net, train_set, p, seed, dev)
        if rank != 0:
            continue
        predictions = predict(net, test_set, p, dev, desc=f"{p.name} s{seed} test")
        if dataset == "voc":
            result = score_voc(predictions, test_set, seed_dir / "detections", year=2007)
            from transfer.detection.voc_eval import metrics_for_record

            metrics = metrics_for_record(result)
            extra = {"classes_without_gt": result["classes_without_gt"], "ap_metric": result["metric"]}
        else:
            results = coco_results(predictions, test_set, mask)
            atomic_write_json(seed_dir / "coco_results.json", results)
            metrics = score_coco(results, test_set.coco, ("bbox", "segm") if mask else ("bbox",))
            metrics = {k: v for k, v in metrics.items() if v == v}  # drop NaN (no GT in an area range)
            extra = {}
        config = {"protocol": p.to_dict(), "model": f"{p.model}-{'mask' if mask else 'faster'}-rcnn",
                  "dataset": dataset, "lr": scaled_lr(p),
                  "lr_scaling": f"linear: base_lr {p.base_lr} x ims_per_batch {p.ims_per_batch} / "
                                f"reference_batch {p.reference_batch}",
                  "world_size": world, "ims_per_gpu": p.ims_per_batch // world,
                  "sync_bn": world > 1 and dev.type == "cuda", "bf16": p.bf16 and dev.type == "cuda",
                  "precise_bn_iters": bn_iters, "resumed_from_iteration": summary["start_iteration"],
                  "final_loss": summary["final_loss"], "skipped_images": len(train_set.skipped) + len(test_set.skipped),
                  **extra}
        rec = new_record(checkpoint=report.record_fields(), task="detection", protocol=p.name,
                         dataset=info, metrics=metrics, config=config, seed=seed,
                         wall_time_s=time.time() - t0, device=str(dev), engine="torchvision")
        written.append(write_record(results_dir, rec))
    return written
