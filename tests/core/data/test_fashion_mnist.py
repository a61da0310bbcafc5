"""Fashion-MNIST (Debian dataset-fashion-mnist) through our IDX reader and ImageNet-layout export."""

from __future__ import annotations

import gzip
import hashlib
import struct

import numpy as np
import pytest
from PIL import Image

from mocobench.datasets.fashion_mnist import CLASSES, load_split, read_idx
from mocobench.datasets.imagefolder import ImageFolder


def raw_idx(path):
    """Independent reading: gzip + struct only."""
    data = gzip.open(path).read()
    magic, n = struct.unpack(">II", data[:8])
    return magic, n, data


@pytest.fixture(scope="module")
def train_split(fashion_mnist_dir):
    return load_split(fashion_mnist_dir, "train")


def test_counts_shapes_histogram_and_known_values(fashion_mnist_dir, train_split):
    images, labels = train_split
    t_images, t_labels = load_split(fashion_mnist_dir, "test")
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert t_images.shape == (10000, 28, 28) and labels.shape == (60000,)
    assert np.bincount(labels).tolist() == [6000] * 10
    assert np.bincount(t_labels).tolist() == [1000] * 10
    # the dataset's first training image is an ankle boot, the first two test images are an
    # ankle boot and a pullover (Zalando's published sample order)
    assert CLASSES[labels[0]] == "Ankle_boot" and labels[0] == 9
    assert [CLASSES[k] for k in t_labels[:2]] == ["Ankle_boot", "Pullover"]
    # pixels against a plain gzip + struct reading of the file
    magic, n, data = raw_idx(fashion_mnist_dir / "train-images-idx3-ubyte.gz")
    rows, cols = struct.unpack(">II", data[8:16])
    assert (magic, n, rows, cols) == (2051, 60000, 28, 28)
    first = data[16:16 + 100 * 28 * 28]
    assert hashlib.sha256(images[:100].tobytes()).hexdigest() == hashlib.sha256(first).hexdigest()
    assert int(images[0].sum()) == sum(first[: 28 * 28])
    _, _, ldata = raw_idx(fashion_mnist_dir / "train-labels-idx1-ubyte.gz")
    assert labels[-5:].tolist() == list(ldata[-5:])


def test_corrupt_files_are_clear_errors(fashion_mnist_dir, tmp_path):
    data = gzip.open(fashion_mnist_dir / "t10k-labels-idx1-ubyte.gz").read()
    trunc_gz = tmp_path / "trunc.gz"
    trunc_gz.write_bytes(gzip.compress(data)[:500])
    with pytest.raises(ValueError, match="trunc.gz.*gzip"):
        read_idx(trunc_gz)
    short = tmp_path / "short.gz"
    short.write_bytes(gzip.compress(data[:-10]))
    with pytest.raises(ValueError, match=r"short.gz.*\(10000,\).*truncated"):
        read_idx(short)
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(struct.pack(">II", 2050, 1) + b"\0"))
    with pytest.raises(ValueError, match="bad.gz: magic number 2050"):
        read_idx(bad)
    with pytest.raises(FileNotFoundError, match="nope"):
        read_idx(tmp_path / "nope.gz")


def test_export_imagefolder_reads_back(fashion_mnist_dir, train_split, tmp_path, capsys):
    from mocobench.cli import main

    assert main(["data", "fashion-mnist", "--src", str(fashion_mnist_dir), "--out", str(tmp_path / "fm"),
                 "--limit-per-class", "3"]) == 0
    assert f"to {tmp_path / 'fm'}: train 30, val 30" in capsys.readouterr().out
    train = ImageFolder(tmp_path / "fm" / "train")
    val = ImageFolder(tmp_path / "fm" / "val")
    assert sorted(train.classes) == sorted(CLASSES) and val.classes == train.classes
    assert np.bincount(train.targets).tolist() == [3] * 10
    # train_00000.png is the ankle boot, pixel-exact after the PNG round trip
    images, _ = train_split
    path = tmp_path / "fm" / "train" / "Ankle_boot" / "train_00000.png"
    assert np.array_equal(np.asarray(Image.open(path)), images[0])
    img, label = train[[p for p, _ in train.samples].index(str(path))]
    assert train.classes[label] == "Ankle_boot" and img.size == (28, 28) and img.mode == "RGB"
