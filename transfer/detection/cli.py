"""``mocobench eval detection ...`` and ``mocobench score voc ...``.

::

    mocobench eval detection --checkpoint CKPT --dataset voc --data DIR --protocol moco-voc-c4-24k \\
        [--engine torchvision|detectron2] [--seeds 5] --results RESULTS_DIR [--key=value ...]
    mocobench score voc --devkit VOCdevkit/VOC2007 --split test --detections DIR [--year 2007]

``--key=value`` overrides any field of the protocol (``--max_iter=200``, ``--base_lr=0.01``);
``--max-iters N`` is a shorthand for ``--max_iter=N``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _score_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mocobench score voc",
                                description="Score VOC-format detections (comp4_det_<split>_<class>.txt) "
                                            "with the VOC devkit's AP definition; prints JSON.")
    p.add_argument("--devkit", required=True, help="the VOC<year> folder (Annotations/, ImageSets/Main/)")
    p.add_argument("--split", default="test")
    p.add_argument("--detections", required=True, help="folder with <comp>_det_<split>_<class>.txt files")
    p.add_argument("--year", type=int, choices=(2007, 2008, 2009, 2010, 2011, 2012), default=None,
                   help="selects the AP definition (2007: 11-point; later: area); default: from the folder name")
    return p


def score_main(kind: str, argv: list[str]) -> int:
    from transfer.detection.voc_eval import VOCResultsError, score_voc_dir
    from core.data.voc import VOCFormatError

    if kind != "voc":
        print(f"mocobench score: {kind!r} is not a detection score kind (voc)", file=sys.stderr)
        return 2
    args = _score_parser().parse_args(argv)
    try:
        result = score_voc_dir(args.devkit, args.split, args.detections, year=args.year)
    except (VOCResultsError, VOCFormatError) as e:
        print(f"mocobench score voc: {e}", file=sys.stderr)
        return 1
    if result["missing_results_files"]:
        print(f"mocobench score voc: no results file for {', '.join(result['missing_results_files'])} "
              "(scored as no detections)", file=sys.stderr)
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


def _eval_parser() -> argparse.ArgumentParser:
    from transfer.detection.protocols import PROTOCOLS

    p = argparse.ArgumentParser(prog="mocobench eval detection",
                                description="Fine-tune a detector from a backbone checkpoint and evaluate it "
                                            "(one result record per seed).")
    p.add_argument("--checkpoint", required=True, help="checkpoint file or random:ARCH[:SEED]")
    p.add_argument("--dataset", choices=("voc", "coco"), required=True)
    p.add_argument("--data", required=True,
                   help="voc: the folder holding VOC2007/ and VOC2012/ (or VOCdevkit/); coco: the folder "
                        "holding train2017/, val2017/ and annotations/ (a folder holding coco/ works too)")
    p.add_argument("--protocol", choices=sorted(PROTOCOLS), required=True)
    p.add_argument("--engine", choices=("torchvision", "detectron2"), default="torchvision")
    p.add_argument("--seeds", type=int, default=1, help="number of runs (seeds 0..N-1); MoCo recommends 5 for VOC")
    p.add_argument("--seed", type=int, default=None, help="run this one seed only")
    p.add_argument("--results", required=True, help="folder for result records")
    p.add_argument("--work-dir", default=None,
                   help="work checkpoints, losses and detections (default: work/detection next to RESULTS; "
                        "kept out of RESULTS, which holds records only)")
    p.add_argument("--max-iters", type=int, default=None, help="shorthand for --max_iter=N")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    p.add_argument("--no-resume", action="store_true", help="start over even if a work checkpoint exists")
    return p


def split_overrides(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """Separate ``--key=value`` protocol overrides (keys with ``_`` or not known to argparse)."""
    from transfer.detection.protocols import DetectionProtocol
    import dataclasses

    fields = {f.name for f in dataclasses.fields(DetectionProtocol)}
    rest, overrides = [], {}
    for a in argv:
        if a.startswith("--") and "=" in a and a[2:].split("=", 1)[0] in fields:
            k, v = a[2:].split("=", 1)
            overrides[k] = v
        else:
            rest.append(a)
    return rest, overrides


def eval_main(task: str, argv: list[str]) -> int:
    from transfer.detection.protocols import ProtocolError, resolve_protocol

    if task != "detection":
        print(f"mocobench eval: {task!r} is not handled by transfer.detection", file=sys.stderr)
        return 2
    rest, overrides = split_overrides(argv)
    args = _eval_parser().parse_args(rest)
    if args.max_iters is not None:
        overrides["max_iter"] = str(args.max_iters)
    try:
        protocol = resolve_protocol(args.protocol, overrides)
    except ProtocolError as e:
        print(f"mocobench eval detection: {e}", file=sys.stderr)
        return 2
    if protocol.dataset not in (args.dataset, "any"):
        print(f"mocobench eval detection: protocol {protocol.name} is for {protocol.dataset}, "
              f"not {args.dataset}", file=sys.stderr)
        return 2
    seeds = [args.seed] if args.seed is not None else list(range(args.seeds))
    work = Path(args.work_dir) if args.work_dir else Path(args.results).resolve().parent / "work" / "detection"
    if args.engine == "detectron2":
        from transfer.detection.detectron2_engine import Detectron2Unavailable, run_detectron2

        try:
            paths = run_detectron2(args.checkpoint, protocol, args.dataset, args.data, seeds, args.results, work)
        except Detectron2Unavailable as e:
            print(f"mocobench eval detection: {e}", file=sys.stderr)
            return 2
    else:
        from transfer.detection.train import run_eval

        paths = run_eval(args.checkpoint, protocol, args.dataset, args.data, seeds, args.results, work,
                         device=args.device, resume=not args.no_resume)
    for p in paths:
        print(p)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "score":
        return score_main("voc", argv[2:] if len(argv) > 1 and argv[1] == "voc" else argv[1:])
    if argv and argv[0] == "eval":
        argv = argv[1:]
    if argv and argv[0] == "detection":
        argv = argv[1:]
    return eval_main("detection", argv)
