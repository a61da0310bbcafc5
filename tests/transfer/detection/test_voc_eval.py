"""VOC AP against hand-worked cases and an independent loop transcription of the devkit."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from mocobench.datasets.voc import VOCAnnotation, VOCObject, load_annotations
from mocobench.transfer.detection import voc_eval
from mocobench.transfer.detection.voc_eval import evaluate_voc, voc_ap


def ann(*objs, w=100, h=100):
    return VOCAnnotation("x.jpg", w, h, tuple(VOCObject(n, tuple(map(float, b)), bool(d)) for n, b, d in objs))


def ap50(result, cls):
    return result["per_class"][cls]["AP50"]


# -- hand-worked cases ---------------------------------------------------------------------------

def test_perfect_detections_score_100_at_every_threshold():
    gt = {"a": ann(("dog", (1, 1, 10, 10), 0)), "b": ann(("dog", (5, 5, 50, 60), 0))}
    dets = {"dog": [("a", 0.9, 1, 1, 10, 10), ("b", 0.8, 5, 5, 50, 60)]}
    for use07 in (True, False):
        r = evaluate_voc(gt, dets, use_07_metric=use07)
        assert r["AP"] == pytest.approx(100) and r["AP50"] == pytest.approx(100) and r["AP75"] == pytest.approx(100)
        assert list(r["per_class"]) == ["dog"]  # the other 19 classes have no ground truth
        assert len(r["classes_without_gt"]) == 19


def test_plus_one_in_iou():
    # Boxes 1..10 and 1..5 (x): with +1 widths are 10 and 5 -> IoU 0.5 exactly. Without the +1 it
    # would be 4/9 = 0.44, a false positive at 0.5.
    assert voc_eval.box_iou_voc(np.array([1., 1., 5., 10.]), np.array([[1., 1., 10., 10.]]))[0] == 0.5
    gt = {"a": ann(("cat", (1, 1, 10, 10), 0))}
    r = evaluate_voc(gt, {"cat": [("a", 1.0, 1, 1, 6, 10)]}, use_07_metric=False)  # IoU 0.6
    assert ap50(r, "cat") == pytest.approx(100)
    assert r["per_class"]["cat"]["AP75"] == 0.0


def test_iou_equal_to_the_threshold_is_a_match_as_in_the_devkit():
    # VOCevaldet.m: `if ovmax>=VOCopts.minoverlap` -> true positive. (detectron2's and py-faster-rcnn's
    # Python ports write `ovmax > ovthresh`, which would make both of these false positives.)
    gt = {"a": ann(("cat", (1, 1, 10, 10), 0))}     # +1 area 10 x 10 = 100
    for use07 in (True, False):
        half = evaluate_voc(gt, {"cat": [("a", 1.0, 1, 1, 5, 10)]}, use_07_metric=use07)  # 5 x 10: IoU 0.5
        assert ap50(half, "cat") == pytest.approx(100)
        assert half["per_class"]["cat"]["AP"] == pytest.approx(100 / 10)  # 0.50 only, not 0.55..0.95
        three_q = evaluate_voc(gt, {"cat": [("a", 1.0, 1, 1, 7.5, 10)]}, use_07_metric=use07)  # 7.5 x 10: IoU 0.75
        assert three_q["per_class"]["cat"]["AP75"] == pytest.approx(100)
        assert three_q["per_class"]["cat"]["AP"] == pytest.approx(100 * 6 / 10)  # 0.50, 0.55, ..., 0.75


def test_difficult_is_neither_tp_nor_fp():
    # One normal and one difficult GT; detections: difficult hit (highest score), then normal hit.
    gt = {"a": ann(("car", (1, 1, 20, 20), 0), ("car", (50, 50, 80, 80), 1))}
    dets = {"car": [("a", 0.9, 50, 50, 80, 80), ("a", 0.5, 1, 1, 20, 20)]}
    r = evaluate_voc(gt, dets, use_07_metric=False)
    # Ignoring the difficult hit, the only counted detection is a TP: recall 1, precision 1.
    assert ap50(r, "car") == pytest.approx(100)
    # A class with only difficult ground truth has no positives: left out of the mean.
    gt2 = {"a": ann(("car", (1, 1, 20, 20), 1))}
    r2 = evaluate_voc({**gt, "b": gt2["a"], "c": ann(("bus", (1, 1, 9, 9), 1))},
                      {"bus": [("c", 0.9, 1, 1, 9, 9)]}, use_07_metric=False)
    assert "bus" in r2["classes_without_gt"] and "bus" not in r2["per_class"]


def test_duplicates_are_false_positives():
    gt = {"a": ann(("cat", (1, 1, 20, 20), 0), ("cat", (40, 40, 60, 60), 0))}
    # ranks: TP(gt1), duplicate of gt1 (FP), TP(gt2)
    dets = {"cat": [("a", 0.9, 1, 1, 20, 20), ("a", 0.8, 2, 2, 20, 20), ("a", 0.7, 40, 40, 60, 60)]}
    # rec = .5, .5, 1; prec = 1, .5, 2/3.
    r = evaluate_voc(gt, dets, use_07_metric=False)
    # Envelope: p(r<=.5) = 1, p(.5<r<=1) = 2/3 -> 0.5*1 + 0.5*2/3.
    assert ap50(r, "cat") == pytest.approx(100 * (0.5 + 0.5 * 2 / 3))
    r07 = evaluate_voc(gt, dets, use_07_metric=True)
    # 11 points: r = 0..0.5 (6 points) max prec 1; r = 0.6..1 (5 points) max prec 2/3.
    assert ap50(r07, "cat") == pytest.approx(100 * (6 * 1 + 5 * 2 / 3) / 11)


def test_ties_in_score_keep_input_order():
    # Two detections with the same score: an FP listed first, then a TP.
    gt = {"a": ann(("cow", (1, 1, 20, 20), 0))}
    fp_first = {"cow": [("a", 0.5, 60, 60, 80, 80), ("a", 0.5, 1, 1, 20, 20)]}
    tp_first = {"cow": [("a", 0.5, 1, 1, 20, 20), ("a", 0.5, 60, 60, 80, 80)]}
    # fp first: rec 0, 1; prec 0, .5 -> area AP 0.5. tp first: rec 1, prec 1 -> AP 1.
    assert ap50(evaluate_voc(gt, fp_first, use_07_metric=False), "cow") == pytest.approx(50)
    assert ap50(evaluate_voc(gt, tp_first, use_07_metric=False), "cow") == pytest.approx(100)


def test_class_with_no_detections_has_ap_zero_and_counts_in_mean():
    gt = {"a": ann(("dog", (1, 1, 10, 10), 0), ("cat", (20, 20, 40, 40), 0))}
    r = evaluate_voc(gt, {"dog": [("a", 0.9, 1, 1, 10, 10)]}, use_07_metric=True)
    assert ap50(r, "cat") == 0.0 and ap50(r, "dog") == pytest.approx(100)
    assert r["AP50"] == pytest.approx(50)


def test_11_point_versus_area():
    # 3 positives; detections TP, FP, TP, FP, TP: rec 1/3,1/3,2/3,2/3,1; prec 1,1/2,2/3,1/2,3/5.
    rec = np.array([1, 1, 2, 2, 3]) / 3
    prec = np.array([1, 1 / 2, 2 / 3, 1 / 2, 3 / 5])
    area = 1 / 3 * 1 + 1 / 3 * 2 / 3 + 1 / 3 * 3 / 5
    # 11-point: r=0,.1,.2,.3 -> 1 (4 points); r=.4,.5,.6 -> 2/3 (3); r=.7..1 -> 3/5 (4).
    eleven = (4 * 1 + 3 * 2 / 3 + 4 * 3 / 5) / 11
    assert voc_ap(rec, prec, use_07_metric=False) == pytest.approx(area)
    assert voc_ap(rec, prec, use_07_metric=True) == pytest.approx(eleven)
    assert voc_ap(np.array([]), np.array([]), True) == 0.0
    assert voc_ap(np.array([]), np.array([]), False) == 0.0


def test_ap_is_mean_over_ten_thresholds():
    # One GT, one detection with IoU 0.72: TP for t in .50..0.70 (5 thresholds), FP for the rest.
    g = np.array([[1., 1., 100., 100.]])
    d = np.array([1., 1., 100., 72.])  # IoU = 72/100
    assert voc_eval.box_iou_voc(d, g)[0] == pytest.approx(0.72)
    r = evaluate_voc({"a": ann(("bird", tuple(g[0]), 0))}, {"bird": [("a", 1.0, *d)]}, use_07_metric=False)
    assert r["AP"] == pytest.approx(50) and r["AP50"] == pytest.approx(100) and r["AP75"] == 0.0


def test_detection_on_unknown_image_is_an_error():
    with pytest.raises(voc_eval.VOCResultsError, match="not in the test set"):
        evaluate_voc({"a": ann(("dog", (1, 1, 5, 5), 0))}, {"dog": [("zzz", 1, 1, 1, 5, 5)]}, use_07_metric=True)


# -- an independent, loop-based transcription of VOCevaldet.m --------------------------------------

def devkit_ap(gt_objs, dets, cls, thresh, use07):
    """gt_objs: {img: [(cls, x1, y1, x2, y2, difficult)]}; dets: [(img, score, x1, y1, x2, y2)]."""
    gt = {}
    npos = 0
    for img, objs in gt_objs.items():
        mine = [o for o in objs if o[0] == cls]
        gt[img] = {"bb": [o[1:5] for o in mine], "diff": [o[5] for o in mine], "det": [False] * len(mine)}
        npos += sum(1 for o in mine if not o[5])
    order = sorted(range(len(dets)), key=lambda i: -dets[i][1])  # Python's sort is stable
    tp, fp = [], []
    for i in order:
        img, _, *bb = dets[i]
        g = gt[img]
        ovmax, jmax = -math.inf, -1
        for j, gb in enumerate(g["bb"]):
            bi = [max(bb[0], gb[0]), max(bb[1], gb[1]), min(bb[2], gb[2]), min(bb[3], gb[3])]
            iw, ih = bi[2] - bi[0] + 1, bi[3] - bi[1] + 1
            if iw > 0 and ih > 0:
                ua = ((bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1)
                      + (gb[2] - gb[0] + 1) * (gb[3] - gb[1] + 1) - iw * ih)
                ov = iw * ih / ua
                if ov > ovmax:
                    ovmax, jmax = ov, j
        if ovmax >= thresh:  # VOCevaldet.m: ovmax>=VOCopts.minoverlap
            if not g["diff"][jmax]:
                if not g["det"][jmax]:
                    tp.append(1); fp.append(0); g["det"][jmax] = True
                else:
                    tp.append(0); fp.append(1)
            # difficult: nothing appended (neither TP nor FP)
        else:
            tp.append(0); fp.append(1)
    ctp = cfp = 0
    rec, prec = [], []
    for t, f in zip(tp, fp):
        ctp += t; cfp += f
        rec.append(ctp / npos); prec.append(ctp / (ctp + cfp))
    if use07:
        ap = 0.0
        for k in range(11):
            t = k * 0.1  # as the reference implementations compute 0:0.1:1
            ps = [p for r, p in zip(rec, prec) if r >= t]
            ap += (max(ps) if ps else 0.0) / 11
        return ap
    mrec, mpre = [0.0] + rec + [1.0], [0.0] + prec + [0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])


def test_matches_devkit_transcription_on_random_detections():
    rng = random.Random(0)
    classes = ("cat", "dog", "person")
    for trial in range(6):
        gt_objs, anns = {}, {}
        for n in range(12):
            objs = []
            for _ in range(rng.randint(0, 4)):
                x1, y1 = rng.randint(1, 60), rng.randint(1, 60)
                objs.append((rng.choice(classes), x1, y1, x1 + rng.randint(3, 40), y1 + rng.randint(3, 40),
                             rng.random() < 0.15))
            gt_objs[f"im{n}"] = objs
            anns[f"im{n}"] = ann(*[(o[0], o[1:5], o[5]) for o in objs])
        dets = {}
        for c in classes:
            rows = []
            for img, objs in gt_objs.items():
                for o in objs:  # jittered copies of ground truth, some duplicated
                    if o[0] == c and rng.random() < 0.8:
                        for _ in range(rng.choice([1, 1, 2])):
                            j = [v + rng.uniform(-4, 4) for v in o[1:5]]
                            rows.append((img, round(rng.random(), 1), *j))  # rounded: many ties
                for _ in range(rng.randint(0, 2)):  # pure false positives
                    x1, y1 = rng.uniform(1, 80), rng.uniform(1, 80)
                    rows.append((img, round(rng.random(), 1), x1, y1, x1 + rng.uniform(2, 30), y1 + rng.uniform(2, 30)))
            dets[c] = rows
        for use07 in (True, False):
            r = evaluate_voc(anns, dets, use_07_metric=use07, classes=classes)
            for c in r["per_class"]:
                want = [devkit_ap(gt_objs, dets[c], c, t, use07) for t in voc_eval.IOU_THRESHOLDS]
                assert r["per_class"][c]["AP50"] == pytest.approx(100 * want[0], abs=1e-9)
                assert r["per_class"][c]["AP75"] == pytest.approx(100 * want[5], abs=1e-9)
                assert r["per_class"][c]["AP"] == pytest.approx(100 * sum(want) / 10, abs=1e-9)


# -- the real labelme VOC 2011 files --------------------------------------------------------------

def labelme_voc(labelme_dir, tmp_path):
    """The labelme folder as a VOC year folder with an image set (the files are not copied)."""
    src = labelme_dir / "bbox_detection" / "data_dataset_voc"
    d = tmp_path / "VOC2011"
    (d / "ImageSets" / "Main").mkdir(parents=True)
    (d / "Annotations").symlink_to(src / "Annotations")
    (d / "JPEGImages").symlink_to(src / "JPEGImages")
    ids = sorted(p.stem for p in (src / "Annotations").glob("*.xml"))
    (d / "ImageSets" / "Main" / "test.txt").write_text("\n".join(ids) + "\n")
    return d


def perfect_detections(anns):
    dets = {}
    for image_id, a in anns.items():
        for k, o in enumerate(a.objects):
            dets.setdefault(o.name, []).append((image_id, 1.0 - 0.01 * k, *o.bbox))
    return dets


def test_labelme_perfect_and_one_dropped_box(labelme_dir, tmp_path):
    d = labelme_voc(labelme_dir, tmp_path)
    anns = load_annotations(d, "test")
    dets = perfect_detections(anns)
    for use07 in (True, False):
        r = evaluate_voc(anns, dets, use_07_metric=use07)
        assert set(r["per_class"]) == {"person", "bus", "car"}
        assert r["AP"] == pytest.approx(100) and r["AP50"] == pytest.approx(100)
    # Drop one of the 6 person boxes: person recall tops out at 5/6 with precision 1.
    dets["person"] = dets["person"][1:]
    r = evaluate_voc(anns, dets, use_07_metric=False)
    assert ap50(r, "person") == pytest.approx(100 * 5 / 6)
    assert r["AP50"] == pytest.approx((100 * 5 / 6 + 100 + 100) / 3)
    r07 = evaluate_voc(anns, dets, use_07_metric=True)
    # 11-point: recall points 0..0.8 (9 of 11) reachable with precision 1; 0.9 and 1.0 not.
    assert ap50(r07, "person") == pytest.approx(100 * 9 / 11)


def test_results_files_round_trip_and_score_cli(labelme_dir, tmp_path, capsys):
    from mocobench.transfer.detection.cli import score_main

    d = labelme_voc(labelme_dir, tmp_path)
    anns = load_annotations(d, "test")
    dets = perfect_detections(anns)
    dets["bus"] = dets["bus"][:1]  # one of two buses dropped
    out = tmp_path / "results"
    voc_eval.write_voc_results(out, "test", dets)
    assert (out / "comp4_det_test_person.txt").read_text().count("\n") == 6
    back, missing = voc_eval.read_voc_results(out, "test")
    assert missing == [] and len(back["person"]) == 6 and back["aeroplane"] == []
    assert score_main("voc", ["--devkit", str(d), "--split", "test", "--detections", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["year"] == 2011 and printed["metric"] == "area"
    assert printed["per_class"]["bus"]["AP50"] == pytest.approx(50)
    assert printed["AP50"] == pytest.approx((100 + 50 + 100) / 3)
    assert score_main("voc", ["--devkit", str(d), "--split", "test", "--detections", str(out),
                              "--year", "2007"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["per_class"]["bus"]["AP50"] == pytest.approx(100 * 6 / 11)  # r = 0..0.5


def test_11_point_thresholds_are_computed_as_the_reference_code_does():
    # 10 positives; ranks TP TP TP FP TP: recall .1 .2 .3 .3 .4, precision 1 1 1 .75 .8.
    # The reference code's threshold 0.3 is 3 * 0.1 = 0.30000000000000004 > 3/10, so the recall-0.3
    # point does not count for it: p(0.3) = 0.8, not 1.
    rec = np.array([1, 2, 3, 3, 4]) / 10
    prec = np.array([1, 1, 1, 0.75, 0.8])
    assert voc_ap(rec, prec, use_07_metric=True) == pytest.approx((3 * 1 + 2 * 0.8) / 11)


def test_sub_pixel_boxes_round_trip_and_truly_inverted_ones_are_refused(tmp_path):
    # a continuous box 0.47 px wide becomes xmin 118.47, xmax 118.00 in the devkit's 1-based format
    preds = [{"boxes": np.array([[117.47, 30.0, 118.0, 40.0]]), "scores": np.array([0.5]),
              "labels": np.array([1])}]
    dets = voc_eval.detections_from_predictions(preds, ["000018"])
    voc_eval.write_voc_results(tmp_path / "ok", "test", dets)
    back, _ = voc_eval.read_voc_results(tmp_path / "ok", "test")
    assert back["aeroplane"] == [("000018", 0.5, 118.47, 31.0, 118.0, 40.0)]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "comp4_det_test_aeroplane.txt").write_text("000018 0.5 118.47 31.0 117.4 40.0\n")
    with pytest.raises(voc_eval.VOCResultsError, match="inverted box"):
        voc_eval.read_voc_results(bad, "test")
