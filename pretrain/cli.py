"""``mocobench pretrain``: parse the command line into a PretrainConfig and run the loop.

    mocobench pretrain --method moco_v2 --data DIR --arch resnet50 --out RUN_DIR \\
        [--preset NAME] [--key=value ...] [--resume auto|PATH] [--label-fraction p | --supervised-list FILE]

Under torchrun every process runs this same command (``torchrun --nproc_per_node 8 -m pretrain ...``).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from mocobench.core.settings import arg, range_of
from mocobench.core.overrides import apply_overrides, split_overrides
from mocobench.core.schedules import keep_shape
from mocobench.pretrain.config import PRESETS, PretrainConfig, resolve_preset
from mocobench.pretrain.fast_paths import check_compile
from mocobench.pretrain.methods import METHODS


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mocobench pretrain", allow_abbrev=False,
        description="Pretrain a backbone with MoCo v1/v2, UniMoCo or SMoG (also under torchrun). "
                    "Any config field can be set with --key=value (e.g. --K=4096 --lr=0.06 --epochs=10).",
        epilog=f"presets: tiny (per method), {', '.join(PRESETS)}")
    p.add_argument("--method", required=True, choices=list(METHODS))
    p.add_argument("--data", required=True, help="ImageNet-layout root with train/<class>/<image> "
                   "(the embedded dataset's root, with imagenet/train, works too)")
    p.add_argument("--out", required=True, help="run directory: checkpoints, log.jsonl, config.json, backbone.pth")
    p.add_argument("--arch", help="torchvision name (resnet50, resnet18, ...) or timm:<name>")
    p.add_argument("--preset", help="paper or CPU preset (default: the method's 200/400-epoch paper preset)")
    p.add_argument("--resume", help="'auto' (latest checkpoint in --out, if any) or a checkpoint path")
    labels = p.add_mutually_exclusive_group()
    labels.add_argument("--label-fraction", type=arg(range_of(PretrainConfig, "label_fraction"), float),
                        help="UniMoCo: labeled fraction in [0, 1]")
    labels.add_argument("--supervised-list", help="UniMoCo: file of labeled image names")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--allow-config-change", action="store_true",
                   help="resume even though settings differ from the checkpoint's (both are recorded in "
                        "config.json and log.jsonl); without it such a resume is refused")
    return p


def resolve(argv: list[str]) -> tuple[argparse.Namespace, PretrainConfig]:
    """The named options, and the config: the preset with every other ``--key=value`` (or
    ``--key value``) applied to its fields."""
    args, rest = parser().parse_known_args(argv)
    overrides = split_overrides(rest)
    cfg = resolve_preset(args.preset, args.method)
    if args.arch:
        overrides.setdefault("arch", args.arch)
    if args.label_fraction is not None:
        overrides["label_fraction"] = str(args.label_fraction)
    if args.supervised_list:
        overrides["supervised_list"] = args.supervised_list
    preset = cfg
    cfg = apply_overrides(cfg, overrides)
    if cfg.epochs != preset.epochs and "milestones" not in overrides:
        # a shortened run keeps its schedule's shape (mocobench.core.schedules.keep_shape)
        cfg = replace(cfg, milestones=keep_shape(preset.milestones, preset.epochs, cfg.epochs))
    check_compile(cfg.compile)
    if (cfg.label_fraction or cfg.supervised_list) and cfg.method != "unimoco":
        raise ValueError("--label-fraction / --supervised-list only apply to --method unimoco")
    return args, cfg


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, cfg = resolve(argv)
    except ValueError as e:
        print(f"mocobench pretrain: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        import json

        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    from mocobench.pretrain.preempt import EXIT_PREEMPTED, Preempted
    from mocobench.pretrain.train import train

    try:
        path = train(cfg, args.data, args.out, resume=args.resume, allow_config_change=args.allow_config_change)
    except (FileNotFoundError, ValueError) as e:  # bad input found while running: a failure, exit 1
        print(f"mocobench pretrain: {e}", file=sys.stderr)
        return 1
    except Preempted as e:
        print(f"mocobench pretrain: {e}", file=sys.stderr)
        return EXIT_PREEMPTED
    print(f"backbone written to {path}")
    return 0
