"""Two processes (gloo, CPU, forked, rendezvous in a file): what every process must keep the same, and
what a run of several processes refuses before it writes anything."""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.distributed as td
import torch.multiprocessing as mp

from mocobench.pretrain.config import TINY
from mocobench.pretrain.smog import SMoG
from test_smog import Net, step


def on_two_processes(worker, tmp_path, *args) -> None:
    """``worker(rank, out, *args)`` on ranks 0 and 1 of a gloo group; ``out``: a folder for results."""
    out = tmp_path / "out"
    out.mkdir()
    mp.start_processes(_run, args=(str(tmp_path / "store"), worker, out, args), nprocs=2, join=True,
                       start_method="fork")


def _run(rank, store, worker, out, args):
    torch.set_num_threads(1)
    td.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        worker(rank, out, *args)
    finally:
        td.destroy_process_group()


def _smog_groups(rank, out):
    torch.manual_seed(0)   # the same model and groups on both processes
    model = SMoG(Net(), num_features=6, dim=4, hidden=8, n_groups=3, beta=0.9, tau=0.1, m=0.5,
                 reset_every=100, bank_size=64, kmeans_iters=3)
    gen = torch.Generator().manual_seed(10 + rank)   # each process has its own images
    views = [torch.randn(8, 3, 6, 6, generator=gen), torch.randn(8, 3, 6, 6, generator=gen)]
    if rank == 1:
        model.groups.add_(0.01)   # a drift, as CUDA's unordered index_add_ can leave between processes
    step(model, views)            # the group update (commit)
    after_update = model.groups.clone()
    if rank == 1:
        model.bank.features.add_(0.5)   # a k-means that would come out otherwise on this process
    model.reset()
    torch.save({"update": after_update, "reset": model.groups.clone()}, out / f"rank{rank}.pt")


def test_smog_groups_are_rank_0s_after_each_update_and_reset(tmp_path):
    """DDP runs with ``broadcast_buffers=False``: the groups are sent from rank 0 after every group
    update and every k-means reset, so a difference between the processes does not last (on the CPU
    they are equal anyway, and rank 0's values are what one process computes)."""
    on_two_processes(_smog_groups, tmp_path)
    r0, r1 = (torch.load(tmp_path / "out" / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert torch.equal(r0["update"], r1["update"])
    assert torch.equal(r0["reset"], r1["reset"])


def _train_with_groups(rank, out, data):
    from mocobench.pretrain.train import train

    try:
        train(replace(TINY["moco_v2"], shuffle_bn_groups=4), data, out / "run")
        (out / f"rank{rank}.txt").write_text("trained")
    except ValueError as e:
        (out / f"rank{rank}.txt").write_text(f"refused: {e}")


def test_shuffle_bn_groups_are_refused_with_two_processes_before_anything_is_written(tmp_path):
    """``shuffle_bn_groups`` is one process's shuffle BN; under DDP the keys are shuffled across the
    processes and the groups would be recorded without taking effect."""
    on_two_processes(_train_with_groups, tmp_path, str(tmp_path / "data"))
    for rank in (0, 1):
        said = (tmp_path / "out" / f"rank{rank}.txt").read_text()
        assert said.startswith("refused") and "shuffle_bn_groups=4" in said and "2 processes" in said, said
    assert not (tmp_path / "out" / "run").exists()
