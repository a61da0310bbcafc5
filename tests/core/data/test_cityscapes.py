"""Cityscapes reader: label-id -> train-id table from cityscapesscripts, pairing, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mocobench.datasets import cityscapes as cs


def test_train_ids_follow_the_official_label_table():
    from cityscapesscripts.helpers.labels import labels, name2label

    assert cs.NUM_CLASSES == 19
    assert cs.CLASSES[0] == "road" and cs.CLASSES[-1] == "bicycle"
    for label in labels:
        if label.id < 0:
            continue
        expected = label.trainId if label.trainId not in (-1, 255) else 255
        assert cs.LABEL_ID_TO_TRAIN_ID[label.id] == expected, label.name
        assert label.ignoreInEval == (expected == 255), label.name
    # writing predictions: train id -> label id -> train id is the identity
    assert (cs.LABEL_ID_TO_TRAIN_ID[cs.TRAIN_ID_TO_LABEL_ID] == np.arange(19)).all()
    assert cs.TRAIN_ID_TO_LABEL_ID[cs.CLASSES.index("car")] == name2label["car"].id == 26


def _write_pair(root, split, city, stem, label_ids, image=True, gt=True):
    h, w = label_ids.shape
    if image:
        (root / "leftImg8bit" / split / city).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(
            root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
    if gt:
        (root / "gtFine" / split / city).mkdir(parents=True, exist_ok=True)
        Image.fromarray(label_ids).save(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")


def test_dataset_reads_pairs_and_maps_to_train_ids(tmp_path):
    lab = np.array([[7, 8, 0], [26, 33, 4]], np.uint8)  # road sidewalk unlabeled / car bicycle static
    _write_pair(tmp_path, "val", "lindau", "lindau_000000_000019", lab)
    ds = cs.CityscapesSegmentation(tmp_path, "val")
    image, target, stem = ds[0]
    assert stem == "lindau_000000_000019" and image.shape == (2, 3, 3)
    assert target.tolist() == [[0, 1, 255], [13, 18, 255]]


def test_missing_annotation_names_the_file(tmp_path):
    lab = np.full((4, 4), 7, np.uint8)
    _write_pair(tmp_path, "train", "ulm", "ulm_000000_000019", lab)
    _write_pair(tmp_path, "train", "ulm", "ulm_000001_000019", lab, gt=False)
    with pytest.raises(cs.CityscapesError, match="ulm_000001_000019_gtFine_labelIds.png"):
        cs.CityscapesSegmentation(tmp_path, "train")


def test_values_that_are_not_label_ids_are_rejected(tmp_path):
    lab = np.full((4, 4), 7, np.uint8)
    lab[0, 0] = 200
    _write_pair(tmp_path, "val", "ulm", "ulm_000000_000019", lab)
    with pytest.raises(cs.CityscapesError, match=r"ulm_000000_000019_gtFine_labelIds.png: values \[200\]"):
        cs.CityscapesSegmentation(tmp_path, "val")[0]


def test_prediction_matching_follows_the_official_rule(tmp_path):
    lab = np.full((4, 4), 7, np.uint8)
    _write_pair(tmp_path, "val", "ulm", "ulm_000000_000019", lab, image=False)
    gts = cs.list_ground_truth(tmp_path / "gtFine" / "val")
    pred = tmp_path / "pred" / "sub"
    pred.mkdir(parents=True)
    with pytest.raises(cs.CityscapesError, match="no prediction ulm_000000_000019"):
        cs.match_predictions(gts, tmp_path / "pred")
    Image.fromarray(lab).save(pred / "ulm_000000_000019_leftImg8bit.png")
    assert cs.match_predictions(gts, tmp_path / "pred") == [pred / "ulm_000000_000019_leftImg8bit.png"]
    Image.fromarray(lab).save(pred / "ulm_000000_000019_other.png")
    with pytest.raises(cs.CityscapesError, match="several predictions"):
        cs.match_predictions(gts, tmp_path / "pred")


def test_embedded_dataset_reads(synth_tiny):
    root = synth_tiny / "cityscapes"
    for split in ("train", "val"):
        ds = cs.CityscapesSegmentation(root, split)
        assert len(ds) > 0
        image, target, _ = ds[0]
        assert image.shape[:2] == target.shape
        assert set(np.unique(target).tolist()) <= set(range(19)) | {255}
