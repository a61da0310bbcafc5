"""Data, device and multi-process plumbing shared by the classification protocols.

- :func:`resolve_imagenet` finds ``train/`` and ``val/`` under ``--data`` (an ImageNet folder, or the
  embedded dataset's root holding ``imagenet/``);
- :func:`train_transform` / :func:`eval_transform`: ``RandomResizedCrop + flip`` and
  ``Resize + CenterCrop``, normalised with the backbone's mean/std;
- :func:`make_loader`: a DataLoader with workers, pinned memory and :func:`collate_skip`, so
  unreadable images are dropped and counted;
- :func:`eval_subset`: this rank's exact, unpadded shard of an eval set under ``torchrun``
  (``mocobench.core.dist`` sets up the process group and device and sums correct counts and totals over
  ranks, never averaging per-rank accuracies).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from mocobench.core import dist
from mocobench.datasets.imagefolder import collate_skip


# -- data -------------------------------------------------------------------------------------
def resolve_imagenet(data: str | os.PathLike) -> Path:
    """The folder holding ``train/`` and ``val/``: ``data`` itself or ``data/imagenet``."""
    root = Path(data)
    for cand in (root, root / "imagenet"):
        if (cand / "train").is_dir() and (cand / "val").is_dir():
            return cand
    raise FileNotFoundError(f"--data {root}: expected {root}/train and {root}/val (ImageNet layout "
                            f"train/<class>/<image>), or the embedded dataset root with {root}/imagenet/")


def resolve_labels(labels: str, imagenet: Path) -> Path:
    """``--labels``: a file path, or a bare name (``10percent``) of a list next to train/ and val/."""
    path = Path(labels)
    if path.is_file():
        return path
    for cand in (imagenet / labels, imagenet / f"{labels}.txt"):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"--labels {labels}: no such file (also looked for {imagenet / labels}"
                            f"[.txt])")


def train_transform(img_size: int, mean, std):
    from torchvision import transforms as T

    return T.Compose([T.RandomResizedCrop(img_size), T.RandomHorizontalFlip(), T.ToTensor(),
                      T.Normalize(mean, std)])


class SeededViews(torch.utils.data.Dataset):
    """``dataset[i]`` with its random transform drawn from torch's generator seeded by ``(seed, i)``.

    A DataLoader gives each worker a generator of its own, so views drawn from a generator seeded
    once per loader depend on the worker count (which ``make_loader`` caps at the machine's cores):
    the same seed gave other augmented features on another machine. Seeded per image, a view is the
    same whatever the workers. The caller's generator is left as it was."""

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name):   # samples, root, classes, n_skipped of the wrapped folder
        if name in ("dataset", "seed"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, i: int):
        draw = int.from_bytes(hashlib.sha256(f"{self.seed}:{i}".encode()).digest()[:8], "little")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(draw)
            return self.dataset[i]


def eval_transform(img_size: int, resize: int, mean, std):
    # NOTE: bilinear, as MoCo's main_lincls.py; DINO's kNN resizes bicubic, a listed departure of
    # dino-knn (core/deviations.toml)
    from torchvision import transforms as T

    return T.Compose([T.Resize(resize), T.CenterCrop(img_size), T.ToTensor(), T.Normalize(mean, std)])


def make_loader(dataset, batch_size: int, *, shuffle: bool = False, workers: int = 0,
                device: torch.device | None = None, sampler=None, drop_last: bool = False,
                seed: int = 0) -> DataLoader:
    """Batches of ``((images, labels), n_skipped)`` from :func:`collate_skip`."""
    workers = min(workers, os.cpu_count() or 1)
    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None,
                      sampler=sampler, num_workers=workers, collate_fn=collate_skip,
                      pin_memory=device is not None and device.type == "cuda",
                      persistent_workers=False, drop_last=drop_last, generator=g)


def dataset_fields(name: str, path: Path, splits: dict[str, int], skipped: dict[str, int]) -> dict:
    """The record's ``dataset`` field; ``unreadable`` counts images skipped per split."""
    return {"name": name, "path": str(path), "splits": dict(splits), "unreadable": dict(skipped)}


# -- device -----------------------------------------------------------------------------------
def prepare_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move to ``device``; channels_last on CUDA (faster convolutions with bf16 there)."""
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def to_device(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    images = images.to(device, non_blocking=True)
    if device.type == "cuda" and images.dim() == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    return images


# -- distributed ------------------------------------------------------------------------------
def eval_subset(dataset):
    """This rank's shard of ``dataset`` (all of it in one process)."""
    if dist.world_size() == 1:
        return dataset
    return Subset(dataset, dist.shard_indices(len(dataset), dist.rank(), dist.world_size()))


# -- metrics ----------------------------------------------------------------------------------
def topk_correct(scores: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> list[int]:
    """Number of rows whose label is among the ``k`` highest scores, for each ``k``.

    ``k`` larger than the number of classes counts every row (top-5 of a 3-class problem is 100 %).
    """
    maxk = min(max(ks), scores.shape[1])
    pred = scores.topk(maxk, dim=1).indices  # N x maxk
    hit = pred.eq(labels.view(-1, 1))  # N x maxk
    return [int(hit[:, :min(k, maxk)].any(dim=1).sum()) for k in ks]
