"""UniMoCo's labelled subset names its list (issue 25 item 4): the given file's sha256, or the drawn
list's, which is the sha256 of RUN_DIR/supervised_list.txt; a drawn list is a listed deviation."""

from __future__ import annotations

import dataclasses

from mocobench.core.deviations import of_evaluation
from mocobench.core.io import sha256_file
from mocobench.pretrain import data
from mocobench.pretrain.config import PRESETS


def test_the_labelled_list_is_named_by_its_sha256(synth_tiny, tmp_path):
    folder = data.ImageFolder(data.train_root(synth_tiny))
    cfg = dataclasses.replace(PRESETS["tiny_unimoco"], label_fraction=0.3)
    labels, info = data.labeled_mask(cfg, folder, tmp_path, True)
    assert info["drawn"] and info["sha256"] == sha256_file(tmp_path / "supervised_list.txt")
    assert info["labeled"] == sum(1 for label in labels if label >= 0) > 0
    given = tmp_path / "mine.txt"
    given.write_text("# the first labelled images\n" + (tmp_path / "supervised_list.txt").read_text())
    _, info = data.labeled_mask(dataclasses.replace(cfg, supervised_list=str(given)), folder, tmp_path / "r2", True)
    assert not info["drawn"] and info["sha256"] == sha256_file(given)
    drawn = of_evaluation("knn", "dino-knn", "torchvision", cfg.to_dict())
    assert any("seeded class-balanced draw" in d for d in drawn)
    assert not any("draw" in d for d in of_evaluation("knn", "dino-knn", "torchvision",
                                                       dataclasses.replace(cfg, supervised_list=str(given)).to_dict()))
