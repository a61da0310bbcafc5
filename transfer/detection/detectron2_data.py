"""detectron2's training data, drawn so that a killed and resumed run continues exactly.

detectron2's own loader (``TrainingSampler``, ``AspectRatioGroupedDataset``, loader workers seeded
from torch's base seed) restarts its seeded stream on resume and its workers reseed, so a resumed
run sees other images and other augmentations than an uninterrupted one; and nothing saves the
torch RNG that the RPN and ROI heads sample their anchors and proposals with. Here every random
choice is a function of the run's seed and a position, so there is no state to save:

- the order: one seeded permutation of the training set per epoch (as ``TrainingSampler``
  shuffles), rank ``r`` of ``W`` taking every ``W``-th image of that global stream;
- the batches: each rank groups its images by orientation as ``AspectRatioGroupedDataset`` does
  (wide and tall images fill batches of their own). The grouping reads only each image's width and
  height, so the batches before the resume iteration are replayed without reading an image;
- each image's augmentation (the random short side, the flip): numpy, ``random`` and torch seeded
  from (seed, stream, position in the global stream) before the mapper runs, in whichever process
  maps it;
- the model's own draws: :class:`IterationSeed` seeds them from (seed, rank, iteration) before
  every step.

Loader workers each map every ``num_workers``-th batch; PyTorch's loader hands an iterable
dataset's items back round-robin over its workers, so batches arrive in order.
"""

from __future__ import annotations

import contextlib
import itertools
import random
from collections.abc import Iterator

import numpy as np
import torch

from mocobench.core.seeds import seed_everything, seed_for, step_seed

SAMPLER = "TrainingSampler"   # the one order drawn here (global_order)
STREAMS = {"train": 0, "precise_bn": 1}  # precise BN's batches are drawn apart from training's
_IMAGE = 0   # per-image seeds: (seed, 0, stream, position); core.seeds.step_seed uses 1


def global_order(n: int, seed: int) -> Iterator[int]:
    """Dataset indices, forever: one permutation of ``range(n)`` per epoch from one seeded generator."""
    g = torch.Generator()
    g.manual_seed(seed)
    while True:
        yield from torch.randperm(n, generator=g).tolist()


def rank_batches(sizes: list[tuple[int, int]], seed: int, *, rank: int, world: int, batch: int,
                 grouping: bool) -> Iterator[list[tuple[int, int]]]:
    """This rank's batches, forever, each a list of (position in the global stream, dataset index).

    ``sizes`` are the images' (width, height). With ``grouping`` an image goes to the wide bucket
    when width > height, else to the tall one, and a bucket is a batch when full (the rule of
    detectron2's ``AspectRatioGroupedDataset``); without it, consecutive images make a batch.
    """
    buckets: list[list[tuple[int, int]]] = [[], []]
    for pos, i in itertools.islice(enumerate(global_order(len(sizes), seed)), rank, None, world):
        w, h = sizes[i]
        bucket = buckets[0 if (w > h or not grouping) else 1]
        bucket.append((pos, i))
        if len(bucket) == batch:
            yield bucket[:]
            bucket.clear()


class _Batches(torch.utils.data.IterableDataset):
    """Mapped batches from ``start`` on; in a loader worker, only that worker's share."""

    def __init__(self, dataset, sizes, mapper, *, seed, stream, rank, world, batch, grouping, start):
        self.dataset, self.sizes, self.mapper = dataset, sizes, mapper
        self.seed, self.stream, self.start = seed, stream, start
        self.plan = dict(rank=rank, world=world, batch=batch, grouping=grouping)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for b, items in enumerate(rank_batches(self.sizes, self.seed, **self.plan)):
            if b < self.start or (b - self.start) % workers != worker:
                continue
            with _rng_kept(in_main_process=info is None):
                out = []
                for pos, i in items:
                    _seed_host(seed_for(self.seed, _IMAGE, STREAMS[self.stream], pos))
                    out.append(self.mapper(self.dataset[i]))
            yield out


def _seed_host(seed: int) -> None:
    """numpy, ``random`` and torch's CPU generator: what a mapper draws from. Not the GPUs' (which
    ``torch.manual_seed`` would reseed too): in the training process they hold the step's draws."""
    np.random.seed(seed)
    random.seed(seed)
    torch.default_generator.manual_seed(seed)


@contextlib.contextmanager
def _rng_kept(in_main_process: bool):
    """Mapping in the training process leaves its generators as they were (so ``num_workers=0``
    trains as workers do); a worker's own generators matter to nobody."""
    if not in_main_process:
        yield
        return
    np_state, py_state, torch_state = np.random.get_state(), random.getstate(), torch.get_rng_state()
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
        torch.set_rng_state(torch_state)


def _as_is(batch):
    return batch


def batch_loader(batches: "_Batches", workers: int) -> torch.utils.data.DataLoader:
    """PyTorch's loader over ``batches`` (each item a whole batch), in order over its workers."""
    # a generator of its own: a loader draws its workers' base seed, which would otherwise take a
    # number from the training process's torch RNG at the first step after a resume
    return torch.utils.data.DataLoader(batches, batch_size=None, num_workers=workers, collate_fn=_as_is,
                                       generator=torch.Generator())


class ResumableTrainLoader:
    """The training loader of ``cfg`` (what ``build_detection_train_loader`` builds from it, with the
    stream above). Set ``start_iter`` before the first ``next``; iterating reads it then."""

    def __init__(self, cfg, stream: str = "train"):
        from detectron2.data import DatasetFromList, DatasetMapper, get_detection_dataset_dicts
        from detectron2.utils import comm

        if cfg.DATALOADER.SAMPLER_TRAIN != SAMPLER:   # refused in --opts before any work; a config from elsewhere
            raise ValueError(f"DATALOADER.SAMPLER_TRAIN {cfg.DATALOADER.SAMPLER_TRAIN}: only {SAMPLER}'s order is drawn here")
        dicts = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            min_keypoints=cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE if cfg.MODEL.KEYPOINT_ON else 0,
            proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None)
        self.sizes = [(d["width"], d["height"]) for d in dicts]
        self.dataset = DatasetFromList(dicts, copy=False)  # serialized: workers share it unchanged
        self.mapper = DatasetMapper(cfg, True)
        self.seed, self.stream = cfg.SEED, stream
        self.rank, self.world = comm.get_rank(), comm.get_world_size()
        if cfg.SOLVER.IMS_PER_BATCH % self.world:
            raise ValueError(f"SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH} is not divisible by {self.world} processes")
        self.batch = cfg.SOLVER.IMS_PER_BATCH // self.world
        self.grouping, self.workers = cfg.DATALOADER.ASPECT_RATIO_GROUPING, cfg.DATALOADER.NUM_WORKERS
        self.start_iter = 0

    def __iter__(self):  # a generator: nothing is read before the first next()
        batches = _Batches(self.dataset, self.sizes, self.mapper, seed=self.seed, stream=self.stream,
                           rank=self.rank, world=self.world, batch=self.batch, grouping=self.grouping,
                           start=self.start_iter)
        yield from batch_loader(batches, self.workers)


def iteration_seed_hook(seed: int):
    """A detectron2 hook that seeds numpy, ``random`` and torch from (seed, rank, iteration) before
    each step, so the model's random draws do not depend on where the run was resumed."""
    from detectron2.engine import HookBase
    from detectron2.utils import comm

    class IterationSeed(HookBase):
        def before_step(self):
            seed_everything(step_seed(seed, comm.get_rank(), self.trainer.iter))

    return IterationSeed()
