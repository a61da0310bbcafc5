"""Host calls and ms per batch of the device input path's views (``pretrain/gpu_augment.py``), on any device.

    python -m benchmarks.input_host_calls [--batch 256] [--size 224] [--device cpu] [--methods moco_v2 smog]

For one batch of random uint8 images (300-420 x 380-480 px, decoded already): the parameter draws and
every view of the method's augmentation, as ``DeviceViews`` makes them. Prints the top-level ATen calls
(each one a call the host issues), every ATen call (nested ones too; on a CPU ``to_padded_tensor`` copies
image by image, which a GPU does in one kernel, so the nested count is the CPU's) and the wall ms per
batch (one thread on a CPU; synchronised on a GPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch


def measure(method: str, batch: int, size: int, device: torch.device, repeats: int = 2, draws: int = 200) -> dict:
    from torch.profiler import ProfilerActivity, profile

    from mocobench.pretrain import gpu_augment as ga
    from mocobench.pretrain.config import DEFAULT_PRESET, PRESETS

    cfg = dataclasses.replace(PRESETS[DEFAULT_PRESET[method]], img_size=size)
    specs = ga.view_specs(cfg)
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 300 + (i * 7) % 120, 380 + (i * 13) % 100), generator=g,
                            dtype=torch.uint8).to(device) for i in range(batch)]

    def views(seed: int):
        out = ga.apply_views(images, specs, seed)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out

    views(0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        views(1)
    events = prof.events()
    t = time.perf_counter()
    for r in range(repeats):
        views(2 + r)
    ms = (time.perf_counter() - t) / repeats * 1e3
    # the host's own part: every view group's draws and colour-jitter plan (NumPy), no pixels
    heights, widths = [img.shape[-2] for img in images], [img.shape[-1] for img in images]
    t = time.perf_counter()
    for r in range(draws):
        rng = ga.rng_of(r)
        for members in ga.view_groups(specs):
            p = ga.draw_params([specs[i] for i in members], heights, widths, rng)
            ga.jitter_plan(p.factors, p.order, p.jitter)
    return {"method": method, "views": len(specs), "top_level_calls": sum(1 for e in events if e.cpu_parent is None),
            "all_calls": len(events), "ms_per_batch": ms, "draws_ms_per_batch": (time.perf_counter() - t) / draws * 1e3}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--methods", nargs="+", default=["moco_v2", "smog"])
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    print(f"batch {args.batch} at {args.size} px on {device}")
    for method in args.methods:
        r = measure(method, args.batch, args.size, device)
        print(f"  {r['method']:8s} {r['views']} views: {r['top_level_calls']:5d} top-level host calls, "
              f"{r['all_calls']:6d} calls in all, {r['ms_per_batch']:8.1f} ms per batch; draws and jitter plan "
              f"{r['draws_ms_per_batch']:.3f} ms per batch")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
