"""``mocobench preflight CKPT --data DIR``: is this backbone worth hours of evaluation? Exit 0
healthy, 3 collapsed or like random init (0 with ``--force``), 1 on an error, 2 on usage.

A backbone can load cleanly and still be useless: collapsed (every image gives nearly the same
feature) or effectively untrained (the wrong branch, a file saved before training). Both have been
found hours into a linear probe. This reads a few hundred images of the user's own data (a class-
stratified subset of ``train/``), computes the backbone's features and those of a random
initialisation of the same architecture on the same images, and compares:

- per-dimension feature std (its mean over dimensions) and the share of dead dimensions (std below
  1e-6 of the largest dimension's);
- effective rank: ``exp(entropy(s / sum(s)))`` of the singular values ``s`` of the centred
  features (Roy & Vetterli, 2007): 1 when all images sit on one line;
- mean cosine similarity of random pairs of images' (uncentred) features;
- a kNN top-1 (k = 20, T = 0.07, DINO's weighted vote) from one half of the subset to the other.

Verdict: ``collapsed`` when the effective rank is below 2, the mean cosine above 0.9999 (every pair
of images nearly the same feature; a random ReLU network's is 0.95-0.996 already) or more than 90 %
of dimensions are dead; ``looks like random init`` when its kNN top-1 does not beat the better of two
random initialisations (seeds 1234 and 4321 after ``--seed``) by more than ``max(3 points, 2 standard
errors)`` of a binomial with the query count; else ``healthy``. The thresholds are stated here and in
every report, not tuned per run.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

KNN_K, KNN_T = 20, 0.07
MIN_RANK, MAX_COSINE, MAX_DEAD = 2.0, 0.9999, 0.9
RANDOM_SEEDS = (1234, 4321)   # two random initialisations: their kNN varies by several points on a few hundred images
VERDICTS = ("healthy", "looks like random init", "collapsed")


def stratified(targets: list[int], n: int, seed: int) -> list[int]:
    """About ``n`` indices, the same number per class (at least 2 where a class has them), drawn with
    ``seed``; in dataset order."""
    by_class: dict[int, list[int]] = {}
    for i, t in enumerate(targets):
        by_class.setdefault(t, []).append(i)
    per = max(2, n // max(1, len(by_class)))
    rng = np.random.default_rng(seed)
    chosen = []
    for label in sorted(by_class):
        idx = by_class[label]
        chosen += [idx[j] for j in rng.choice(len(idx), size=min(per, len(idx)), replace=False)]
    return sorted(chosen)


def figures(features: torch.Tensor, labels: torch.Tensor, num_classes: int, seed: int) -> dict[str, float]:
    """The pre-flight's figures of one backbone's ``N x D`` features of the subset."""
    from mocobench.transfer.classification.knn import knn_accuracy

    f = features.double()
    std = f.std(dim=0)
    dead = float((std <= 1e-6 * max(float(std.max()), 1e-30)).double().mean())
    centred = f - f.mean(dim=0)
    s = torch.linalg.svdvals(centred)
    total = float(s.sum())
    if total <= 0 or not math.isfinite(total):
        rank = 0.0
    else:
        p = s / total
        p = p[p > 0]
        rank = float(torch.exp(-(p * p.log()).sum()))
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randint(0, len(f), (2, 2048), generator=g)
    keep = a != b
    unit = torch.nn.functional.normalize(f, dim=1)
    cosine = float((unit[a[keep]] * unit[b[keep]]).sum(1).mean())
    # kNN from one half of the subset to the other (alternate images of each class)
    order = torch.argsort(labels, stable=True)
    bank, query = order[0::2], order[1::2]
    knn = knn_accuracy(features[bank], labels[bank], features[query], labels[query], num_classes,
                       k=KNN_K, T=KNN_T)["top1"]
    return {"feature_std": float(std.mean()), "dead_units": dead, "effective_rank": rank,
            "mean_cosine": cosine, "knn_top1": float(knn), "n_query": int(len(query))}


def verdict(mine: dict, random: dict) -> tuple[str, str]:
    """``(verdict, why)`` from the checkpoint's figures and its random initialisation's (the better
    of the random initialisations by kNN)."""
    if mine["effective_rank"] < MIN_RANK or mine["mean_cosine"] > MAX_COSINE or mine["dead_units"] > MAX_DEAD:
        return "collapsed", (f"effective rank {mine['effective_rank']:.2f} (< {MIN_RANK:g} is collapsed), mean cosine "
                             f"{mine['mean_cosine']:.3f} (> {MAX_COSINE:g}), dead units {mine['dead_units']:.0%} "
                             f"(> {MAX_DEAD:.0%})")
    p = max(min(random["knn_top1"] / 100, 0.99), 0.01)
    se = 100 * math.sqrt(p * (1 - p) / max(mine["n_query"], 1))
    margin = max(3.0, 2 * se)
    gain = mine["knn_top1"] - random["knn_top1"]
    if gain <= margin:
        return "looks like random init", (f"kNN top-1 {mine['knn_top1']:.1f} against the random initialisation's "
                                          f"{random['knn_top1']:.1f}: {gain:+.1f}, not more than the margin {margin:.1f}")
    return "healthy", (f"kNN top-1 {mine['knn_top1']:.1f} against the random initialisation's "
                       f"{random['knn_top1']:.1f} (+{gain:.1f} > margin {margin:.1f}); effective rank "
                       f"{mine['effective_rank']:.1f}, mean cosine {mine['mean_cosine']:.3f}")


def run_preflight(checkpoint: str, data: str | Path, *, n: int = 256, img_size: int | None = None,
                  seed: int = 0, device: str | None = None, arch: str | None = None, branch: str | None = None,
                  input_convention: str | None = None, stride_in_1x1: bool | None = None) -> dict:
    """The pre-flight report of ``checkpoint`` on the ImageNet-layout folder ``data``; ``branch``,
    ``input_convention`` and ``stride_in_1x1`` go to the loader."""
    from mocobench.checkpoints.load import load_backbone
    from mocobench.core.dist import pick_device
    from mocobench.datasets.imagefolder import ImageFolder
    from mocobench.transfer.classification import data as D
    from mocobench.transfer.classification.features import extract_features

    t0 = time.perf_counter()
    dev = pick_device(device)
    backbone, report = load_backbone(checkpoint, arch=arch, branch=branch, input_convention=input_convention,
                                     stride_in_1x1=stride_in_1x1)
    randoms = [f"random:{report.arch}:{seed + s}" for s in RANDOM_SEEDS]   # not the seed of a random:ARCH checked
    imagenet = D.resolve_imagenet(data)
    size = img_size or (backbone.spec.img_size or 224)
    out = {"checkpoint": str(checkpoint), "sha256": report.sha256, "arch": report.arch, "format": report.format,
           "data": str(imagenet / "train"), "img_size": size, "seed": seed, "random_baselines": randoms}
    results = {}
    # the random initialisations of the same network: a stride-in-1x1 ResNet's are built so too
    same = {"stride_in_1x1": True} if backbone.spec.stride_in_1x1 else {}
    nets = [("checkpoint", backbone)] + [(f"random_init_{i + 1}", load_backbone(r, **same)[0])
                                         for i, r in enumerate(randoms)]
    ds = ImageFolder(imagenet / "train")   # the folder is listed once; each net gets its own normalisation
    subset = torch.utils.data.Subset(ds, stratified(ds.targets, n, seed))
    for name, net in nets:
        ds.transform = D.eval_transform(size, round(size * 256 / 224), net.mean, net.std)
        loader = D.make_loader(subset, 64, device=dev)
        f, y, skipped = extract_features(D.prepare_model(net, dev), loader, dev, desc=f"preflight {name}")
        results[name] = figures(f, y, len(ds.classes), seed) | {"unreadable": int(skipped)}
    out["figures"] = results
    best_random = max((f for name, f in results.items() if name != "checkpoint"), key=lambda f: f["knn_top1"])
    out["verdict"], out["why"] = verdict(results["checkpoint"], best_random)
    out["thresholds"] = {"min_effective_rank": MIN_RANK, "max_mean_cosine": MAX_COSINE, "max_dead_units": MAX_DEAD,
                         "knn_margin": "max(3 points, 2 binomial standard errors)", "knn_k": KNN_K, "knn_T": KNN_T}
    out["n_images"] = len(subset)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def describe(report: dict) -> str:
    lines = [f"pre-flight of {report['checkpoint']} ({report['format']}, {report['arch']}) on {report['n_images']} "
             f"images of {report['data']} at {report['img_size']} px, in {report['seconds']} s:"]
    lines.append(f"  {'':<13} {'feature std':>11} {'dead':>6} {'eff. rank':>9} {'mean cos':>8} {'kNN top-1':>9}")
    for name, f in report["figures"].items():
        lines.append(f"  {name:<13} {f['feature_std']:>11.3g} {f['dead_units']:>6.0%} {f['effective_rank']:>9.1f} "
                     f"{f['mean_cosine']:>8.3f} {f['knn_top1']:>9.1f}")
    lines.append(f"verdict: {report['verdict']} ({report['why']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from mocobench.transfer.run_options import true_or_false

    p = argparse.ArgumentParser(prog="mocobench preflight", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="checkpoint file, zoo name or random:ARCH")
    p.add_argument("--data", required=True, help="ImageNet-layout folder (train/<class>/...) or the embedded data root")
    p.add_argument("-n", "--images", type=int, default=256, help="images of the stratified subset (default 256)")
    p.add_argument("--img-size", type=int, default=None, help="crop size (default: the backbone's, else 224)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arch", default=None)
    p.add_argument("--branch", choices=("raw", "ema"), default=None)
    p.add_argument("--input-convention", choices=("rgb", "bgr255"), default=None)
    p.add_argument("--stride-in-1x1", type=true_or_false, default=None, metavar="true|false",
                   help="a ResNet-50 or deeper: the stride in the 1x1 conv (MSRA) or not, where the file does not say")
    p.add_argument("--device", default=None)
    p.add_argument("--json", dest="json_out", help="also write the report here (atomically)")
    p.add_argument("--force", action="store_true",
                   help="exit 0 whatever the verdict (the report says it was forced); what the pipeline's "
                        "--force passes on")
    args = p.parse_args(argv)
    if args.images < 8:
        p.error(f"-n {args.images}: the pre-flight needs at least 8 images")
    report = run_preflight(args.checkpoint, args.data, n=args.images, img_size=args.img_size, seed=args.seed,
                           device=args.device, arch=args.arch, branch=args.branch,
                           input_convention=args.input_convention, stride_in_1x1=args.stride_in_1x1)
    report["forced"] = bool(args.force and report["verdict"] != "healthy")
    print(describe(report) + ("\n--force: going on anyway; the records will say so" if report["forced"] else ""))
    if args.json_out:
        from mocobench.core.io import atomic_write_json

        atomic_write_json(args.json_out, report)
    if report["verdict"] != "healthy" and not args.force:
        print(f"mocobench preflight: {report['checkpoint']} {report['verdict']}: stopping before any long run "
              "(--force to go on)", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
