"""``mocobench inspect CKPT`` and ``mocobench fetch NAME``."""

from __future__ import annotations

import argparse
import json
import sys

from mocobench.checkpoints.errors import CheckpointError
from mocobench.core.io import one_line


def _human(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else str(n)


def _summarise_keys(keys: list[str], limit: int) -> list[str]:
    return keys if len(keys) <= limit else keys[:limit] + [f"... ({len(keys) - limit} more; --all or --json for all)"]


def inspect_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mocobench inspect",
                                     description="Detect a checkpoint's format and arch; show the keys "
                                                 "used, the keys dropped and why, and its metadata.")
    parser.add_argument("ckpt", help="checkpoint file, zoo name or random:ARCH")
    parser.add_argument("--arch", help="override arch detection")
    parser.add_argument("--branch", choices=("raw", "ema"), help="a file with raw weights and an EMA copy: which one")
    parser.add_argument("--input-convention", choices=("rgb", "bgr255"),
                        help="what the weights expect, where the file does not say")
    parser.add_argument("--stride-in-1x1", choices=("true", "false"),
                        help="a ResNet-50 or deeper: the stride in each stage's first 1x1 conv (MSRA, detectron2's "
                             "STRIDE_IN_1X1) or not (torchvision), where the file does not say")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    parser.add_argument("--all", action="store_true", help="list every key")
    args = parser.parse_args(argv)
    from mocobench.checkpoints.load import annotate_zoo, describe, inspect_checkpoint, load_backbone, resolve_name

    build = {"stride_in_1x1": args.stride_in_1x1 == "true"} if args.stride_in_1x1 else {}

    try:
        if args.ckpt.startswith("random:"):
            try:   # the name's form and arch, and options it has no use for, before anything is built
                describe(args.ckpt, arch=args.arch, branch=args.branch, input_convention=args.input_convention, **build)
            except CheckpointError as e:
                print(f"mocobench inspect: {one_line(e)}", file=sys.stderr)
                return 2
            backbone, report = load_backbone(args.ckpt, **build)
            report.num_params = sum(p.numel() for p in backbone.net.parameters())
        else:
            # Everything load_backbone checks (format, mapping, strict keys and shapes), without
            # loading the weights.
            path, entry = resolve_name(args.ckpt)
            report = inspect_checkpoint(path, arch=args.arch or (entry.arch if entry else None), branch=args.branch,
                                        input_convention=args.input_convention, **build)
            if entry is not None:
                annotate_zoo(report, entry)
    except CheckpointError as e:
        print(f"mocobench inspect: {one_line(e)}", file=sys.stderr)
        return 1
    d = report.to_dict()
    if args.json:
        print(json.dumps(d, indent=2, sort_keys=True, default=repr))
        return 0
    limit = 10**9 if args.all else 12
    print(f"file:       {report.path}")
    print(f"sha256:     {report.sha256}")
    print(f"format:     {report.format}" + (f" (container {report.container})" if report.container else ""))
    card = report.card()
    print(f"size:       {card['size_bytes']} bytes" if card["size_bytes"] is not None else "size:       -")
    print(f"detected:   {report.format_why}" if report.format_why else "detected:   -")
    print(f"arch:       {report.arch}" + (f" ({report.arch_source})" if report.arch_source else ""))
    print(f"branch:     {card['branch_used']}" + (f" (not used: {', '.join(card['branches_not_used'])})"
                                                   if card["branches_not_used"] else ""))
    conv = card["input_convention"]
    if conv:
        print(f"input:      {conv['channels']} on a {conv['scale']} scale, mean {conv['mean']}, std {conv['std']} "
              f"({conv['source']})")
        if conv.get("eval_crop_pct") is not None:
            print(f"eval crop:  crop_pct {conv['eval_crop_pct']:g}, {conv.get('eval_interpolation', '?')} (the weights' own; "
                  f"the probes use their protocol's resize and crop)")
    stride = card["stride_in_1x1"]
    if stride:
        where = "the 1x1 conv (MSRA-style)" if stride["value"] else "the 3x3 conv (torchvision-style)"
        print(f"blocks:     stride in {where} ({stride['source']})")
    print(f"parameters: {_human(d['num_params'])} ({d['num_params']})")
    mapping = report.key_map or {k: k for k in report.used_keys}
    print(f"keys used:  {len(mapping)} file keys -> {len(report.used_keys)} backbone keys")
    for line in _summarise_keys([f"  {k} -> {v}" if k != v else f"  {k}" for k, v in mapping.items()], limit):
        print(line if line.startswith("  ") else "  " + line)
    if report.filled:
        print(f"filled:     {len(report.filled)} BatchNorm num_batches_tracked counters the file does not store")
    print(f"dropped:    {len(report.dropped)}")
    by_reason: dict[str, list[str]] = {}
    for k, why in report.dropped.items():
        by_reason.setdefault(why, []).append(k)
    for why, keys in sorted(by_reason.items()):
        shown = ", ".join(keys[:6]) + (f", ... ({len(keys)} keys)" if len(keys) > 6 and not args.all else "")
        if args.all:
            shown = ", ".join(keys)
        print(f"  {why}: {shown}")
    print("metadata:")
    for k, v in report.metadata.items():
        text = json.dumps(v, default=repr, sort_keys=True)
        print(f"  {k}: {text if len(text) < 200 or args.all else text[:200] + ' ...'}")
    return 0


def fetch_main(argv: list[str] | None = None) -> int:
    from mocobench.checkpoints.fetch import fetch
    from mocobench.checkpoints.zoo import cache_dir, cached_path, load_zoo

    parser = argparse.ArgumentParser(prog="mocobench fetch",
                                     description="Download a zoo checkpoint into the cache "
                                                 "($MOCOBENCH_CACHE or ~/.cache/mocobench), resuming a "
                                                 "partial download and verifying its hash.")
    parser.add_argument("names", nargs="*", help="zoo names (see --list)")
    parser.add_argument("--list", action="store_true", help="list the zoo")
    parser.add_argument("--cache-dir", help="cache folder (default $MOCOBENCH_CACHE or ~/.cache/mocobench)")
    parser.add_argument("--force", action="store_true", help="download again even if cached")
    parser.add_argument("--url", help="download from this URL instead (a mirror); the zoo's hash still applies")
    args = parser.parse_args(argv)
    zoo = load_zoo()
    if args.list or not args.names:
        root = args.cache_dir or cache_dir()
        for name, e in zoo.items():
            cached = "cached" if cached_path(e, root).is_file() else "      "
            paper = f"paper row: {e.paper_row}" if e.paper_row else ""   # its numbers: mocobench leaderboard --rows reported
            print(f"{name:<28} {cached} {e.method:<13} {e.arch:<28} {e.epochs or '':>5}ep  {paper}")
        return 0 if args.list else 2
    if args.url and len(args.names) != 1:
        # one mirror URL is one file: saved under several names, all but one would hold the wrong weights
        print(f"mocobench fetch: --url names one file, so give exactly one checkpoint name (got {len(args.names)}: "
              f"{', '.join(args.names)})", file=sys.stderr)
        return 2
    unknown = [n for n in args.names if n not in zoo]
    if unknown:
        print(f"mocobench fetch: unknown checkpoint(s) {', '.join(unknown)}; known: {', '.join(zoo)}",
              file=sys.stderr)
        return 2
    status = 0
    for name in args.names:
        try:
            fetch(zoo[name], root=args.cache_dir, force=args.force, url=args.url)
        except CheckpointError as e:
            print(f"mocobench fetch: {one_line(e)}", file=sys.stderr)
            status = 1
    return status
