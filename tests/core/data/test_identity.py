"""One dataset id per dataset, whatever its folder is called (datasets/identity.py) (issue 25, item 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mocobench.datasets.identity import checked_name, dataset_id


def imagenet_like(root: Path, classes: int, wnids: bool = True) -> Path:
    for i in range(classes):
        (root / "train" / (f"n{i:08d}" if wnids else f"class{i}")).mkdir(parents=True)
    (root / "val").mkdir()
    return root


@pytest.mark.parametrize("folder", ["imagenet", "ILSVRC2012", "CLS-LOC"])
def test_imagenet_under_any_folder_name_is_imagenet(tmp_path, folder):
    assert dataset_id("imagenet", imagenet_like(tmp_path / folder, 1000)) == "imagenet"


def test_other_image_folders_keep_their_name(tmp_path):
    assert dataset_id("imagenet", imagenet_like(tmp_path / "imagenet-100", 100)) == "imagenet-100"
    assert dataset_id("imagenet", imagenet_like(tmp_path / "flowers", 1000, wnids=False)) == "flowers"


def test_the_embedded_data_never_take_a_real_id(synth_tiny):
    assert dataset_id("imagenet", synth_tiny / "imagenet") == "synth-tiny"
    assert dataset_id("voc07+12", synth_tiny / "VOCdevkit") == "synth-tiny-voc07+12"
    assert dataset_id("coco", synth_tiny / "coco") == "synth-tiny-coco"
    assert dataset_id("cityscapes", synth_tiny) == "synth-tiny-cityscapes"
    assert dataset_id("voc2012", synth_tiny / "VOCdevkit" / "VOC2012") == "synth-tiny-voc2012"


def test_real_layouts_take_the_papers_ids(tmp_path):
    for kind in ("voc07+12", "coco", "cityscapes", "voc2012"):
        assert dataset_id(kind, tmp_path / "Whatever_Name") == kind


def test_a_given_name_may_not_contradict_the_data(tmp_path, synth_tiny):
    with pytest.raises(ValueError, match="embedded dataset synth-tiny"):
        checked_name("imagenet", "imagenet", synth_tiny / "imagenet")
    small = imagenet_like(tmp_path / "in100", 100)
    with pytest.raises(ValueError, match="not imagenet .*reads as in100"):
        checked_name("imagenet", "imagenet", small)
    assert checked_name("imagenet-100", "imagenet", small) == "imagenet-100"
    assert checked_name(None, "imagenet", small) == "in100"
