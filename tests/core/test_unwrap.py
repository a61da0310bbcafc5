"""One place unwraps a wrapped model: DataParallel/DDP and torch.compile, nested; nothing else."""

from __future__ import annotations

import torch
from torch import nn

from mocobench.core.dist import unwrap


def test_wrappers_are_taken_off_and_plain_modules_kept():
    net = nn.Linear(2, 2)
    assert unwrap(net) is net
    assert unwrap(nn.DataParallel(net)) is net
    assert unwrap(torch.compile(nn.DataParallel(net))) is net    # built, never run: no compiler needed
    holder = nn.Module()
    holder.module = net                                        # a sub-module called "module" is no wrapper
    assert unwrap(holder) is holder


def test_ddp_is_unwrapped(tmp_path):
    import torch.distributed as td

    td.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        net = nn.Linear(2, 2)
        assert unwrap(nn.parallel.DistributedDataParallel(net)) is net
    finally:
        td.destroy_process_group()
