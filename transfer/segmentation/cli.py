"""``mocobench eval segmentation ...`` and ``mocobench score {cityscapes,voc-seg} ...``.

    mocobench eval segmentation --checkpoint CKPT --dataset cityscapes --data DIR \\
        --protocol moco-fcn --results RESULTS [--engine torchvision|mmseg] [--seeds N] \\
        [--max-iters N] [--key=value ...]
    torchrun --nproc-per-node 8 -m transfer eval segmentation ...      # DDP + SyncBN
    mocobench score cityscapes --gt gtFine/val --pred PRED_DIR
    mocobench score voc-seg --gt VOC2012/SegmentationClass --pred PRED_DIR --split val.txt
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

DATASET_NAMES = {"cityscapes": "Cityscapes", "voc2012": "VOC2012"}


def _eval_parser() -> argparse.ArgumentParser:
    from transfer.segmentation.protocols import PROTOCOLS

    ap = argparse.ArgumentParser(
        prog="mocobench eval segmentation", allow_abbrev=False,
        description="Fine-tune a backbone for semantic segmentation (FCN / DeepLabV3 head) and "
                    "write one result record per seed. Extra --key=value arguments override fields "
                    "of the protocol (e.g. --iters=2000 --crop=512,1024 --head=deeplabv3 "
                    "--inference=slide).")
    ap.add_argument("--checkpoint", required=True, help="checkpoint file or random:ARCH[:SEED]")
    ap.add_argument("--dataset", required=True, choices=sorted(DATASET_NAMES))
    ap.add_argument("--data", required=True,
                    help="Cityscapes root (leftImg8bit/, gtFine/) or VOC root (VOC2012/ or VOCdevkit/); "
                         "the embedded dataset's root works for both")
    ap.add_argument("--protocol", default="moco-fcn", choices=list(PROTOCOLS))
    ap.add_argument("--engine", default="torchvision", choices=["torchvision", "mmseg"])
    ap.add_argument("--results", required=True, help="folder for result records")
    ap.add_argument("--seeds", type=int, default=1, help="number of seeds (seed, seed+1, ...)")
    ap.add_argument("--seed", type=int, default=0, help="first seed")
    ap.add_argument("--max-iters", type=int, default=None,
                    help="shorten the schedule to N iterations (same as --iters=N; lr steps scale)")
    ap.add_argument("--work-dir", default=None,
                    help="where resumable training state goes (default RESULTS/work/segmentation/...)")
    ap.add_argument("--resume", default="auto",
                    help="'auto' (resume from WORK_DIR/last.pth if present), 'no', or a state file")
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    ap.add_argument("--save-predictions", default=None,
                    help="write val predictions here (Cityscapes: label-id PNGs; VOC: palette PNGs)")
    return ap


def eval_main(task: str, argv: list[str]) -> int:
    from transfer.segmentation.protocols import get_protocol, override

    ap = _eval_parser()
    args, rest = ap.parse_known_args(argv)
    bad = [a for a in rest if not (a.startswith("--") and "=" in a)]
    if bad:
        ap.error(f"unrecognized arguments: {' '.join(bad)}")
    try:
        protocol = get_protocol(args.protocol, args.dataset)
        overrides = rest + ([f"iters={args.max_iters}"] if args.max_iters else [])
        protocol = override(protocol, overrides)
    except ValueError as e:
        print(f"mocobench eval segmentation: {e}", file=sys.stderr)
        return 2
    if args.engine == "mmseg":
        from transfer.segmentation.mmseg_engine import MMSEG_PROTOCOLS, why_unavailable

        if protocol.name not in MMSEG_PROTOCOLS:
            print(f"mocobench eval segmentation: --engine mmseg runs {', '.join(MMSEG_PROTOCOLS)}, "
                  f"not {protocol.name!r}", file=sys.stderr)
            return 2
        reason = why_unavailable()
        if reason:
            print(f"mocobench eval segmentation: --engine mmseg is not usable here: {reason}", file=sys.stderr)
            return 2
    for seed in range(args.seed, args.seed + args.seeds):
        code = _eval_one(args, protocol, seed)
        if code:
            return code
    return 0


def _work_dir(args, protocol, seed: int) -> Path:
    if args.work_dir:
        return Path(args.work_dir) / f"s{seed}"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(args.checkpoint).name)
    return Path(args.results) / "work" / "segmentation" / f"{args.dataset}-{protocol.name}-{safe}-s{seed}"


def _eval_one(args, protocol, seed: int) -> int:
    import time

    from core.records import new_record, write_record

    work = _work_dir(args, protocol, seed)
    if args.engine == "mmseg":
        from checkpoints.load import load_backbone
        from transfer.segmentation.mmseg_engine import run_mmseg

        t0 = time.time()
        _, report = load_backbone(args.checkpoint)
        metrics = run_mmseg(checkpoint=args.checkpoint, protocol=protocol.name, data_root=args.data,
                            work_dir=str(work), seed=seed, resume=args.resume == "auto",
                            iters=protocol.iters, batch_size=protocol.batch_size)
        rec = new_record(checkpoint=report.record_fields(), task="segmentation", protocol=protocol.name,
                         dataset={"name": DATASET_NAMES[args.dataset], "path": str(args.data), "splits": {}},
                         metrics=metrics, config={"engine": "mmseg", "mmseg_config": str(work / f"{protocol.name}.py")},
                         seed=seed, wall_time_s=time.time() - t0, device=args.device or "cuda", engine="mmseg")
        path = write_record(args.results, rec)
        print(json.dumps({"seed": seed, "record": str(path), **metrics}))
        return 0

    from transfer.segmentation.train import run

    try:
        out = run(checkpoint=args.checkpoint, dataset=args.dataset, data_root=args.data, protocol=protocol,
                  seed=seed, device=args.device, work_dir=str(work),
                  resume=None if args.resume == "no" else args.resume,
                  predictions_dir=(str(Path(args.save_predictions) / f"s{seed}") if args.save_predictions else None))
    except (ValueError, FileNotFoundError, FloatingPointError) as e:  # bad data, checkpoint, protocol; divergence
        print(f"mocobench eval segmentation: {e}", file=sys.stderr)
        return 2
    import os

    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    metrics = {k: v for k, v in out.metrics.items() if not k.startswith("Acc/") and not math.isnan(v)}
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    rec = new_record(
        checkpoint=out.report.record_fields(), task="segmentation", protocol=protocol.name,
        dataset={"name": DATASET_NAMES[args.dataset], "path": str(args.data),
                 "splits": {protocol.train_split: out.train_size, protocol.val_split: out.val_size}},
        metrics=metrics,
        config={**protocol.to_dict(), "dataset": args.dataset, "skipped_train": out.skipped_train,
                "skipped_val": out.skipped_val, "world_size": int(os.environ.get("WORLD_SIZE", "1"))},
        seed=seed, wall_time_s=out.wall_time_s, device=device, engine="torchvision")
    path = write_record(args.results, rec)
    print(json.dumps({"seed": seed, "record": str(path), "mIoU": metrics.get("mIoU"),
                      "mAcc": metrics.get("mAcc"), "aAcc": metrics.get("aAcc"),
                      "wall_time_s": round(out.wall_time_s, 1)}))
    return 0


def score_main(kind: str, argv: list[str]) -> int:
    from transfer.segmentation.score import score_cityscapes, score_voc

    ap = argparse.ArgumentParser(prog=f"mocobench score {kind}",
                                 description="Score prediction PNGs; prints mIoU, per-class IoU, mAcc, aAcc as JSON.")
    if kind == "cityscapes":
        ap.add_argument("--gt", required=True, help="gtFine/val (or any folder holding *_gtFine_labelIds.png)")
        ap.add_argument("--pred", required=True, help="folder of label-id PNGs named <city>_<seq>_<frame>*.png")
    elif kind == "voc-seg":
        ap.add_argument("--gt", required=True, help="VOC2012/SegmentationClass")
        ap.add_argument("--pred", required=True, help="folder of class-index PNGs named <id>.png")
        ap.add_argument("--split", required=True, help="ImageSets/Segmentation/val.txt (the ids to score)")
    else:
        print(f"mocobench score: {kind!r} is not a segmentation kind (cityscapes, voc-seg)", file=sys.stderr)
        return 2
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    try:
        if kind == "cityscapes":
            result = score_cityscapes(args.gt, args.pred, device=args.device)
        else:
            result = score_voc(args.gt, args.pred, args.split, device=args.device)
    except ValueError as e:
        print(f"mocobench score {kind}: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "eval":
        return eval_main("segmentation", argv[1:])
    if argv and argv[0] == "score" and len(argv) > 1:
        return score_main(argv[1], argv[2:])
    print("usage: python -m transfer.segmentation {eval ...|score {cityscapes,voc-seg} ...}", file=sys.stderr)
    return 2
