"""A run says what it trained on and keeps to it (resume), keeps its own checkpoints (a used --out),
and records the label fraction a supervised list gives."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from mocobench.pretrain.cli import main as cli_main
from pretrain_helpers import write_image_folder

ARGS = ["--preset", "tiny", "--img_size=16", "--batch_size=4", "--K=8", "--epochs=1", "--max_steps_per_epoch=2",
        "--ckpt_every=1", "--log_every=1", "--workers=0"]


def _run(data, out, *extra, method="moco_v2"):
    return cli_main(["--method", method, "--data", str(data), "--out", str(out), *ARGS, *extra])


@pytest.fixture()
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("MOCOBENCH_PROGRESS", "0")
    return write_image_folder(tmp_path / "data", n_classes=2, per_class=6, size=16)


def test_resume_on_other_data_is_refused_unless_allowed(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(data, out) == 0
    ckpt = sorted((out / "checkpoints").glob("step_*.pth"))[-1]
    other = tmp_path / "other"
    shutil.copytree(data, other)   # the same names elsewhere: another folder all the same
    rc = _run(other, tmp_path / "again", "--resume", str(ckpt))
    err = capsys.readouterr().err
    assert rc == 1 and "data differ" in err and str(other.resolve()) in err, err
    again = tmp_path / "again2"
    assert _run(other, again, "--resume", str(ckpt), "--allow-config-change") == 0
    changed = json.loads((again / "config.json").read_text())["changed_on_resume"]
    assert changed[0]["from"]["data"]["root"] == str((data / "train").resolve())
    start = [json.loads(line) for line in (again / "log.jsonl").read_text().splitlines()
             if json.loads(line).get("event") == "start"][-1]
    assert start["data"]["root"] == str((other / "train").resolve()) and start["data"]["images"] == 12
    assert start["changed_on_resume"]["data"][0]["root"] == str((data / "train").resolve())


def test_resume_with_an_edited_supervised_list_is_refused(data, tmp_path, capsys):
    names = sorted(p.relative_to(data / "train").as_posix() for p in (data / "train").rglob("*.JPEG"))
    lst = tmp_path / "labeled.txt"
    lst.write_text("\n".join(names[:2] + names[6:8]) + "\n")
    out = tmp_path / "run"
    assert _run(data, out, "--supervised-list", str(lst), method="unimoco") == 0
    lst.write_text("\n".join(names[:2] + names[8:10]) + "\n")   # as many labels, other images
    rc = _run(data, out, "--supervised-list", str(lst), "--resume", "auto", method="unimoco")
    err = capsys.readouterr().err
    assert rc == 1 and "labels_sha256" in err, err


def test_a_new_run_into_a_used_out_is_refused_before_writing(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(data, out) == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    rc = _run(data, out, "--lr=0.1")
    err = capsys.readouterr().err
    assert rc == 2 and "--resume auto" in err and str(out) in err, err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_supervised_list_records_the_fraction_it_labels(data, tmp_path, capsys):
    names = sorted(p.relative_to(data / "train").as_posix() for p in (data / "train").rglob("*.JPEG"))
    lst = tmp_path / "labeled.txt"
    lst.write_text("\n".join(names[:3]) + "\n")   # 3 of 12 images
    out = tmp_path / "run"
    assert _run(data, out, "--supervised-list", str(lst), method="unimoco") == 0
    assert json.loads((out / "config.json").read_text())["label_fraction"] == 0.25
    ckpt = torch.load(sorted((out / "checkpoints").glob("step_*.pth"))[-1], weights_only=True)
    assert ckpt["config"]["label_fraction"] == 0.25 and ckpt["config"]["supervised_list"] == str(lst)
    meta = torch.load(out / "backbone.pth", weights_only=True)["meta"]
    assert meta["label_fraction"] == 0.25
    rc = _run(data, tmp_path / "both", "--supervised-list", str(lst), "--label_fraction=0.6", method="unimoco")
    err = capsys.readouterr().err
    assert rc == 2 and "--label_fraction" in err and "--supervised-list" in err, err
    assert not (tmp_path / "both").exists()


def test_a_resume_from_an_earlier_checkpoint_moves_the_later_ones_aside(tmp_path, monkeypatch, capsys):
    """A run resumed from an earlier checkpoint (here with another lr) trains another trajectory: the
    checkpoints after it are moved under RUN_DIR/superseded/, before the new run writes its own, so that
    pruning (by step) keeps the new run's and ``--resume auto`` continues the new run, not the old."""
    from mocobench.pretrain.train import latest_checkpoint

    monkeypatch.setenv("MOCOBENCH_PROGRESS", "0")
    data = write_image_folder(tmp_path / "data", n_classes=3, per_class=6, size=16)   # 4 batches of 4
    args = ["--method", "moco_v2", "--data", str(data), "--out", str(tmp_path / "run"), "--preset", "tiny",
            "--img_size=16", "--batch_size=4", "--K=8", "--epochs=1", "--ckpt_every=1", "--keep_checkpoints=4",
            "--log_every=1", "--workers=0"]
    out = tmp_path / "run"
    assert cli_main([*args, "--max_steps_per_epoch=4", "--lr=0.05"]) == 0
    names = lambda: sorted(p.name for p in (out / "checkpoints").glob("step_*.pth"))   # noqa: E731
    assert names() == [f"step_{s:08d}.pth" for s in (1, 2, 3, 4)]
    old = {n: (out / "checkpoints" / n).read_bytes() for n in names()}
    # back to step 2 with another lr, and a run one step shorter: it writes step 3 and ends
    capsys.readouterr()
    assert cli_main([*args, "--max_steps_per_epoch=3", "--lr=0.1", "--allow-config-change",
                     "--resume", str(out / "checkpoints" / "step_00000002.pth")]) == 0
    said = capsys.readouterr().out
    assert names() == [f"step_{s:08d}.pth" for s in (1, 2, 3)]
    moved = sorted(p for p in (out / "superseded").rglob("step_*.pth"))
    assert [p.name for p in moved] == ["step_00000003.pth", "step_00000004.pth"]
    assert [p.read_bytes() for p in moved] == [old["step_00000003.pth"], old["step_00000004.pth"]]
    assert all(p.parent.name == "checkpoints" for p in moved) and "moved aside" in said, said
    start = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()
             if json.loads(line).get("event") == "start"][-1]
    assert sorted(start["superseded"]) == [str(p) for p in moved]
    # --resume auto continues the new trajectory
    latest = latest_checkpoint(out)
    assert latest.name == "step_00000003.pth" and latest.read_bytes() != old["step_00000003.pth"]
    assert torch.load(latest, weights_only=True)["config"]["lr"] == 0.1
    assert cli_main([*args, "--max_steps_per_epoch=3", "--lr=0.1", "--resume", "auto"]) == 0
    start = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()
             if json.loads(line).get("event") == "start"][-1]
    assert start["resumed_from"] == str(latest) and start["superseded"] == []
