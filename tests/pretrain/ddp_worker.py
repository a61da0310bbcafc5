"""Run by test_ddp.py under ``torchrun --nproc_per_node 2`` (gloo, CPU): MoCo steps with shuffle BN.

    ddp_worker.py OUT [COMPILE]     # COMPILE: the training step's compile setting (off, modules, step)

Each process checks, after every step, the things Algorithm 1 under DDP promises and saves its
queue, keys and losses to ``OUT/rank{r}.pt`` for the test to compare across processes and runs.
"""

from __future__ import annotations

import copy
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from mocobench.pretrain.fast_paths import TrainStep  # noqa: E402
from mocobench.pretrain.methods import METHODS  # noqa: E402
from mocobench.pretrain.moco import MoCo  # noqa: E402
from pretrain_helpers import TinyEncoder  # noqa: E402

N, K, STEPS = 4, 24, 15  # K = 24 is not a multiple of the global batch 8: the enqueue wraps around


def main(out: str, compile: str = "off") -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)  # same initial weights and queue on both processes
    model = MoCo(TinyEncoder, dim=8, K=K, m=0.9, T=0.2, mlp=False)
    ddp = torch.nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.2, momentum=0.9)
    train_step = TrainStep(METHODS["moco_v2"], ddp, opt, precision="fp32", device="cpu", compile=compile)
    gen = torch.Generator().manual_seed(100 + rank)  # each process has its own images
    record = {"losses": [], "queues": [], "keys": []}
    for step in range(STEPS):
        # fresh images every step (a random colour each), two noisy views of each
        base = torch.rand(N, 3, 1, 1, generator=gen).expand(N, 3, 8, 8)
        im_q = base + 0.1 * torch.randn(N, 3, 8, 8, generator=gen)
        im_k = base + 0.1 * torch.randn(N, 3, 8, 8, generator=gen)

        # the reference keys, computed by hand: momentum update, global permutation from rank 0's
        # RNG, each process's slice through its own BN, unshuffle
        f_k = copy.deepcopy(model.encoder_k)
        with torch.no_grad():
            for p_k, p_q in zip(f_k.parameters(), model.encoder_q.parameters()):
                p_k.copy_(0.9 * p_k + 0.1 * p_q)
            all_k = [torch.empty_like(im_k) for _ in range(world)]
            dist.all_gather(all_k, im_k)
            x_all = torch.cat(all_k)
            perm = torch.randperm(world * N, generator=torch.Generator().manual_seed(1000 * step))
            shuffled = torch.cat([F.normalize(copy.deepcopy(f_k)(x_all[perm.view(world, N)[r]]), dim=1)
                                  for r in range(world)])
            expected_keys = shuffled[torch.argsort(perm)]  # (world*N) x d, rank order
        ptr = int(model.queue.ptr)

        torch.manual_seed(1000 * step + rank)  # ranks differ: rank 0's permutation must win
        loss = train_step([im_q, im_k], torch.full((N,), -1))

        # gradients (kept until the next step) are the same on both processes (DDP averaged them)
        grads = torch.cat([p.grad.flatten() for p in model.encoder_q.parameters()])
        all_grads = [torch.empty_like(grads) for _ in range(world)]
        dist.all_gather(all_grads, grads)
        assert all(torch.equal(all_grads[0], g) for g in all_grads), "gradients differ across processes"

        cols = (ptr + torch.arange(world * N)) % K
        torch.testing.assert_close(model.queue.keys[cols], expected_keys, rtol=1e-5, atol=1e-6,
                                   msg=lambda m: f"step {step}: queued keys differ from the hand-computed ones: {m}")
        record["losses"].append(float(loss.detach()))
        record["queues"].append(model.queue.keys.clone())
        record["keys"].append(expected_keys)
    record["weights"] = torch.cat([p.detach().flatten() for p in model.parameters()])
    torch.save(record, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
