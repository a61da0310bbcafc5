"""Pretraining throughput (images/s) per method: the training loop's step with fast paths against the
same step in plain fp32 eager, on random views (the model step, not the input path).

    python -m benchmarks.pretrain_throughput --arch resnet18 --img-size 64 --batch 64 --device cpu
    python -m benchmarks.pretrain_throughput --arch resnet50 --img-size 224 --batch 256 --device cuda \\
        --precision bf16 --channels-last --compile step

Both columns run the device check's model step (``benchmarks.device_check.build_step``:
``pretrain.fast_paths.TrainStep``, forward with the momentum update, backward, the optimizer step with
the queue / group writes, on unlabeled random views); "fast" with the options given, "fp32 eager" with
every fast path off. The options take effect on any device; on most CPUs bf16 and channels_last are slower.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from benchmarks.device_check import build_step
from benchmarks.timing import timed
from mocobench.pretrain import fast_paths
from mocobench.pretrain.config import TINY
from mocobench.pretrain.methods import METHODS


def measure(cfg, batch: int, steps: int, warmup: int) -> float:
    device = torch.device(cfg.device)
    return timed(build_step(cfg, batch, device), warmup, steps, device, batch)["img_s"]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (a compile happens in them)")
    p.add_argument("--K", type=int, default=65536)
    p.add_argument("--precision", choices=("bf16", "fp32"), default="fp32")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", choices=fast_paths.COMPILE, default="off")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    fast = dict(precision=args.precision, channels_last=args.channels_last, compile=args.compile)
    print(f"device {args.device}, arch {args.arch}, {args.img_size} px, batch {args.batch}, K {args.K}, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}; fast: {fast}")
    print(f"{'method':<10} {'fast img/s':>11} {'fp32 eager img/s':>17} {'ratio':>6}")
    for name in args.methods.split(","):
        big = args.img_size >= 224
        cfg = dataclasses.replace(TINY[name], arch=args.arch, img_size=args.img_size, K=args.K, device=args.device,
                                  n_groups=3000 if big else TINY[name].n_groups,
                                  hidden_dim=2048 if big else TINY[name].hidden_dim)
        ours = measure(dataclasses.replace(cfg, **fast), args.batch, args.steps, args.warmup)
        plain = measure(dataclasses.replace(cfg, precision="fp32", channels_last=False, compile="off"),
                        args.batch, args.steps, args.warmup)
        print(f"{name:<10} {ours:>11.1f} {plain:>17.1f} {ours / plain:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
