"""``mocobench eval {linear,knn,semi}``: run one classification-transfer evaluation, write one record.

    mocobench eval linear --checkpoint CKPT --data IMAGENET_DIR --results RESULTS [--protocol paper|mocov3-vit|fast|fast-aug]
    mocobench eval knn    --checkpoint CKPT --data IMAGENET_DIR --results RESULTS
    mocobench eval semi   --checkpoint CKPT --data IMAGENET_DIR --labels 10percent --results RESULTS [--protocol simclr|mmselfsup|tiny]

Common options: ``--img-size N`` (crop; the resize keeps the 256/224 ratio), ``--epochs N``,
``--cache-dir`` (fast linear and kNN features), and any field of the protocol's config as
``--key=value`` (``--lr=10``, ``--l2-grid=1e-4,1e-3``, ``--k=10``). ``--seed S``/``--seeds S1 S2 ...``
(one record per seed), ``--work-dir`` (each seed's ``log.txt``), ``--results`` and ``--device``
mean the same in every task (``transfer/run_options.py``).
``--checkpoint random:ARCH[:SEED]`` evaluates a randomly initialised backbone.
``paper`` and ``semi`` run on several GPUs under ``torchrun --nproc_per_node=N -m mocobench eval ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

from mocobench.core.settings import AT_LEAST_0, arg, protocol_and_run, range_of
from mocobench.transfer.classification import protocols as P
from mocobench.transfer.run_options import add_run_options, seeds_of, work_root

SEMI_TASKS = {1: "semi-1pct", 10: "semi-10pct"}


def build_parser(task: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"mocobench eval {task}", allow_abbrev=False,
        description=f"{task} classification transfer; protocols: {', '.join(P.PROTOCOLS[task])} "
                    f"(default {P.DEFAULT_PROTOCOL[task]}). Any config field can be set as --key=value.")
    p.add_argument("--checkpoint", required=True, help="checkpoint file, or random:ARCH[:SEED]")
    p.add_argument("--data", required=True,
                   help="folder with train/ and val/ (ImageNet layout), or the embedded dataset root")
    add_run_options(p, task)  # --results, --seed/--seeds, --work-dir, --device
    p.add_argument("--protocol", default=None)
    p.add_argument("--arch", default=None, help="backbone arch, for files that do not name it")
    p.add_argument("--img-size", type=arg(range_of(P.LinearConfig, "img_size")), default=None,
                   help="crop size (resize scales with it)")
    p.add_argument("--epochs", type=arg(range_of(P.LinearConfig, "epochs")), default=None)
    p.add_argument("--workers", type=arg(range_of(P.LinearConfig, "workers")), default=None)
    p.add_argument("--threads", type=arg(AT_LEAST_0), default=None, help="torch CPU threads")
    p.add_argument("--dataset-name", default=None,
                   help="the record's dataset name for a folder that is not a known dataset (default: "
                        "imagenet for ImageNet's 1000 classes, synth-SCALE for the embedded data, else the "
                        "folder's name); a name that contradicts the data is refused")
    if task in ("linear", "knn"):
        p.add_argument("--cache-dir", default=None,
                       help="feature cache (fast linear, kNN); default $MOCOBENCH_FEATURE_CACHE or "
                            "~/.cache/mocobench/features")
        p.add_argument("--no-cache", action="store_true", help="do not read or write cached features")
    if task == "semi":
        p.add_argument("--labels", required=True,
                       help="subset file (SimCLR 1percent.txt / 10percent.txt or a UniMoCo list), or "
                            "the bare name of one next to train/ and val/ (10percent)")
        p.add_argument("--label-pct", type=int, choices=sorted(SEMI_TASKS), default=None,
                       help="record task semi-1pct / semi-10pct (default: from the file's name or size)")
    return p


def resolve_config(task: str, args, overrides: dict[str, str]):
    from mocobench.core.overrides import with_named

    protocol, preset = P.get_preset(task, args.protocol)
    overrides, _ = with_named(type(preset), overrides, ((f"--{name.replace('_', '-')}", getattr(args, name))
                                                        for name in ("img_size", "epochs", "workers")),
                              owner=f"the {protocol} protocol")
    return protocol, P.apply_overrides(preset, overrides)


def eval_main(task: str, argv: list[str]) -> int:
    from mocobench.transfer import runner

    prog = f"mocobench eval {task}"
    parser = build_parser(task)

    def parse() -> runner.Evaluation:
        from mocobench.core.overrides import split_overrides
        from mocobench.transfer.classification import data as D

        from mocobench.core.overrides import refuse_repeated

        args, rest = parser.parse_known_args(argv)
        refuse_repeated(argv, parser)
        protocol, cfg = resolve_config(task, args, split_overrides(rest))
        seeds = seeds_of(args)
        if len(seeds) > 1 and (why := P.seed_unused(cfg)):
            from mocobench.core.errors import UsageError

            raise UsageError(f"--seeds {' '.join(map(str, seeds))}: the {protocol} protocol does not depend on its "
                             f"seed ({why}), so every seed would write the same numbers and the cell would show a "
                             "spread of 0 that measures nothing; give one --seed")
        if args.threads:
            torch.set_num_threads(args.threads)
        imagenet = D.resolve_imagenet(args.data)
        from mocobench.datasets.identity import checked_name

        dataset = checked_name(args.dataset_name, "imagenet", imagenet)
        settings = {"protocol": protocol, **P.to_dict(cfg), "data": str(imagenet.resolve()), "arch": args.arch,
                    "labels": getattr(args, "labels", None), "label_pct": getattr(args, "label_pct", None)}
        return runner.Evaluation(
            task=task, protocol=protocol, dataset=dataset, settings=settings,
            run=lambda r: run_seed(task, protocol, cfg, args, imagenet, dataset, r),
            checkpoint=args.checkpoint, arch=args.arch, seeds=seeds, results=Path(args.results),
            work_root=work_root(args, task), device=args.device, resume=args.resume, prog=prog,
            preflight=args.preflight, check_only=args.check, branch=args.branch,
            input_convention=args.input_convention, stride_in_1x1=args.stride_in_1x1)

    return runner.main(parse, prog)


def preset_changes(task: str, protocol: str, cfg) -> dict[str, dict]:
    """``run.preset_changes`` of a ``task`` run of ``protocol`` with config ``cfg``
    (:func:`mocobench.core.settings.preset_changes`)."""
    from mocobench.core.settings import preset_changes as changes

    return changes(P.get_preset(task, protocol)[1], cfg)


def over_the_whole_val_set(metrics: dict[str, float], listed: int, unreadable: int) -> dict[str, float]:
    """Top-k accuracies of the readable val images as accuracies over every listed one: an image
    that cannot be read counts as wrong. The official protocols score a fixed val set (ImageNet's
    50,000 images), and an accuracy over fewer could not be set beside anyone else's; detection and
    segmentation score an unreadable test image as missed for the same reason."""
    if not unreadable:
        return metrics
    read = listed - unreadable
    return {k: v * read / listed if k.startswith("top") else v for k, v in metrics.items()}


def run_seed(task: str, protocol: str, cfg, args, imagenet: Path, dataset: str, r):
    """One seed of a classification evaluation (``transfer/runner.py`` calls it): an Outcome on
    rank 0, None on the others."""
    from mocobench.transfer import runner
    from mocobench.transfer.classification import data as D

    world = r.dist.world
    backbone = D.prepare_model(r.backbone, r.device)
    if task == "linear" and protocol in P.FAST_PRESETS:
        metrics, info, splits, skipped, record_task = _run_fast(backbone, r.report, imagenet, cfg, args,
                                                               r.seed, r.device, r.log)
    elif task == "knn":
        metrics, info, splits, skipped, record_task = _run_knn(backbone, r.report, imagenet, cfg, args,
                                                              r.seed, r.device, r.log)
    elif task == "linear":
        metrics, info, splits, skipped, record_task = _run_paper(backbone, imagenet, cfg, r.seed, r.device,
                                                                r.log, world)
    else:
        metrics, info, splits, skipped, record_task = _run_semi(backbone, imagenet, cfg, args, r.seed,
                                                               r.device, r.log, world)
    if not r.dist.main:
        return None
    metrics = over_the_whole_val_set(metrics, splits["val"], skipped["val"])
    protocol_fields, run_settings = protocol_and_run(cfg)
    # of what the probe reports, the settings the data gave it (which label list); the rest (the
    # lr it trained at after scaling, sweep choices, cache hits, timings, paths) is what this run
    # measured: the config stays the protocol as given, so that it runs again as it says
    derived = {k: info.pop(k) for k in ("labels_sha256", "label_pct") if k in info}
    config = {"protocol": protocol, **protocol_fields, "resize": P.resize_for(cfg), **derived}
    run = {**run_settings, "checkpoint_arg": str(args.checkpoint), "world_size": world, **info,
           "preset_changes": preset_changes(task, protocol, cfg)}
    return runner.Outcome(metrics=metrics, dataset=D.dataset_fields(dataset, imagenet, splits, skipped),
                          config=config, run=run, task=record_task)


# -- one function per protocol family ---------------------------------------------------------
def _datasets(imagenet: Path, train_tf, val_tf):
    from mocobench.datasets.imagefolder import ImageFolder

    train = ImageFolder(imagenet / "train", train_tf)
    val = ImageFolder(imagenet / "val", val_tf, classes=train.classes)
    return train, val


def _features(backbone, report, imagenet, cfg, args, seed, device, log, aug_views: int = 0):
    """Centre-crop train/val features (+ augmented train views), through the cache."""
    from mocobench.transfer.classification import data as D
    from mocobench.transfer.classification.features import (cache_key, cached_features, checkpoint_identity,
                                                  default_cache_dir, extract_features)

    mean, std = backbone.mean, backbone.std
    resize = P.resize_for(cfg)
    eval_tf = D.eval_transform(cfg.img_size, resize, mean, std)
    train, val = _datasets(imagenet, eval_tf, eval_tf)
    cache_dir = None if args.no_cache else Path(args.cache_dir or default_cache_dir())
    ckpt = checkpoint_identity(report, backbone)
    base_tf = {"img_size": cfg.img_size, "resize": resize, "mean": list(mean), "std": list(std)}
    hits = {}

    def get(ds, name, tf_desc, seed=None):
        def compute():
            if seed is not None:
                torch.manual_seed(seed)
            loader = D.make_loader(ds, cfg.batch_size, workers=cfg.workers, device=device,
                                   seed=seed or 0)
            return extract_features(backbone, loader, device, desc=f"features {name}")
        key = cache_key(ckpt, ds, tf_desc)
        f, y, s, hit = cached_features(cache_dir, key, compute, log=log)
        hits[name] = hit
        return f, y, s

    train_f, train_y, train_s = get(train, "train", {**base_tf, "kind": "center"})
    val_f, val_y, val_s = get(val, "val", {**base_tf, "kind": "center"})
    views = [train_f]
    if aug_views:
        from mocobench.datasets.imagefolder import ImageFolder

        aug = ImageFolder(imagenet / "train", D.train_transform(cfg.img_size, mean, std))
        for v in range(aug_views):
            view_seed = seed * 1000 + v
            f, y, _ = get(D.SeededViews(aug, view_seed), f"train-aug{v}",
                          {**base_tf, "kind": "rrc-flip", "view": v, "seed": view_seed}, seed=view_seed)
            if not torch.equal(y, train_y):
                raise RuntimeError("augmented views do not align with the centre-crop features")
            views.append(f)
    splits = {"train": len(train), "val": len(val)}
    skipped = {"train": train_s, "val": val_s}
    info = {"cache_hits": hits, "cache_dir": str(cache_dir) if cache_dir else None,
            "feature_dim": int(train_f.shape[1])}
    return views, train_y, val_f, val_y, len(train.classes), splits, skipped, info


def _run_fast(backbone, report, imagenet, cfg, args, seed, device, log):
    from mocobench.transfer.classification.linear import fast_linear_probe

    views, train_y, val_f, val_y, C, splits, skipped, info = _features(
        backbone, report, imagenet, cfg, args, seed, device, log, aug_views=cfg.aug_views)
    metrics, fit_info = fast_linear_probe(views, train_y, val_f, val_y, C, cfg, device,
                                          seed=seed, log=log)
    return metrics, {**info, **fit_info}, splits, skipped, "linear"


def _run_knn(backbone, report, imagenet, cfg, args, seed, device, log):
    from mocobench.transfer.classification.knn import knn_accuracy

    views, train_y, val_f, val_y, C, splits, skipped, info = _features(
        backbone, report, imagenet, cfg, args, seed, device, log)
    metrics = knn_accuracy(views[0].to(device), train_y, val_f.to(device), val_y, C, k=cfg.k, T=cfg.T,
                           test_chunk=cfg.test_chunk, train_chunk=cfg.train_chunk)
    return metrics, info, splits, skipped, "knn"


def _run_paper(backbone, imagenet, cfg, seed, device, log, world):
    from torch.utils.data import DistributedSampler

    from mocobench.transfer.classification import data as D
    from mocobench.transfer.classification.linear import train_linear_paper

    train, val = _datasets(imagenet, D.train_transform(cfg.img_size, backbone.mean, backbone.std),
                           D.eval_transform(cfg.img_size, P.resize_for(cfg), backbone.mean, backbone.std))
    if cfg.batch_size % world:
        raise ValueError(f"batch size {cfg.batch_size} is not divisible by {world} processes")
    per_rank = cfg.batch_size // world
    sampler = DistributedSampler(train, shuffle=True, seed=seed) if world > 1 else None
    train_loader = D.make_loader(train, per_rank, shuffle=True, workers=cfg.workers, device=device,
                                 sampler=sampler, seed=seed)
    val_loader = D.make_loader(D.eval_subset(val), per_rank, workers=cfg.workers, device=device)
    metrics, info = train_linear_paper(backbone, train_loader, val_loader, len(train.classes), cfg,
                                       device, sampler=sampler, log=log)
    skipped = info.pop("unreadable")
    return metrics, info, {"train": len(train), "val": len(val)}, skipped, "linear"


def _run_semi(backbone, imagenet, cfg, args, seed, device, log, world):
    from mocobench.datasets.imagefolder import ImageFolder
    from mocobench.transfer.classification import data as D
    from mocobench.transfer.classification.semi import semi_supervised

    labels = D.resolve_labels(args.labels, imagenet)
    train_tf = D.train_transform(cfg.img_size, backbone.mean, backbone.std)
    eval_tf = D.eval_transform(cfg.img_size, P.resize_for(cfg), backbone.mean, backbone.std)
    full_train = ImageFolder(imagenet / "train")
    lab_train = ImageFolder(imagenet / "train", train_tf, subset=labels, classes=full_train.classes)
    lab_eval = ImageFolder(imagenet / "train", eval_tf, subset=labels, classes=full_train.classes)
    val = ImageFolder(imagenet / "val", eval_tf, classes=full_train.classes)
    pct = label_pct(labels, len(lab_train), len(full_train), args.label_pct)
    missing = sorted(set(range(len(full_train.classes))) - set(lab_train.targets))
    if missing:
        raise ValueError(f"{labels}: labels no image of {len(missing)} of the {len(full_train.classes)} classes "
                         f"(e.g. {', '.join(full_train.classes[i] for i in missing[:5])}); a semi-supervised "
                         "subset has every class")
    if cfg.batch_size % world:
        raise ValueError(f"batch size {cfg.batch_size} is not divisible by {world} processes")
    cfg_rank = dataclasses.replace(cfg, batch_size=cfg.batch_size // world) if world > 1 else cfg
    metrics, info = semi_supervised(backbone, lab_train, lab_eval, val, len(full_train.classes),
                                    cfg_rank, pct, device, seed=seed, log=log)
    skipped = info.pop("unreadable")
    info["labels"] = str(labels)
    from mocobench.core.io import sha256_file

    info["labels_sha256"] = sha256_file(labels)   # which list ran: SimCLR's released ones, or another
    info["label_pct"] = pct
    return metrics, info, {"train": len(full_train), "train_labelled": len(lab_train),
                           "val": len(val)}, skipped, SEMI_TASKS[pct]


def label_pct(labels: Path, n_labelled: int, n_train: int, given: int | None = None) -> int:
    """1 or 10, stated by ``--label-pct`` (``given``) or the file name (``1percent``, ``10percent``), or
    else read from the subset's size; a stated fraction is checked against the size (within half of
    it either way), and a file name and ``--label-pct`` that disagree are refused, naming both."""
    name = labels.name.lower()
    named = next((pct for pct in (10, 1) if name.startswith(f"{pct}percent") or name.startswith(f"{pct}pct")), None)
    if given and named and given != named:
        raise ValueError(f"--label-pct {given} contradicts the labels file {labels} (a {named} % list by its name)")
    frac = 100.0 * n_labelled / n_train
    stated = given or named
    if stated is None:
        stated = next((pct for pct in (1, 10) if 0.5 * pct <= frac <= 1.5 * pct), None)
        if stated is None:
            raise ValueError(f"{labels}: {n_labelled} of {n_train} train images ({frac:.1f} %) is neither a "
                             f"1 % nor a 10 % subset; records exist for semi-1pct and semi-10pct only")
    elif not 0.5 * stated <= frac <= 1.5 * stated:
        raise ValueError(f"{labels}: {n_labelled} of {n_train} train images ({frac:.1f} %) is not a {stated} % "
                         f"subset (stated by {'--label-pct' if given else 'its name'})")
    return stated


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in P.PROTOCOLS:
        print(f"usage: python -m mocobench.transfer.classification {{{','.join(P.PROTOCOLS)}}} [options]",
              file=sys.stderr)
        return 2
    return eval_main(argv[0], argv[1:])
