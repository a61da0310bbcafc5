"""Noise is labelled (issue 26): a measured cell whose difference from the random init of its
architecture lies within 2 pooled seed standard deviations is marked, in Markdown, CSV and HTML,
and a cell whose spread is not known is marked as such."""

from __future__ import annotations

import csv
import io
import json
import re
import statistics

import pytest

from mocobench.leaderboard import cli
from mocobench.leaderboard.table import load_table, to_csv, to_markdown


def _pooled(a: list[float], b: list[float]) -> float:
    """The pooled sample std of two groups, written out: sum of squared deviations over n1 + n2 - 2."""
    ss = sum((x - statistics.fmean(a)) ** 2 for x in a) + sum((x - statistics.fmean(b)) ** 2 for x in b)
    return (ss / (len(a) + len(b) - 2)) ** 0.5


def _write(results, add_record, run, task, metric, values, seeds=None):
    for seed, v in zip(seeds or range(len(values)), values):
        add_record(results, run, task, "fast", {metric: v}, seed=seed)


@pytest.fixture
def results(tmp_path, add_record):
    r = tmp_path / "results"
    # linear: a clear gain (means 60 vs 50, spreads about 1)
    _write(r, add_record, "moco_v2", "linear", "top1", [59.0, 60.5, 60.5])
    _write(r, add_record, "random-resnet18", "linear", "top1", [49.0, 51.0, 50.0])
    # kNN: a gain of 1.5 points inside spreads of about 2
    _write(r, add_record, "moco_v2", "knn", "top1", [50.0, 53.0, 52.0])
    _write(r, add_record, "random-resnet18", "knn", "top1", [49.0, 51.5, 50.0])
    # semi: one seed each, no spread
    _write(r, add_record, "moco_v2", "semi-10pct", "top1", [40.0])
    _write(r, add_record, "random-resnet18", "semi-10pct", "top1", [30.0])
    return r


def _cols(table):
    return {c.task: c for c in table.columns}


def test_verdicts_follow_the_pooled_seed_std(results):
    table = load_table(results, reported=False)
    row = next(r for r in table.measured_rows() if r.name == "moco_v2")
    cols = _cols(table)
    lin, knn, semi = (table.noise[(row.key, cols[t])] for t in ("linear", "knn", "semi-10pct"))

    pooled = _pooled([59.0, 60.5, 60.5], [49.0, 51.0, 50.0])
    assert lin.pooled_std == pytest.approx(pooled)
    assert lin.diff == pytest.approx(60.0 - 50.0)
    assert lin.verdict == "beyond noise" and lin.mark == ""

    pooled = _pooled([50.0, 53.0, 52.0], [49.0, 51.5, 50.0])
    assert knn.pooled_std == pytest.approx(pooled)
    assert abs(knn.diff) < 2 * pooled   # the fixture's premise, stated independently
    assert knn.verdict == "within noise" and knn.mark == "≈"

    assert semi.pooled_std is None and semi.verdict == "spread unknown" and semi.mark == "?"
    # the random-init row itself is never compared with itself
    assert not any(k[0].startswith("random") for k in table.noise)


def test_a_single_seed_takes_its_spread_from_the_baseline(results, tmp_path):
    """Cells measured once take the committed baseline's spread of that cell (its runs)."""
    from mocobench.leaderboard.check import read_baseline

    a, b = [39.0, 41.0, 44.0, 36.0], [29.0, 31.0, 30.0, 30.0]
    entries = [{"checkpoint": name, "task": "semi-10pct", "protocol": "fast", "metric": "top1",
                "value": statistics.fmean(v), "std": statistics.stdev(v), "n": len(v), "runs": v}
               for name, v in (("moco_v2", a), ("random-resnet18", b))]
    # a relative entry has no spread of the cell itself and must not be used
    entries.append({"checkpoint": "moco_v2", "task": "semi-10pct", "protocol": "fast", "metric": "top1",
                    "relative_to": "random-resnet18", "value": 10.0, "std": 0.01, "n": 4})
    path = tmp_path / "base.json"
    path.write_text(json.dumps({"format": "mocobench-baseline", "version": 1, "entries": entries}))
    table = load_table(results, reported=False, spreads=read_baseline(path)["entries"])
    row = next(r for r in table.measured_rows() if r.name == "moco_v2")
    semi = table.noise[(row.key, _cols(table)["semi-10pct"])]
    assert semi.pooled_std == pytest.approx(_pooled(a, b))
    assert semi.verdict == "beyond noise"   # 10 points against 2 x ~2.2
    assert "baseline's 4 runs" in semi.spread


def test_every_output_marks_the_noise(results, capsys):
    table = load_table(results, reported=False)
    md = to_markdown(table)
    line = next(ln for ln in md.splitlines() if ln.startswith("| moco_v2 "))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert any(c.endswith("≈") for c in cells) and any(c.endswith("?") for c in cells)
    assert "within noise (less than 2 pooled seed standard deviations)" in md

    rows = {r["checkpoint"]: r for r in csv.DictReader(io.StringIO(to_csv(table)))}
    verdicts = {k.removesuffix(" vs random init"): v for k, v in rows["moco_v2"].items()
                if k.endswith(" vs random init")}
    assert sorted(verdicts.values()) == ["beyond noise", "spread unknown", "within noise"]
    assert all(v == "" for k, v in rows["random-resnet18"].items() if k.endswith(" vs random init"))

    assert cli.main(["--results", str(results), "--format", "html", "--rows", "measured"]) == 0
    html = capsys.readouterr().out
    assert len(re.findall(r'class="num[^"]* noise"', html)) == 1
    assert len(re.findall(r'class="num[^"]* nospread"', html)) == 1
    assert "within noise" in html


def test_a_bad_spread_file_is_a_clear_error(results, tmp_path, capsys):
    bad = tmp_path / "nope.json"
    bad.write_text("{")
    assert cli.main(["--results", str(results), "--spread", str(bad)]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "Traceback" not in err


def test_a_cell_without_a_random_init_to_compare_with_is_marked_so(results, add_record, capsys):
    """A measured cell whose column has no random-init row of its architecture (the quick run's
    MobileNetV2 detection, a given checkpoint run with --no-random) is not left unmarked: unmarked
    means beyond noise."""
    _write(results, add_record, "moco_v2", "semi-1pct", "top1", [20.0, 22.0])   # random init: no semi 1 %
    # a ResNet-50, of which there is no random init at all
    from mocobench.core.records import new_record, write_record

    write_record(results, new_record(checkpoint={"name": "resnet50_supervised", "path": "sup/r50.pth",
                                                 "sha256": "5" * 64, "format": "torchvision", "arch": "resnet50",
                                                 "method": "supervised", "epochs": 90},
                                     task="linear", protocol="fast", metrics={"top1": 76.0}, seed=0,
                                     dataset={"name": "synth-tiny/imagenet", "path": "/data",
                                              "splits": {"train": 100, "val": 40}},
                                     config={"epochs": 10}, run={"workers": 2}, wall_time_s=1.0, device="cpu",
                                     engine="torchvision"))
    table = load_table(results, reported=False)
    rows = {r.name: r for r in table.measured_rows()}
    cols = _cols(table)
    semi1 = table.noise[(rows["moco_v2"].key, cols["semi-1pct"])]
    assert semi1.verdict == "no random init" and semi1.mark == "∅" and semi1.diff is None
    assert "no random init" in semi1.text() and "in this column" in semi1.spread
    sup = table.noise[(rows["resnet50_supervised"].key, cols["linear"])]
    assert sup.verdict == "no random init"
    # the other verdicts are unchanged
    assert table.noise[(rows["moco_v2"].key, cols["linear"])].verdict == "beyond noise"

    md = to_markdown(table)
    line = next(ln for ln in md.splitlines() if ln.startswith("| resnet50_supervised "))
    assert any(c.strip().endswith("∅") for c in line.strip("|").split("|"))
    assert "∅ no random-init row of its architecture" in md
    rows_csv = {r["checkpoint"]: r for r in csv.DictReader(io.StringIO(to_csv(table)))}
    semi1_label = next(c.label for c in table.columns if c.task == "semi-1pct")
    assert rows_csv["moco_v2"][f"{semi1_label} vs random init"] == "no random init"
    assert rows_csv["moco_v2"][f"{semi1_label} minus random init"] == ""
    assert cli.main(["--results", str(results), "--format", "html", "--rows", "measured"]) == 0
    assert "not compared with random init" in capsys.readouterr().out


def test_seeds_that_all_gave_one_value_measure_no_spread(tmp_path, add_record):
    """kNN does not depend on its seed: three seeds write one value three times, a std of 0. That is
    no measured spread: a pooled std of 0 made any difference (here 0.25) 'beyond noise', and a
    difference of 0 'within noise'. Equal seeds are a spread not known, as one seed is."""
    r = tmp_path / "results"
    for seed in range(3):
        add_record(r, "moco_v2", "knn", "dino-knn", {"top1": 50.25}, seed=seed)
        add_record(r, "random-resnet18", "knn", "dino-knn", {"top1": 50.0}, seed=seed)
        add_record(r, "moco_v2", "linear", "fast", {"top1": 47.75}, seed=seed)
        add_record(r, "random-resnet18", "linear", "fast", {"top1": 47.75}, seed=seed)
    table = load_table(r, reported=False)
    row = next(x for x in table.measured_rows() if x.name == "moco_v2")
    for task, diff in (("knn", 0.25), ("linear", 0.0)):
        noise = table.noise[(row.key, _cols(table)[task])]
        assert noise.diff == pytest.approx(diff)
        assert noise.pooled_std is None and noise.verdict == "spread unknown" and noise.mark == "?"
        assert "3 seeds gave the same value" in noise.spread
    md = to_markdown(table)
    line = next(ln for ln in md.splitlines() if ln.startswith("| moco_v2 "))
    assert line.count(" ?") == 2 and "seeds that all gave the same value" in md
    # a baseline whose runs all gave one value gives no spread either
    entries = [{"checkpoint": n, "task": "knn", "protocol": "dino-knn", "metric": "top1", "value": v, "std": 0.0,
                "n": 3} for n, v in (("moco_v2", 50.25), ("random-resnet18", 50.0))]
    table = load_table(r, reported=False, spreads=entries)
    assert table.noise[(row.key, _cols(table)["knn"])].verdict == "spread unknown"


def test_one_seed_against_several_is_spread_unknown(tmp_path, add_record):
    """One seed of a checkpoint against a random init of three: the spread of the three says nothing
    about where the one seed's number lies in its own range, so the difference is no verdict (it
    was 'beyond noise', shown unmarked, against the footnote's "one seed: ?")."""
    r = tmp_path / "results"
    add_record(r, "moco_v2", "knn", "dino-knn", {"top1": 53.0}, seed=0)
    for seed, v in enumerate((50.0, 50.1, 49.9)):
        add_record(r, "random-resnet18", "knn", "dino-knn", {"top1": v}, seed=seed)
    table = load_table(r, reported=False)
    row = next(x for x in table.measured_rows() if x.name == "moco_v2")
    noise = table.noise[(row.key, _cols(table)["knn"])]
    assert noise.pooled_std is None and noise.verdict == "spread unknown" and noise.mark == "?"
    assert "moco_v2: one seed" in noise.spread and "random-resnet18: 3 seeds" in noise.spread
    line = next(ln for ln in to_markdown(table).splitlines() if ln.startswith("| moco_v2 "))
    assert line.rstrip(" |").endswith("53.0 ?")
    # the one seed's spread from a baseline's runs of that cell: both sides known, a verdict again
    spread = [{"checkpoint": "moco_v2", "task": "knn", "protocol": "dino-knn", "metric": "top1", "value": 53.0,
               "std": 0.2, "n": 4}]
    table = load_table(r, reported=False, spreads=spread)
    assert table.noise[(row.key, _cols(table)["knn"])].verdict == "beyond noise"


def test_cells_that_ran_other_settings_are_not_compared(tmp_path, add_record):
    """The random init evaluated with k=200, T=1 beside a checkpoint's k=20, T=0.07 under one protocol
    name: their difference is the settings', so it gets no verdict; the table names what differs."""
    r = tmp_path / "results"
    for seed in range(3):
        add_record(r, "moco_v2", "knn", "dino-knn", {"top1": 60.0 + seed}, seed=seed, config={"k": 20, "T": 0.07})
        add_record(r, "random-resnet18", "knn", "dino-knn", {"top1": 50.0 + seed}, seed=seed,
                   config={"k": 200, "T": 1.0})
    table = load_table(r, reported=False)
    row = next(x for x in table.measured_rows() if x.name == "moco_v2")
    noise = table.noise[(row.key, _cols(table)["knn"])]
    assert noise.verdict == "settings differ" and noise.mark == "‡" and noise.diff is None
    assert "config.k = 20 here, 200 in random-resnet18" in noise.mismatch and "config.T" in noise.mismatch
    md = to_markdown(table)
    line = next(ln for ln in md.splitlines() if ln.startswith("| moco_v2 "))
    assert line.rstrip(" |").endswith("‡1")
    assert "- ‡1 not compared with random-resnet18" in md and "config.k = 20 here, 200" in md
    rows = {x["checkpoint"]: x for x in csv.DictReader(io.StringIO(to_csv(table)))}
    label = _cols(table)["knn"].label
    assert rows["moco_v2"][f"{label} vs random init"] == "settings differ"
    assert rows["moco_v2"][f"{label} minus random init"] == ""
