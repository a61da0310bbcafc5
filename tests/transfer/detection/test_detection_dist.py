"""Exact resume and the loss history across a kill; two-process (gloo, CPU) sharded evaluation."""

from __future__ import annotations

import dataclasses
import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from test_detection_train import SMALL, make_voc
from mocobench.transfer.detection import train as train_module
from mocobench.transfer.detection.train import train

# a work checkpoint after iteration 1 (and at the end): the kill below comes right after it
EVERY = dataclasses.replace(SMALL, checkpoint_period=2)


def _fresh():
    from mocobench.checkpoints.load import load_backbone
    from mocobench.transfer.detection.models import build_detector

    torch.manual_seed(0)
    backbone, _ = load_backbone("random:resnet18")
    return build_detector(backbone, 20, SMALL)


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


class Killed(Exception):
    pass


def test_kill_and_resume_exact_weights_and_loss_history(tmp_path, monkeypatch):
    from mocobench.datasets.voc import VOCDetection

    data = VOCDetection(make_voc(tmp_path), sets=[("2007", "trainval")])
    cpu = torch.device("cpu")
    straight = _fresh()
    train(straight, data, EVERY, 0, tmp_path / "a", cpu)
    straight_log = _rows(tmp_path / "a" / "losses.jsonl")
    assert [r["iteration"] for r in straight_log] == [0, 1, 2]

    real_lr_at = train_module.lr_at

    def lr_at(it, p):  # the process dies as iteration 2 starts
        if it == 2:
            raise Killed
        return real_lr_at(it, p)

    monkeypatch.setattr(train_module, "lr_at", lr_at)
    with pytest.raises(Killed):
        train(_fresh(), data, EVERY, 0, tmp_path / "b", cpu)
    monkeypatch.setattr(train_module, "lr_at", real_lr_at)
    log = tmp_path / "b" / "losses.jsonl"
    assert _rows(log) == straight_log[:2]  # written as it went, not lost with the process
    # a kill between appending iteration 2's row and saving its checkpoint, mid-way through a line
    with open(log, "a") as f:
        f.write(json.dumps(dict(straight_log[2], loss=123.0)) + "\n" + '{"iteration": 3, "lo')
    torch.manual_seed(123)  # whatever happened to the process in between
    resumed = _fresh()
    summary = train(resumed, data, EVERY, 0, tmp_path / "b", cpu)
    assert summary["start_iteration"] == 2
    sa, sb = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # bit-identical to the uninterrupted run
    assert _rows(log) == straight_log  # every iteration once, the repeated one as the resumed run made it
    # a different run refuses the work folder
    with pytest.raises(ValueError, match=r"different run \(protocol.base_lr differ\)"):
        train(_fresh(), data, dataclasses.replace(EVERY, base_lr=0.5), 0, tmp_path / "b", cpu)
    # run settings of the protocol (the checkpoint period) may differ
    again = train(_fresh(), data, dataclasses.replace(EVERY, checkpoint_period=7), 0, tmp_path / "b", cpu)
    assert again["start_iteration"] == EVERY.max_iter


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, devkit, out):
    from mocobench.datasets.voc import VOCDetection
    from mocobench.transfer.detection.evaluate import predict
    from mocobench.transfer.detection.run import run_eval

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    # the whole evaluation: every rank trains, predicts its shard; rank 0 scores and writes
    run_eval("random:resnet18", SMALL, "voc", devkit, [0], out / "results", out / "work", device="cpu")
    # the same untrained detector on every rank: its gathered predictions against one process's
    test = VOCDetection(devkit, sets=[("2007", "test")])
    preds = predict(_fresh(), test, SMALL, torch.device("cpu"))
    assert (preds is None) == (rank != 0)
    if rank == 0:
        torch.save(preds, out / "gathered.pt")
    dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_processes_predict_shards_gather_on_rank_0_and_write_one_record(tmp_path):
    from mocobench.datasets.voc import VOCDetection
    from mocobench.core.records import load_records
    from mocobench.transfer.detection.evaluate import predict

    devkit = make_voc(tmp_path)  # 3 test images: shards of 2 and 1
    out = tmp_path / "out"
    # fork: the children reuse the parent's imported torch (spawn would re-import it, ~10 s each)
    mp.start_processes(_worker, args=(2, _free_port(), devkit, out), nprocs=2, join=True, start_method="fork")
    records, problems = load_records(out / "results")
    assert problems == [] and len(records) == 1
    rec = records[0]
    assert rec["run"]["world_size"] == 2 and rec["run"]["ims_per_gpu"] == 1
    assert rec["run"]["sync_bn"] is False and rec["env"]["device"] == "cpu"
    assert len(list((out / "work").glob("*-tiny-voc-*-s0/last.pt"))) == 1

    test = VOCDetection(devkit, sets=[("2007", "test")])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers: another thread count may change the last bits
    try:
        single = predict(_fresh(), test, SMALL, torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    gathered = torch.load(out / "gathered.pt", weights_only=True)
    assert len(gathered) == len(single) == 3
    for g, s in zip(gathered, single):
        assert g.keys() == s.keys() and all(torch.equal(g[k], s[k]) for k in g)
