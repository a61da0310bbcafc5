"""VOC 2012 segmentation: a JPEG whose data is cut short is skipped and counted when the split is
opened, as Cityscapes' PNGs are, not a crash when it is read."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mocobench.datasets.images import check_data
from mocobench.datasets.voc_seg import VOCSegmentation

from unreadable_images import write_jpeg


def test_check_data_reads_jpeg_data_which_verify_does_not(tmp_path):
    good = write_jpeg(tmp_path / "good.jpg", 96, 64, seed=0)
    cut = write_jpeg(tmp_path / "cut.jpg", 96, 64, seed=0, truncated=True)   # verify() passes on it
    with Image.open(good) as im:
        check_data(im)
    with Image.open(cut) as im, pytest.raises(OSError, match="truncated"):
        check_data(im)
    # the independent statement: a full decode of the same file fails the same way
    with Image.open(cut) as im, pytest.raises(OSError, match="truncated"):
        im.convert("RGB")
    # other formats keep verify(): a PNG cut short fails its chunk check
    png = tmp_path / "p.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(png)
    (tmp_path / "cut.png").write_bytes(png.read_bytes()[:-100])
    with Image.open(tmp_path / "cut.png") as im, pytest.raises(Exception):
        check_data(im)


def voc2012(root, n: int, truncated=()):
    d = root / "VOC2012"
    (d / "ImageSets" / "Segmentation").mkdir(parents=True)
    (d / "SegmentationClass").mkdir()
    ids = [f"2012_{i:06d}" for i in range(n)]
    for i, image_id in enumerate(ids):
        write_jpeg(d / "JPEGImages" / f"{image_id}.jpg", 96, 64, seed=i, truncated=i in truncated)
        mask = np.zeros((64, 96), dtype=np.uint8)
        mask[10:40, 20:60] = 12                           # a dog
        Image.fromarray(mask, "L").save(d / "SegmentationClass" / f"{image_id}.png")
    (d / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids) + "\n")
    return d


def test_truncated_jpeg_is_skipped_and_counted_at_open(tmp_path):
    d = voc2012(tmp_path, 3, truncated={1})
    with pytest.warns(UserWarning, match=r"2012_000001\.jpg: unreadable image skipped.*truncated"):
        ds = VOCSegmentation(tmp_path, "train")
    assert ds.skipped == [str(d / "JPEGImages" / "2012_000001.jpg")]
    assert ds.ids == ["2012_000000", "2012_000002"]
    for i in range(len(ds)):                              # every image left reads
        image, target, image_id = ds[i]
        assert image.shape == (64, 96, 3) and (target == 12).sum() == 30 * 40


def test_an_unreadable_val_image_is_scored_as_missed(tmp_path):
    """The official protocols score a fixed val set: an image that cannot be read is predicted as no
    class, so its ground-truth pixels count against their classes (before: the val set shrank, and
    the mIoU was of the readable images alone)."""
    import torch

    from mocobench.transfer.segmentation.inference import evaluate, prediction_writer
    from mocobench.transfer.segmentation.score import score_voc

    class AlwaysDog(torch.nn.Module):
        def forward(self, x):
            out = torch.zeros(x.shape[0], 21, *x.shape[2:])
            out[:, 12] = 1.0
            return out

    d = voc2012(tmp_path, 3, truncated={1})
    listing = d / "ImageSets" / "Segmentation"
    (listing / "val.txt").write_text((listing / "train.txt").read_text())
    with pytest.warns(UserWarning, match="2012_000001.jpg"):
        val = VOCSegmentation(tmp_path, "val")
    written = tmp_path / "pred"
    scores = evaluate(AlwaysDog(), val, device=torch.device("cpu"), mean=(0.5,) * 3, std=(0.25,) * 3,
                      write_prediction=prediction_writer("voc2012", written)).scores(val.classes)
    # IoU = TP / (TP + FP + FN) over all three images, stated by hand: each mask has 30 x 40 dog pixels
    # in 64 x 96; the two read are predicted dog everywhere, the third is missed whole
    px, dog = 64 * 96, 30 * 40
    assert scores["IoU/dog"] == pytest.approx(100 * 2 * dog / (2 * dog + 2 * (px - dog) + dog))
    assert scores["IoU/background"] == 0.0
    assert scores["aAcc"] == pytest.approx(100 * 2 * dog / (3 * px))
    # the unreadable image's prediction is written too (no class), so scoring the files agrees
    assert sorted(p.name for p in written.iterdir()) == [f"2012_00000{i}.png" for i in range(3)]
    assert score_voc(d / "SegmentationClass", written, listing / "val.txt")["metrics"] == scores
