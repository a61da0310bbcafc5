"""Time ``mocobench data synth`` per scale and the Fashion-MNIST export; prints the figures.

    python -m benchmarks.data_synth [--scales tiny small] [--fashion-mnist /usr/share/datasets/fashion-mnist]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scales", nargs="+", default=["tiny", "small"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fashion-mnist", default=None, help="also time the full Fashion-MNIST export from this folder")
    args = p.parse_args()

    from mocobench.datasets.synth import generate

    for scale in args.scales:
        with tempfile.TemporaryDirectory() as tmp:
            cpu0, t0 = time.process_time(), time.perf_counter()
            s = generate(tmp, seed=args.seed, scale=scale, show_progress=False)
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            n = (s["imagenet"]["train"] + s["imagenet"]["val"] + sum(s["voc2007"]["images"][k] for k in ("trainval", "test"))
                 + s["voc2012"]["images"]["trainval"] + s["cityscapes"]["train"] + s["cityscapes"]["val"])
            size = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file())
            print(f"synth {scale:5s}: {wall:6.1f} s wall, {cpu:6.1f} s CPU, {n} scenes, {size / 2**20:.1f} MiB")
    if args.fashion_mnist:
        from mocobench.datasets.fashion_mnist import export_imagefolder

        with tempfile.TemporaryDirectory() as tmp:
            cpu0, t0 = time.process_time(), time.perf_counter()
            counts = export_imagefolder(args.fashion_mnist, tmp)
            print(f"fashion-mnist export: {time.perf_counter() - t0:.1f} s wall, "
                  f"{time.process_time() - cpu0:.1f} s CPU, {counts}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
