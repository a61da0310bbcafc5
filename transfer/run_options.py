"""The options every ``mocobench eval TASK`` shares, with one meaning in every task.

- ``--results DIR``: the folder the result records go into (records only; rank 0 writes them);
- ``--seed S`` runs this one seed; ``--seeds S1 S2 ...`` runs these seeds; neither: the
  protocol's seeds (:data:`DEFAULT_SEEDS` for every protocol today). One record per seed;
- ``--work-dir DIR``: working files (training state, logs, predictions); each seed runs in its own
  folder ``DIR/<checkpoint>-<sha256[:8]>-<protocol>-<dataset>-<key>-s<seed>`` (:func:`run_dir`).
  Default: ``work/<task>`` next to ``RESULTS`` (never inside it), so results folders side by side
  share it: a seed finished for one is copied into another (``runner.record_here``), not skipped
  with its record elsewhere. The folder's name also carries a digest of the run's settings, so two
  configurations never share one;
- ``--branch``, ``--input-convention``, ``--stride-in-1x1``: go to the loader (``checkpoints/load.py``),
  where the file does not say; each is part of the work folder's key;
- ``--device``: ``cpu``, ``cuda``, ``cuda:1``; default CUDA when present (``mocobench.core.dist.setup``);
- ``--resume auto|no|PATH``: see ``transfer/runner.py``, which runs every evaluation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mocobench.core.settings import AT_LEAST_0, arg

DEFAULT_SEEDS = (0,)


def add_run_options(parser: argparse.ArgumentParser, task: str) -> None:
    parser.add_argument("--results", required=True, help="folder for result records (one per seed)")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=arg(AT_LEAST_0), default=None, help="run this one seed only")
    seeds.add_argument("--seeds", type=arg(AT_LEAST_0), nargs="+", default=None, metavar="S",
                       help=f"run these seeds, one record each (default: "
                            f"{' '.join(map(str, DEFAULT_SEEDS))})")
    parser.add_argument("--work-dir", default=None,
                        help=f"working files, one folder per seed inside (default: work/{task} next to "
                             f"RESULTS)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    parser.add_argument("--branch", choices=("raw", "ema"), default=None,
                        help="a checkpoint holding raw weights and an EMA copy: which to evaluate (such a file is "
                             "refused without it)")
    parser.add_argument("--input-convention", choices=("rgb", "bgr255"), default=None,
                        help="what the weights expect where the file does not say (rgb: torchvision's; bgr255: "
                             "detectron2's MSRA models); see mocobench inspect")
    parser.add_argument("--stride-in-1x1", type=true_or_false, default=None, metavar="true|false",
                        help="a ResNet-50 or deeper: the stride in each stage's first 1x1 conv (MSRA, detectron2's "
                             "STRIDE_IN_1X1) or not (torchvision), where the file does not say; see mocobench inspect")
    parser.add_argument("--preflight", default=None, metavar="FILE",
                        help="the pre-flight report of this checkpoint (mocobench preflight --json FILE): its "
                             "verdict and figures go into every record (the pipeline passes it)")
    parser.add_argument("--check", action="store_true",
                        help="parse and check the command (options, protocol overrides, settings against each "
                             "other), then exit 0 without loading or running anything (the pipeline's --dry-run)")
    parser.add_argument("--resume", default="auto", metavar="auto|no|PATH",
                        help="'auto' (default): skip a seed whose record exists and resume a stopped run "
                             "from its work folder; 'no': start over; or a saved training state to resume from")


def true_or_false(text: str) -> bool:
    """``--stride-in-1x1``'s value: ``true`` or ``false``."""
    if text not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"{text!r}: true or false")
    return text == "true"


def parse_eval_args(parser: argparse.ArgumentParser, argv: list[str], max_iters_field: str):
    """``(args, overrides, seeds)`` of a training task's command line: the known options, the
    ``--key=value`` rest (with ``--max-iters N`` folded in as ``max_iters_field``) and the seeds.
    A ``ValueError`` names what is wrong."""
    from mocobench.core.overrides import split_overrides

    args, rest = parser.parse_known_args(argv)
    overrides = split_overrides(rest)
    if args.max_iters is not None:
        overrides[max_iters_field] = str(args.max_iters)
    return args, overrides, seeds_of(args)


def seeds_of(args: argparse.Namespace, default: tuple[int, ...] = DEFAULT_SEEDS) -> list[int]:
    """The seeds to run: ``--seed``, else ``--seeds``, else ``default``; a repeated seed is refused."""
    if args.seed is not None:
        return [args.seed]
    seeds = list(args.seeds) if args.seeds else list(default)
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ValueError(f"--seeds repeats {', '.join(map(str, repeated))}")
    return seeds


def work_root(args: argparse.Namespace, task: str) -> Path:
    """``--work-dir`` or ``<parent of RESULTS>/work/<task>``."""
    if args.work_dir:
        return Path(args.work_dir)
    return Path(args.results).resolve().parent / "work" / task


def run_dir(root: str | Path, checkpoint: dict, protocol: str, dataset: str, seed: int,
            key: str | None = None) -> Path:
    """The folder of one (checkpoint, protocol, dataset, settings key, seed) run under ``root``;
    ``checkpoint`` is a record's checkpoint fields (``name``, ``sha256``; a random init seeded with
    S != 0, ``init_seed``), ``key`` the digest of the run's settings (``transfer/runner.py``). The
    checkpoint part names the weights: the file's sha256, or a random init's seed, which has none."""
    sha = (checkpoint.get("sha256") or "nosha")[:8]
    if checkpoint.get("init_seed"):
        sha += f"-init{checkpoint['init_seed']}"
    tag = f"{checkpoint.get('name') or 'checkpoint'}-{sha}-{protocol}-{dataset}{f'-{key}' if key else ''}-s{seed}"
    return Path(root) / "".join(c if c.isalnum() or c in "-_." else "_" for c in tag)
