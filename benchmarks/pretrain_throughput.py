"""Pretraining throughput (images/s) per method: our step with its fast paths vs plain fp32 eager.

    python -m benchmarks.pretrain_throughput --arch resnet18 --img-size 64 --batch 64 --device cpu
    python -m benchmarks.pretrain_throughput --arch resnet50 --img-size 224 --batch 256 --device cuda --compile

"ours" is the training loop's step (forward incl. momentum update and queue/group updates,
backward, SGD step) with bf16 autocast + channels_last (+ torch.compile with --compile) on GPU;
"fp32 eager" is the same step with every fast path off. Inputs are random tensors, so the figures
measure the model step, not image decoding. On CPU both columns run the same fp32 eager code
(the fast paths are GPU-only), so the ratio is ~1.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from contextlib import nullcontext

import torch

from mocobench.pretrain.config import TINY
from mocobench.pretrain.methods import METHODS


def measure(cfg, device: str, batch: int, steps: int, warmup: int, fast: bool, compile_: bool) -> float:
    torch.manual_seed(0)
    method = METHODS[cfg.method]
    model = method.build(cfg).to(device)
    on_gpu = device.startswith("cuda")
    memory_format = torch.channels_last if fast and on_gpu else torch.contiguous_format
    model.to(memory_format=memory_format)
    if fast and compile_ and on_gpu:
        for child in model.children():
            child.compile()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if fast and on_gpu else nullcontext()
    n_views = 2 + (cfg.local_crops if cfg.method == "smog" else 0)
    views = [torch.randn(batch, 3, cfg.img_size, cfg.img_size, device=device).contiguous(memory_format=memory_format)
             for _ in range(2)]
    views += [torch.randn(batch, 3, cfg.local_size, cfg.local_size, device=device) for _ in range(n_views - 2)]
    labels = torch.randint(-1, 10, (batch,), device=device)

    def step():
        with autocast:
            loss = method.train_step(model, views, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if on_gpu:
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if on_gpu:
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--K", type=int, default=65536)
    p.add_argument("--compile", action="store_true", help="also torch.compile the encoders (GPU)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device {args.device}, arch {args.arch}, {args.img_size} px, batch {args.batch}, "
          f"K {args.K}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{'method':<10} {'ours img/s':>11} {'fp32 eager img/s':>17} {'ratio':>6}")
    for name in args.methods.split(","):
        cfg = dataclasses.replace(TINY[name], arch=args.arch, img_size=args.img_size, K=args.K,
                                  n_groups=3000 if args.img_size >= 224 else TINY[name].n_groups,
                                  hidden_dim=2048 if args.img_size >= 224 else TINY[name].hidden_dim)
        ours = measure(cfg, args.device, args.batch, args.steps, args.warmup, fast=True, compile_=args.compile)
        plain = measure(cfg, args.device, args.batch, args.steps, args.warmup, fast=False, compile_=False)
        print(f"{name:<10} {ours:>11.1f} {plain:>17.1f} {ours / plain:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
