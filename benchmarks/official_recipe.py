"""The official MoCo v2 recipe, written here from the papers, as the reference of ``device_check.py``.

MoCo v2 (Chen et al. 2020) on MoCo's Algorithm 1 (He et al. 2020): ResNet encoders with a 2-layer
MLP head, a queue of K keys, momentum m, temperature T; trained in fp32, eagerly, with the "aug+"
augmentations done by PIL in DataLoader workers (PIL's own Gaussian blur, σ ~ U(0.1, 2)). One GPU,
so no shuffle BN. Independent of ``pretrain/`` on purpose: it is what the suite is measured against.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class OfficialMoCoV2(nn.Module):
    """f_q, f_k: ``arch`` with ``fc`` replaced by Linear-ReLU-Linear (hidden = feature width, dim out)."""

    def __init__(self, arch: str, dim: int = 128, K: int = 65536, m: float = 0.999, T: float = 0.2):
        import timm
        import torchvision

        super().__init__()

        def encoder():  # torchvision's ResNets, or a timm model (the CPU smoke run) with an ``fc`` too
            net = (timm.create_model(arch[5:], num_classes=dim) if arch.startswith("timm:")
                   else torchvision.models.__dict__[arch](num_classes=dim))
            width = net.fc.weight.shape[1]
            net.fc = nn.Sequential(nn.Linear(width, width), nn.ReLU(), net.fc)
            return net

        self.f_q, self.f_k, self.K, self.m, self.T = encoder(), encoder(), K, m, T
        self.f_k.load_state_dict(self.f_q.state_dict())
        self.f_k.requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(dim, K), dim=0))  # dim x K
        self.ptr = 0

    def forward(self, x_q: torch.Tensor, x_k: torch.Tensor) -> torch.Tensor:
        """The InfoNCE loss of one batch; updates f_k and the queue."""
        q = F.normalize(self.f_q(x_q), dim=1)  # N x dim
        with torch.no_grad():
            for p_q, p_k in zip(self.f_q.parameters(), self.f_k.parameters()):
                p_k.mul_(self.m).add_(p_q.detach(), alpha=1 - self.m)
            k = F.normalize(self.f_k(x_k), dim=1)  # N x dim
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ self.queue.clone().detach()], dim=1) / self.T
        with torch.no_grad():
            cols = (self.ptr + torch.arange(len(k), device=k.device)) % self.K
            self.queue[:, cols] = k.t()
            self.ptr = (self.ptr + len(k)) % self.K
        return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


class PILBlur:
    """aug+'s blur as the official code applies it: PIL's filter, radius σ ~ U(0.1, 2)."""

    def __call__(self, img):
        from PIL import ImageFilter

        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.1, 2.0)))


def official_loader(train_dir: Path, img_size: int, batch: int, workers: int, device: torch.device):
    """Batches of ``([view_q, view_k], labels)`` from a class-folder tree, aug+ in ``workers`` workers."""
    import torchvision
    from torchvision import transforms as T

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet's, as the official code
    aug = T.Compose([T.RandomResizedCrop(img_size, scale=(0.2, 1.0)),
                     T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), T.RandomGrayscale(p=0.2),
                     T.RandomApply([PILBlur()], p=0.5), T.RandomHorizontalFlip(), T.ToTensor(),
                     T.Normalize(mean, std)])
    ds = torchvision.datasets.ImageFolder(str(train_dir), lambda img: [aug(img), aug(img)])
    return torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                                       pin_memory=device.type == "cuda", drop_last=True)
