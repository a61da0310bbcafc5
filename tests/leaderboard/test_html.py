"""The HTML page: parsed back, its cells equal the records' means; nothing loads from the network."""

from __future__ import annotations

import statistics
from html.parser import HTMLParser

import pytest

from mocobench.leaderboard import cli


class Cells(HTMLParser):
    """Collects the leaderboard table: header columns and each row's cells (with data-* attributes)."""

    def __init__(self):
        super().__init__()
        self.heads, self.rows, self.external, self.svgs = [], [], [], 0
        self._in_table = self._in_head = False
        self._cell = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href"):
            if a.get(key, "").startswith(("http:", "https:", "//")):
                self.external.append(a[key])
        if tag == "link" or (tag == "script" and "src" in a):
            self.external.append(str(a))
        if tag == "svg":
            self.svgs += 1
        if tag == "table" and a.get("id") == "leaderboard":
            self._in_table = True
        if not self._in_table:
            return
        if tag == "thead":
            self._in_head = True
        elif tag == "th":
            self.heads.append(a)
        elif tag == "tr" and not self._in_head:
            self.rows.append({"row": a.get("data-row"), "kind": a.get("class"), "cells": []})
        elif tag == "td":
            self._cell = {"attrs": a, "text": ""}

    def handle_endtag(self, tag):
        if tag == "thead":
            self._in_head = False
        elif tag == "table":
            self._in_table = False
        elif tag == "td" and self._cell is not None:
            self.rows[-1]["cells"].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data


@pytest.fixture
def results(tmp_path, add_record):
    res = tmp_path / "results"
    values = {"moco_v2": [44.0, 46.5, 45.0], "unimoco_10pct": [50.0], "unimoco_100pct": [55.0, 57.0],
              "random-resnet18": [12.5]}
    for run, vals in values.items():
        method = "unimoco" if run.startswith("unimoco") else "moco_v2"
        frac = {"unimoco_10pct": 0.1, "unimoco_100pct": 1.0}.get(run)
        for seed, v in enumerate(vals):
            add_record(res, run, "knn", "dino-knn", {"top1": v, "top5": 90.0}, seed=seed, method=method,
                       label_fraction=frac)
            add_record(res, run, "linear", "fast", {"top1": v + 3, "top5": 91.0}, seed=seed, method=method,
                       label_fraction=frac)
        add_record(res, run, "detection", "tiny", {"AP50": vals[0] / 2, "AP": vals[0] / 4, "AP75": vals[0] / 5},
                   dataset="synth-tiny/voc", method=method, label_fraction=frac)
    return res, values


def test_html_cells_equal_record_means(tmp_path, results):
    res, values = results
    out = tmp_path / "lb.html"
    assert cli.main(["--results", str(res), "--format", "html", "-o", str(out)]) == 0
    page = Cells()
    page.feed(out.read_text(encoding="utf-8"))
    assert page.external == []
    assert page.svgs >= 3   # per-task bars (knn, linear, detection) ...
    assert "UniMoCo: accuracy against label fraction" in out.read_text()   # ... and UniMoCo's two fractions
    cols = [(h.get("data-task"), h.get("data-protocol"), h.get("data-dataset"), h.get("data-metric"))
            for h in page.heads[5:]]
    knn = cols.index(("knn", "dino-knn", "synth-tiny/imagenet", "top1")) + 5   # DINO's paper row has its own
    lin = cols.index(("linear", "fast", "synth-tiny/imagenet", "top1")) + 5
    by_row = {r["row"]: r for r in page.rows}
    for run, vals in values.items():
        cells = by_row[run]["cells"]
        assert float(cells[knn]["attrs"]["data-mean"]) == pytest.approx(statistics.fmean(vals))
        assert float(cells[lin]["attrs"]["data-mean"]) == pytest.approx(statistics.fmean(vals) + 3)
        assert int(cells[knn]["attrs"]["data-n"]) == len(vals)
        if len(vals) > 1:
            assert float(cells[knn]["attrs"]["data-std"]) == pytest.approx(statistics.stdev(vals))
            # marked ?: the random init it is compared with has one seed, so no spread of its own
            assert cells[knn]["text"] == f"{statistics.fmean(vals):.1f} ± {statistics.stdev(vals):.1f} ({len(vals)}) ?"
    # the papers' rows are there, marked, with their numbers
    reported = {r["row"]: r for r in page.rows if r["kind"] != "measured"}
    assert reported["reported: SMoG"]["kind"] == "unverified"
    paper = cols.index(("linear", "paper", "imagenet", "top1")) + 5
    assert reported["reported: MoCo v2 R50 800ep"]["cells"][paper]["text"] == "71.1"


def test_html_matches_the_table_object(results):
    res, _ = results
    text, table = cli.render(res, "html", plots=False)
    page = Cells()
    page.feed(text)
    assert len(page.rows) == len(table.rows)
    for prow, row in zip(page.rows, table.rows):
        for pcell, col in zip(prow["cells"][5:], table.columns):
            cell = table.cell(row, col)
            if cell is None:
                assert "data-mean" not in pcell["attrs"]
            else:
                assert float(pcell["attrs"]["data-mean"]) == pytest.approx(cell.mean)


def test_a_dollar_sign_in_a_name_is_drawn_as_text(tmp_path, add_record):
    """matplotlib reads a pair of $ as TeX: the page failed with a parser's error on 'a$^$b'."""
    res = tmp_path / "results"
    add_record(res, "a$^$b", "knn", "dino-knn", {"top1": 40.0})
    add_record(res, "random-resnet18", "knn", "dino-knn", {"top1": 20.0})
    out = tmp_path / "x.html"
    assert cli.main(["--results", str(res), "--format", "html", "-o", str(out)]) == 0
    page = Cells()
    page.feed(out.read_text())
    assert page.svgs >= 1 and any(r["row"] == "a$^$b" for r in page.rows)
