"""A resume must train with the checkpoint's settings, or say what differs and record both.

Also: a corrupt latest checkpoint is named, with the previous one offered.
"""

from __future__ import annotations

import json

import pytest

from mocobench.pretrain.cli import main as cli_main
from pretrain_helpers import write_image_folder

ARGS = ["--method", "moco_v2", "--preset", "tiny", "--img_size=16", "--batch_size=4", "--K=8",
        "--epochs=1", "--max_steps_per_epoch=2", "--ckpt_every=1", "--log_every=1", "--workers=0"]


@pytest.fixture()
def finished_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MOCOBENCH_PROGRESS", "0")
    data = write_image_folder(tmp_path / "data", n_classes=2, per_class=6, size=16)
    out = tmp_path / "run"
    assert cli_main(["--data", str(data), "--out", str(out), *ARGS, "--lr=0.05"]) == 0
    return data, out


def test_resume_with_another_lr_is_refused_naming_the_field(finished_run, capsys):
    data, out = finished_run
    ckpt = sorted((out / "checkpoints").glob("step_*.pth"))[-1]
    rc = cli_main(["--data", str(data), "--out", str(out.parent / "again"), *ARGS, "--lr=0.2",
                   "--resume", str(ckpt)])
    err = capsys.readouterr().err
    assert rc != 0
    assert "lr 0.05 -> 0.2" in err and str(ckpt) in err


def test_resume_with_allowed_change_records_both(finished_run, capsys):
    data, out = finished_run
    ckpt = sorted((out / "checkpoints").glob("step_*.pth"))[-1]
    again = out.parent / "again"
    assert cli_main(["--data", str(data), "--out", str(again), *ARGS, "--lr=0.2", "--resume", str(ckpt),
                     "--allow-config-change"]) == 0
    config = json.loads((again / "config.json").read_text())
    assert config["lr"] == 0.2
    assert config["changed_on_resume"] == [{"step": 2, "from": {"lr": 0.05}}]


def test_runtime_settings_may_change_on_resume(finished_run):
    data, out = finished_run
    ckpt = sorted((out / "checkpoints").glob("step_*.pth"))[-1]
    args = [a for a in ARGS if not a.startswith("--log_every")]
    assert cli_main(["--data", str(data), "--out", str(out.parent / "again"), *args, "--log_every=5",
                     "--lr=0.05", "--resume", str(ckpt)]) == 0


def test_corrupt_latest_checkpoint_names_the_previous_one(finished_run, capsys):
    data, out = finished_run
    found = sorted((out / "checkpoints").glob("step_*.pth"))
    assert len(found) >= 2
    latest = found[-1]
    latest.write_bytes(latest.read_bytes()[:100])
    rc = cli_main(["--data", str(data), "--out", str(out), *ARGS, "--lr=0.05", "--resume", "auto"])
    err = capsys.readouterr().err
    assert rc != 0
    assert str(latest) in err and str(found[-2]) in err and "--resume" in err
