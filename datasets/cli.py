"""``mocobench data``: generate the embedded dataset or convert real files to ImageNet layout.

    mocobench data synth --out DIR [--seed N] [--scale tiny|small] [--force]
    mocobench data fashion-mnist --out DIR [--src /usr/share/datasets/fashion-mnist] [--limit-per-class N]
"""

from __future__ import annotations

import argparse
import sys
import time


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mocobench data",
                                description="generate the embedded dataset or convert real files to ImageNet layout")
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("synth", help="write the procedurally generated dataset in the real formats")
    s.add_argument("--out", required=True, help="output folder (created)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--scale", choices=["tiny", "small"], default="small")
    s.add_argument("--force", action="store_true", help="regenerate even if --out holds this dataset")
    f = sub.add_parser("fashion-mnist", help="export Fashion-MNIST's IDX files as ImageNet-layout PNG folders")
    f.add_argument("--out", required=True, help="output folder: OUT/train/<class>/*.png, OUT/val/<class>/*.png")
    f.add_argument("--src", default="/usr/share/datasets/fashion-mnist",
                   help="folder with the four *-ubyte.gz files (Debian package dataset-fashion-mnist)")
    f.add_argument("--limit-per-class", type=int, default=None,
                   help="keep the first N images of each class per split")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.what == "synth":
        from mocobench.datasets.synth import generate

        t0 = time.perf_counter()
        s = generate(args.out, seed=args.seed, scale=args.scale, force=args.force)
        verb = "already there (same seed and scale; --force regenerates)" if s.get("reused") else \
            f"generated in {time.perf_counter() - t0:.1f} s"
        im, cs = s["imagenet"], s["cityscapes"]
        print(f"synth dataset ({args.scale}, seed {args.seed}) {verb}: {s['out_dir']}")
        print(f"  imagenet    {s['out_dir']}/imagenet  {im['classes']} classes, {im['train']} train / "
              f"{im['val']} val, subsets {', '.join(im['subsets'])}")
        print(f"  VOC2007     {s['out_dir']}/VOCdevkit/VOC2007  {s['voc2007']['images']['trainval']} trainval / "
              f"{s['voc2007']['images']['test']} test, {s['voc2007']['objects']} objects")
        print(f"  VOC2012     {s['out_dir']}/VOCdevkit/VOC2012  {s['voc2012']['images']['train']} train / "
              f"{s['voc2012']['images']['val']} val with SegmentationClass")
        print(f"  coco        {s['out_dir']}/coco  " + ", ".join(
            f"{k}: {v['images']} images, {v['annotations']} annotations" for k, v in s["coco"].items()))
        print(f"  cityscapes  {s['out_dir']}/cityscapes  {cs['train']} train / {cs['val']} val")
        return 0
    if args.what == "fashion-mnist":
        from mocobench.datasets.fashion_mnist import export_imagefolder

        t0 = time.perf_counter()
        counts = export_imagefolder(args.src, args.out, limit_per_class=args.limit_per_class)
        print(f"Fashion-MNIST from {args.src} written in {time.perf_counter() - t0:.1f} s to {args.out}: "
              + ", ".join(f"{k} {v}" for k, v in counts.items()))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
