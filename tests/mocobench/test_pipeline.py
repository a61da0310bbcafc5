"""The pipeline's plan, resume and launch logic, without running any stage (the `--quick` run itself
is tests/test_run_all.py)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from mocobench import pipeline as P


def _plan(argv, records=()):
    args = P.parse_args(argv)
    return P.plan(args, P.choose_mode(args), Path(args.out), list(records))


def test_quick_plan_pretrains_then_evaluates_every_checkpoint(tmp_path):
    stages = _plan(["--quick", "--out", str(tmp_path)])
    names = [s.name for s in stages]
    assert names[0] == "data synth"
    pre = [n for n in names if n.startswith("pretrain")]
    assert pre and all(names.index(n) < names.index(f"eval linear-fast {n.split()[1]}") for n in pre)
    assert any(n.endswith("random-timm-test_resnet") for n in names)
    tasks = {s.argv[1] for s in stages if s.argv[0] == "eval"}
    assert tasks == {"linear", "knn", "semi", "detection", "segmentation"}
    for s in stages:
        if s.argv[0] == "eval":
            assert s.argv[s.argv.index("--results") + 1] == str(tmp_path / "results")
            assert not any("{" in a for a in s.argv)


def test_default_plan_has_four_pretraining_runs(tmp_path):
    stages = _plan(["--out", str(tmp_path)])
    pre = [s for s in stages if s.argv[0] == "pretrain"]
    methods = [s.argv[s.argv.index("--method") + 1] for s in pre]
    assert methods == ["moco_v2", "unimoco", "unimoco", "smog"]
    fractions = [s.argv[s.argv.index("--label-fraction") + 1] for s in pre if "--label-fraction" in s.argv]
    assert len(set(fractions)) == 2
    assert all(s.argv[s.argv.index("--preset") + 1] == "tiny" for s in pre)
    assert "small" in stages[0].argv


def test_resume_skips_finished_work(tmp_path):
    backbone = tmp_path / "runs" / "moco_v2" / "backbone.pth"
    backbone.parent.mkdir(parents=True)
    backbone.write_bytes(b"x")
    rec = {"id": "abc", "task": "knn", "protocol": "dino-knn", "seed": 0,
           "checkpoint": {"name": "backbone", "path": str(backbone)}}
    rnd = {"id": "def", "task": "semi-10pct", "protocol": "tiny", "seed": 0,
           "checkpoint": {"name": "random-timm-test_resnet", "path": "random:timm:test_resnet"}}
    stages = {s.name: s for s in _plan(["--quick", "--out", str(tmp_path)], [rec, rnd])}
    assert "exists" in stages["pretrain moco_v2"].done
    assert stages["eval knn-dino-knn moco_v2"].done == "record abc exists"
    assert stages["eval semi10-tiny random-timm-test_resnet"].done == "record def exists"
    assert stages["eval linear-fast moco_v2"].done is None
    assert stages["eval knn-dino-knn random-timm-test_resnet"].done is None


def test_given_checkpoints_skip_pretraining(tmp_path):
    stages = _plan(["--quick", "--out", str(tmp_path), "--checkpoint", "/ckpts/r50.pth", "--no-random"])
    assert not [s for s in stages if s.argv[0] == "pretrain"]
    evals = [s for s in stages if s.argv[0] == "eval"]
    assert evals and all(s.argv[s.argv.index("--checkpoint") + 1] == "/ckpts/r50.pth" for s in evals)


def test_real_data_mode_finds_datasets_and_names_the_missing_ones(tmp_path):
    root = tmp_path / "data"
    for d in ("imagenet/train", "imagenet/val", "VOCdevkit/VOC2007/Annotations", "VOCdevkit/VOC2012/Annotations",
              "VOCdevkit/VOC2012/SegmentationClass"):
        (root / d).mkdir(parents=True)
    (root / "imagenet" / "10percent.txt").write_text("a.JPEG\n")
    stages = {s.name: s for s in _plan(["--data-root", str(root), "--preset", "paper", "--out", str(tmp_path / "o"),
                                        "--checkpoint", "moco_v2_800ep", "--no-random"])}
    assert "data synth" not in stages
    assert stages["eval linear-paper moco_v2_800ep"].missing is None
    assert stages["eval det-voc-c4-24k moco_v2_800ep"].missing is None
    assert stages["eval seg-voc2012-fcn moco_v2_800ep"].missing is None
    assert stages["eval semi10-simclr moco_v2_800ep"].missing is None
    assert "1% subset file not found" in stages["eval semi1-simclr moco_v2_800ep"].missing
    assert "COCO" in stages["eval det-coco-c4-1x moco_v2_800ep"].missing
    assert "Cityscapes" in stages["eval seg-cityscapes-fcn moco_v2_800ep"].missing
    assert str(root) in stages["eval seg-cityscapes-fcn moco_v2_800ep"].missing
    labels = stages["eval semi10-simclr moco_v2_800ep"].argv
    assert labels[labels.index("--labels") + 1] == str(root / "imagenet" / "10percent.txt")


def test_torchrun_command_passes_multi_node_options():
    launcher = P.Launcher(nproc=8, nnodes=2, node_rank=1, master_addr="node0", master_port=1234)
    cmd = launcher.command(["eval", "linear"], distributed=True)
    assert cmd[1:3] == ["-m", "torch.distributed.run"]
    assert {"--nproc-per-node=8", "--nnodes=2", "--node-rank=1", "--master-addr=node0",
            "--master-port=1234"} <= set(cmd)
    assert cmd[-4:] == ["-m", "mocobench", "eval", "linear"]
    # single-process stages (kNN, fast linear) never go through torchrun
    assert launcher.command(["eval", "knn"], distributed=False)[1:] == ["-m", "mocobench", "eval", "knn"]
    assert P.Launcher(nproc=1).command(["pretrain"], distributed=True)[1:3] == ["-m", "mocobench"]


def test_slurm_without_submitit_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)   # import fails
    with pytest.raises(SystemExit, match=r"--slurm needs submitit.*\[slurm\]"):
        P.main(["--quick", "--out", str(tmp_path), "--slurm", "gpu"])


def test_slurm_submits_each_stage(tmp_path, monkeypatch, capsys):
    """A stand-in for submitit runs each job in-process, as its local executor would."""
    submitted = []

    class Job:
        def __init__(self, fn, args):
            self.job_id, self._fn, self._args = str(len(submitted)), fn, args

        def result(self):
            return 0

    class Executor:
        def __init__(self, folder):
            self.params = {}

        def update_parameters(self, **kw):
            self.params.update(kw)

        def submit(self, fn, *args):
            submitted.append((self.params, args))
            return Job(fn, args)

    monkeypatch.setitem(sys.modules, "submitit", types.SimpleNamespace(AutoExecutor=Executor))
    monkeypatch.setattr(P, "leaderboard", lambda out, mode: 0)
    rc = P.main(["--quick", "--out", str(tmp_path), "--slurm", "gpu", "--only", "knn", "--no-random",
                 "--checkpoint", "/x.pth"])
    assert rc == 0
    assert len(submitted) == 1
    params, (launcher, argv, distributed, log, env) = submitted[0]
    assert params["slurm_partition"] == "gpu" and argv[:2] == ["eval", "knn"]
    assert "submitted eval knn-dino-knn x" in capsys.readouterr().out


def test_failed_and_unbuilt_stages_are_reported_not_fatal(tmp_path, monkeypatch, capsys):
    def fake_run(self, stage, env):
        stage.log.parent.mkdir(parents=True, exist_ok=True)
        if stage.argv[:2] == ["eval", "detection"]:
            stage.log.write_text("mocobench eval: not built yet (transfer.detection.cli is missing)\n")
            return 2
        if stage.argv[:2] == ["eval", "knn"]:
            stage.log.write_text("Traceback ...\nRuntimeError: boom\n")
            return 1
        return 0

    monkeypatch.setattr(P.Launcher, "run", fake_run)
    monkeypatch.setattr(P, "leaderboard", lambda out, mode: 0)
    rc = P.main(["--quick", "--out", str(tmp_path), "--checkpoint", "/x.pth", "--no-random"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "n/a      eval det-voc-tiny-fpn x" in out and "not built yet" in out
    assert "FAIL     eval knn-dino-knn x" in out and "RuntimeError: boom" in out
    assert "ok       eval linear-fast x" in out and "ok       eval seg-cityscapes-tiny x" in out and "(cpu " in out


def test_forked_stage_has_exit_code_and_log(tmp_path):
    """A stage run in a forked child reports the command's exit code and writes its output (and
    argparse's errors) to the stage log, as a fresh process would."""
    import sys

    if not hasattr(__import__("os"), "fork"):
        pytest.skip("no fork on this platform")
    log = tmp_path / "logs" / "stage.log"
    assert P.run_forked(["--version"], [sys.executable, "-m", "mocobench", "--version"], log, {}) == 0
    text = log.read_text()
    assert text.startswith("$ ") and "mocobench" in text.splitlines()[1]
    bad = tmp_path / "logs" / "bad.log"
    assert P.run_forked(["data", "synth", "--no-such-flag"], ["x"], bad, {}) == 2
    assert "error: the following arguments are required: --out" in bad.read_text()
