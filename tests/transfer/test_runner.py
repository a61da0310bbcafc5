"""One way to evaluate (``transfer/runner.py``): seeding, work folders, resume policy, records and
exit codes are the runner's, the same for a toy task and for every real task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mocobench.cli import main
from mocobench.core.records import load_records
from mocobench.transfer import runner
from mocobench.transfer.cli import EVAL_TASKS


# -- a toy task: one registry entry and one function is all a task is --------------------------
TOY_PROTOCOLS = {"toy-draw": {"scale": 100.0}}   # the toy's protocol registry
CALLS: list[int] = []


def toy_run(r: runner.SeedRun) -> runner.Outcome:
    """Draw from the seeded generator, fail on request: a stand-in for training and scoring."""
    CALLS.append(r.seed)
    if r.report.record_fields()["name"] != "random-resnet18" or r.backbone.arch != "resnet18":
        raise AssertionError("the runner hands the loaded checkpoint to the task")
    scale = TOY_PROTOCOLS["toy-draw"]["scale"]
    if scale < 0:
        raise FloatingPointError("the toy diverged")
    r.log(f"toy seed {r.seed}")
    return runner.Outcome(metrics={"draw": float(torch.rand(()).item() * scale)},
                          dataset={"name": "toy", "path": "-", "splits": {}}, config={"scale": scale})


def eval_main(task: str, argv: list[str]) -> int:
    """The toy's ``mocobench eval toy``: the shared options, its protocol, the runner."""
    import argparse

    from mocobench.transfer.run_options import add_run_options, seeds_of, work_root

    def parse() -> runner.Evaluation:
        p = argparse.ArgumentParser(prog="mocobench eval toy")
        p.add_argument("--checkpoint", required=True)
        p.add_argument("--protocol", choices=sorted(TOY_PROTOCOLS), default="toy-draw")
        add_run_options(p, "toy")
        args, rest = p.parse_known_args(argv)
        if rest:
            raise runner.UsageError(f"unknown options {' '.join(rest)}")
        return runner.Evaluation(task="toy", protocol=args.protocol, dataset="toy",
                                 settings=TOY_PROTOCOLS[args.protocol], run=toy_run,
                                 checkpoint=args.checkpoint, seeds=seeds_of(args), results=Path(args.results),
                                 work_root=work_root(args, "toy"), device="cpu", resume=args.resume)

    return runner.main(parse, "mocobench eval toy")


@pytest.fixture()
def toy(monkeypatch):
    from mocobench.core import records

    # a task's entries: the command's table (this module's eval_main) and the records' task names
    monkeypatch.setitem(EVAL_TASKS, "toy", __name__)
    monkeypatch.setattr(records, "TASKS", (*records.TASKS, "toy"))
    monkeypatch.setitem(TOY_PROTOCOLS, "toy-draw", {"scale": 100.0})
    CALLS.clear()
    return TOY_PROTOCOLS["toy-draw"]


def _toy(tmp_path, *extra):
    return main(["eval", "toy", "--checkpoint", "random:resnet18", "--results", str(tmp_path / "res"), *extra])


def test_a_toy_task_gets_seeding_folders_records_and_reruns_from_the_runner(toy, tmp_path, capsys, monkeypatch):
    assert _toy(tmp_path, "--seeds", "3", "4") == 0
    recs = sorted(load_records(tmp_path / "res")[0], key=lambda r: r["seed"])
    assert [(r["task"], r["protocol"], r["seed"]) for r in recs] == [("toy", "toy-draw", 3), ("toy", "toy-draw", 4)]
    for rec in recs:  # independent statement of the seeding: the first draw after manual_seed(seed)
        torch.manual_seed(rec["seed"])
        assert rec["metrics"]["draw"] == pytest.approx(float(torch.rand(()).item() * 100.0))
        work = Path(rec["run"]["work_dir"])
        assert work.parent == tmp_path / "work" / "toy" and work.name.endswith(f"-s{rec['seed']}")
        assert (work / "eval.log").read_text().startswith(f"toy seed {rec['seed']}\n")
        named = Path(json.loads((work / "record.done").read_text())["record"])
        assert json.loads(named.read_text())["id"] == rec["id"]
    out = capsys.readouterr().out
    assert out.count("-> ") == 2 and "seed 3: draw" in out
    # a rerun finds both seeds: the checkpoint is not loaded, the task not called, no second record
    import mocobench.checkpoints.load

    CALLS.clear()
    with monkeypatch.context() as m:
        m.setattr(mocobench.checkpoints.load, "load_backbone", lambda *a, **k: pytest.fail("loaded to be skipped"))
        assert _toy(tmp_path, "--seeds", "3", "4") == 0
    assert CALLS == [] and len(load_records(tmp_path / "res")[0]) == 2
    assert capsys.readouterr().out.count("evaluated already") == 2
    # --resume no would give seed 3 a second record: refused, naming it; once it is gone, it runs
    assert _toy(tmp_path, "--seed", "3", "--resume", "no") == 2
    assert "finished run" in capsys.readouterr().err and CALLS == []
    next((tmp_path / "res").glob("*-s3-*.json")).unlink()
    assert _toy(tmp_path, "--seed", "3", "--resume", "no") == 0
    assert CALLS == [3] and len(load_records(tmp_path / "res")[0]) == 2


def test_a_seed_finished_for_another_results_folder_gets_its_record_here(toy, tmp_path, capsys, monkeypatch):
    """Results folders side by side share the default work root: a second --results saw the seed's
    record.done, said "evaluated already" and wrote nothing into its own folder. The record (the
    same evaluation: same checkpoint, settings and seed) is copied there now, without a run."""
    import mocobench.checkpoints.load

    first, second = tmp_path / "A", tmp_path / "B"
    argv = ["eval", "toy", "--checkpoint", "random:resnet18", "--seeds", "0", "1"]
    assert main([*argv, "--results", str(first)]) == 0
    CALLS.clear()
    capsys.readouterr()
    with monkeypatch.context() as m:
        m.setattr(mocobench.checkpoints.load, "load_backbone", lambda *a, **k: pytest.fail("loaded to be copied"))
        assert main([*argv, "--results", str(second)]) == 0
    assert CALLS == []
    a, b = load_records(first)[0], load_records(second)[0]
    assert sorted(r["id"] for r in b) == sorted(r["id"] for r in a) and len(b) == 2
    assert sorted(p.name for p in (second / "cards").iterdir()) == sorted(p.name for p in (first / "cards").iterdir())
    out = capsys.readouterr().out
    assert out.count(f"-> {second}") == 2 and "copied from" in out
    # once there, it is found there; the first folder's records stay where they are
    assert main([*argv, "--results", str(second)]) == 0
    assert CALLS == [] and len(load_records(second)[0]) == 2 and len(load_records(first)[0]) == 2
    assert "copied from" not in capsys.readouterr().out


def test_other_settings_get_their_own_folder(toy, tmp_path):
    assert _toy(tmp_path, "--seed", "1") == 0
    toy["scale"] = 10.0
    assert _toy(tmp_path, "--seed", "1") == 0
    assert CALLS == [1, 1]
    recs = load_records(tmp_path / "res")[0]
    assert len({r["run"]["work_dir"] for r in recs}) == 2


def test_a_random_init_of_another_seed_is_another_evaluation(toy, tmp_path, capsys):
    """random:resnet18:7 after random:resnet18: same name, no sha256, same settings, so the same work
    folder, and "evaluated already" gave it the seed-0 init's record. The init seed now names its work
    folder and its record; random:resnet18 keeps the folder and record fields it always had."""
    from mocobench.leaderboard.table import load_table

    assert _toy(tmp_path, "--seed", "0") == 0
    assert main(["eval", "toy", "--checkpoint", "random:resnet18:7", "--results", str(tmp_path / "res"),
                 "--seed", "0"]) == 0
    assert CALLS == [0, 0] and "evaluated already" not in capsys.readouterr().out
    recs = {r["checkpoint"]["path"]: r for r in load_records(tmp_path / "res")[0]}
    default, seeded = recs["random:resnet18"], recs["random:resnet18:7"]
    assert "init_seed" not in default["checkpoint"] and seeded["checkpoint"]["init_seed"] == 7
    assert default["checkpoint"]["name"] == seeded["checkpoint"]["name"] == "random-resnet18"
    assert Path(default["run"]["work_dir"]).name.startswith("random-resnet18-nosha-toy-draw-")
    assert Path(seeded["run"]["work_dir"]).name.startswith("random-resnet18-nosha-init7-toy-draw-")
    table = load_table(tmp_path / "res", reported=False)
    assert sorted(r.name for r in table.rows) == ["random-resnet18@init0", "random-resnet18@init7"]
    # random:resnet18:0 is random:resnet18: its finished seed is found
    assert main(["eval", "toy", "--checkpoint", "random:resnet18:0", "--results", str(tmp_path / "res"),
                 "--seed", "0"]) == 0
    assert CALLS == [0, 0] and "evaluated already" in capsys.readouterr().out


def test_toy_exit_codes_usage_two_failure_one_and_no_record(toy, tmp_path, capsys):
    assert _toy(tmp_path, "--no-such=1") == 2
    assert "--no-such=1" in capsys.readouterr().err
    assert _toy(tmp_path, "--resume", str(tmp_path)) == 2  # the toy keeps no state to resume from
    assert "keeps no training state" in capsys.readouterr().err
    toy["scale"] = -1.0
    assert _toy(tmp_path) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the toy diverged" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "res").exists() or not load_records(tmp_path / "res")[0]
    with pytest.raises(FloatingPointError):  # --debug: the traceback
        _toy(tmp_path, "--debug")


# -- every real task: bad override 2, a failed run 1 (no record), a rerun (no second record) ----
def _task_argv(task: str, data: Path) -> list[str]:
    return {
        "linear": ["--protocol", "fast", "--data", str(data)],
        "knn": ["--data", str(data)],
        "semi": ["--protocol", "tiny", "--data", str(data), "--labels", "10percent", "--epochs", "1",
                 "--lr-grid=0.05"],
        "detection": ["--dataset", "voc", "--data", str(data / "VOCdevkit"), "--protocol", "tiny", "--max-iters", "2"],
        "segmentation": ["--dataset", "cityscapes", "--data", str(data / "cityscapes"), "--protocol", "tiny",
                         "--max-iters", "2"],
    }[task]


# what makes each task's run fail once it has started: a diverged run where the task trains (the
# learning rate), a checkpoint that is no checkpoint where it does not (kNN, the fast probe)
FAIL = {
    "linear": ("checkpoint", "what"),
    "knn": ("checkpoint", "what"),
    "semi": (["--lr-grid=1e30", "--epochs", "2"], "diverged"),
    "detection": (["--base_lr=1e30"], "loss is nan"),
    "segmentation": (["--lr=1e30"], "diverged"),
}


@pytest.mark.parametrize("task", sorted(FAIL))
def test_every_task_exit_codes_and_rerun(task, synth_tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MOCOBENCH_DEBUG", raising=False)
    results = tmp_path / "res"
    base = ["eval", task, "--checkpoint", "random:resnet18", "--results", str(results),
            *(["--no-cache"] if task in ("linear", "knn") else []), *_task_argv(task, synth_tiny)]
    assert main([*base, "--no_such_field=1"]) == 2
    assert "no_such_field" in capsys.readouterr().err and not results.exists()

    option, words = FAIL[task]
    argv = list(base)
    if option == "checkpoint":
        bad = tmp_path / "what.pth"
        bad.write_text("not a checkpoint")
        argv[argv.index("random:resnet18")] = str(bad)
    else:   # in place of the task's own values: an option given twice is refused
        from mocobench.stages import with_extra

        argv = with_extra(argv, option)
    assert main(argv) == 1
    err = [line[line.index("mocobench eval"):] for line in capsys.readouterr().err.replace("\r", "\n").splitlines()
           if "mocobench eval" in line]  # after a progress bar's last state, on its line
    assert len(err) == 1 and words in err[0], err
    assert not results.exists() or not load_records(results)[0]

    assert main(base) == 0
    (rec,), _ = load_records(results)
    assert main(base) == 0
    assert len(load_records(results)[0]) == 1 and "evaluated already" in capsys.readouterr().out
