"""Load + convert a ResNet-50 checkpoint to every target format; print the time of each.

    python -m benchmarks.convert [--arch resnet50] [--repeats 3] [--threads 2]

For each target of ``mocobench convert`` (transfer/adapters/cli.py WRITERS) the timed work is
``load_backbone(source)`` + the writer, i.e. what the command does; the best of ``--repeats``
runs is reported (the first run also pays imports). Then reading each converted file back
(``load_backbone``) is timed too. The source is an official-MoCo-layout checkpoint (encoder_q +
encoder_k + queue + optimizer state), the most common thing people convert.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from mocobench.checkpoints import load_backbone
from mocobench.checkpoints.backbones import build_classifier_model
from mocobench.transfer.adapters.cli import WRITERS

LIMIT_S = 2.0


def moco_checkpoint(arch: str, path: Path) -> Path:
    torch.manual_seed(0)
    q = build_classifier_model(arch, num_classes=128).state_dict()
    state = {f"module.encoder_q.{k}": v for k, v in q.items()}
    state |= {f"module.encoder_k.{k}": v.clone() for k, v in q.items()}
    state |= {"module.queue": torch.randn(128, 65536), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}
    torch.save({"epoch": 200, "arch": arch, "state_dict": state, "optimizer": {"state": {}, "param_groups": []}}, path)
    return path


def best_of(fn, repeats: int) -> tuple[float, float]:
    """(wall s, CPU s of this process, all threads), best of ``repeats``."""
    walls, cpus = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return min(walls), min(cpus)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    options = argparse.Namespace(config=None, config_out=None, data_root=None, norm=None)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = moco_checkpoint(args.arch, tmp / "moco.pth.tar")
        size = src.stat().st_size / 2**20
        load_backbone(src)  # warm-up: imports
        t_load, c_load = best_of(lambda: load_backbone(src), args.repeats)
        print(f"source: official MoCo layout, {args.arch}, {size:.0f} MiB; torch threads {args.threads}; "
              f"best of {args.repeats}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(f"{'target':<12} {'load+convert s':>15} {'(CPU s)':>8} {'read back s':>12} {'out MiB':>8}  status")
        print(f"{'(load only)':<12} {t_load:>15.3f} {c_load:>8.3f}")
        worst = 0.0
        for target, writer in WRITERS.items():
            out = tmp / f"out.{target}"

            def convert():
                backbone, report = load_backbone(src)
                writer(backbone, report, out, options)

            t, c = best_of(convert, args.repeats)
            t_back, _ = best_of(lambda: load_backbone(out), args.repeats)
            worst = max(worst, t)
            status = "ok" if t < LIMIT_S else f"SLOW (> {LIMIT_S} s)"
            print(f"{target:<12} {t:>15.3f} {c:>8.3f} {t_back:>12.3f} {out.stat().st_size / 2**20:>8.0f}  {status}",
                  flush=True)
    print(f"slowest load+convert: {worst:.3f} s (limit {LIMIT_S} s)")
    return 0 if worst < LIMIT_S else 1


if __name__ == "__main__":
    sys.exit(main())
