"""Device choice and distributed setup: the one place every task gets its rank, world and device.

Pretraining, classification, detection and segmentation all call :func:`setup` once. Launched by
``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set) it creates the default process group
(NCCL on GPU, gloo on CPU) and binds this process to its GPU; otherwise it is one process and
nothing is initialised. Every helper below works either way: with one process a gather is the
identity and rank 0 is this process.

Evaluation follows one pattern everywhere (as detectron2's evaluators do): each rank predicts its
shard (:func:`shard_indices`), :func:`gather_to_main` brings the pieces to rank 0, and rank 0
alone scores and writes the record (:func:`is_main`).
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: ``rank`` of ``world``, on GPU ``local_rank`` of its node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def env_dist() -> Dist:
    """The launcher's view from the environment, before (or without) a process group."""
    return Dist(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                int(os.environ.get("LOCAL_RANK", 0)))


def pick_device(name: str | None = None, local_rank: int | None = None) -> torch.device:
    """``name`` if given (``cuda`` becomes this process's GPU), else CUDA when present, else CPU."""
    if not name:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} was asked for but CUDA is not available on this machine")
    if name == "cuda":
        return torch.device("cuda", env_dist().local_rank if local_rank is None else local_rank)
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """What a record states as its device: ``cpu``, or ``cuda:N (GPU model)``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def setup(device: str | None = None) -> tuple[Dist, torch.device]:
    """Initialise the process group when launched by torchrun; returns ``(Dist, device)``."""
    info = env_dist()
    dev = pick_device(device, info.local_rank)
    if info.world > 1 and not is_distributed():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    if is_distributed():
        info = Dist(dist.get_rank(), dist.get_world_size(), info.local_rank)
    return info, dev


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shard_indices(n: int, rank: int, world: int) -> list[int]:
    """Rank ``rank``'s share of ``range(n)``: every index exactly once across ranks, no padding.

    NOTE: ``DistributedSampler`` pads the last shard by repeating samples, which would count some
    evaluation images twice; evaluation uses this strided shard instead.
    """
    return list(range(rank, n, world))


@torch.no_grad()
def concat_all_gather(x: torch.Tensor) -> torch.Tensor:
    """``x`` (n x ...) from every process, concatenated in rank order: (world*n) x ...

    No gradient flows through the result (as in the official MoCo). Every process passes the
    same ``n``.
    """
    if not is_distributed():
        return x
    return _all_gather(x)


@torch.compiler.disable
def _all_gather(x: torch.Tensor) -> torch.Tensor:
    # eager inside a compiled step (pretrain.fast_paths, compile=step): a graph ends at the collective
    # and the next one starts after it, the same on every process
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module a wrapper runs, the one place that knows the wrappers: DistributedDataParallel
    and DataParallel (mmengine's MMDistributedDataParallel is one) and ``torch.compile``'s
    OptimizedModule, however nested. A plain module is returned as it is (a sub-module that happens
    to be called ``module`` is no wrapper)."""
    import sys

    while True:
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        elif "torch._dynamo" in sys.modules and isinstance(model, _optimized_module()):
            model = model._orig_mod   # nothing was compiled while dynamo was never imported
        else:
            return model


def _optimized_module() -> type:
    from torch._dynamo.eval_frame import OptimizedModule

    return OptimizedModule


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over ranks (float64 on CPU in the result); ``t`` itself is not changed."""
    t = t.detach().to(torch.float64)
    if is_distributed():
        t = t.cuda() if dist.get_backend() == "nccl" else t.cpu().clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu()


def from_main(compute):
    """``compute()`` run on rank 0 only, its picklable value on every rank: work that every rank
    would repeat on the same files (listing a dataset folder). An exception on rank 0 is raised on
    every rank (the others would wait for the value forever)."""
    if not is_distributed():
        return compute()
    box = [None]
    if is_main():
        try:
            box[0] = (True, compute())
        except Exception as e:  # noqa: BLE001 -- handed to every rank, then raised there
            try:
                pickle.dumps(e)
            except Exception:  # noqa: BLE001 -- the broadcast would fail here and the others wait forever
                e = RuntimeError(f"{type(e).__name__}: {e}")
            box[0] = (False, e)
    dist.broadcast_object_list(box, src=0)
    ok, value = box[0]
    if not ok:
        raise value
    return value


def gather_to_main(obj) -> list | None:
    """Every rank's picklable ``obj``, in rank order, on rank 0; ``None`` on the other ranks."""
    if not is_distributed():
        return [obj]
    parts = [None] * world_size() if is_main() else None
    dist.gather_object(obj, parts, dst=0)
    return parts
