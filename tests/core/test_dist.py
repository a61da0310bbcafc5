"""``dist.from_main``: work done once on rank 0 and its value on every rank; rank 0's error on every
rank (the other ranks would otherwise wait for the value forever), as text where it cannot be sent."""

from __future__ import annotations

import os
import socket

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from mocobench.core.dist import from_main


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, calls_dir, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)

    def listing():
        (calls_dir / f"rank{rank}").write_text("called")
        return {"listing": "abc", "by": rank}

    def broken():
        raise PermissionError(f"{calls_dir}: cannot list")

    def unpicklable():
        e = OSError("cannot list")
        e.handle = lambda: None   # a lambda does not pickle: the broadcast would fail on rank 0
        raise e

    got = from_main(listing)
    try:
        from_main(broken)
        error = None
    except PermissionError as e:
        error = str(e)
    try:
        from_main(unpicklable)
        other = None
    except RuntimeError as e:
        other = str(e)
    queue.put((rank, got, error, other))
    dist.destroy_process_group()


def test_rank_0_computes_and_every_rank_gets_its_value_or_its_error(tmp_path):
    ctx = mp.get_context("fork")
    queue = ctx.SimpleQueue()
    mp.start_processes(_worker, args=(2, _free_port(), tmp_path, queue), nprocs=2, join=True, start_method="fork")
    out = {rank: rest for rank, *rest in (queue.get() for _ in range(2))}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0"]   # computed once
    assert out[0][0] == out[1][0] == {"listing": "abc", "by": 0}
    assert out[0][1] == out[1][1] == f"{tmp_path}: cannot list"
    assert out[0][2] == out[1][2] == "OSError: cannot list"   # what could not be sent, as text


def test_one_process_computes_in_place():
    assert from_main(lambda: 7) == 7
    with pytest.raises(ValueError):
        from_main(lambda: int("x"))
