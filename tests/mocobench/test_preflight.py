"""The pre-flight (issue 28): healthy, collapsed or like random init, on the user's own images, and the
pipeline stops before any long stage of a given checkpoint that is not healthy (unless --force)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torchvision

from mocobench.transfer.preflight import run_preflight
from pipeline_runs import pipeline, records, with_data


def collapsed_resnet18(path: Path) -> Path:
    """A ResNet-18 whose res5 BatchNorms have weight 0 and bias 1: every image gives the same feature."""
    sd = torchvision.models.resnet18().state_dict()
    for k in sd:
        if k.startswith("layer4.") and ("bn" in k or "downsample.1" in k):
            if k.endswith(".weight"):
                sd[k].zero_()
            elif k.endswith(".bias"):
                sd[k].fill_(1.0)
    torch.save(sd, path)
    return path


def test_the_imagenet_mobilenet_v2_is_healthy_and_its_random_init_is_not(synth_small, mobilenet_v2_imagenet_path):
    good = run_preflight(str(mobilenet_v2_imagenet_path), synth_small, n=200, img_size=64)
    assert good["verdict"] == "healthy", good["why"]
    f = good["figures"]
    assert f["checkpoint"]["knn_top1"] > max(f["random_init_1"]["knn_top1"], f["random_init_2"]["knn_top1"]) + 10
    rand = run_preflight("random:mobilenet_v2", synth_small, n=200, img_size=64)
    assert rand["verdict"] == "looks like random init", rand["why"]


def test_a_collapsed_backbone_is_collapsed(synth_small, tmp_path):
    report = run_preflight(str(collapsed_resnet18(tmp_path / "c.pth")), synth_small, n=100, img_size=64)
    assert report["verdict"] == "collapsed"
    assert report["figures"]["checkpoint"]["effective_rank"] < 1 and report["figures"]["checkpoint"]["dead_units"] == 1.0


def test_the_pipeline_stops_on_a_collapsed_checkpoint_and_goes_on_with_force(synth_small, tmp_path):
    ckpt = collapsed_resnet18(tmp_path / "collapsed.pth")
    only = ["--only", "preflight", "--only", "knn-dino-knn", "--no-random", "--checkpoint", str(ckpt)]
    out = with_data(tmp_path / "stop", synth_small)
    run = pipeline(out, *only)
    assert run.returncode == 1, run.stdout[-3000:]
    assert "collapsed" in run.stdout and "blocked" in run.stdout and "knn-dino-knn" in run.stdout
    log = (out / "logs" / "preflight-collapsed.log").read_text()
    assert "collapsed.pth collapsed: stopping before any long run" in log and "effective rank 0.00" in log
    assert not (out / "results").exists() or not list((out / "results").glob("*.json"))
    out = with_data(tmp_path / "force", synth_small)
    run = pipeline(out, *only, "--force")
    assert run.returncode == 0, run.stdout[-3000:]
    (rec,) = records(out)
    assert rec["run"]["preflight"]["verdict"] == "collapsed" and rec["run"]["preflight"]["forced"] is True
    assert rec["run"]["preflight"]["checkpoint"]["effective_rank"] < 1
    assert json.loads((out / "preflight" / "collapsed.json").read_text())["forced"] is True


def test_a_preflight_report_of_another_file_is_refused_before_the_run(synth_small, tmp_path, capsys):
    from mocobench.cli import main

    report = tmp_path / "other.json"
    report.write_text(json.dumps({"checkpoint": "other.pth", "sha256": "0" * 64, "verdict": "healthy",
                                  "figures": {"checkpoint": {}, "random_init_1": {}}}))
    rc = main(["eval", "knn", "--checkpoint", "random:resnet18", "--data", str(synth_small), "--results",
               str(tmp_path / "res"), "--img-size", "32", "--no-cache", "--preflight", str(report)])
    assert rc == 2 and "not of this checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "res").exists() or not list((tmp_path / "res").glob("*.json"))
