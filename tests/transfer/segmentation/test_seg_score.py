"""``mocobench score cityscapes|voc-seg`` on ground truth with no evaluated pixel: one line, exit 1,
never a JSON ``NaN`` (which is not JSON) with exit 0."""

from __future__ import annotations

import numpy as np
from PIL import Image

from mocobench.cli import main


def test_cityscapes_ground_truth_without_evaluated_pixel_is_an_error(tmp_path, capsys):
    gt, pred = tmp_path / "gt" / "val" / "x", tmp_path / "pred"
    gt.mkdir(parents=True)
    pred.mkdir()
    # label id 0 (unlabeled) has no train id: every pixel is ignored
    Image.fromarray(np.zeros((8, 16), dtype=np.uint8)).save(gt / "x_000000_000001_gtFine_labelIds.png")
    Image.fromarray(np.full((8, 16), 7, dtype=np.uint8)).save(pred / "x_000000_000001_pred.png")
    code = main(["score", "cityscapes", "--gt", str(tmp_path / "gt"), "--pred", str(pred)])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    # the last line of stderr (a progress bar may come before it, on its line)
    assert err.endswith("\n") and err.replace("\r", "\n").splitlines()[-1] == (
        f"mocobench score cityscapes: {tmp_path / 'gt'}: no pixel of an evaluated class in "
        "any of its 1 ground-truth files (every pixel is ignored), so there is nothing to score")


def test_voc_ground_truth_without_evaluated_pixel_is_an_error(tmp_path, capsys):
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    Image.fromarray(np.full((8, 16), 255, dtype=np.uint8)).save(tmp_path / "gt" / "a.png")
    Image.fromarray(np.zeros((8, 16), dtype=np.uint8)).save(tmp_path / "pred" / "a.png")
    (tmp_path / "val.txt").write_text("a\n")
    code = main(["score", "voc-seg", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"),
                 "--split", str(tmp_path / "val.txt")])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert err.splitlines()[-1].startswith(f"mocobench score voc-seg: {tmp_path / 'val.txt'}: no pixel")


def test_one_evaluated_pixel_scores(tmp_path, capsys):
    import json

    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    mask = np.full((8, 16), 255, dtype=np.uint8)
    mask[0, 0] = 12
    Image.fromarray(mask).save(tmp_path / "gt" / "a.png")
    Image.fromarray(mask).save(tmp_path / "pred" / "a.png")
    (tmp_path / "val.txt").write_text("a\n")
    assert main(["score", "voc-seg", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"),
                 "--split", str(tmp_path / "val.txt")]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["mIoU"] == 100.0
