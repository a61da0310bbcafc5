"""``mocobench eval segmentation ...`` and ``mocobench score {cityscapes,voc-seg} ...``.

    mocobench eval segmentation --checkpoint CKPT --dataset cityscapes --data DIR \\
        --protocol moco-fcn --results RESULTS [--engine torchvision|mmseg] \\
        [--seed S | --seeds S1 S2 ...] [--work-dir DIR] [--max-iters N] [--key=value ...]
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

from mocobench.core import ranges

DATASET_NAMES = {"cityscapes": "Cityscapes", "voc2012": "VOC2012"}


def _eval_parser() -> argparse.ArgumentParser:
    from mocobench.transfer.run_options import add_run_options
    from mocobench.transfer.segmentation.protocols import PROTOCOLS

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
    add_run_options(ap, "segmentation")  # --results, --seed/--seeds, --work-dir, --device
    ap.add_argument("--max-iters", type=ranges.arg("max_iters"), default=None,
                    help="shorten the schedule to N iterations (same as --iters=N; lr steps scale)")
    ap.add_argument("--resume", default="auto",
                    help="'auto' (resume from WORK_DIR/last.pth if present), 'no', or a state file")
    ap.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                    help="--engine mmseg only: set keys of the MMSegmentation config, merged last as "
                         "mmseg's tools do (e.g. optim_wrapper.optimizer.lr=0.02 "
                         "model.decode_head.dropout_ratio=0.0); recorded, and the merged config is "
                         "kept beside the record")
    ap.add_argument("--save-predictions", default=None,
                    help="write val predictions here (Cityscapes: label-id PNGs; VOC: palette PNGs)")
    return ap


def eval_main(task: str, argv: list[str]) -> int:
    from mocobench.transfer.run_options import parse_eval_args
    from mocobench.transfer.segmentation.protocols import get_protocol, override

    try:
        args, overrides, seeds = parse_eval_args(_eval_parser(), argv, "iters")
        protocol = override(get_protocol(args.protocol, args.dataset), overrides)
    except ValueError as e:
        print(f"mocobench eval segmentation: {e}", file=sys.stderr)
        return 2
    if args.cfg_options and args.engine != "mmseg":
        print("mocobench eval segmentation: --cfg-options sets MMSegmentation config keys; it needs "
              "--engine mmseg (protocol fields are --key=value)", file=sys.stderr)
        return 2
    if args.engine == "mmseg":
        from mocobench.transfer.segmentation.mmseg_engine import check_protocol, why_unavailable

        if args.save_predictions:
            print("mocobench eval segmentation: --save-predictions is not available with --engine mmseg",
                  file=sys.stderr)
            return 2
        try:
            check_protocol(protocol, args.dataset)
        except ValueError as e:
            print(f"mocobench eval segmentation: {e}", file=sys.stderr)
            return 2
        reason = why_unavailable()
        if reason:
            print(f"mocobench eval segmentation: --engine mmseg is not usable here: {reason}", file=sys.stderr)
            return 2
    for seed in seeds:
        code = _eval_one(args, protocol, seed)
        if code:
            return code
    return 0


def _work_dir(args, protocol, seed: int) -> Path:
    """The seed's folder under ``--work-dir`` (``transfer/run_options.py``'s rule, as every task),
    named by the checkpoint's name and sha256 as loading reports them."""
    from mocobench.checkpoints.load import load_backbone
    from mocobench.transfer.run_options import run_dir, work_root

    _, report = load_backbone(args.checkpoint)
    return run_dir(work_root(args, "segmentation"), report.record_fields(), protocol.name, args.dataset, seed)


def _eval_one(args, protocol, seed: int) -> int:
    from mocobench.core.dist import device_name
    from mocobench.core.records import new_record, write_record

    try:
        work = _work_dir(args, protocol, seed)
    except (ValueError, FileNotFoundError) as e:  # a checkpoint that cannot be loaded
        print(f"mocobench eval segmentation: {e}", file=sys.stderr)
        return 2
    if args.engine == "mmseg":
        from mocobench.transfer.segmentation.mmseg_engine import eval_seed

        try:
            out = eval_seed(checkpoint=args.checkpoint, dataset=args.dataset,
                            dataset_name=DATASET_NAMES[args.dataset], data_root=args.data, protocol=protocol,
                            work_dir=str(work), results=args.results, seed=seed, resume=args.resume,
                            device=args.device, cfg_options=args.cfg_options)
        except (ValueError, FileNotFoundError) as e:  # bad data, checkpoint, protocol, option, work dir
            print(f"mocobench eval segmentation: {e}", file=sys.stderr)
            return 2
        if out["record"]:
            print(json.dumps({"seed": seed, **{k: out.get(k) for k in ("record", "mIoU", "mAcc", "aAcc", "skipped")}}))
        return 0

    from mocobench.transfer.segmentation.train import run

    try:
        out = run(checkpoint=args.checkpoint, dataset=args.dataset, data_root=args.data, protocol=protocol,
                  seed=seed, device=args.device, work_dir=str(work),
                  resume=None if args.resume == "no" else args.resume,
                  predictions_dir=(str(Path(args.save_predictions) / f"s{seed}") if args.save_predictions else None))
    except (ValueError, FileNotFoundError, FloatingPointError) as e:  # bad data, checkpoint, protocol; divergence
        print(f"mocobench eval segmentation: {e}", file=sys.stderr)
        return 2
    if not out.dist.main:  # rank 0 alone writes the record
        return 0
    metrics = {k: v for k, v in out.metrics.items() if not k.startswith("Acc/") and not math.isnan(v)}
    rec = new_record(
        checkpoint=out.report.record_fields(), task="segmentation", protocol=protocol.name,
        dataset={"name": DATASET_NAMES[args.dataset], "path": str(args.data),
                 "splits": {protocol.train_split: out.train_size, protocol.val_split: out.val_size}},
        metrics=metrics,
        config={**protocol.to_dict(), "dataset": args.dataset, "skipped_train": out.skipped_train,
                "skipped_val": out.skipped_val, "world_size": out.dist.world, "sync_bn": out.sync_bn,
                "work_dir": str(work), **out.features},
        seed=seed, wall_time_s=out.wall_time_s, device=device_name(out.device), engine="torchvision")
    path = write_record(args.results, rec)
    print(json.dumps({"seed": seed, "record": str(path), "mIoU": metrics.get("mIoU"),
                      "mAcc": metrics.get("mAcc"), "aAcc": metrics.get("aAcc"),
                      "wall_time_s": round(out.wall_time_s, 1)}))
    return 0


def score_main(kind: str, argv: list[str]) -> int:
    from mocobench.transfer.segmentation.score import score_cityscapes, score_voc

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
    print("usage: python -m mocobench.transfer.segmentation {eval ...|score {cityscapes,voc-seg} ...}", file=sys.stderr)
    return 2
