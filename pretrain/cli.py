"""``mocobench pretrain``: parse the command line into a PretrainConfig and run the loop.

    mocobench pretrain --method moco_v2 --data DIR --arch resnet50 --out RUN_DIR \\
        [--preset NAME] [--key=value ...] [--resume auto|PATH] [--label-fraction p | --supervised-list FILE]

Under torchrun every process runs this same command (``torchrun --nproc_per_node 8 -m pretrain ...``).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from mocobench.core.dist import env_dist
from mocobench.core.settings import arg, range_of
from mocobench.core.overrides import parse_overrides, refuse_repeated, split_overrides, with_named
from mocobench.core.schedules import steps_kept
from mocobench.pretrain.config import PRESETS, PretrainConfig, check_processes, check_resolved, resolve_preset
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
    p.add_argument("--resume", help="'auto' (latest checkpoint in --out, if any) or a checkpoint path; "
                   "without it, an --out that holds checkpoints is refused")
    labels = p.add_mutually_exclusive_group()
    labels.add_argument("--label-fraction", type=arg(range_of(PretrainConfig, "label_fraction"), float),
                        help="UniMoCo: labeled fraction in [0, 1]")
    labels.add_argument("--supervised-list", help="UniMoCo: file of labeled image names (the run records "
                        "the fraction it labels as label_fraction)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--allow-config-change", action="store_true",
                   help="resume even though settings or data differ from the checkpoint's (both are recorded in "
                        "config.json and log.jsonl); without it such a resume is refused")
    return p


def resolve(argv: list[str]) -> tuple[argparse.Namespace, PretrainConfig]:
    """The named options, and the config: the preset with every other ``--key=value`` (or
    ``--key value``) applied to its fields.

    Every check goes by field name, as the override parser resolves it (``--Milestones`` is
    ``milestones``); an option given twice, in any spelling, is refused, and so is a field the run
    would not use (``pretrain.config.check_resolved``) or one its processes would not use (torchrun's
    ``WORLD_SIZE``: ``pretrain.config.check_processes``)."""
    p = parser()
    args, rest = p.parse_known_args(argv)
    refuse_repeated(argv, p)
    overrides = split_overrides(rest)
    overrides, given = with_named(PretrainConfig, overrides, (
        ("--arch", args.arch), ("--label-fraction", args.label_fraction), ("--supervised-list", args.supervised_list)))
    if "method" in given:   # the method picks the preset and the model; an override would leave both of the other one
        raise ValueError(f"--{given['method']}: the method is chosen with --method only")
    preset = resolve_preset(args.preset, args.method)
    cfg = replace(preset, **parse_overrides(PretrainConfig, overrides))
    if "milestones" not in given:   # a shortened run keeps its schedule's shape; a cosine one has no steps
        cfg = replace(cfg, milestones=steps_kept(preset.milestones, (preset.epochs,), (cfg.epochs,), cfg.schedule))
    cfg = check_resolved(cfg, given)
    check_processes(cfg, env_dist().world)
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
    from mocobench.pretrain.train import refuse_used_run_dir, train

    if not args.resume:
        try:   # a usage error, before anything is written
            refuse_used_run_dir(Path(args.out))
        except ValueError as e:
            print(f"mocobench pretrain: {e}", file=sys.stderr)
            return 2

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
