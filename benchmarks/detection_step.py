"""Train-step and inference throughput of the torchvision-engine detectors (R50-C4, R50-FPN).

    python -m benchmarks.detection_step                      # CPU (and GPU when available)
    python -m benchmarks.detection_step --size 800 --iters 5 --device cuda --arch resnet50

Prints one line per (model, device): seconds per training iteration (forward, backward, SGD step)
for ``--batch`` images at ``--size`` px short side, training images/s, and inference images/s
(one image per forward, as the evaluation runs). The protocol settings are MoCo's
(``moco-voc-c4-24k`` for C4, ``coco-fpn-1x`` for FPN: 512 RoIs per image, 2000/1000 proposals);
``--roi-batch`` and ``--test-proposals`` lower the RoI counts when a CPU run would take too long
(say so when quoting figures).
Random weights and random images with a few boxes: throughput does not depend on the weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch


def make_batch(n: int, size: int, device, masks: bool):
    g = torch.Generator().manual_seed(0)
    h, w = size, int(size * 4 / 3)
    images = [torch.rand(3, h, w, generator=g).to(device) for _ in range(n)]
    targets = []
    for k in range(n):
        boxes = torch.tensor([[0.1, 0.1, 0.5, 0.6], [0.4, 0.3, 0.9, 0.8], [0.2, 0.5, 0.35, 0.9]]) * torch.tensor([w, h, w, h])
        t = {"boxes": boxes.to(device), "labels": torch.tensor([1, 2, 3], device=device)}
        if masks:
            m = torch.zeros(3, h, w, dtype=torch.uint8)
            for i, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
                m[i, y0:y1, x0:x1] = 1
            t["masks"] = m.to(device)
        targets.append(t)
    return images, targets


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(model_kind: str, args, device) -> dict:
    from mocobench.checkpoints.backbones import build_backbone
    from mocobench.transfer.detection.models import build_detector
    from mocobench.transfer.detection.protocols import PROTOCOLS

    base = PROTOCOLS["moco-voc-c4-24k" if model_kind == "c4" else "coco-fpn-1x"]
    p = dataclasses.replace(base, min_size_train=(args.size,), min_size_test=args.size,
                            max_size_train=2 * args.size, max_size_test=2 * args.size,
                            roi_batch_size_per_image=args.roi_batch or base.roi_batch_size_per_image,
                            rpn_post_nms_top_n_test=args.test_proposals or base.rpn_post_nms_top_n_test)
    torch.manual_seed(0)
    model = build_detector(build_backbone(args.arch, seed=0), 20, p, mask=args.mask).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    images, targets = make_batch(args.batch, args.size, device, args.mask)
    use_bf16 = device.type == "cuda" and not args.fp32
    model.train()
    times, cpu_times = [], []
    for i in range(args.warmup + args.iters):
        sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            losses = model(images, targets)
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
    model.eval()
    eval_times = []
    with torch.no_grad():
        for i in range(args.warmup + args.iters):
            sync(device)
            t0 = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                model([images[i % len(images)]])
            sync(device)
            if i >= args.warmup:
                eval_times.append(time.perf_counter() - t0)
    step = sum(times) / len(times)
    return {"model": f"{args.arch}-{model_kind}{'-mask' if args.mask else ''}", "device": str(device),
            "threads": torch.get_num_threads(), "batch": args.batch, "size": args.size,
            "roi_batch": p.roi_batch_size_per_image, "test_proposals": p.rpn_post_nms_top_n_test, "s_per_iter": step, "train_img_s": args.batch / step,
            "eval_img_s": len(eval_times) / sum(eval_times),
            # CPU seconds of this process per iteration: on a shared, oversubscribed machine the
            # wall-clock figures measure the neighbours; this one does not (1 thread: ~ wall time alone).
            "cpu_s_per_iter": sum(cpu_times) / len(cpu_times)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--models", default="c4,fpn")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--size", type=int, default=512, help="short side in px (MoCo trains at 480-800, tests at 800)")
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--roi-batch", type=int, default=None, help="RoIs per image (protocol: 512)")
    ap.add_argument("--test-proposals", type=int, default=None,
                    help="proposals kept per image at test time (protocol: 1000; C4 runs res5 on each)")
    ap.add_argument("--mask", action="store_true", help="Mask R-CNN instead of Faster R-CNN")
    ap.add_argument("--device", default=None, help="cpu, cuda, or both (default: cpu, plus cuda when available)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--fp32", action="store_true", help="no bf16 autocast on GPU")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        for kind in args.models.split(","):
            r = bench(kind, args, torch.device(dev))
            print(f"{r['model']:>22} {r['device']:>5} threads={r['threads']} batch={r['batch']} size={r['size']} "
                  f"rois/img={r['roi_batch']} test_proposals={r['test_proposals']}: {r['s_per_iter']:.3f} s/iter, train {r['train_img_s']:.2f} img/s, "
                  f"eval {r['eval_img_s']:.2f} img/s (process CPU {r['cpu_s_per_iter']:.2f} s/iter)", flush=True)


if __name__ == "__main__":
    main()
