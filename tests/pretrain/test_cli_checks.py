"""What the pretraining command line accepts: every option takes effect or is refused (exit 2),
checked by field name whatever the spelling, before anything is written."""

from __future__ import annotations

import pytest
import torch

from mocobench.pretrain.cli import main, resolve

BASE = ["--data", "d", "--out", "o", "--preset", "tiny"]


def _resolve(method: str, *extra: str):
    return resolve(["--method", method, *BASE, *extra])[1]


@pytest.mark.parametrize("method, extra, words", [
    # another method's field (issue 5)
    ("moco_v2", ["--n_groups=10"], ["--n_groups", "moco_v2"]),
    ("moco_v1", ["--bank_size=4096"], ["--bank_size"]),
    ("smog", ["--K=7"], ["--K", "smog"]),          # SMoG has no queue (pretrain/smog.py)
    ("smog", ["--T=5"], ["--T", "smog"]),          # ... and its temperature is tau
    ("smog", ["--mlp=true"], ["--mlp"]),
    ("moco_v2", ["--label_fraction=0.5"], ["--label_fraction", "unimoco"]),
    # the schedule's, the optimizer's, the augmentation's
    ("moco_v2", ["--milestones=2,4"], ["--milestones", "cosine"]),
    ("moco_v2", ["--local_crops=4"], ["--local_crops", "augmentation"]),
    ("smog", ["--augmentation=moco_v2", "--local_crops=2"], ["--local_crops"]),
    ("smog", ["--local_size=32"], ["--local_size", "local_crops=0"]),
    ("moco_v2", ["--optimizer=adamw", "--momentum=0.8"], ["--momentum", "adamw"]),
    # case variants go by field name (issue 6)
    ("moco_v2", ["--Milestones=2,4"], ["--Milestones", "cosine"]),
    ("moco_v2", ["--Method=smog"], ["--Method", "--method"]),
    ("moco_v2", ["--method=smog"], ["--method"]),
    # duplicates (issue 8)
    ("moco_v2", ["--lr=0.1", "--lr=0.5"], ["--lr", "twice"]),
    ("moco_v2", ["--lr=0.1", "--LR=0.5"], ["twice"]),
    ("unimoco", ["--label-fraction", "0.3", "--label_fraction=0.5"], ["--label-fraction", "twice"]),
    ("moco_v2", ["--arch", "resnet18", "--arch=resnet50"], ["--arch", "twice"]),
    ("moco_v2", ["--arch", "resnet18", "--Arch=resnet50"], ["--arch", "twice"]),
    # a list and a fraction (issue 3)
    ("unimoco", ["--supervised-list", "x.txt", "--label_fraction=0.6"], ["--label_fraction", "--supervised-list"]),
    # SMoG's k-means needs a feature per group (issue 7)
    ("smog", ["--n_groups=3000"], ["bank_size=2048", "n_groups=3000"]),
    ("smog", ["--reset_every=1", "--batch_size=4"], ["reset_every=1", "n_groups=64"]),
    # named choices at parse time (issue 9)
    ("moco_v2", ["--schedule=foo"], ["--schedule=foo", "step, cosine"]),
    ("moco_v2", ["--augmentation=foo"], ["--augmentation=foo"]),
    ("moco_v2", ["--optimizer=foo"], ["--optimizer=foo", "adamw"]),
    ("moco_v2", ["--precision=fp16"], ["--precision=fp16", "bf16"]),
    ("moco_v2", ["--input_pipeline=gpu"], ["--input_pipeline=gpu"]),
    # a milestone the run never reaches (issue 4, pretraining's side)
    ("moco_v1", ["--schedule=step", "--milestones=3,9"], ["--milestones=3,9", "1 epochs"]),
    # a step schedule with no steps: a cosine preset holds no milestones, the rate would stay constant
    ("moco_v2", ["--schedule=step"], ["--schedule=step", "no milestones", "--milestones"]),
    ("moco_v2", ["--Schedule=step"], ["--Schedule=step", "--milestones"]),
    # a given warmup as long as the run: the rate would never reach --lr
    ("moco_v2", ["--warmup_epochs=20"], ["--warmup_epochs=20", "1 epochs", "--lr"]),
    ("moco_v2", ["--warmup-epochs=1"], ["--warmup-epochs=1", "1 epochs"]),
    # a seed whose per-image seeds would not fit torch's generator (it failed at the first image)
    ("moco_v2", ["--seed=1234567"], ["--seed=1234567", "<= 184465"]),
    ("moco_v2", ["--seed=184466"], ["--seed=184466", "<= 184465"]),
])
def test_refused_naming_the_option(method, extra, words, tmp_path, capsys):
    argv = ["--method", method, "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o"), "--preset", "tiny",
            "--epochs=1", "--max_steps_per_epoch=1", *extra]
    try:
        rc = main(argv)
    except SystemExit as e:   # argparse
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2, err
    for w in words:
        assert w in err, (w, err)
    assert not (tmp_path / "o").exists()


def test_what_applies_is_accepted_by_any_spelling():
    cfg = _resolve("moco_v1", "--schedule=step", "--Milestones=3,6")
    assert (cfg.schedule, cfg.milestones) == ("step", (3, 6))
    assert _resolve("smog", "--N_groups=32").n_groups == 32
    cfg = _resolve("smog", "--augmentation=smog", "--local_crops=2", "--local_size=32")
    assert (cfg.local_crops, cfg.local_size) == (2, 32)
    assert _resolve("moco_v2", "--optimizer=adamw").momentum == 0.9   # the preset's value is not refused
    assert _resolve("unimoco", "--label-fraction", "0.3").label_fraction == 0.3
    # a preset's fields of other methods stay, unrefused: only what the user gives must apply
    assert _resolve("moco_v2").n_groups == 3000
    # a step schedule given its milestones on a cosine preset; a warmup shorter than the run
    cfg = _resolve("moco_v2", "--schedule=step", "--milestones=1", "--epochs=2")
    assert (cfg.schedule, cfg.milestones) == ("step", (1,))
    assert _resolve("moco_v2", "--warmup_epochs=7.5").warmup_epochs == 7.5   # tiny: 8 epochs
    # NOTE: a preset's warmup in a run shortened to it stays allowed (a 1-epoch smoke run, all warmup)
    assert _resolve("moco_v2", "--epochs=1").warmup_epochs == 1.0


def test_the_largest_seed_has_every_per_image_seed_in_torchs_range():
    """``--seed`` stops at the largest value whose per-image seeds (``pretrain.data.item_seed``) fit
    torch's generator for any epoch and image index the formula separates; the seeds of smaller
    values are the formula's, unchanged."""
    from mocobench.pretrain.data import MAX_SEED, item_seed

    assert _resolve("moco_v2", f"--seed={MAX_SEED}").seed == MAX_SEED
    torch.Generator().manual_seed(item_seed(MAX_SEED, 1_000_002, 100_000_006))
    with pytest.raises((RuntimeError, ValueError), match="Overflow"):   # one more, and the last image of such a run overflows
        torch.Generator().manual_seed(item_seed(MAX_SEED + 1, 1_000_002, 100_000_006))
    assert item_seed(7, 3, 11) == (7 * 1_000_003 + 3) * 100_000_007 + 11


def test_shuffle_bn_groups_is_refused_under_torchrun(monkeypatch, tmp_path, capsys):
    """``--shuffle-bn-groups`` splits the key batch of one process; under DDP the keys are shuffled
    across processes and the groups would be recorded without taking effect."""
    assert _resolve("moco_v2", "--shuffle-bn-groups=4").shuffle_bn_groups == 4   # one process
    monkeypatch.setenv("WORLD_SIZE", "2")
    argv = ["--method", "moco_v2", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o"), "--preset", "tiny",
            "--shuffle-bn-groups=4"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "shuffle_bn_groups=4" in err and "2 processes" in err, err
    assert not (tmp_path / "o").exists()
    assert _resolve("moco_v2").shuffle_bn_groups == 1   # the preset's 1 runs under DDP as before
