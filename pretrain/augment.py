"""Augmentations of the papers: MoCo v1, MoCo v2 ("aug+"), SMoG (BYOL-style, optional multi-crop).

Each builder returns a callable PIL image -> list of views (tensors, ImageNet-normalised). All
randomness comes from torch's global RNG, which the dataset seeds per (seed, epoch, image), so a
resumed run sees exactly the crops an uninterrupted run would have seen.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from mocobench.checkpoints.backbones import IMAGENET_MEAN, IMAGENET_STD


class Views:
    """Apply each transform to the same image: PIL -> [view_0, view_1, ...]."""

    def __init__(self, *transforms):
        self.transforms = transforms

    def __call__(self, img):
        return [t(img) for t in self.transforms]

    def __repr__(self) -> str:
        return "Views(\n" + "\n".join(repr(t) for t in self.transforms) + "\n)"


class SeparableGaussianBlur(T.GaussianBlur):
    """torchvision's ``GaussianBlur`` (the same σ draw from torch's RNG, k-tap kernel, reflect
    padding, rounding to uint8) computed on PIL images as two 1-D passes of shifted adds.

    NOTE: torchvision convolves a PIL image with the full k x k kernel: 38 ms for a 224 px view at
    k = 23 on one core, which made MoCo v2's DataLoader workers 6x slower than the official recipe's
    on an H200 (``benchmarks/device_check.py``: 243 vs 1479 img/s end to end). This takes 2.4 ms; it
    equals torchvision's output up to float rounding (``tests/pretrain/test_augment.py``).
    """

    def forward(self, img):
        sigma = self.get_params(self.sigma[0], self.sigma[1])
        if isinstance(img, torch.Tensor):
            return TF.gaussian_blur(img, self.kernel_size, [sigma, sigma])
        return separable_blur(img, self.kernel_size[0], sigma)


def separable_blur(img, k: int, sigma: float):
    """PIL image -> PIL image blurred by a k-tap Gaussian of std ``sigma`` along each axis."""
    half = (k - 1) * 0.5
    pdf = torch.exp(-0.5 * (torch.linspace(-half, half, k) / sigma) ** 2)
    kern = (pdf / pdf.sum()).tolist()
    x = F.pad(TF.pil_to_tensor(img).float()[None], (k // 2,) * 4, mode="reflect")[0]  # C x H+k-1 x W+k-1
    h, w = x.shape[1] - k + 1, x.shape[2] - k + 1
    rows = x[:, :, :w] * kern[0]
    for j in range(1, k):
        rows.add_(x[:, :, j:j + w], alpha=kern[j])
    out = rows[:, :h] * kern[0]
    for j in range(1, k):
        out.add_(rows[:, j:j + h], alpha=kern[j])
    return TF.to_pil_image(out.round_().clamp_(0, 255).to(torch.uint8), mode=img.mode)


def _blur(size: int, p: float):
    # NOTE: the official code blurs with PIL's GaussianBlur(radius=σ), σ ~ U(0.1, 2) from Python's
    # random; we use torchvision's blur (torch RNG, so it is seeded with the rest), kernel ≈ 10% of
    # the crop as in SimCLR, computed separably (SeparableGaussianBlur).
    k = max(3, int(0.1 * size) // 2 * 2 + 1)
    return T.RandomApply([SeparableGaussianBlur(k, sigma=(0.1, 2.0))], p=p)


def _finish():
    return [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def moco_v1(size: int, min_scale: float = 0.2) -> T.Compose:
    """RRC(size, scale min-1), grayscale 0.2, ColorJitter(0.4, 0.4, 0.4, 0.4), flip."""
    return T.Compose([T.RandomResizedCrop(size, scale=(min_scale, 1.0)), T.RandomGrayscale(p=0.2),
                      T.ColorJitter(0.4, 0.4, 0.4, 0.4), T.RandomHorizontalFlip(), *_finish()])


def moco_v2(size: int, min_scale: float = 0.2) -> T.Compose:
    """aug+: RRC, ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8, grayscale 0.2, blur σ∈[0.1, 2] p 0.5, flip."""
    return T.Compose([T.RandomResizedCrop(size, scale=(min_scale, 1.0)),
                      T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), T.RandomGrayscale(p=0.2),
                      _blur(size, 0.5), T.RandomHorizontalFlip(), *_finish()])


def byol(size: int, min_scale: float, blur_p: float, solarize_p: float) -> T.Compose:
    """BYOL's view: RRC, flip, ColorJitter(0.4, 0.4, 0.2, 0.1) p 0.8, grayscale 0.2, blur, solarize."""
    return T.Compose([T.RandomResizedCrop(size, scale=(min_scale, 1.0)), T.RandomHorizontalFlip(),
                      T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8), T.RandomGrayscale(p=0.2),
                      _blur(size, blur_p), T.RandomSolarize(128, p=solarize_p), *_finish()])


def build(cfg) -> Views:
    """The two (or 2 + ``local_crops``) views of the config's ``augmentation``."""
    if cfg.augmentation == "moco_v1":
        t = moco_v1(cfg.img_size, cfg.crop_min_scale)
        return Views(t, t)
    if cfg.augmentation == "moco_v2":
        t = moco_v2(cfg.img_size, cfg.crop_min_scale)
        return Views(t, t)
    if cfg.augmentation == "smog":
        # NOTE: SMoG follows BYOL's asymmetric pair (blur 1.0 / 0.1, solarize 0 / 0.2); local crops
        # (scale 0.05-min_scale, as SwAV) get blur 0.5 and no solarize.
        views = [byol(cfg.img_size, cfg.crop_min_scale, 1.0, 0.0), byol(cfg.img_size, cfg.crop_min_scale, 0.1, 0.2)]
        local = byol(cfg.local_size, 0.05, 0.5, 0.0)
        if cfg.local_crops:
            local.transforms[0] = T.RandomResizedCrop(cfg.local_size, scale=(0.05, cfg.crop_min_scale))
        return Views(*views, *[local] * cfg.local_crops)
    raise ValueError(f"unknown augmentation {cfg.augmentation!r}; use moco_v1, moco_v2 or smog")
