"""One convention for ``--seed``/``--seeds``/``--work-dir``/``--results`` in every ``mocobench eval`` task."""

from __future__ import annotations

import argparse

import pytest

from mocobench.transfer.cli import EVAL_TASKS, eval_main
from mocobench.transfer.run_options import add_run_options, run_dir, seeds_of, work_root

# what each task needs besides the shared options, so that parsing reaches the seeds
REQUIRED = {
    "linear": [],
    "knn": [],
    "semi": ["--labels", "10percent"],
    "detection": ["--dataset", "voc", "--protocol", "tiny"],
    "segmentation": ["--dataset", "cityscapes", "--protocol", "tiny"],
}


def test_every_task_is_listed():
    assert set(REQUIRED) == set(EVAL_TASKS)


@pytest.mark.parametrize("task", sorted(REQUIRED))
def test_every_task_refuses_seed_with_seeds_and_a_repeated_seed(task, tmp_path, capsys):
    base = [task, "--checkpoint", "random:resnet18", "--data", str(tmp_path / "nowhere"),
            "--results", str(tmp_path / "results"), *REQUIRED[task]]
    with pytest.raises(SystemExit) as e:
        eval_main(base + ["--seed", "1", "--seeds", "2", "3"])
    assert e.value.code == 2 and "not allowed with argument --seed" in capsys.readouterr().err
    assert eval_main(base + ["--seeds", "2", "5", "2"]) == 2
    assert "--seeds repeats 2" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def _args(*argv):
    p = argparse.ArgumentParser()
    add_run_options(p, "knn")
    return p.parse_args(["--results", "/r/results", *argv])


def test_seeds_and_work_dir_rules():
    assert seeds_of(_args()) == [0]
    assert seeds_of(_args("--seed", "3")) == [3]
    assert seeds_of(_args("--seeds", "4", "1")) == [4, 1]
    assert str(work_root(_args(), "knn")) == "/r/work/knn"  # next to RESULTS, never inside it
    assert str(work_root(_args("--work-dir", "/w"), "knn")) == "/w"
    ckpt = {"name": "moco v2/800ep", "sha256": "0123456789abcdef"}
    assert run_dir("/w", ckpt, "fast", "synth-small", 2).name == "moco_v2_800ep-01234567-fast-synth-small-s2"
    assert run_dir("/w", {"name": "random-resnet18", "sha256": None}, "tiny", "voc", 0).name == \
        "random-resnet18-nosha-tiny-voc-s0"
