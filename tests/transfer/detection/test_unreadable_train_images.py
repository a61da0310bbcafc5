"""An unreadable training image is counted in the record (``run.skipped_train``) whoever met it: a
DataLoader worker, another rank, or the run before a kill and resume. Each keeps its own copy of the
dataset, so the paths travel with the batches and are gathered on rank 0."""

from __future__ import annotations

import dataclasses
import warnings

import torch

from test_detection_train import SMALL, make_voc
from mocobench.datasets.voc import VOCDetection
from mocobench.transfer.detection.train import IterationBatches, WithSkipped, gather_skipped, train

TRAIN = (("2007", "trainval"), ("2012", "trainval"))


def cut_drawn_in_training(devkit, seed=0, batch=2):
    """Cut short the data of a training image that iteration 0 draws and precise BN (its own stream,
    read in the main process) does not (its header still opens); its path."""
    ds = VOCDetection(devkit, sets=TRAIN)
    precise = IterationBatches(ds, batch, seed + 1_000_000).indices(0)
    index = next(i for i in IterationBatches(ds, batch, seed).indices(0) if i not in precise)
    path = ds.image_path(index)
    path.write_bytes(path.read_bytes()[:-400])
    return str(path)


def test_record_counts_an_unreadable_training_image_met_by_a_loader_worker(tmp_path):
    from mocobench.core.records import load_records
    from mocobench.transfer.detection.run import run_eval

    devkit = make_voc(tmp_path)
    cut_drawn_in_training(devkit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_eval("random:resnet18", dataclasses.replace(SMALL, num_workers=2), "voc", devkit, [0],
                 tmp_path / "results", tmp_path / "work", device="cpu")
    records, problems = load_records(tmp_path / "results")
    assert problems == [] and len(records) == 1
    assert records[0]["run"]["skipped_train"] == 1 and records[0]["run"]["skipped_test"] == 0


def test_batches_carry_the_paths_they_named(tmp_path):
    devkit = make_voc(tmp_path)
    cut = cut_drawn_in_training(devkit)
    ds = VOCDetection(devkit, sets=TRAIN)
    batches = WithSkipped(IterationBatches(ds, 2, seed=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        items, skipped = batches[0]
        assert len(items) == 2 and skipped == [cut]
        assert batches[0][1] == []   # named once per process, however often it is drawn
    # one rank (no process group): its own paths, each once
    assert gather_skipped([cut, "b", cut]) == [cut, "b"]


def test_skipped_before_a_kill_are_counted_after_the_resume(tmp_path):
    from mocobench.checkpoints.load import load_backbone
    from mocobench.transfer.detection.models import build_detector

    devkit = make_voc(tmp_path)
    cut = cut_drawn_in_training(devkit)
    p = dataclasses.replace(SMALL, checkpoint_period=1)
    cpu = torch.device("cpu")

    def fresh():
        torch.manual_seed(0)
        return build_detector(load_backbone("random:resnet18")[0], 20, p)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = VOCDetection(devkit, sets=TRAIN)
        train(fresh(), first, p, 0, tmp_path / "w", cpu, stop_at=1)   # iteration 0 meets the cut image
        assert first.skipped == [cut]
        again = VOCDetection(devkit, sets=TRAIN)   # a new process after the kill; iterations 1, 2 miss the cut image
        train(fresh(), again, p, 0, tmp_path / "w", cpu)
    assert again.skipped == [cut]


def _gather_worker(rank, world, port, out):
    import json
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    # both ranks met image a (in different epochs); b only rank 1
    got = gather_skipped(["a"] if rank == 0 else ["b", "a"])
    (out / f"rank{rank}.json").write_text(json.dumps(got))
    dist.destroy_process_group()


def test_paths_met_on_every_rank_reach_rank_0_once(tmp_path):
    import json
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_gather_worker, args=(2, port, tmp_path), nprocs=2, join=True, start_method="fork")
    assert json.loads((tmp_path / "rank0.json").read_text()) == ["a", "b"]
    assert json.loads((tmp_path / "rank1.json").read_text()) is None
