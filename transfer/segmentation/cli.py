"""``mocobench eval segmentation ...`` and ``mocobench score {cityscapes,voc-seg} ...``.

    mocobench eval segmentation --checkpoint CKPT --dataset cityscapes --data DIR \\
        --protocol moco-fcn --results RESULTS [--engine torchvision|mmseg] \\
        [--seed S | --seeds S1 S2 ...] [--work-dir DIR] [--resume auto|no|PATH] [--max-iters N] [--key=value ...]
    torchrun --nproc-per-node 8 -m transfer eval segmentation ...      # DDP + SyncBN
    mocobench score cityscapes --gt gtFine/val --pred PRED_DIR
    mocobench score voc-seg --gt VOC2012/SegmentationClass --pred PRED_DIR --split val.txt
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mocobench.core.settings import arg, range_of

DATASETS = ("cityscapes", "voc2012")


def _eval_parser() -> argparse.ArgumentParser:
    from mocobench.transfer.run_options import add_run_options
    from mocobench.transfer.segmentation.protocols import PROTOCOLS, SegProtocol

    ap = argparse.ArgumentParser(
        prog="mocobench eval segmentation", allow_abbrev=False,
        description="Fine-tune a backbone for semantic segmentation (FCN / DeepLabV3 head) and "
                    "write one result record per seed. Extra --key=value arguments override fields "
                    "of the protocol (e.g. --iters=2000 --crop=512,1024 --head=deeplabv3 "
                    "--inference=slide).")
    ap.add_argument("--checkpoint", required=True, help="checkpoint file or random:ARCH[:SEED]")
    ap.add_argument("--dataset", required=True, choices=DATASETS)
    ap.add_argument("--data", required=True,
                    help="Cityscapes root (leftImg8bit/, gtFine/) or VOC root (VOC2012/ or VOCdevkit/); "
                         "the embedded dataset's root works for both")
    ap.add_argument("--protocol", default="moco-fcn", choices=list(PROTOCOLS))
    ap.add_argument("--engine", default="torchvision", choices=["torchvision", "mmseg"])
    add_run_options(ap, "segmentation")  # --results, --seed/--seeds, --work-dir, --device, --resume
    ap.add_argument("--max-iters", type=arg(range_of(SegProtocol, "iters")), default=None,
                    help="shorten the schedule to N iterations (same as --iters=N; lr steps scale)")
    ap.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                    help="--engine mmseg only: set keys of the MMSegmentation config, merged last as "
                         "mmseg's tools do (e.g. model.decode_head.dropout_ratio=0.0); recorded, and the "
                         "merged config is kept beside the record. A key that an option of ours sets "
                         "(seed, data, checkpoint, a protocol field: use --lr= etc.) is refused")
    ap.add_argument("--save-predictions", default=None,
                    help="write val predictions here (Cityscapes: label-id PNGs; VOC: palette PNGs)")
    return ap


def eval_main(task: str, argv: list[str]) -> int:
    from mocobench.transfer import runner

    prog = "mocobench eval segmentation"

    def parse() -> runner.Evaluation:
        from mocobench.transfer.run_options import parse_eval_args, work_root
        from mocobench.transfer.segmentation.protocols import get_protocol, override

        args, overrides, seeds = parse_eval_args(_eval_parser(), argv, "iters")
        protocol = override(get_protocol(args.protocol, args.dataset), overrides)
        if args.cfg_options and args.engine != "mmseg":
            raise runner.UsageError("--cfg-options sets MMSegmentation config keys; it needs --engine mmseg "
                                    "(protocol fields are --key=value)")
        settings = {"protocol": protocol.to_dict(), "dataset": args.dataset,
                    "data": str(Path(args.data).resolve()), "engine": args.engine,
                    "cfg_options": list(args.cfg_options)}
        common = dict(task="segmentation", protocol=protocol.name, dataset=args.dataset, settings=settings,
                      checkpoint=args.checkpoint, seeds=seeds, results=Path(args.results),
                      work_root=work_root(args, "segmentation"), device=args.device, resume=args.resume,
                      resumes_from_file=True, prog=prog, preflight=args.preflight,
                      check_only=args.check, branch=args.branch, input_convention=args.input_convention,
                      stride_in_1x1=args.stride_in_1x1)
        from mocobench.datasets.identity import dataset_id

        name = dataset_id(args.dataset, args.data)
        if args.engine == "mmseg":
            from mocobench.transfer.segmentation.mmseg_engine import (check_protocol, refuse_owned_keys,
                                                                     run_seed as mmseg_seed, why_unavailable)

            if args.save_predictions:
                raise runner.UsageError("--save-predictions is not available with --engine mmseg")
            check_protocol(protocol, args.dataset)
            refuse_owned_keys(args.cfg_options)   # before the checkpoint is read
            reason = why_unavailable()
            if reason:
                raise runner.UsageError(f"--engine mmseg is not usable here: {reason}")
            return runner.Evaluation(**common, run=lambda r: mmseg_seed(
                r, dataset=args.dataset, dataset_name=name, data_root=args.data, protocol=protocol,
                device=args.device, cfg_options=args.cfg_options))
        from mocobench.transfer.segmentation.model import load_for_segmentation
        from mocobench.transfer.segmentation.train import run_seed

        def run(r):
            predictions = str(Path(args.save_predictions) / f"s{r.seed}") if args.save_predictions else None
            return run_seed(r, protocol, args.dataset, args.data, dataset_name=name, predictions_dir=predictions)

        return runner.Evaluation(**common, run=run, load=load_for_segmentation)

    return runner.main(parse, prog)


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
    except ValueError as e:   # missing or wrong files, or nothing to score in them: a failure, not a usage error
        print(f"mocobench score {kind}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, sort_keys=True, allow_nan=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "eval":
        return eval_main("segmentation", argv[1:])
    if argv and argv[0] == "score" and len(argv) > 1:
        return score_main(argv[1], argv[2:])
    print("usage: python -m mocobench.transfer.segmentation {eval ...|score {cityscapes,voc-seg} ...}", file=sys.stderr)
    return 2
