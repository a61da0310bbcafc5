"""What ``--dry-run`` knows before any GPU is rented: every stage's command checked in this process,
and the GPU-hours each would take.

A stage's command is parsed and checked as it would be when it runs (``mocobench eval ... --check``,
the pretraining preset resolved with its overrides), so a bad ``--eval-arg`` or protocol override
fails in the dry run, not hours later.

The projection divides the images a stage processes by a throughput the device check measured on
one H200 (``docs/gpu/h200-*.json``, the later file's figure where both have one; end to end where it
was measured, else the model step),
so a figure is GPU-hours of that GPU whatever the number of GPUs (which divides the wall time, not
the GPU-hours, at perfect scaling). Stages with no measured throughput say so instead of guessing.
"""

from __future__ import annotations

import contextlib
import io
import json
from functools import lru_cache
from pathlib import Path

MEASURED = Path(__file__).resolve().parent.parent / "docs" / "gpu"
IMAGENET_TRAIN = 1_281_167
IMAGENET_VAL = 50_000


def check(argv: list[str]) -> str | None:
    """None when the stage's command ``mocobench ARGV`` parses and checks; else its message."""
    if argv[0] == "pretrain":
        from mocobench.pretrain.cli import resolve

        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                resolve(argv[1:])
            except ValueError as e:
                return str(e)
            except SystemExit:   # argparse
                return (err.getvalue().strip().splitlines() or ["the pretraining command does not parse"])[-1]
        return None
    if argv[0] != "eval":
        return None
    from mocobench.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main([*argv, "--check"])
        except SystemExit as e:   # argparse
            rc = e.code
    return None if rc == 0 else (err.getvalue().strip().splitlines() or [f"exit {rc}"])[-1]


@lru_cache(maxsize=1)
def _rates() -> dict[tuple[str, str, str], float]:
    """``(section, method, variant) -> img/s`` of the device check's H200 file (none when this install
    has no docs/, as a wheel has not)."""
    rates = {}
    for path in sorted(MEASURED.glob("h200-*.json")) if MEASURED.is_dir() else []:
        rows = json.loads(path.read_text())["rows"]
        rates.update({(r["section"], r["method"], r["variant"]): float(r["img_s"]) for r in rows if r.get("img_s")})
    return rates


def _arg(argv: list[str], name: str) -> str | None:
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def gpu_hours(argv: list[str]) -> tuple[float | None, str]:
    """``(GPU-hours or None, how it was projected)`` of the stage ``mocobench ARGV`` on real data."""
    rates = _rates()
    if argv[0] == "pretrain":
        from mocobench.pretrain.cli import resolve

        _, cfg = resolve(argv[1:])
        bf16 = cfg.precision == "bf16"
        method = "moco_v2" if cfg.method == "moco_v1" else cfg.method
        if bf16:
            rate = rates.get(("end to end", method, "bf16+channels_last"))
            how = f"{cfg.epochs} epochs of ImageNet at {rate:.0f} img/s (bf16 end to end, PIL input, H200)" if rate else ""
        else:
            step = rates.get(("model step", method, "fp32 eager"))
            official = rates.get(("end to end", "moco_v2", "official fp32 eager"))
            rate = min(r for r in (step, official) if r) if (step or official) else None
            how = (f"{cfg.epochs} epochs of ImageNet at {rate:.0f} img/s (fp32: the slower of its model step and "
                   "the official recipe end to end, H200)") if rate else ""
        if not rate:
            return None, f"no measured throughput for {cfg.method} pretraining"
        return cfg.epochs * IMAGENET_TRAIN / rate / 3600, how
    task = argv[1] if argv[0] == "eval" else None
    protocol = _arg(argv, "--protocol")
    features = rates.get(("features", "resnet50", "as the probes (bf16+NHWC on GPU)"))
    if task in ("knn", "linear") and not features:
        return None, "no measured throughput"
    if task in ("knn",) or (task == "linear" and protocol == "fast"):
        return (IMAGENET_TRAIN + IMAGENET_VAL) / features / 3600, f"one pass over ImageNet at {features:.0f} img/s (frozen features)"
    if task == "linear" and protocol == "paper":
        step = rates.get(("linear", "resnet50", "paper protocol step"))   # the frozen forward and the fc's step
        rate = step or features
        return (100 * IMAGENET_TRAIN + IMAGENET_VAL) / rate / 3600, \
            f"100 epochs of frozen features at {rate:.0f} img/s" + (" (the protocol's training step)" if step else "")
    if task == "detection":
        from mocobench.transfer.detection.protocols import PROTOCOLS

        p = PROTOCOLS.get(protocol)
        if p is None:
            return None, "no measured throughput"
        # detectron2's own rate where the device check measured it (its engine rows), else our engine's
        engine = _arg(argv, "--engine")
        model = "Mask R-CNN R50-C4" if protocol.startswith("coco") else "Faster R-CNN R50-C4"
        measured = "coco-c4-1x" if protocol.startswith("coco") else "moco-voc-c4-24k"
        rate = rates.get(("engines", f"detectron2 {model}", measured)) if engine == "detectron2" else None
        if rate:
            what = f"detectron2 {model} on {measured}"
        else:  # the proxy is faster than what runs: say which way the hours err
            what = ("our engine's Faster R-CNN R50-C4 at 800 px in bf16"
                    + ("; detectron2 runs fp32" if engine == "detectron2" else "")
                    + ("; the mask head not counted" if model.startswith("Mask") else "")
                    + (": a lower bound" if engine == "detectron2" or model.startswith("Mask") else ""))
        rate = rate or rates.get(("detection", "resnet50-C4", "moco-voc-c4-24k, bf16 on GPU"))
        if rate is None:
            return None, "no measured throughput"
        return p.max_iter * p.ims_per_batch / rate / 3600, \
            f"{p.max_iter} iterations x {p.ims_per_batch} images at {rate:.0f} img/s ({what})"
    if task == "segmentation":
        from mocobench.transfer.segmentation.protocols import get_protocol

        p = get_protocol(protocol, _arg(argv, "--dataset") or "cityscapes")
        # each row was measured on its own protocol's Cityscapes crops; another crop is projected by
        # pixel count (an FCN's convolutions cost in proportion): VOC's 513 px runs 2.2x the 769 px rate
        rate = (rates.get(("engines", "mmseg FCN R50-D8", "mmseg-fcn-40k, Cityscapes"))
                if _arg(argv, "--engine") == "mmseg" else None)
        measured = get_protocol("mmseg-fcn-40k" if rate else "moco-fcn", "cityscapes").crop
        what = "mmseg's FCN R50-D8" if rate else "FCN, bf16"
        rate = rate or rates.get(("segmentation", "resnet50-FCN", "moco-fcn, bf16 on GPU"))
        if rate is None:
            return None, "no measured throughput"
        what += f", measured at {measured[0]}x{measured[1]}"
        if tuple(p.crop) != tuple(measured):
            rate *= measured[0] * measured[1] / (p.crop[0] * p.crop[1])
            what += ", scaled by pixel count"
        return p.iters * p.batch_size / rate / 3600, \
            f"{p.iters} iterations x {p.batch_size} crops of {p.crop[0]}x{p.crop[1]} at {rate:.0f} img/s ({what})"
    return None, "no measured throughput for this stage"
