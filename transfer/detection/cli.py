"""``mocobench eval detection ...`` and ``mocobench score voc ...``.

::

    mocobench eval detection --checkpoint CKPT --dataset voc --data DIR --protocol moco-voc-c4-24k \\
        [--engine torchvision|detectron2] [--seed S | --seeds S1 S2 ...] [--work-dir DIR] \\
        [--resume auto|no|PATH] --results RESULTS_DIR [--key=value ...] [--opts KEY VALUE ...]
    mocobench score voc --devkit VOCdevkit/VOC2007 --split test --detections DIR [--year 2007]

``--key=value`` overrides any field of the protocol (``--max_iter=200``, ``--base_lr=0.01``);
``--max-iters N`` is a shorthand for ``--max_iter=N``. ``--seed``/``--seeds``, ``--work-dir``,
``--results``, ``--device`` and ``--resume`` mean the same in every task (``transfer/run_options.py``).
``--opts KEY VALUE ...`` (``--engine detectron2`` only) sets detectron2 config keys, merged last.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from mocobench.core.settings import arg, range_of


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
    from mocobench.transfer.detection.voc_eval import VOCResultsError, score_voc_dir
    from mocobench.datasets.voc import VOCFormatError

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
    from mocobench.transfer.detection.protocols import PROTOCOLS, DetectionProtocol

    from mocobench.transfer.run_options import add_run_options

    p = argparse.ArgumentParser(prog="mocobench eval detection", allow_abbrev=False,
                                description="Fine-tune a detector from a backbone checkpoint and evaluate it "
                                            "(one result record per seed).")
    p.add_argument("--checkpoint", required=True, help="checkpoint file or random:ARCH[:SEED]")
    p.add_argument("--dataset", choices=("voc", "coco"), required=True)
    p.add_argument("--data", required=True,
                   help="voc: the folder holding VOC2007/ and VOC2012/ (or VOCdevkit/); coco: the folder "
                        "holding train2017/, val2017/ and annotations/ (a folder holding coco/ works too)")
    p.add_argument("--protocol", choices=sorted(PROTOCOLS), required=True)
    p.add_argument("--engine", choices=("torchvision", "detectron2"), default="torchvision")
    add_run_options(p, "detection")  # --results, --seed/--seeds (MoCo averages 5 VOC runs), --work-dir, --device
    p.add_argument("--max-iters", type=arg(range_of(DetectionProtocol, "max_iter")), default=None,
                   help="shorthand for --max_iter=N")
    p.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE",
                   help="--engine detectron2 only: detectron2 config options as KEY VALUE pairs "
                        "(e.g. --opts SOLVER.AMP.ENABLED True TEST.EVAL_PERIOD 0), merged last as "
                        "detectron2's tools do and recorded. A key that an option of ours sets (seed, "
                        "data, weights, a protocol field: use --base_lr= etc.) is refused")
    return p


def eval_main(task: str, argv: list[str]) -> int:
    from mocobench.transfer import runner

    prog = "mocobench eval detection"
    if task != "detection":
        print(f"mocobench eval: {task!r} is not handled by transfer.detection", file=sys.stderr)
        return 2

    def parse() -> runner.Evaluation:
        from mocobench.transfer.detection.protocols import resolve_protocol
        from mocobench.transfer.detection.run import evaluation
        from mocobench.transfer.run_options import parse_eval_args, work_root

        args, overrides, seeds = parse_eval_args(_eval_parser(), argv, "max_iter")
        protocol = resolve_protocol(args.protocol, overrides)
        if args.opts and args.engine != "detectron2":
            raise runner.UsageError("--opts sets detectron2 config keys (--engine detectron2); the "
                                    "torchvision engine takes --key=value protocol overrides")
        explicit = {k.replace("-", "_").lower() for k in overrides}
        if "bf16" in explicit and protocol.bf16 and args.engine == "torchvision":
            from mocobench.core.dist import pick_device

            device = pick_device(args.device)
            if device.type != "cuda":
                raise runner.UsageError(f"--bf16=true: this engine runs bf16 autocast on CUDA only, and this run "
                                        f"is on {device}; leave --bf16 out (fp32 here)")
        if args.engine == "detectron2":
            from mocobench.transfer.detection.detectron2_engine import ENGINE_DEFAULTS

            # fp32 unless --bf16= is given (the record says bf16=false); an explicit --bf16=true is
            # still refused on CUDA
            protocol = dataclasses.replace(protocol, **{k: v for k, v in ENGINE_DEFAULTS.items() if k not in explicit})
        return evaluation(args.checkpoint, protocol, args.dataset, args.data, seeds, args.results,
                          work_root(args, "detection"), device=args.device, resume=args.resume,
                          engine=args.engine, opts=args.opts, preflight=args.preflight, check_only=args.check,
                          branch=args.branch, input_convention=args.input_convention,
                          stride_in_1x1=args.stride_in_1x1)

    return runner.main(parse, prog)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "score":
        return score_main("voc", argv[2:] if len(argv) > 1 and argv[1] == "voc" else argv[1:])
    if argv and argv[0] == "eval":
        argv = argv[1:]
    if argv and argv[0] == "detection":
        argv = argv[1:]
    return eval_main("detection", argv)
