"""Measured numbers land beside the papers' (issue 25, item 1): every row of ``reported.csv`` meets a
record of the same protocol, as our tasks write it, in one column."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from mocobench.datasets.identity import dataset_id


def imagenet_like(root: Path) -> Path:
    for i in range(1000):
        (root / "train" / f"n{i:08d}").mkdir(parents=True)
    return root


def protocols_we_run() -> set[str]:
    from mocobench.transfer.classification.protocols import PROTOCOLS as CLASSIFICATION
    from mocobench.transfer.detection.protocols import PROTOCOLS as DETECTION
    from mocobench.transfer.segmentation.protocols import PROTOCOLS as SEGMENTATION

    return {p for task in CLASSIFICATION.values() for p in task} | set(DETECTION) | set(SEGMENTATION)


def test_the_zoo_names_paper_rows_of_its_own_identity():
    """A zoo checkpoint's paper row exists, and has the checkpoint's method, arch, epochs and label
    fraction: so a measured row of that checkpoint meets its paper row in the table (reported.csv is
    the only copy of the papers' numbers)."""
    from mocobench.checkpoints.zoo import load_zoo
    from mocobench.leaderboard.table import load_reported

    rows = {}
    for r in load_reported():
        rows.setdefault(r["row"], set()).add((r["method"], r["arch"], int(r["epochs"]) if r["epochs"] else None,
                                              r["label_fraction"]))
    for name, e in load_zoo().items():
        assert e.label_fraction is not None, name
        assert rows.get(e.paper_row) == {(e.method, e.arch, e.epochs, 100 * e.label_fraction)}, (
            name, e.paper_row, rows.get(e.paper_row))


def test_every_reported_row_meets_a_measured_record_in_its_column(tmp_path, add_record):
    """For each row kind of reported.csv, a record as our tasks write it (the dataset id read from a
    folder of that layout under an unhelpful name) lands in the reported row's column."""
    from mocobench.leaderboard.table import Column, build_table, load_reported
    from mocobench.core.records import load_records

    folders = {"imagenet": imagenet_like(tmp_path / "CLS-LOC"), "voc07+12": tmp_path / "VOCdevkit",
               "coco": tmp_path / "COCO-2017", "cityscapes": tmp_path / "cs", "voc2012": tmp_path / "VOC2012"}
    reported = [r for r in load_reported() if r["protocol"] in protocols_we_run()]
    assert {r["dataset"] for r in reported} <= set(folders), "a reported dataset id no reader writes"
    results = tmp_path / "results"
    wanted = {}
    for r in reported:
        col = Column(r["task"], r["protocol"], r["dataset"], r["engine"], r["metric"])
        wanted.setdefault(col, r["row"])
    for col in wanted:
        add_record(results, "ours", col.task, col.protocol, {col.metric: 50.0},
                   dataset=dataset_id(col.dataset, folders[col.dataset]), engine=col.engine)
    records, problems = load_records(results)
    assert not problems
    table = build_table(records, reported=load_reported())
    measured = {c for c in table.columns if table.cell(table.measured_rows()[0], c) is not None}
    assert set(wanted) <= measured, sorted(set(wanted) - measured)
    # one column per identity: a reported row and the measured record never make two of the same label
    labels = [c.label for c in table.columns]
    assert len(labels) == len(set(labels))


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, dict]:
    """The checkpoint fields of real exports of the paper presets, as transfer/runner.py reads them
    back into each record (``describe(...).record_fields()``): untrained resnet50s, whose metadata is
    what the table matches on."""
    from mocobench.checkpoints.load import describe
    from mocobench.pretrain.config import PRESETS
    from mocobench.pretrain.methods import METHODS
    from mocobench.pretrain.train import export_backbone

    root = tmp_path_factory.mktemp("runs")
    out = {}
    for preset in ("moco_v1_200ep", "moco_v2_800ep", "unimoco_800ep_10pct"):
        cfg = dataclasses.replace(PRESETS[preset], K=16)   # a short queue: the export keeps no queue
        path = export_backbone(cfg, METHODS[cfg.method].build(cfg), root / preset / "backbone.pth", step=0,
                               epochs_done=cfg.epochs)
        out[preset] = describe(path).record_fields()
    return out


def _record(results: Path, checkpoint: dict, *, task: str, protocol: str, dataset: str, engine: str,
            metrics: dict, seed: int) -> None:
    from mocobench.core.records import new_record, write_record

    write_record(results, new_record(checkpoint=checkpoint, task=task, protocol=protocol,
                                     dataset={"name": dataset, "path": "/data", "splits": {"train": 1}},
                                     metrics=metrics, config={}, run={"seed": seed}, seed=seed, wall_time_s=1.0,
                                     device="cuda:0", engine=engine))


def moco_v2_reproduction(results: Path, tmp_path: Path, voc_ap50: tuple[float, ...], exported: dict) -> None:
    """Our MoCo v2 800ep run as the tasks record it: ImageNet under CLS-LOC, VOC through detectron2 (AP50
    per seed ``voc_ap50``) and through the torchvision engine."""
    ckpt = exported["moco_v2_800ep"]
    imagenet = dataset_id("imagenet", imagenet_like(tmp_path / "CLS-LOC"))
    for seed, top1 in enumerate((71.0, 71.3, 70.8)):
        _record(results, ckpt, task="linear", protocol="paper", dataset=imagenet, engine="torchvision",
                metrics={"top1": top1, "top5": 90.0}, seed=seed)
    for seed, ap50 in enumerate(voc_ap50):
        for engine in ("detectron2", "torchvision"):
            _record(results, ckpt, task="detection", protocol="moco-voc-c4-24k",
                    dataset=dataset_id("voc07+12", tmp_path / "VOCdevkit"), engine=engine,
                    metrics={"AP50": ap50, "AP": 57.3, "AP75": 63.8}, seed=seed)


def paper_reproduction(results: Path, tmp_path: Path, voc_ap50: tuple[float, ...], exported: dict) -> None:
    """Our MoCo v2 800ep (``moco_v2_reproduction``) and UniMoCo 10 % runs, COCO for the latter."""
    moco_v2_reproduction(results, tmp_path, voc_ap50, exported)
    _record(results, exported["unimoco_800ep_10pct"], task="detection", protocol="coco-c4-1x",
            dataset=dataset_id("coco", tmp_path / "coco2017"), engine="detectron2",
            metrics={"bbox_AP": 39.0, "segm_AP": 34.0}, seed=0)


def test_measured_against_paper_shows_delta_and_band_in_every_format(tmp_path, exported):
    from mocobench.leaderboard.html import render as render_html
    from mocobench.leaderboard.table import Column, load_table, to_csv, to_markdown

    results = tmp_path / "results"
    paper_reproduction(results, tmp_path, voc_ap50=(82.3, 82.6, 82.1), exported=exported)
    table = load_table(results)
    rows = {r.method: r for r in table.measured_rows()}
    linear = Column("linear", "paper", "imagenet", "torchvision", "top1")
    c = table.comparisons[(rows["moco_v2"].key, linear)]
    # Δ = mean(71.0, 71.3, 70.8) - 71.1; band = 2 sqrt(s² / 3 + 0.2² / 1), s the seed std (n - 1)
    s = ((71.0 - 71.033333) ** 2 + (71.3 - 71.033333) ** 2 + (70.8 - 71.033333) ** 2) / 2
    assert c.paper == "MoCo v2 R50 800ep" and abs(c.delta - (-0.066667)) < 1e-4
    assert abs(c.band - 2 * (s / 3 + 0.04) ** 0.5) < 1e-4 and c.within
    voc = Column("detection", "moco-voc-c4-24k", "voc07+12", "detectron2", "AP50")
    assert table.comparisons[(rows["moco_v2"].key, voc)].reported == 82.5
    # the torchvision engine's VOC number has a column of its own, beside the paper's, never compared
    beside = Column("detection", "moco-voc-c4-24k", "voc07+12", "torchvision", "AP50")
    assert table.cell(rows["moco_v2"], beside) is not None and (rows["moco_v2"].key, beside) not in table.comparisons
    coco = Column("detection", "coco-c4-1x", "coco", "detectron2", "bbox_AP")
    c = table.comparisons[(rows["unimoco"].key, coco)]
    assert c.paper == "UniMoCo R50 800ep 10%" and abs(c.delta + 0.3) < 1e-9
    assert abs(c.band - 2 * (0.2 ** 2 + 0.2 ** 2) ** 0.5) < 1e-9   # one seed, no paper ±: the defaults
    md = to_markdown(table)
    assert "Δ -0.1 ✓ (±" in md and "MoCo v2 R50 800ep" in md
    csv = to_csv(table)
    assert f"{linear.label} delta" in csv and f"{linear.label} within band" in csv
    html = render_html(table, plots=False)
    assert 'data-delta="' in html and "inband" in html


def test_check_against_paper_fails_outside_the_band_and_passes_inside(tmp_path, capsys, exported):
    from mocobench.cli import main

    inside, outside = tmp_path / "inside", tmp_path / "outside"
    paper_reproduction(inside / "results", inside, voc_ap50=(82.3, 82.6, 82.1), exported=exported)
    paper_reproduction(outside / "results", outside, voc_ap50=(79.0, 79.4, 79.2), exported=exported)   # 3 AP50 below
    assert main(["leaderboard", "check", "--against-paper", "--results", str(inside / "results")]) == 0
    text = capsys.readouterr().out
    assert "OUTSIDE" not in text and "0 outside" in text
    assert main(["leaderboard", "check", "--against-paper", "--results", str(outside / "results")]) == 1
    text = capsys.readouterr().out
    assert "det AP50 [moco-voc-c4-24k, detectron2]: 79.20 vs MoCo v2 R50 800ep 82.5: Δ -3.30" in text
    assert "OUTSIDE" in text
    # a folder with nothing to compare fails: a gate that checks nothing is no gate
    empty = tmp_path / "none"
    empty.mkdir()
    assert main(["leaderboard", "check", "--against-paper", "--results", str(empty)]) == 1


def test_moco_records_alone_meet_their_paper_rows(tmp_path, capsys, exported):
    """MoCo v1 and v2 exports state label fraction 0, as their paper rows do, so their records alone
    are compared: the gate found nothing to check in them when the paper rows left it empty."""
    from mocobench.cli import main
    from mocobench.leaderboard.table import load_table

    results = tmp_path / "results"
    moco_v2_reproduction(results, tmp_path, (82.3, 82.6, 82.1), exported)
    _record(results, exported["moco_v1_200ep"], task="linear", protocol="paper",
            dataset=dataset_id("imagenet", tmp_path / "CLS-LOC"), engine="torchvision",
            metrics={"top1": 60.7, "top5": 83.0}, seed=0)
    table = load_table(results)
    assert {(key, c.paper) for (key, _), c in table.comparisons.items()} == {
        ("moco_v1_200ep", "MoCo v1 R50 200ep (5 runs)"), ("moco_v2_800ep", "MoCo v2 R50 800ep")}
    assert main(["leaderboard", "check", "--against-paper", "--results", str(results)]) == 0
    text = capsys.readouterr().out
    assert "moco_v1_200ep ImageNet linear top-1 [paper]: 60.70 vs MoCo v1 R50 200ep (5 runs) 60.8" in text
    assert "5 within their band, 0 outside" in text   # v1 top-1; v2 top-1 and VOC AP50, AP, AP75


def test_every_method_but_unimoco_pretrains_and_is_reported_without_labels():
    """The rule both sides keep (docs/leaderboard.md): the export of a self-supervised method states
    label fraction 0, and so does every paper row of such a method."""
    from mocobench.leaderboard.table import load_reported
    from mocobench.pretrain.config import PRESETS
    from mocobench.pretrain.train import label_fraction_of

    unlabelled = {cfg.method for cfg in PRESETS.values()} - {"unimoco"}
    assert {"moco_v1", "moco_v2", "smog"} <= unlabelled
    for name, cfg in PRESETS.items():
        assert cfg.method == "unimoco" or label_fraction_of(cfg) == 0.0, name
    rows = [r for r in load_reported() if r["method"] in unlabelled]
    assert {r["method"] for r in rows} == unlabelled and all(r["label_fraction"] == 0.0 for r in rows)


def test_the_table_shows_each_checkpoints_card_identity(tmp_path):
    """Issue 28: a measured row names the sha256, branch and input convention its numbers came from
    (Markdown: a footnote; CSV: a column; HTML: on hover)."""
    from mocobench.core.records import new_record, write_record
    from mocobench.leaderboard.html import render as render_html
    from mocobench.leaderboard.table import load_table, to_csv, to_markdown

    ckpt = {"name": "moco", "path": "/ckpts/moco.pth", "sha256": "6bfeba98" + "0" * 56, "format": "moco",
            "arch": "resnet50", "method": "moco_v2", "epochs": 200, "branch": "online (query) encoder",
            "input_convention": "RGB 0-1"}
    write_record(tmp_path, new_record(checkpoint=ckpt, task="knn", protocol="dino-knn",
                                      dataset={"name": "imagenet", "path": "/d", "splits": {"train": 1}},
                                      metrics={"top1": 60.0}, config={}, run={}, seed=0, wall_time_s=1.0, device="cpu"))
    table = load_table(tmp_path)
    card = "sha256 6bfeba98 · online (query) encoder · RGB 0-1"
    assert table.measured_rows()[0].card == card
    assert f"- moco: {card}" in to_markdown(table)
    assert card in to_csv(table)
    assert f'title="{card}"' in render_html(table, plots=False)


def test_deviations_are_data_carried_by_records_and_marked_in_the_table(tmp_path, synth_tiny):
    """Issue 25 item 5: the departures of what ran come from core/deviations.toml into the record, and
    a cell built from such records is marked and footnoted."""
    from mocobench.cli import main
    from mocobench.core.deviations import of_evaluation
    from mocobench.core.records import load_records
    from mocobench.leaderboard.table import load_table, to_markdown

    ours = of_evaluation("detection", "moco-voc-c4-24k", "torchvision",
                         {"method": "moco_v2", "precision": "bf16", "schedule": "cosine"})
    assert any("torchvision engine" in d for d in ours) and any("per iteration" in d for d in ours)
    assert any("fp32" in d for d in ours)
    assert not any("torchvision engine" in d for d in of_evaluation("detection", "moco-voc-c4-24k", "detectron2", None))
    assert of_evaluation("semi-1pct", "simclr", "torchvision", None) == ["SGD nesterov at batch 256; SimCLR "
                                                                         "fine-tuned with LARS at batch 4096"]
    assert main(["eval", "semi", "--checkpoint", "random:resnet18", "--data", str(synth_tiny), "--results",
                 str(tmp_path / "res"), "--protocol", "simclr", "--labels", "10percent", "--epochs", "1",
                 "--img-size", "32", "--batch-size=8", "--workers", "0", "--lr-grid=0.05"]) == 0
    (rec,), _ = load_records(tmp_path / "res")
    assert rec["config"]["precision"] == "fp32"   # on CPU; bf16 on CUDA (test_deviations.py)
    assert rec["run"]["deviations"] == of_evaluation("semi-10pct", "simclr", "torchvision", None, precision="fp32")
    md = to_markdown(load_table(tmp_path / "res", reported=False))
    assert " †1" in md and "- †1 SGD nesterov at batch 256" in md


def test_a_cell_that_ran_other_settings_than_the_preset_is_not_compared_with_the_paper(tmp_path, capsys):
    """A ``paper`` linear record that ran 1 epoch at lr 0.1 was set beside MoCo v2's 71.1 (and passed
    --against-paper): the paper row stands for the protocol as preset. Records state their changes to
    the preset (run.preset_changes, as transfer/classification writes them); such a cell is marked,
    the changes named, and not compared."""
    from mocobench.cli import main
    from mocobench.core.records import new_record, write_record
    from mocobench.leaderboard.table import Column, load_table, to_csv, to_markdown

    ck = {"name": "moco_v2_800ep", "path": "/ck/moco_v2_800ep.pth.tar", "sha256": "a" * 64, "format": "moco",
          "arch": "resnet50", "method": "moco_v2", "epochs": 800, "label_fraction": 0.0}
    results = tmp_path / "results"

    def record(changes, top1):
        write_record(results, new_record(
            checkpoint=ck, task="linear", protocol="paper", metrics={"top1": top1, "top5": 90.0}, seed=0,
            dataset={"name": "imagenet", "path": "/d", "splits": {"train": 1281167, "val": 50000}},
            config={"epochs": 100 if not changes else 1, "lr": 30.0 if not changes else 0.1},
            run={"preset_changes": changes}, wall_time_s=1.0, device="cpu"))

    record({"epochs": {"preset": 100, "ran": 1}, "lr": {"preset": 30.0, "ran": 0.1}}, 71.0)
    table = load_table(results)
    row = table.measured_rows()[0]
    col = Column("linear", "paper", "imagenet", "torchvision", "top1")
    assert (row.key, col) not in table.comparisons
    assert table.uncompared[(row.key, col)] == ("MoCo v2 R50 800ep", "epochs 1 (preset 100); lr 0.1 (preset 30.0)")
    md = to_markdown(table)
    assert "71.0 ∅ · Δ ‡1" in md and "- ‡1 not compared with MoCo v2 R50 800ep: ran other settings than its " \
        "protocol's preset (epochs 1 (preset 100); lr 0.1 (preset 30.0))" in md
    csv = to_csv(table)
    assert "not compared: ran epochs 1 (preset 100)" in csv
    assert main(["leaderboard", "check", "--against-paper", "--results", str(results)]) == 1
    out = capsys.readouterr().out
    assert "NOT COMPARED with MoCo v2 R50 800ep" in out and "nothing was checked" in out

    # the same checkpoint run as preset: compared
    shutil.rmtree(results)
    record({}, 71.0)
    table = load_table(results)
    assert table.comparisons[(row.key, col)].within and not table.uncompared
    assert main(["leaderboard", "check", "--against-paper", "--results", str(results)]) == 0
    assert "do not state" not in capsys.readouterr().out


def test_a_detection_cell_that_ran_other_settings_than_the_preset_is_not_compared_with_the_paper(tmp_path):
    """Detection records state their changes to the preset as classification records do, computed by
    the engine (run.preset_changes): a 2400-iteration run of moco-voc-c4-24k with an --opts key is not
    MoCo v2's 24k-iteration VOC number; the preset run (detectron2's fp32 is its preset) is compared."""
    from mocobench.core.records import new_record, write_record
    from mocobench.leaderboard.table import Column, load_table
    from mocobench.transfer.detection.detectron2_engine import ENGINE_DEFAULTS, opts_changes
    from mocobench.transfer.detection.protocols import preset_changes, resolve_protocol

    ck = {"name": "moco_v2_800ep", "path": "/ck/moco_v2_800ep.pth.tar", "sha256": "b" * 64, "format": "moco",
          "arch": "resnet50", "method": "moco_v2", "epochs": 800, "label_fraction": 0.0}
    results = tmp_path / "results"

    def record(overrides, opts):
        protocol = dataclasses.replace(resolve_protocol("moco-voc-c4-24k", overrides), **ENGINE_DEFAULTS)
        changes = preset_changes(protocol, opts_changes(opts, {"TEST": {"EVAL_PERIOD": 0}}), ENGINE_DEFAULTS)
        write_record(results, new_record(
            checkpoint=ck, task="detection", protocol="moco-voc-c4-24k", engine="detectron2",
            metrics={"AP50": 82.5, "AP": 57.4, "AP75": 64.0}, seed=0,
            dataset={"name": "voc07+12", "path": "/d", "test": "VOC2007 test"},
            config={"protocol": protocol.to_dict(), "opts": opts},
            run={"preset_changes": changes}, wall_time_s=1.0, device="cpu"))

    record({"max_iter": "2400"}, ["TEST.EVAL_PERIOD", "0"])
    table = load_table(results)
    row = table.measured_rows()[0]
    col = Column("detection", "moco-voc-c4-24k", "voc07+12", "detectron2", "AP50")
    assert (row.key, col) not in table.comparisons
    paper, why = table.uncompared[(row.key, col)]
    assert paper == "MoCo v2 R50 800ep" and "max_iter 2400 (preset 24000)" in why
    assert "steps [1800, 2200] (preset [18000, 22000])" in why and "opts.TEST.EVAL_PERIOD 0 (preset null)" in why

    shutil.rmtree(results)
    record({}, [])
    table = load_table(results)
    assert table.comparisons[(row.key, col)].within and not table.uncompared
