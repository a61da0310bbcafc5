"""The CI gate: absolute and k x std tolerances, relative entries, missing results, --update-baseline."""

from __future__ import annotations

import json
import re

import pytest

from mocobench.leaderboard import cli
from mocobench.leaderboard.check import BASELINE_FORMAT, read_baseline


def _baseline(path, entries, **extra):
    path.write_text(json.dumps({"format": BASELINE_FORMAT, "version": 1, "entries": entries, **extra}))
    return path


def _entry(checkpoint="moco_v2", task="knn", protocol="dino-knn", metric="top1", **kw):
    return {"checkpoint": checkpoint, "task": task, "protocol": protocol, "metric": metric, **kw}


def _run(tmp_path, baseline, capsys):
    rc = cli.main(["check", "--baseline", str(baseline), "--results", str(tmp_path / "results")])
    return rc, capsys.readouterr().out


def test_absolute_tolerance(tmp_path, add_record, capsys):
    add_record(tmp_path / "results", "moco_v2", "knn", "dino-knn", {"top1": 40.0})
    ok = _baseline(tmp_path / "b1.json", [_entry(value=41.5, tolerance=2.0)])
    rc, out = _run(tmp_path, ok, capsys)
    assert rc == 0 and "ok" in out and "-1.50" in out
    bad = _baseline(tmp_path / "b2.json", [_entry(value=42.5, tolerance=2.0)])
    rc, out = _run(tmp_path, bad, capsys)
    assert rc == 1 and "REGRESSED" in out and "moco_v2" in out and "-2.50" in out
    up = _baseline(tmp_path / "b3.json", [_entry(value=30.0, tolerance=2.0)])
    rc, out = _run(tmp_path, up, capsys)
    assert rc == 0 and "improved" in out and "--update-baseline" in out


def test_k_times_std_when_the_baseline_has_seeds(tmp_path, add_record, capsys):
    add_record(tmp_path / "results", "moco_v2", "knn", "dino-knn", {"top1": 40.0})
    # allowed drop = 3 x 0.4 = 1.2 (not the 5.0 absolute tolerance)
    b = _baseline(tmp_path / "b.json", [_entry(value=41.0, std=0.4, n=3, k=3.0, tolerance=5.0)])
    assert _run(tmp_path, b, capsys)[0] == 0
    b = _baseline(tmp_path / "b.json", [_entry(value=41.3, std=0.4, n=3, k=3.0, tolerance=5.0)])
    rc, out = _run(tmp_path, b, capsys)
    assert rc == 1 and "±1.20" in out
    # one seed: std does not apply, the absolute tolerance does
    b = _baseline(tmp_path / "b.json", [_entry(value=44.0, std=0.4, n=1, k=3.0, tolerance=5.0)])
    assert _run(tmp_path, b, capsys)[0] == 0


def test_missing_result_fails(tmp_path, add_record, capsys):
    add_record(tmp_path / "results", "moco_v2", "knn", "dino-knn", {"top1": 40.0})
    b = _baseline(tmp_path / "b.json", [_entry(value=40.0), _entry(task="linear", protocol="fast", value=50.0)])
    rc, out = _run(tmp_path, b, capsys)
    assert rc == 1 and "MISSING" in out and "linear" in out


def test_relative_entry(tmp_path, add_record, capsys):
    res = tmp_path / "results"
    add_record(res, "moco_v2", "knn", "dino-knn", {"top1": 40.0})
    add_record(res, "random-resnet18", "knn", "dino-knn", {"top1": 25.0})
    # pretrained must stay at least 14 - 10 = 4 points above random init
    b = _baseline(tmp_path / "b.json", [_entry(value=14.0, tolerance=10.0, relative_to="random-resnet18")])
    rc, out = _run(tmp_path, b, capsys)
    assert rc == 0 and "moco_v2 - random-resnet18" in out
    add_record(res, "random-resnet18", "knn", "dino-knn", {"top1": 36.0}, seed=1)   # random mean 30.5
    b = _baseline(tmp_path / "b.json", [_entry(value=15.0, tolerance=5.0, relative_to="random-resnet18")])
    rc, out = _run(tmp_path, b, capsys)
    assert rc == 1 and "REGRESSED" in out and "9.50" in out


def test_update_baseline_keeps_settings(tmp_path, add_record, capsys):
    res = tmp_path / "results"
    add_record(res, "moco_v2", "knn", "dino-knn", {"top1": 40.0, "top5": 80.0})
    add_record(res, "random-resnet18", "knn", "dino-knn", {"top1": 25.0})
    for seed, v in enumerate([50.0, 52.0]):
        add_record(res, "moco_v2", "linear", "fast", {"top1": v}, seed=seed)
    path = _baseline(tmp_path / "b.json", [_entry(value=1.0, tolerance=7.0, relative_to="random-resnet18")],
                     note="keep me")
    assert cli.main(["check", "--baseline", str(path), "--results", str(res), "--update-baseline"]) == 0
    new = read_baseline(path)
    assert new["note"] == "keep me"
    rel = [e for e in new["entries"] if e.get("relative_to")]
    # what the cell was measured with is recorded anew: one seed, and the records' settings
    assert [{k: v for k, v in e.items() if k not in ("cell_seeds", "settings")} for e in rel] == [
        _entry(value=15.0, tolerance=7.0, relative_to="random-resnet18")]
    assert rel[0]["cell_seeds"] == 1 and rel[0]["settings"] in new["settings"]
    lin = [e for e in new["entries"] if e["task"] == "linear"]
    assert len(lin) == 1 and lin[0]["value"] == 51.0 and lin[0]["n"] == 2 and lin[0]["k"] == 3.0
    assert abs(lin[0]["std"] - 2 ** 0.5) < 1e-3
    assert not list(tmp_path.glob(".b.json.*"))   # written atomically, no temporary left
    capsys.readouterr()
    assert cli.main(["check", "--baseline", str(path), "--results", str(res)]) == 0


def test_bad_baseline_file_is_a_clear_error(tmp_path, capsys):
    p = tmp_path / "b.json"
    p.write_text("{oops")
    assert cli.main(["check", "--baseline", str(p), "--results", str(tmp_path)]) == 2
    assert f"{p}: not a readable JSON baseline" in capsys.readouterr().err
    assert cli.main(["check", "--baseline", str(tmp_path / "none.json"), "--results", str(tmp_path)]) == 2
    assert "no such baseline file" in capsys.readouterr().err


def test_baseline_from_several_seed_runs(tmp_path, add_record, capsys):
    """--update-baseline with one --results per seed run: each entry's value is the mean over the runs
    (a relative entry: of each run's difference), std and n their spread, runs the values; the
    allowed drop is then k x std, checked against an independent computation."""
    import statistics

    knn = {"moco_v2": [60.0, 62.0, 61.0], "random": [50.0, 50.5, 49.0]}
    dirs = []
    for i in range(3):
        res = tmp_path / f"run{i}" / "results"
        add_record(res, "moco_v2", "knn", "dino-knn", {"top1": knn["moco_v2"][i]}, seed=i)
        add_record(res, "random", "knn", "dino-knn", {"top1": knn["random"][i]}, seed=i)
        dirs += ["--results", str(res)]
    b = _baseline(tmp_path / "b.json", [_entry(value=0.0, k=3.0),
                                        _entry(value=0.0, k=3.0, relative_to="random")])
    assert cli.main(["check", "--baseline", str(b), "--update-baseline", *dirs]) == 0
    absolute, relative = read_baseline(b)["entries"]
    assert absolute["runs"] == knn["moco_v2"] and absolute["n"] == 3
    assert absolute["value"] == round(statistics.fmean(knn["moco_v2"]), 4)
    diffs = [a - r for a, r in zip(knn["moco_v2"], knn["random"])]
    assert relative["runs"] == diffs and relative["std"] == round(statistics.stdev(diffs), 4)
    # a run 3 x std below the mean difference regresses, one just above passes
    floor = statistics.fmean(diffs) - 3 * statistics.stdev(diffs)
    for drop, rc in ((floor - 0.1, 1), (floor + 0.1, 0)):
        res = tmp_path / f"check{rc}" / "results"
        add_record(res, "moco_v2", "knn", "dino-knn", {"top1": 50.0 + drop})
        add_record(res, "random", "knn", "dino-knn", {"top1": 50.0})
        assert cli.main(["check", "--baseline", str(b), "--results", str(res)]) == rc, capsys.readouterr().out


def test_several_results_folders_only_build_a_baseline(tmp_path, capsys):
    b = _baseline(tmp_path / "b.json", [_entry(value=1.0)])
    with pytest.raises(SystemExit):
        cli.main(["check", "--baseline", str(b), "--results", "a", "--results", "b"])
    assert "a check reads one" in capsys.readouterr().err


def test_a_seed_run_without_an_entry_is_refused(tmp_path, add_record, capsys):
    add_record(tmp_path / "r0" / "results", "moco_v2", "knn", "dino-knn", {"top1": 60.0})
    (tmp_path / "r1" / "results").mkdir(parents=True)
    add_record(tmp_path / "r1" / "results", "moco_v2", "linear", "fast", {"top1": 60.0})
    b = _baseline(tmp_path / "b.json", [_entry(value=1.0)])
    rc = cli.main(["check", "--baseline", str(b), "--update-baseline", "--results", str(tmp_path / "r0" / "results"),
                   "--results", str(tmp_path / "r1" / "results")])
    assert rc == 1 and "r1/results: no result for the entry moco_v2 knn" in capsys.readouterr().out
    assert read_baseline(b)["entries"][0]["value"] == 1.0   # not rewritten


def _poison(results, metric="top1", value=float("nan")):
    """Set ``metric`` of every record under ``results`` to ``value``, as a broken run would write it
    (json writes NaN and Infinity as bare words, which Python's reader takes back)."""
    for path in results.rglob("*.json"):
        rec = json.loads(path.read_text())
        rec["metrics"][metric] = value
        path.write_text(json.dumps(rec))


@pytest.mark.parametrize("value, why", [(float("nan"), "not a finite number"),
                                        (float("inf"), "not a finite number"),
                                        (250.0, "outside [0, 100]"),
                                        ("41.0", "not a number")])
def test_a_non_result_never_passes_the_gate(tmp_path, add_record, capsys, value, why):
    """Issue 27: with every MoCo v2 metric NaN the gate said "28 ok" (NaN compares false with
    every floor), and Infinity or 250 were "improved". Now the record is refused on reading and
    the gate entry fails, naming the record file and the reason."""
    res = tmp_path / "results"
    add_record(res / "moco", "moco_v2", "knn", "dino-knn", {"top1": 40.0})
    add_record(res / "random", "random-resnet18", "knn", "dino-knn", {"top1": 25.0})
    b = _baseline(tmp_path / "b.json", [_entry(value=40.0, tolerance=2.0),
                                        _entry(value=15.0, tolerance=2.0, relative_to="random-resnet18"),
                                        _entry(checkpoint="random-resnet18", value=25.0, tolerance=2.0)])
    assert _run(tmp_path, b, capsys)[0] == 0
    _poison(res / "moco", value=value)
    rc, out = _run(tmp_path, b, capsys)
    assert rc == 1, out
    failed = [line for line in out.splitlines() if "MISSING" in line]
    assert len(failed) == 2 and all("its record was refused" in line and why in line for line in failed), out
    record_file = next((res / "moco").rglob("*.json"))
    assert str(record_file) in failed[0] and "1 ok" in out and "2 failed" in out


def test_the_table_refuses_a_non_result(tmp_path, add_record):
    from mocobench.leaderboard.table import TableError, build_table

    rec = add_record(tmp_path / "results", "moco_v2", "knn", "dino-knn", {"top1": 40.0})
    rec["metrics"]["top1"] = float("nan")
    with pytest.raises(TableError, match="top1.*not a finite number"):
        build_table([rec], files=["r.json"])


def test_a_record_with_a_nan_metric_is_never_written(tmp_path, add_record):
    from mocobench.core.records import RecordError

    with pytest.raises(RecordError, match="'AP50' is nan, not a finite number"):
        add_record(tmp_path / "results", "moco_v2", "detection", "tiny", {"AP": 10.0, "AP50": float("nan")})
    with pytest.raises(RecordError, match="no metrics"):
        add_record(tmp_path / "results", "moco_v2", "detection", "tiny", {})
    assert not list(tmp_path.rglob("*.json"))


@pytest.mark.parametrize("change, why", [
    ({"value": float("nan")}, "value must be a finite number"),
    ({"value": 250.0}, "outside [0, 100]"),
    ({"value": 150.0, "relative_to": "random-resnet18"}, "outside [-100, 100]"),
    ({"tolerance": "2"}, "tolerance must be a finite number"),
    ({"n": 2.5}, "n must be a whole number"),
    ({"direction": "down"}, "direction must be 'higher' or 'lower'"),
    ({"task": "knn2"}, "unknown task 'knn2'"),
    ({"metric": ""}, "metric must be a non-empty string"),
    ({"dataset": 7}, "dataset must be a non-empty string"),
    ({"tolerence": 2.0}, "unknown field(s) tolerence"),
    ({"runs": [40.0, float("nan")]}, "runs must be a list of finite numbers"),
])
def test_every_field_of_a_baseline_is_checked(tmp_path, change, why):
    from mocobench.leaderboard.check import BaselineError

    b = _baseline(tmp_path / "b.json", [_entry(**{"value": 40.0, **change})])
    with pytest.raises(BaselineError, match=re.escape(why)) as raised:
        read_baseline(b)
    assert str(b) in str(raised.value) and "entry 0" in str(raised.value)
    bad_defaults = _baseline(tmp_path / "d.json", [_entry(value=40.0)], defaults={"tolerance": float("nan")})
    with pytest.raises(BaselineError, match="defaults.tolerance must be a finite number"):
        read_baseline(bad_defaults)


def test_update_baseline_never_writes_a_nan(tmp_path, add_record, capsys):
    """--update-baseline wrote "value": NaN, which the next check then refused."""
    res = tmp_path / "results"
    add_record(res, "moco_v2", "knn", "dino-knn", {"top1": 40.0})
    path = _baseline(tmp_path / "b.json", [_entry(value=40.0)])
    _poison(res)
    rc = cli.main(["check", "--baseline", str(path), "--results", str(res), "--update-baseline"])
    assert rc == 1 and "not written: the records are not all usable" in capsys.readouterr().out
    assert read_baseline(path)["entries"][0]["value"] == 40.0   # the old baseline is untouched


# ---- what a cell was measured with: every record counted, the same seeds, the same settings

def _records_of(results, seed=None, checkpoint=None):
    out = []
    for path in sorted(results.rglob("*.json")):
        rec = json.loads(path.read_text())
        if (seed is None or rec["seed"] == seed) and (checkpoint is None or rec["checkpoint"]["name"] == checkpoint):
            out.append(path)
    return out


def _edit_record(results, seed, change, checkpoint=None):
    """Rewrite the one record of ``seed`` (and ``checkpoint``) with ``change(rec)`` applied; its path."""
    [path] = _records_of(results, seed=seed, checkpoint=checkpoint)
    rec = json.loads(path.read_text())
    change(rec)
    path.write_text(json.dumps(rec))
    return path


def _three_seeds(results, add_record, checkpoint="moco_v2", values=(60.0, 61.0, 62.0), config=None):
    for seed, v in enumerate(values):
        add_record(results, checkpoint, "linear", "fast", {"top1": v, "top5": v + 20}, seed=seed,
                   config=config)


def _updated_baseline(tmp_path, results):
    path = tmp_path / "b.json"
    assert cli.main(["check", "--baseline", str(path), "--results", str(results), "--update-baseline"]) == 0
    return path


@pytest.mark.parametrize("bad", [float("nan"), "61.0", None, -5.0])
def test_a_skipped_record_fails_the_gate_though_the_other_seeds_fill_its_cell(tmp_path, add_record, capsys, bad):
    """The cell would be the mean of the two seeds left, within tolerance: the gate passed."""
    res = tmp_path / "results"
    _three_seeds(res, add_record)
    b = _baseline(tmp_path / "b.json", [_entry(task="linear", protocol="fast", value=61.0, tolerance=3.0)])
    path = _edit_record(res, 1, lambda rec: rec["metrics"].update(top1=bad))
    rc, out = _run(tmp_path, b, capsys)
    assert rc == 1 and f"error: {path}" in out and "skipped" in out and "1 record file(s) skipped" in out


def test_a_corrupt_record_file_fails_the_gate(tmp_path, add_record, capsys):
    res = tmp_path / "results"
    _three_seeds(res, add_record)
    b = _baseline(tmp_path / "b.json", [_entry(task="linear", protocol="fast", value=61.0, tolerance=3.0)])
    assert _run(tmp_path, b, capsys)[0] == 0
    [path] = _records_of(res, seed=2)
    path.write_text(path.read_text()[:40])
    rc, out = _run(tmp_path, b, capsys)
    assert rc == 1 and "corrupt record" in out


def test_a_seed_whose_record_lacks_the_metric_is_an_error_not_a_smaller_mean(tmp_path, add_record, capsys):
    res = tmp_path / "results"
    _three_seeds(res, add_record)
    b = _baseline(tmp_path / "b.json", [_entry(task="linear", protocol="fast", value=61.0, tolerance=3.0)])
    _edit_record(res, 1, lambda rec: rec["metrics"].pop("top1"))
    rc, out = _run(tmp_path, b, capsys)
    assert rc == 1 and "ERROR" in out and "seed(s) 1 of moco_v2's linear [fast] have no 'top1'" in out


def test_a_relative_entry_holds_its_reference_cell_to_the_same_rules(tmp_path, add_record, capsys):
    res = tmp_path / "results"
    _three_seeds(res, add_record)
    _three_seeds(res, add_record, "random-resnet18", values=(50.0, 51.0, 52.0))
    b = _baseline(tmp_path / "b.json", [_entry(task="linear", protocol="fast", value=10.0, tolerance=3.0,
                                               relative_to="random-resnet18")])
    assert _run(tmp_path, b, capsys)[0] == 0
    # the reference's seeds now ran two protocols
    _edit_record(res, 1, lambda rec: rec["config"].update(epochs=99), checkpoint="random-resnet18")
    rc, out = _run(tmp_path, b, capsys)
    assert rc == 1 and "reference 'random-resnet18': protocol mismatch" in out


def test_the_baseline_records_the_seeds_and_settings_and_the_check_holds_the_cell_to_them(tmp_path, add_record,
                                                                                        capsys):
    res = tmp_path / "results"
    _three_seeds(res, add_record)
    path = _updated_baseline(tmp_path, res)
    baseline = read_baseline(path)
    [top1] = [e for e in baseline["entries"] if e["metric"] == "top1"]
    assert top1["cell_seeds"] == 3 and baseline["settings"][top1["settings"]] == {
        "config.epochs": 10, "dataset.splits.train": 100, "dataset.splits.val": 40}
    assert _run(tmp_path, path, capsys)[0] == 0

    # a seed fewer: the mean of the two left is no comparison, though within tolerance
    [seed2] = _records_of(res, seed=2)
    seed2.unlink()
    rc, out = _run(tmp_path, path, capsys)
    assert rc == 1 and "moco_v2's cell holds 2 seed(s) (0, 1), the baseline's 3" in out
    # a seed more
    _three_seeds(res, add_record, values=(60.0, 61.0, 62.0, 61.0))
    rc, out = _run(tmp_path, path, capsys)
    assert rc == 1 and "holds 4 seed(s)" in out

    # every record re-run with another protocol: the numbers did not move, the protocol did
    for p in _records_of(res):
        p.unlink()
    _three_seeds(res, add_record, config={"epochs": 1})
    rc, out = _run(tmp_path, path, capsys)
    assert rc == 1 and "other protocol settings than the baseline's (config.epochs = 1, the baseline's 10)" in out
    # which --update-baseline then records
    _updated_baseline(tmp_path, res)
    assert _run(tmp_path, path, capsys)[0] == 0


def test_an_update_refuses_to_drop_or_rewrite_an_entry_whose_cell_is_in_error(tmp_path, add_record, capsys):
    res = tmp_path / "results"
    _three_seeds(res, add_record)
    b = _baseline(tmp_path / "b.json", [_entry(task="linear", protocol="fast", value=61.0, tolerance=3.0)])
    _edit_record(res, 1, lambda rec: rec["config"].update(epochs=99))
    before = b.read_text()
    rc = cli.main(["check", "--baseline", str(b), "--results", str(res), "--update-baseline"])
    assert rc == 1 and "not written" in capsys.readouterr().out and b.read_text() == before


@pytest.mark.parametrize("version", ["x", None, [1], True])
def test_a_baseline_version_that_is_no_number_is_named(tmp_path, add_record, capsys, version):
    add_record(tmp_path / "results", "moco_v2", "knn", "dino-knn", {"top1": 40.0})
    b = _baseline(tmp_path / "b.json", [_entry(value=40.0)], version=version)
    assert cli.main(["check", "--baseline", str(b), "--results", str(tmp_path / "results")]) == 2
    assert f"{b}: version must be a whole number, not {version!r}" in capsys.readouterr().err


def test_a_results_folder_that_does_not_exist_is_a_usage_error(tmp_path, capsys):
    b = _baseline(tmp_path / "b.json", [_entry(value=40.0)])
    with pytest.raises(SystemExit) as e:
        cli.main(["check", "--baseline", str(b), "--results", str(tmp_path / "nope")])
    assert e.value.code == 2 and "nope: no such results folder" in capsys.readouterr().err


def test_a_relative_entry_whose_reference_ran_other_settings_is_an_error(tmp_path, add_record, capsys):
    """"Pretrained kNN minus random-init kNN" where the random init ran k=200, T=1 and the checkpoint
    k=20, T=0.07: the difference measures the settings, and passed the gate. It is an error naming them."""
    res = tmp_path / "results"
    for seed in range(3):
        add_record(res, "moco_v2", "knn", "dino-knn", {"top1": 60.0 + seed}, seed=seed, config={"k": 20, "T": 0.07})
        add_record(res, "random-resnet18", "knn", "dino-knn", {"top1": 50.0 + seed}, seed=seed,
                   config={"k": 200, "T": 1.0})
    b = _baseline(tmp_path / "b.json", [_entry(value=10.0, tolerance=2.0, relative_to="random-resnet18")])
    rc, out = _run(tmp_path, b, capsys)
    assert rc == 1 and "ERROR" in out and "ran other protocol settings" in out
    assert "config.T = 0.07 here, 1.0 in random-resnet18" in out and "config.k = 20 here, 200 in random-resnet18" in out
    # an update refuses to write the entry rather than carry the comparison over
    assert cli.main(["check", "--baseline", str(b), "--results", str(res), "--update-baseline"]) == 1
    assert "ran other protocol settings" in capsys.readouterr().out
