from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mocobench.datasets.imagefolder import (ImageFolder, collate_skip, labeled_subset, read_subset_file,
                                        write_subset_file)


def to_tensor(img):
    return torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1) / 255


def make_folder(root: Path, per_class=(3, 2, 4), corrupt=True) -> Path:
    # per_class: images in a_cat, b_dog, c_fox
    """``root/{b_dog,a_cat,c_fox}/<cls>_<i>.<ext>`` with mixed extensions; one corrupt file."""
    rng = np.random.default_rng(0)
    exts = [".JPEG", ".jpg", ".png", ".PNG"]
    for c, n in zip(["a_cat", "b_dog", "c_fox"], per_class):
        (root / c).mkdir(parents=True)
        for i in range(n):
            arr = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
            ext = exts[i % len(exts)]
            Image.fromarray(arr).save(root / c / f"{c}_{i}{ext}", format="PNG" if "png" in ext.lower() else "JPEG")
    (root / "a_cat" / "notes.txt").write_text("not an image")
    if corrupt:
        # a truncated JPEG: the header parses, the decode fails
        good = (root / "a_cat" / "a_cat_0.JPEG").read_bytes()
        (root / "c_fox" / "c_fox_broken.jpg").write_bytes(good[: len(good) // 3])
    return root


def test_classes_samples_and_items(tmp_path):
    root = make_folder(tmp_path / "train", corrupt=False)
    ds = ImageFolder(root, transform=to_tensor)
    assert ds.classes == ["a_cat", "b_dog", "c_fox"]
    assert ds.class_to_idx == {"a_cat": 0, "b_dog": 1, "c_fox": 2}
    assert len(ds) == 9 and ds.targets == [0, 0, 0, 1, 1, 2, 2, 2, 2]
    assert [Path(p).name for p, _ in ds.samples][:2] == ["a_cat_0.JPEG", "a_cat_1.jpg"]
    x, y = ds[3]
    assert y == 1 and x.shape == (3, 8, 10)
    # the pixels are the file's pixels (PNG is lossless: a_cat_2.png)
    x, y = ds[2]
    assert y == 0
    ref = np.asarray(Image.open(root / "a_cat" / "a_cat_2.png").convert("RGB"), dtype=np.float32) / 255
    assert torch.allclose(x, torch.from_numpy(ref).permute(2, 0, 1))


def test_corrupt_image_is_skipped_and_counted(tmp_path):
    root = make_folder(tmp_path / "train")
    ds = ImageFolder(root, transform=to_tensor)
    assert len(ds) == 10
    broken = [i for i, (p, _) in enumerate(ds.samples) if "broken" in p]
    assert len(broken) == 1
    with pytest.warns(UserWarning, match="c_fox_broken.jpg"):
        assert ds[broken[0]] is None
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate_skip)
    seen, skipped = 0, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for batch, n_skipped in loader:
            if batch is not None:
                x, y = batch
                assert x.shape[1:] == (3, 8, 10) and len(y) == len(x)
                seen += len(x)
            skipped += n_skipped
    assert (seen, skipped) == (9, 1)


def test_collate_skip_multi_view_and_all_none():
    views = lambda: [torch.zeros(3, 4, 4), torch.ones(3, 4, 4)]  # noqa: E731
    (imgs, labels), n = collate_skip([(views(), 1), None, (views(), 2)])
    assert n == 1 and len(imgs) == 2 and imgs[0].shape == (2, 3, 4, 4)
    assert imgs[1].sum() == 2 * 3 * 16 and labels.tolist() == [1, 2]
    assert collate_skip([None, None]) == (None, 2)


def test_subset_file_bare_names_and_relative_paths(tmp_path):
    root = make_folder(tmp_path / "train", corrupt=False)
    sub = write_subset_file(tmp_path / "1percent.txt", ["b_dog_1.jpg", "a_cat/a_cat_2.png", "c_fox_3.PNG"])
    assert read_subset_file(sub) == ["b_dog_1.jpg", "a_cat/a_cat_2.png", "c_fox_3.PNG"]
    ds = ImageFolder(root, subset=sub)
    assert [Path(p).name for p, _ in ds.samples] == ["a_cat_2.png", "b_dog_1.jpg", "c_fox_3.PNG"]
    assert ds.targets == [0, 1, 2]
    assert ds.classes == ["a_cat", "b_dog", "c_fox"]  # the class list is the folder's, not the subset's
    ds2 = ImageFolder(root, subset=["c_fox_0.JPEG"])
    assert len(ds2) == 1 and ds2.targets == [2]


def test_unknown_subset_names_are_a_clear_error(tmp_path):
    root = make_folder(tmp_path / "train", corrupt=False)
    sub = write_subset_file(tmp_path / "bad.txt", ["b_dog_1.jpg", "n0000_missing.JPEG", "zebra/z.jpg"])
    with pytest.raises(ValueError, match=r"bad\.txt.*2 of 3.*n0000_missing\.JPEG"):
        ImageFolder(root, subset=sub)


def test_missing_and_empty_folders_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageFolder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty.*no class sub-folders"):
        ImageFolder(tmp_path / "empty")
    (tmp_path / "noimg" / "cls").mkdir(parents=True)
    (tmp_path / "noimg" / "cls" / "x.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="noimg.*no images"):
        ImageFolder(tmp_path / "noimg")
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_subset_file(tmp_path / "missing.txt")


def test_labeled_subset_is_class_balanced_and_seeded(tmp_path):
    root = make_folder(tmp_path / "train", per_class=(20, 10, 40), corrupt=False)
    ds = ImageFolder(root)
    names = labeled_subset(ds, 0.1, seed=3)
    counts = {c: sum(n.startswith(c) for n in names) for c in ds.classes}
    assert counts == {"a_cat": 2, "b_dog": 1, "c_fox": 4}
    assert labeled_subset(ds, 0.1, seed=3) == names
    assert labeled_subset(ds, 0.1, seed=4) != names
    assert len(ImageFolder(root, subset=names)) == 7
    assert len(labeled_subset(ds, 1.0, seed=0)) == len(ds)
    with pytest.raises(ValueError):
        labeled_subset(ds, 0.0)


def test_dangling_symlink_is_listed_then_skipped_and_counted(tmp_path):
    # a symlink farm whose target moved: the link is an image entry of its folder, never dropped unseen
    root = make_folder(tmp_path / "train", corrupt=False)
    link = root / "b_dog" / "b_dog_gone.JPEG"
    link.symlink_to(tmp_path / "moved" / "b_dog_gone.JPEG")
    ds = ImageFolder(root, transform=to_tensor)
    assert len(ds) == 10 and (str(link), 1) in ds.samples
    with pytest.warns(UserWarning, match="b_dog_gone.JPEG"):
        assert ds[ds.samples.index((str(link), 1))] is None
    assert ds.n_skipped == 1
