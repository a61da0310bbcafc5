"""Pretraining data: an ImageNet-layout folder, per-image seeded views, a resumable sampler.

Exact resume rests on two rules:
- the order of the images is a function of (seed, epoch) only (:class:`EpochSampler`), and a
  resumed epoch starts at the saved batch;
- the augmentation of image i in epoch e is a function of (seed, epoch, i) only
  (:class:`SeededViews` seeds torch's and Python's RNG per item), so neither the number of
  DataLoader workers nor which worker loads an item changes what the model sees.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import torch
import torch.utils.data

from mocobench.datasets.imagefolder import ImageFolder, labeled_subset, read_subset_file, write_subset_file


def train_root(data: str | Path) -> Path:
    """``DIR/train`` of an ImageNet-layout root; also accepts the embedded dataset's root
    (``DIR/imagenet/train``) or the train folder itself."""
    data = Path(data)
    for cand in (data / "train", data / "imagenet" / "train"):
        if cand.is_dir():
            return cand
    if data.is_dir() and data.name == "train":
        return data
    raise FileNotFoundError(f"--data {data}: no train/ folder (expected {data}/train/<class>/<image> "
                            f"or the embedded dataset's {data}/imagenet/train)")


def item_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch) * 100_000_007 + index


# The largest run seed whose per-image seeds fit torch's generator (at most 2**64 - 1) for every epoch
# below 1_000_003 and every image index below 100_000_007, the ranges in which the terms of
# item_seed do not overlap. A larger seed would fail at the first image (the config refuses it).
MAX_SEED = ((2**64 - 1 - 100_000_006) // 100_000_007 - 1_000_002) // 1_000_003


class SeededViews(torch.utils.data.Dataset):
    """Item i: ``(views, label)`` with views = transform(image i) drawn with a per-(epoch, i) seed,
    label = -1 for unlabeled images; ``None`` for an unreadable image."""

    def __init__(self, folder: ImageFolder, transform, labels: list[int], seed: int):
        self.folder, self.transform, self.labels, self.seed = folder, transform, labels, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, i: int):
        torch_state, py_state = torch.get_rng_state(), random.getstate()
        s = item_seed(self.seed, self.epoch, i)
        # the CPU generator only (the views are drawn on the CPU): torch.manual_seed would also reseed
        # the CUDA/XPU/MTIA generators, which are not restored below, and before CUDA is initialised it
        # queues each call with a stack trace (0.8 s an epoch of SMoG's tiny preset on `small`)
        torch.default_generator.manual_seed(s)
        random.seed(s)
        try:
            item = self.folder[i]
            views = None if item is None else self.transform(item[0])
        finally:
            torch.set_rng_state(torch_state)
            random.setstate(py_state)
        return None if views is None else (views, self.labels[i])


class EpochSampler(torch.utils.data.Sampler):
    """This process's indices of epoch e: a permutation drawn from (seed, e), cut to whole global
    batches (drop last), rank r taking every world-th index, starting at ``start_batch``."""

    def __init__(self, n: int, batch_per_rank: int, rank: int, world: int, seed: int):
        self.n, self.batch, self.rank, self.world, self.seed = n, batch_per_rank, rank, world, seed
        self.batches_per_epoch = n // (batch_per_rank * world)
        if self.batches_per_epoch == 0:
            raise ValueError(f"{n} images are fewer than one global batch of {batch_per_rank * world}")
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def indices(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g)[: self.batches_per_epoch * self.batch * self.world]
        mine = perm[self.rank:: self.world]
        return mine[self.start_batch * self.batch:].tolist()

    def __iter__(self):
        return iter(self.indices())

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch


def collate_fill(batch: list):
    """``(views, labels, n_skipped)``; unreadable images (``None``) are replaced by repeating the
    batch's readable ones, so every process keeps the same batch size (all_gather, shuffle BN and
    the queue need it) and the skipped count goes to the log.

    NOTE: dropping them instead (``collate_skip``) would give processes different batch sizes under DDP.
    """
    kept = [b for b in batch if b is not None]
    if not kept:
        raise RuntimeError(f"all {len(batch)} images of a batch are unreadable; see the warnings above")
    n_skipped = len(batch) - len(kept)
    kept += [kept[i % len(kept)] for i in range(n_skipped)]
    views, labels = torch.utils.data.default_collate(kept)
    return views, labels, n_skipped


def labeled_mask(cfg, folder: ImageFolder, run_dir: Path, is_main: bool) -> tuple[list[int], dict]:
    """Per-image labels for UniMoCo (−1 = unlabeled) and a description for the log.

    ``supervised_list`` names the labeled images; else ``label_fraction`` draws a class-balanced
    subset with the seed and writes it to ``RUN_DIR/supervised_list.txt`` so the run can be repeated.
    """
    if cfg.supervised_list:
        names = read_subset_file(cfg.supervised_list)
        source = cfg.supervised_list
    elif cfg.label_fraction <= 0:
        return [-1] * len(folder), {"labeled": 0, "source": "none"}
    else:
        if cfg.label_fraction > 1:
            raise ValueError(f"label_fraction must be in [0, 1], got {cfg.label_fraction}")
        names = labeled_subset(folder, cfg.label_fraction, seed=cfg.seed)
        source = str(run_dir / "supervised_list.txt")
        if is_main:
            write_subset_file(source, names)
    chosen = {p for p, _ in ImageFolder(folder.root, subset=names, classes=folder.classes).samples}
    labels = [label if path in chosen else -1 for path, label in folder.samples]
    # which list ran: the given file's sha256 (UniMoCo's official label_info lists can be checked
    # against it), or that of the drawn list as written to RUN_DIR/supervised_list.txt
    from mocobench.core.io import sha256_file

    digest = (sha256_file(cfg.supervised_list) if cfg.supervised_list
              else hashlib.sha256("".join(f"{n}\n" for n in names).encode()).hexdigest())
    return labels, {"labeled": len(chosen), "source": source, "sha256": digest,
                    "drawn": not cfg.supervised_list}


def identity(folder: ImageFolder, label_info: dict) -> dict:
    """What a run trains on, stored in every checkpoint and compared on resume
    (``pretrain.train``): the train folder (resolved), its image count, the sha256 of its
    ``class/file`` list in sample order (which is the order the sampler permutes), and the sha256 of
    UniMoCo's labeled list (None without labels). NOTE: file contents are not hashed (reading
    ImageNet for it would take longer than many epochs); another folder is told by its root."""
    root = Path(folder.root).resolve()
    files = hashlib.sha256()
    for path, label in folder.samples:
        files.update(f"{folder.classes[label]}/{Path(path).name}\n".encode())
    return {"root": str(root), "images": len(folder), "files_sha256": files.hexdigest(),
            "labels_sha256": label_info.get("sha256")}
