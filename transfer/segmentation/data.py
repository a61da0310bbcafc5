"""Datasets, training augmentation and the deterministic sample stream of the trainer.

Training draws sample *positions* p = 0, 1, 2, ... (p = iteration x global batch + slot). Position p
reads image ``perm(seed, p // n)[p % n]`` and augments it with a generator seeded by ``(seed, p)``.
So the stream depends only on the seed and p: resuming at iteration i gives exactly the batches an
uninterrupted run would have seen, with any number of loader workers or processes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mocobench.core.registry import Registry
from mocobench.datasets.cityscapes import CityscapesSegmentation
from mocobench.datasets.voc_seg import VOCSegmentation

IGNORE = 255
DATASETS = Registry("segmentation dataset", {
    "cityscapes": CityscapesSegmentation,
    "voc2012": VOCSegmentation,
})


def build_dataset(name: str, root: str, split: str):
    DATASETS.lookup(name)
    if name == "cityscapes":
        from pathlib import Path

        root_path = Path(root)
        # accept DIR (embedded dataset root) as well as DIR/cityscapes
        if not (root_path / "leftImg8bit").is_dir() and (root_path / "cityscapes" / "leftImg8bit").is_dir():
            root = str(root_path / "cityscapes")
    return DATASETS[name](root, split)


def normalize(image: np.ndarray, mean, std) -> torch.Tensor:
    """uint8 H x W x 3 -> float 3 x H x W, in [0, 1] then normalised with the backbone's mean/std."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def augment(image: torch.Tensor, target: torch.Tensor, rng: np.random.Generator,
            crop: tuple[int, int], scale_range: tuple[float, float], flip: bool):
    """Random rescale (bilinear image, nearest mask), pad to the crop (image 0 = the mean after
    normalisation, mask 255), random crop, horizontal flip. image: 3 x H x W, target: H x W."""
    s = rng.uniform(*scale_range)
    h, w = target.shape
    nh, nw = max(1, int(round(h * s))), max(1, int(round(w * s)))
    image = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
    target = F.interpolate(target[None, None].float(), size=(nh, nw), mode="nearest")[0, 0].to(torch.uint8)
    ch, cw = crop
    ph, pw = max(ch - nh, 0), max(cw - nw, 0)
    if ph or pw:
        image = F.pad(image, (0, pw, 0, ph), value=0.0)
        target = F.pad(target, (0, pw, 0, ph), value=IGNORE)
    H, W = target.shape
    y0 = int(rng.integers(0, H - ch + 1))
    x0 = int(rng.integers(0, W - cw + 1))
    image = image[:, y0:y0 + ch, x0:x0 + cw]
    target = target[y0:y0 + ch, x0:x0 + cw]
    if flip and rng.random() < 0.5:
        image, target = image.flip(-1), target.flip(-1)
    return image.contiguous(), target.contiguous()


class TrainStream(torch.utils.data.Dataset):
    """``stream[p]`` -> (image 3 x crop, target crop (int64))."""

    def __init__(self, dataset, seed: int, crop, scale_range, flip: bool, mean, std):
        self.dataset, self.seed = dataset, seed
        self.crop, self.scale_range, self.flip = tuple(crop), tuple(scale_range), flip
        self.mean, self.std = mean, std
        self._perm_epoch, self._perm = None, None

    def __len__(self) -> int:  # positions are unbounded; the batch sampler decides which to read
        return 1 << 62

    def index(self, p: int) -> int:
        n = len(self.dataset)
        epoch = p // n
        if self._perm_epoch != epoch:
            self._perm = np.random.default_rng([self.seed, epoch, 0x5E6]).permutation(n)
            self._perm_epoch = epoch
        return int(self._perm[p % n])

    def __getitem__(self, p: int):
        # the dataset was checked when opened (unreadable files left out and counted there), so a
        # file that fails now changed under the run: an error, not a skip that would shift the stream
        rng = np.random.default_rng([self.seed, p])
        image, target, _ = self.dataset[self.index(p)]
        image, target = augment(normalize(image, self.mean, self.std), torch.from_numpy(target), rng,
                                self.crop, self.scale_range, self.flip)
        return image, target.long()


class PositionBatches(torch.utils.data.Sampler):
    """Batches of positions for iterations ``start..iters-1``: this rank's share of each global batch."""

    def __init__(self, start: int, iters: int, batch_size: int, rank: int = 0, world: int = 1):
        if batch_size % world:
            raise ValueError(f"batch size {batch_size} is not divisible by {world} processes")
        self.start, self.iters, self.B, self.rank, self.world = start, iters, batch_size, rank, world

    def __len__(self) -> int:
        return max(self.iters - self.start, 0)

    def __iter__(self):
        per = self.B // self.world
        for it in range(self.start, self.iters):
            base = it * self.B + self.rank * per
            yield list(range(base, base + per))


def collate(batch):
    images = torch.stack([b[0] for b in batch])   # N x 3 x h x w
    targets = torch.stack([b[1] for b in batch])  # N x h x w
    return images, targets
