"""Segmentation train-step and inference throughput (img/s) at Cityscapes resolution.

    .venv/bin/python -m benchmarks.segmentation_step                      # R50 FCN, 512x1024, CPU (+GPU if any)
    .venv/bin/python -m benchmarks.segmentation_step --arch resnet18 --head deeplabv3 --size 769,769

A train step is forward + cross-entropy + backward + SGD step on a batch of random crops (the
model is the MoCo FCN on a dilated backbone, output stride 16); inference is a whole-image
forward + argmax. On GPU both run under bf16 autocast, as the trainer does.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.nn.functional as F


def bench(device: torch.device, arch: str, head: str, size, batch: int, steps: int, warmup: int) -> dict:
    from mocobench.core.precision import evaluation_autocast as autocast
    from mocobench.transfer.segmentation.model import build_model

    model, _ = build_model(f"random:{arch}", head, 19)
    model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 3, *size, device=device)
    y = torch.randint(0, 19, (batch, *size), device=device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def train_step():
        with autocast(device):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, ignore_index=255)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @torch.no_grad()
    def infer_step():
        with autocast(device):
            model(x).argmax(1)

    out = {}
    for name, fn, mode in (("train", train_step, True), ("inference", infer_step, False)):
        model.train(mode)
        for _ in range(warmup):
            fn()
        sync()
        t = time.perf_counter()
        for _ in range(steps):
            fn()
        sync()
        dt = time.perf_counter() - t
        out[f"{name}_img_per_s"] = round(batch * steps / dt, 3)
        out[f"{name}_s_per_step"] = round(dt / steps, 3)
    if device.type == "cuda":
        out["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--head", default="fcn", choices=["fcn", "deeplabv3"])
    ap.add_argument("--size", default="512,1024", help="H,W")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--gpu-batch", type=int, default=8)
    ap.add_argument("--gpu-steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--devices", default="auto", help="cpu, cuda, or auto (cpu, plus cuda when available)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    size = tuple(int(v) for v in args.size.replace("x", ",").split(","))
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.devices == "auto" else [args.devices]
    for dev in devices:
        gpu = dev.startswith("cuda")
        batch, steps = (args.gpu_batch, args.gpu_steps) if gpu else (args.batch, args.steps)
        res = bench(torch.device(dev), args.arch, args.head, size, batch, steps, args.warmup if not gpu else 3)
        name = torch.cuda.get_device_name() if gpu else f"cpu x{args.threads} threads"
        print(json.dumps({"device": name, "arch": args.arch, "head": args.head, "size": list(size),
                          "batch": batch, "steps": steps, "dtype": "bf16-autocast" if gpu else "fp32", **res}))


if __name__ == "__main__":
    main()
