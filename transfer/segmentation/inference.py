"""Whole-image and sliding-window inference, and evaluation over a val set."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from mocobench.core import dist
from mocobench.core.precision import evaluation_autocast as autocast
from mocobench.core.io import progress
from mocobench.transfer.segmentation.data import normalize
from mocobench.transfer.segmentation.metrics import ConfusionMatrix


NO_CLASS = 255   # the prediction of an image that could not be read: no evaluated class (void)


@torch.no_grad()
def predict_whole(model, x: torch.Tensor) -> torch.Tensor:
    """x: N x 3 x H x W -> logits N x K x H x W (float32)."""
    with autocast(x.device):
        return model(x).float()


@torch.no_grad()
def predict_slide(model, x: torch.Tensor, crop: tuple[int, int], stride: tuple[int, int]) -> torch.Tensor:
    """Average the logits of overlapping ``crop`` windows placed every ``stride`` pixels.

    Windows are clamped inside the image (the last one in a row ends at the border); an image
    smaller than the crop is one window of its own size.
    """
    N, _, H, W = x.shape
    ch, cw = min(crop[0], H), min(crop[1], W)
    sh, sw = stride
    rows = max(math.ceil((H - ch) / sh), 0) + 1
    cols = max(math.ceil((W - cw) / sw), 0) + 1
    logits = None
    count = torch.zeros(1, 1, H, W, device=x.device)
    for r in range(rows):
        for c in range(cols):
            y0, x0 = min(r * sh, H - ch), min(c * sw, W - cw)
            with autocast(x.device):
                out = model(x[:, :, y0:y0 + ch, x0:x0 + cw]).float()  # N x K x ch x cw
            if logits is None:
                logits = torch.zeros(N, out.shape[1], H, W, device=x.device)
            logits[:, :, y0:y0 + ch, x0:x0 + cw] += out
            count[:, :, y0:y0 + ch, x0:x0 + cw] += 1
    return logits / count


@torch.no_grad()
def evaluate(model, dataset, *, device: torch.device, mean, std, inference: str = "whole",
             slide_crop=(769, 769), slide_stride=(513, 513), rank: int = 0, world: int = 1,
             write_prediction=None, desc: str = "eval") -> ConfusionMatrix:
    """Confusion matrix over the whole of ``dataset``. Its unreadable images were found and counted
    when it was opened (a read error here is an error); each is scored as a prediction of no class:
    its ground-truth pixels go to the void column, so they count against their classes, as
    cityscapesscripts counts a pixel predicted as an ignored label. The official protocols score a
    fixed val set, and a figure over fewer images could not be set beside anyone else's (detection
    scores an unreadable test image with no detections, its objects missed, for the same reason).

    Each rank takes its shard (``mocobench.core.dist.shard_indices``: every image once, no padding); the
    matrices are summed over ranks, which is exactly the matrix of one process.

    ``write_prediction(name, train_ids_np)`` is called per image when given (e.g. to write
    Cityscapes label-id PNGs for the official script); an unreadable image's prediction is
    ``NO_CLASS`` everywhere.
    """
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(dataset.num_classes, device=device)
    indices = dist.shard_indices(len(dataset), rank, world)
    for i in progress(indices, total=len(indices), desc=desc, unit="img", disable=None if rank == 0 else True):
        image, target, name = dataset[i]
        x = normalize(image, mean, std)[None].to(device)
        if inference == "slide":
            logits = predict_slide(model, x, slide_crop, slide_stride)
        elif inference == "whole":
            logits = predict_whole(model, x)
        else:
            raise ValueError(f"unknown inference mode {inference!r} (whole, slide)")
        pred = logits.argmax(1)[0]  # H x W
        cm.update(pred, torch.from_numpy(target).to(device))
        if write_prediction is not None:
            write_prediction(name, pred.cpu().numpy().astype(np.uint8))
    if rank == 0:   # once over the ranks
        for name, target in dataset.missed_targets():
            target = torch.from_numpy(target).to(device)
            cm.update(torch.full_like(target, NO_CLASS), target)   # the void column
            if write_prediction is not None:   # so that scoring the written files gives these figures
                write_prediction(name, np.full(tuple(target.shape), NO_CLASS, dtype=np.uint8))
    cm.all_reduce()
    model.train(was_training)
    return cm


def prediction_writer(dataset_name: str, out_dir: str | Path):
    """A ``write_prediction`` callback writing the official format of ``dataset_name``."""
    from mocobench.transfer.segmentation.score import write_cityscapes_prediction, write_voc_prediction

    out_dir = Path(out_dir)
    if dataset_name == "cityscapes":
        return lambda name, pred: write_cityscapes_prediction(out_dir / f"{name}_pred_labelIds.png", pred)
    return lambda name, pred: write_voc_prediction(out_dir / f"{name}.png", pred)
