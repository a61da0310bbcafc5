"""Feature-extraction throughput (img/s) of a frozen backbone: what ``fast`` linear and kNN spend.

    .venv/bin/python -m benchmarks.extract_features                        # ResNet-50, 224 px, CPU (+GPU if any)
    .venv/bin/python -m benchmarks.extract_features --arch resnet18 --img-size 64 --batch-size 64
    .venv/bin/python -m benchmarks.extract_features --data DIR/imagenet/val  # + JPEG decoding through the DataLoader

Variants: fp32 with the default (NCHW) layout and with channels_last, on every device; bf16
autocast with and without channels_last on CUDA only (CPU bf16 is not used by the probes). The
backbone is randomly initialised (no download); the input is random pixels unless ``--data``
names an image folder, in which case the timing includes decoding and resizing as
``mocobench eval`` does (the DataLoader with ``--workers`` workers and pinned memory).
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch


def variants(device: torch.device):
    yield "fp32", False, False
    yield "fp32 channels_last", False, True
    if device.type == "cuda":
        yield "bf16", True, False
        yield "bf16 channels_last", True, True


@torch.no_grad()
def time_random(backbone, device, batch, img_size, iters, warmup, bf16, channels_last) -> float:
    model = backbone.to(device).eval()
    model = model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    x = torch.randn(batch, 3, img_size, img_size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    for _ in range(warmup):
        with ctx():
            model(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        with ctx():
            model(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * iters / (time.perf_counter() - t0)


def time_folder(backbone, device, data, batch, img_size, workers, bf16, channels_last, limit) -> float:
    from torch.utils.data import Subset

    from mocobench.datasets.imagefolder import ImageFolder
    from mocobench.transfer.classification.data import eval_transform, make_loader
    from mocobench.transfer.classification.features import extract_features

    ds = ImageFolder(data, eval_transform(img_size, round(img_size * 256 / 224), backbone.mean, backbone.std))
    if limit:
        ds = Subset(ds, range(min(limit, len(ds))))
    model = backbone.to(device).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loader = make_loader(ds, batch, workers=workers, device=device)
    t0 = time.perf_counter()
    # extract_features uses bf16 + channels_last inputs on CUDA by itself; on CPU neither
    feats, _, _ = extract_features(model, loader, device, desc="extract")
    return len(feats) / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when available")
    p.add_argument("--data", default=None, help="an image folder (one split) to time end to end")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--limit", type=int, default=512, help="images of --data to use")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from mocobench.checkpoints.backbones import build_backbone

    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    print(f"{args.arch} {args.img_size} px, batch {args.batch_size}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads")
    for name in devices:
        device = torch.device(name)
        backbone = build_backbone(args.arch, seed=0)
        label = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        for tag, bf16, cl in variants(device):
            if args.data:
                rate = time_folder(backbone, device, args.data, args.batch_size, args.img_size,
                                   args.workers, bf16, cl, args.limit)
                if device.type == "cuda":
                    tag = "bf16 channels_last (as mocobench eval)"
            else:
                rate = time_random(backbone, device, args.batch_size, args.img_size, args.iters,
                                   args.warmup, bf16, cl)
            print(f"  {label:<24} {tag:<40} {rate:9.1f} img/s")
            if args.data and device.type == "cuda":
                break  # the folder path always runs the eval configuration on CUDA


if __name__ == "__main__":
    main()
