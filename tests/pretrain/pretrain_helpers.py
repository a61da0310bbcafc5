"""Small encoders and image folders shared by the pretraining tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


class TinyEncoder(nn.Module):
    """conv-BN-ReLU-pool-``fc``: the shape of a torchvision classifier, at a fraction of the cost."""

    def __init__(self, num_classes: int = 8, width: int = 6):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


def write_image_folder(root: Path, n_classes: int = 3, per_class: int = 8, size: int = 20,
                       corrupt: int = 0, seed: int = 0) -> Path:
    """``root/train/<class>/<i>.JPEG``: class k is a bright square at a class-specific place;
    ``corrupt`` extra files per first class hold bytes that are not an image."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k in range(n_classes):
        folder = root / "train" / f"c{k}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
            o = 2 + 4 * k
            img[o:o + 6, o:o + 6] = 230
            Image.fromarray(img).save(folder / f"c{k}_{i}.JPEG", quality=90)
        if k == 0:
            for j in range(corrupt):
                (folder / f"c{k}_bad{j}.JPEG").write_bytes(b"not a jpeg at all")
    return root
