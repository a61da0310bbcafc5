"""Timing helpers of the device check's rows: a synchronised clock, peak memory, an SGD step."""

from __future__ import annotations

import time

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2) if device.type == "cuda" else None


def timed(fn, warmup: int, iters: int, device: torch.device, images_per_iter: int) -> dict:
    """img/s and it/s of ``iters`` calls of ``fn`` after ``warmup`` calls; peak memory of all."""
    for _ in range(warmup):
        fn()
    sync(device)
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    dt = time.perf_counter() - t
    return {"img_s": images_per_iter * iters / dt, "it_s": iters / dt}


def sgd_step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
