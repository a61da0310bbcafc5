"""Measured numbers land beside the papers' (issue 25, item 1): every row of ``reported.csv`` meets a
record of the same protocol, as our tasks write it, in one column."""

from __future__ import annotations

from pathlib import Path

from mocobench.datasets.identity import dataset_id


def imagenet_like(root: Path) -> Path:
    for i in range(1000):
        (root / "train" / f"n{i:08d}").mkdir(parents=True)
    return root


def test_every_reported_row_meets_a_measured_record_in_its_column(tmp_path, add_record):
    """For each row kind of reported.csv, a record as our tasks write it (the dataset id read from a
    folder of that layout under an unhelpful name) lands in the reported row's column."""
    from mocobench.leaderboard.table import Column, build_table, load_reported
    from mocobench.core.records import load_records

    folders = {"imagenet": imagenet_like(tmp_path / "CLS-LOC"), "voc07+12": tmp_path / "VOCdevkit",
               "coco": tmp_path / "COCO-2017", "cityscapes": tmp_path / "cs", "voc2012": tmp_path / "VOC2012"}
    reported = [r for r in load_reported() if r["protocol"] != "unstated"]
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
