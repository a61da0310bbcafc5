"""The feature cache: keyed by checkpoint and data, float16, atomic, reused without the backbone."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mocobench.checkpoints.load import LoadReport
from mocobench.datasets.imagefolder import ImageFolder
from mocobench.transfer.classification.data import eval_transform, make_loader
from mocobench.transfer.classification.features import (cache_key, cached_features, checkpoint_identity,
                                              extract_features)


def make_folder(root: Path, per_class=3, classes=2, bad=True):
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / f"c{c}" / f"{i}.png")
    if bad:
        (root / "c0" / "broken.png").write_bytes(b"not a png")
    return root


class CountingBackbone(torch.nn.Module):
    num_features = 3

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x.mean((2, 3))  # N x 3


def test_second_run_reads_the_cache_and_never_calls_the_backbone(tmp_path):
    ds = ImageFolder(make_folder(tmp_path / "train"), eval_transform(16, 18, (0.5,) * 3, (0.25,) * 3))
    net = CountingBackbone()
    loader = make_loader(ds, 4)
    report = LoadReport(path="x.pth", name="x", sha256="ab" * 32, format="torchvision", arch="resnet18")
    key = cache_key(checkpoint_identity(report), ds, {"kind": "center", "img_size": 16})
    with pytest.warns(UserWarning, match="broken.png"):
        f1, y1, s1, hit1 = cached_features(tmp_path / "cache", key,
                                           lambda: extract_features(net, loader, torch.device("cpu")),
                                           log=lambda *a: None)
    calls = net.calls
    assert calls > 0 and not hit1 and s1 == 1 and f1.shape == (6, 3) and y1.tolist() == [0, 0, 0, 1, 1, 1]
    f2, y2, s2, hit2 = cached_features(tmp_path / "cache", key,
                                       lambda: extract_features(net, loader, torch.device("cpu")),
                                       log=lambda *a: None)
    assert hit2 and net.calls == calls  # the backbone did not run again
    assert torch.equal(f1, f2) and torch.equal(y1, y2) and s2 == 1
    stored = torch.load(tmp_path / "cache" / f"{key}.pt", weights_only=True)
    assert stored["features"].dtype == torch.float16
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]  # no temp files left


def test_cache_key_depends_on_checkpoint_data_and_transform(tmp_path):
    ds = ImageFolder(make_folder(tmp_path / "a", bad=False))
    rep = LoadReport(path="x", name="x", sha256="0" * 64, format="moco", arch="resnet50")
    rnd = LoadReport(path="random:resnet50", name="r", sha256=None, format="random", arch="resnet50",
                     metadata={"seed": 0})
    rnd1 = LoadReport(path="random:resnet50:1", name="r", sha256=None, format="random", arch="resnet50",
                      metadata={"seed": 1})
    base = cache_key(checkpoint_identity(rep), ds, {"img_size": 224})
    assert base == cache_key(checkpoint_identity(rep), ds, {"img_size": 224})
    assert base != cache_key(checkpoint_identity(rep), ds, {"img_size": 64})
    assert cache_key(checkpoint_identity(rnd), ds, {}) != cache_key(checkpoint_identity(rnd1), ds, {})
    # an image rewritten at the same size (a repaired download): its time changed, so new data
    f = tmp_path / "a" / "c1" / "1.png"
    st = f.stat()
    f.write_bytes(f.read_bytes())
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert f.stat().st_size == st.st_size
    assert base != cache_key(checkpoint_identity(rep), ImageFolder(tmp_path / "a"), {"img_size": 224})
    (tmp_path / "a" / "c1" / "0.png").unlink()  # the file list changed
    ds2 = ImageFolder(tmp_path / "a")
    assert base != cache_key(checkpoint_identity(rep), ds2, {"img_size": 224})


def test_corrupt_cache_file_is_recomputed(tmp_path):
    (tmp_path / "k.pt").write_bytes(b"garbage")
    f, y, s, hit = cached_features(tmp_path, "k", lambda: (torch.ones(2, 3), torch.tensor([0, 1]), 0),
                                   log=lambda *a: None)
    assert not hit and f.shape == (2, 3)
    assert cached_features(tmp_path, "k", lambda: 1 / 0, log=lambda *a: None)[3]


def test_half_storage_keeps_tiny_and_huge_features():
    from mocobench.transfer.classification.features import from_half, to_half

    for magnitude in (1e-9, 1.0, 1e6):  # random MobileNetV2 features are ~1e-9; fp16 alone gives 0
        f = magnitude * torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
        back = from_half(*to_half(f))
        torch.testing.assert_close(back, f, rtol=1e-3, atol=magnitude * 2e-3)


def test_augmented_views_are_the_same_whatever_the_worker_count(tmp_path):
    """The views were drawn from each DataLoader worker's generator: another worker count (capped
    at the machine's cores) gave other augmented features for the same seed."""
    from mocobench.transfer.classification.data import SeededViews, train_transform

    ds = ImageFolder(make_folder(tmp_path / "train", per_class=4, bad=False),
                     train_transform(12, (0.5,) * 3, (0.25,) * 3))
    views = {}
    for workers in (0, 1, 2):
        torch.manual_seed(123)
        loader = make_loader(SeededViews(ds, 7), 3, workers=workers, seed=7)
        views[workers] = torch.cat([x for (x, _), _ in loader])
    assert torch.equal(views[0], views[1]) and torch.equal(views[0], views[2])
    # another seed gives other views, and the caller's generator is left as it was
    other = torch.cat([x for (x, _), _ in make_loader(SeededViews(ds, 8), 3)])
    assert not torch.equal(views[0], other)
    torch.manual_seed(5)
    expected = torch.rand(1)
    torch.manual_seed(5)
    SeededViews(ds, 7)[0]
    assert torch.equal(torch.rand(1), expected)
    # the wrapped folder's fields, which the cache key reads, come through
    assert SeededViews(ds, 7).samples == ds.samples and SeededViews(ds, 7).root == ds.root
