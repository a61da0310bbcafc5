"""An unreadable test image is scored with no detections under its own id (its objects missed) and
counted; it never takes the next image's detections. VOC through the devkit AP, COCO through
pycocotools."""

from __future__ import annotations

import json
import types
import warnings

import pytest
import torch

from mocobench.datasets.coco import COCODetection
from mocobench.datasets.voc import VOC07_TEST, VOCDetection
from mocobench.transfer.detection.evaluate import coco_results, predict, score_coco, score_voc
from unreadable_images import write_jpeg

SIZES = [(64, 48), (64, 48), (64, 48)]
CUT = 1   # the image whose data is cut short: its header opens, its decode fails


def box(i):   # one dog per image, at a place of its own (1-based inclusive, as VOC writes it)
    return (2 + 10 * i, 3, 20 + 10 * i, 30)


class Oracle(torch.nn.Module):
    """Knows every readable test image by its pixels and answers its ground truth (score 1)."""

    def __init__(self, dataset):
        super().__init__()
        self.transform = types.SimpleNamespace(min_size=(1,), max_size=1)   # what predict() sets
        self.truth = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for i in range(len(dataset)):
                item = dataset.read(i)
                if item is not None:
                    self.truth[float(item[0].sum())] = item[1]
        dataset.skipped.clear()

    def forward(self, images):
        t = self.truth[float(images[0].sum())]
        return [{"boxes": t["boxes"], "labels": t["labels"], "scores": torch.ones(len(t["labels"]))}]


PROTOCOL = types.SimpleNamespace(min_size_test=1, max_size_test=1, bf16=False)


def voc_devkit(tmp_path):
    """``tmp_path/VOC2007`` with a test split of three images, one dog each; image ``000002`` cut short."""
    d = tmp_path / "VOC2007"
    (d / "ImageSets" / "Main").mkdir(parents=True)
    (d / "Annotations").mkdir()
    ids = [f"{i + 1:06d}" for i in range(len(SIZES))]
    for i, (image_id, (w, h)) in enumerate(zip(ids, SIZES)):
        write_jpeg(d / "JPEGImages" / f"{image_id}.jpg", w, h, i, truncated=i == CUT)
        x0, y0, x1, y1 = box(i)
        (d / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><size><width>{w}</width><height>{h}</height></size><object><name>dog</name>"
            f"<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox>"
            "</object></annotation>")
    (d / "ImageSets" / "Main" / "test.txt").write_text("\n".join(ids) + "\n")
    return d


def test_voc_unreadable_test_image_gets_no_detections_of_its_own(tmp_path):
    d = voc_devkit(tmp_path)
    test = VOCDetection(tmp_path, sets=VOC07_TEST)
    assert len(test) == 3 and test.skipped == []          # the header opens: only reading finds it
    model = Oracle(test)
    with pytest.warns(UserWarning, match="000002.jpg"):
        preds = predict(model, test, PROTOCOL, torch.device("cpu"))
    assert test.skipped == [str(d / "JPEGImages" / "000002.jpg")]
    assert len(preds[CUT]["boxes"]) == 0
    for i in (0, 2):
        assert torch.equal(preds[i]["boxes"], test.target(i)["boxes"])
    result = score_voc(preds, test, tmp_path / "det", year=2007)
    # the devkit's results file names 000001 and 000003 only, each with its own box
    rows = (tmp_path / "det" / "comp4_det_test_dog.txt").read_text().split("\n")
    assert [r.split()[0] for r in rows if r] == ["000001", "000003"]
    # recall 2/3 at precision 1: VOC07's 11-point AP has precision 1 at r = 0, .1, ..., .6 and none
    # beyond, so 7/11 (the 000002 dog counts as missed, as the devkit scores an image without detections)
    assert result["AP50"] == pytest.approx(100 * 7 / 11)


def test_coco_unreadable_test_image_gets_no_detections_of_its_own(tmp_path):
    images, anns = [], []
    for i, (w, h) in enumerate(SIZES):
        write_jpeg(tmp_path / "val2017" / f"{i}.jpg", w, h, i, truncated=i == CUT)
        x0, y0, x1, y1 = box(i)
        images.append({"id": 10 + i, "file_name": f"{i}.jpg", "width": w, "height": h})
        anns.append({"id": i + 1, "image_id": 10 + i, "category_id": 7, "bbox": [x0, y0, x1 - x0, y1 - y0],
                     "area": float((x1 - x0) * (y1 - y0)), "iscrowd": 0})
    (tmp_path / "ann.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                   "categories": [{"id": 7, "name": "dog"}]}))
    test = COCODetection(tmp_path / "val2017", tmp_path / "ann.json", with_masks=False)
    model = Oracle(test)
    with pytest.warns(UserWarning, match="1.jpg"):
        preds = predict(model, test, PROTOCOL, torch.device("cpu"))
    assert test.skipped == [str(tmp_path / "val2017" / "1.jpg")]
    results = coco_results(preds, test, with_masks=False)
    assert sorted((r["image_id"], tuple(r["bbox"])) for r in results) == sorted(
        (a["image_id"], tuple(map(float, a["bbox"]))) for a in anns if a["image_id"] != 10 + CUT)
    m = score_coco(results, test.coco, ("bbox",))
    # COCOeval: recall 2/3 at precision 1 -> 67 of 101 recall points (0, .01, ..., .66) at 1
    assert m["bbox_AP50"] == pytest.approx(100 * 67 / 101)


def _worker(rank, world, port, root, out):
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    test = VOCDetection(root, sets=VOC07_TEST)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        preds = predict(Oracle(test), test, PROTOCOL, torch.device("cpu"))
    if rank == 0:
        (out / "rank0.json").write_text(json.dumps({"skipped": test.skipped,
                                                    "boxes": [len(p["boxes"]) for p in preds]}))
    dist.destroy_process_group()


def test_unreadable_image_met_on_another_rank_is_counted_on_rank_0(tmp_path):
    import socket

    import torch.multiprocessing as mp

    d = voc_devkit(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # shards are strided: rank 1 reads image 1 (the cut one), rank 0 images 0 and 2
    mp.start_processes(_worker, args=(2, port, tmp_path, tmp_path), nprocs=2, join=True, start_method="fork")
    got = json.loads((tmp_path / "rank0.json").read_text())
    assert got == {"skipped": [str(d / "JPEGImages" / "000002.jpg")], "boxes": [1, 0, 1]}


def test_record_counts_unreadable_test_images_apart(tmp_path):
    from test_detection_train import SMALL, make_voc

    from mocobench.core.records import load_records
    from mocobench.transfer.detection.run import run_eval

    devkit = make_voc(tmp_path)
    cut = devkit / "VOC2007" / "JPEGImages" / "2007_000008.jpg"   # the second of the 3 test images
    cut.write_bytes(cut.read_bytes()[:-400])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_eval("random:resnet18", SMALL, "voc", devkit, [0], tmp_path / "results", tmp_path / "work", device="cpu")
    records, problems = load_records(tmp_path / "results")
    assert problems == [] and len(records) == 1
    assert records[0]["run"]["skipped_test"] == 1 and records[0]["run"]["skipped_train"] == 0
