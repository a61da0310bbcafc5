"""The momentum encoder's update (``pretrain/moco.py: momentum_update``) against the official loop, on any device.

    python -m benchmarks.momentum_update [--archs resnet50 timm:vit_small_patch16_224] [--device cpu] [--repeats 20]

θk ← m·θk + (1−m)·θq over every parameter of the encoder: the official code loops over the
parameters (``p_k.mul_(m).add_(p_q, alpha=1-m)``, two calls each); ours issues two multi-tensor
calls for all of them (on a GPU a few kernel launches). Prints, per architecture, the parameter
count, the top-level ATen calls the host issues for one update, and ms per update (one thread on a
CPU; synchronised on a GPU), for both, and checks that they give the same tensors.
"""

from __future__ import annotations

import argparse
import copy

import torch

from benchmarks.timing import timed


def official_loop(online: torch.nn.Module, momentum: torch.nn.Module, m: float) -> None:
    with torch.no_grad():
        for p_q, p_k in zip(online.parameters(), momentum.parameters()):
            p_k.mul_(m).add_(p_q.detach(), alpha=1.0 - m)


def measure(arch: str, device: torch.device, repeats: int) -> dict:
    from torch.profiler import ProfilerActivity, profile

    from mocobench.checkpoints.backbones import build_classifier_model
    from mocobench.pretrain.moco import momentum_update

    torch.manual_seed(0)
    online = build_classifier_model(arch, num_classes=128).to(device)   # the encoder MoCo builds
    momentum = copy.deepcopy(online)
    with torch.no_grad():
        for p in online.parameters():
            p.add_(0.01 * torch.randn_like(p))
    start = copy.deepcopy(momentum.state_dict())
    row: dict = {"arch": arch, "parameters": len(list(online.parameters()))}
    results = {}
    for name, update in (("loop", official_loop), ("ours", momentum_update)):
        momentum.load_state_dict(start)
        update(online, momentum, 0.999)
        results[name] = [p.detach().clone() for p in momentum.parameters()]
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            update(online, momentum, 0.999)
        row[f"{name}_calls"] = sum(1 for e in prof.events() if e.cpu_parent is None and e.name.startswith("aten::"))
        rate = timed(lambda: update(online, momentum, 0.999), warmup=0, iters=repeats, device=device,
                     images_per_iter=1)
        row[f"{name}_ms"] = 1e3 / rate["it_s"]
    row["max_abs_difference"] = max(float((a - b).abs().max()) for a, b in zip(results["loop"], results["ours"]))
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", nargs="+", default=["resnet50", "timm:vit_small_patch16_224"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    print(f"momentum update on {device}, mean of {args.repeats}")
    for arch in args.archs:
        r = measure(arch, device, args.repeats)
        print(f"  {r['arch']:28s} {r['parameters']:4d} parameters: official loop {r['loop_calls']:4d} calls "
              f"{r['loop_ms']:8.2f} ms; ours {r['ours_calls']:2d} calls {r['ours_ms']:8.2f} ms; "
              f"largest difference {r['max_abs_difference']:.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
