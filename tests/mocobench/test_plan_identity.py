"""What makes two stages different stages, and options that take effect or are refused: checkpoints
that share a short name, the seeds of a multi-seed protocol, ``--seed`` on them, the real datasets'
identity in the resume keys, and the pipeline's option checks. Plan-level only (nothing runs)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mocobench import pipeline as P
from mocobench import resume
from mocobench.launch import Launcher
from mocobench.stages import plan
from mocobench.datasets.identity import data_identity


def _plan(argv):
    args = P.parse_args(argv)
    return plan(args, P.choose_mode(args), Path(args.out), [])


def _paper_root(root: Path) -> Path:
    for d in ("imagenet/train/n01", "imagenet/val/n01", "VOCdevkit/VOC2007/Annotations",
              "VOCdevkit/VOC2012/Annotations", "VOCdevkit/VOC2012/SegmentationClass", "coco/annotations",
              "coco/val2017", "cityscapes/leftImg8bit", "cityscapes/gtFine"):
        (root / d).mkdir(parents=True)
    for split in ("train", "val"):
        for i in range(4):
            (root / "imagenet" / split / "n01" / f"{i}.JPEG").write_bytes(b"x" * (i + 1))
    for pct in (1, 10):
        (root / "imagenet" / f"{pct}percent.txt").write_text("0.JPEG\n")
    return root


# -- 1. two checkpoints with the same short name -------------------------------------------------
def test_checkpoints_that_share_a_short_name_get_their_own_stages(tmp_path):
    """ca/r18.pth and cb/r18.pth were both 'r18': one set of stage names, pre-flight report, work
    folders and state entries for two checkpoints."""
    a, b = str(tmp_path / "ca" / "r18.pth"), str(tmp_path / "cb" / "r18.pth")
    stages = _plan(["--quick", "--out", str(tmp_path / "o"), "--checkpoint", a, "--checkpoint", b, "--no-random"])
    assert len({s.name for s in stages}) == len(stages)
    by_ckpt: dict[str, list] = {a: [], b: []}
    for s in stages:
        ckpt = s.argv[1] if s.argv[0] == "preflight" else s.argv[s.argv.index("--checkpoint") + 1] \
            if "--checkpoint" in s.argv else None
        if ckpt:
            by_ckpt[ckpt].append(s)
    assert len(by_ckpt[a]) == len(by_ckpt[b]) > 1
    for field in (lambda s: s.name, lambda s: s.log, lambda s: s.output,
                  lambda s: s.argv[s.argv.index("--work-dir") + 1] if "--work-dir" in s.argv else None,
                  lambda s: s.argv[s.argv.index("--preflight") + 1] if "--preflight" in s.argv else None):
        assert not ({field(s) for s in by_ckpt[a]} & {field(s) for s in by_ckpt[b]}) - {None, ""}
    # a checkpoint alone keeps its plain name
    alone = _plan(["--quick", "--out", str(tmp_path / "o2"), "--checkpoint", a, "--no-random"])
    assert "preflight r18" in {s.name for s in alone}


def test_a_failing_stage_of_one_of_two_same_named_checkpoints_fails_the_run(tmp_path, monkeypatch, capsys):
    """The FAIL of ca/r18's kNN was overwritten by cb/r18's ok in the summary, and the exit code was 0."""
    a, b = str(tmp_path / "ca" / "r18.pth"), str(tmp_path / "cb" / "r18.pth")

    def fake_run(self, stage, env):
        stage.log.parent.mkdir(parents=True, exist_ok=True)
        bad = stage.argv[:2] == ["eval", "knn"] and a in stage.argv   # the first: the second one's ok came after
        stage.log.write_text("RuntimeError: boom\n" if bad else "")
        return 1 if bad else 0

    monkeypatch.setattr(Launcher, "run", fake_run)
    monkeypatch.setattr(P, "leaderboard", lambda out, mode: 0)
    rc = P.main(["--quick", "--out", str(tmp_path / "o"), "--checkpoint", a, "--checkpoint", b, "--no-random",
                 "--no-preload", "--jobs", "1", "--only", "knn"])
    out = capsys.readouterr().out
    assert rc == 1 and out.count("FAIL ") == 1 and "1 FAIL" in out.splitlines()[-1]


def test_a_checkpoint_given_twice_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        P.parse_args(["--quick", "--checkpoint", "c/r18.pth", "--checkpoint", "./c/r18.pth"])
    assert e.value.code == 2 and "--checkpoint ./c/r18.pth: given twice" in capsys.readouterr().err


# -- 2. options that take effect or are refused ----------------------------------------------------
@pytest.mark.parametrize("argv, words", [
    (["--checkpoint", "x.pth", "--pretrain-arg=--epochs=1"], "--pretrain-arg applies to pretraining"),
    (["--slurm-timeout-min", "60"], "--slurm-timeout-min only apply with --slurm"),
    (["--slurm", "debug", "--slurm-timeout-min", "0"], "--slurm-timeout-min 0: must be at least 1"),
    (["--random-arch", "resnet18", "--no-random"], "--random-arch resnet18 names the random-init baseline"),
    (["--random-arch", "resnet5"], "--random-arch resnet5: unknown backbone arch"),
    (["--random-arch", "timm:no_such_net"], "timm has no model of that name"),
    (["--nproc", "0"], "--nproc 0: must be at least 1"),
    (["--nnodes", "0"], "--nnodes 0: must be at least 1"),
])
def test_pipeline_options_are_checked_before_anything_runs(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        P.parse_args(["--quick", *argv])
    assert e.value.code == 2 and words in capsys.readouterr().err


def test_fast_with_given_checkpoints_is_refused(tmp_path, capsys):
    root = _paper_root(tmp_path / "data")
    with pytest.raises(SystemExit) as e:
        P.parse_args(["--data-root", str(root), "--preset", "paper", "--checkpoint", "x.pth", "--fast"])
    assert e.value.code == 2 and "--fast applies to pretraining; with --checkpoint" in capsys.readouterr().err


def test_slurm_timeout_takes_effect(monkeypatch):
    args = P.parse_args(["--quick", "--slurm", "debug", "--slurm-timeout-min", "90"])
    assert args.slurm_timeout_min == 90
    assert P.parse_args(["--quick", "--slurm", "debug"]).slurm_timeout_min is None   # the 72 h default, in slurm.py


def test_only_text_that_names_no_stage_is_a_usage_error(tmp_path, capsys):
    out = tmp_path / "o"
    assert P.main(["--quick", "--out", str(out), "--dry-run", "--only", "knn", "--only", "nkk"]) == 2
    err = capsys.readouterr().err
    assert "--only nkk: no stage of this plan" in err and not out.exists()


def test_random_arch_replaces_the_baseline(tmp_path):
    """--random-arch put its random init beside the mode's (and beside a Transformer preset's own):
    it replaces the baseline of the pretrained runs; a reference keeps its own architecture's."""
    def randoms(stages):
        return {s.argv[s.argv.index("--checkpoint") + 1] for s in stages
                if s.argv[0] == "eval" and s.argv[s.argv.index("--checkpoint") + 1].startswith("random:")}

    root = _paper_root(tmp_path / "data")
    paper = ["--data-root", str(root), "--preset", "paper", "--out", str(tmp_path / "o")]
    assert randoms(_plan(paper + ["--methods", "moco_v2_800ep,smog_vit_s_300ep", "--random-arch", "resnet18"])) \
        == {"random:resnet18", "random:resnet50"}   # resnet50: the supervised R50 reference's own
    assert randoms(_plan(paper + ["--checkpoint", "x.pth", "--random-arch", "resnet18"])) == {"random:resnet18"}
    assert randoms(_plan(["--quick", "--out", str(tmp_path / "q"), "--random-arch", "resnet18"])) \
        == {"random:resnet18", "random:mobilenet_v2"}   # the MobileNetV2 reference's own


# -- 3. and 4. the seeds of a multi-seed protocol ---------------------------------------------------
def _det_seeds(stages, ckpt="r18"):
    return {int(s.argv[s.argv.index("--seed") + 1]) if "--seed" in s.argv else 0: s for s in stages
            if s.name.startswith(f"eval det-voc-c4-24k {ckpt}")}


def test_one_seed_of_a_protocol_does_not_supersede_another_seeds_work(tmp_path):
    """The five VOC detection seeds listed the same work folder as their output: starting seed 1
    moved seed 0's interrupted work to superseded/."""
    root = _paper_root(tmp_path / "data")
    out = tmp_path / "o"
    argv = ["--data-root", str(root), "--preset", "paper", "--out", str(out), "--checkpoint",
            str(tmp_path / "ca" / "r18.pth"), "--no-random", "--only", "det-voc"]
    seeds = _det_seeds(_plan(argv))
    assert sorted(seeds) == [0, 1, 2, 3, 4]
    s0 = seeds[0]
    resume.write_entry(out, s0.name, s0.key, s0.config, finished=False)   # seed 0 started, interrupted
    work = Path(s0.argv[s0.argv.index("--work-dir") + 1])
    (work / "r18-nosha-moco-voc-c4-24k-voc-0123abcd-s0").mkdir(parents=True)
    again = _det_seeds(_plan(argv))
    assert again[0].resumes and not again[0].stale
    for seed in (1, 2, 3, 4):
        assert not again[seed].stale and not again[seed].stale_why, seed
    # seed 1's own folder from an older pipeline is its own to move, and only its own
    (work / "r18-nosha-moco-voc-c4-24k-voc-0123abcd-s1").mkdir()
    assert [p.name for p in _det_seeds(_plan(argv))[1].stale] == ["r18-nosha-moco-voc-c4-24k-voc-0123abcd-s1"]


def test_seed_offsets_a_multi_seed_protocols_seeds(tmp_path):
    """--seed 5 in paper mode ran VOC detection and segmentation on one seed (5) instead of five."""
    root = _paper_root(tmp_path / "data")
    stages = _plan(["--data-root", str(root), "--preset", "paper", "--out", str(tmp_path / "o"), "--seed", "5",
                    "--checkpoint", str(tmp_path / "r18.pth"), "--no-random"])
    assert sorted(_det_seeds(stages)) == [5, 6, 7, 8, 9]
    seg = [int(s.argv[s.argv.index("--seed") + 1]) for s in stages if s.name.startswith("eval seg-cityscapes-fcn r18")]
    assert seg == [5, 6, 7, 8, 9]
    coco = [s.argv[s.argv.index("--seed") + 1] for s in stages if s.name.startswith("eval det-coco-c4-1x r18")]
    assert coco == ["5"]


# -- 6. the real datasets' identity in the resume keys ---------------------------------------------
def test_a_changed_real_dataset_redoes_the_stages_that_read_it(tmp_path):
    """Deleting half of imagenet/val and running again skipped the stages as done: nothing of the
    data's content was in any key. Now each stage's key holds the listing of what it reads."""
    root = _paper_root(tmp_path / "data")
    out = tmp_path / "o"
    argv = ["--data-root", str(root), "--preset", "paper", "--out", str(out), "--methods", "moco_v2_800ep",
            "--no-random"]
    first = _plan(argv)
    for st in first:
        resume.write_entry(out, st.name, st.key, st.config, finished=True)
    backbone = out / "runs" / "moco_v2_800ep" / "backbone.pth"
    backbone.parent.mkdir(parents=True)
    backbone.write_bytes(b"x")

    def by_name():
        return {s.name: s for s in _plan(argv)}

    knn, pre, det = "eval knn-dino-knn moco_v2_800ep", "pretrain moco_v2_800ep", "eval det-voc-c4-24k moco_v2_800ep"
    same = by_name()
    assert same[pre].done and same[knn].resumes and not same[knn].stale_why
    for f in sorted((root / "imagenet" / "val" / "n01").iterdir())[:2]:
        f.unlink()
    changed = by_name()
    assert changed[pre].done   # pretraining reads train/ only
    assert "inputs changed" in changed[knn].stale_why and not changed[knn].resumes
    assert changed[det].resumes   # VOC did not change
    # a training image rewritten (another size) redoes the pretraining too, and what reads its backbone
    (root / "imagenet" / "train" / "n01" / "0.JPEG").write_bytes(b"longer")
    changed = by_name()
    assert not changed[pre].done and "inputs changed" in changed[pre].stale_why
    assert "inputs changed" in changed[det].stale_why


def test_data_identity_reads_listings_not_files(tmp_path):
    (tmp_path / "d" / "a").mkdir(parents=True)
    (tmp_path / "d" / "a" / "x.jpg").write_bytes(b"1234")
    (tmp_path / "d" / "y.jpg").write_bytes(b"12")
    os.symlink(tmp_path / "d", tmp_path / "d" / "a" / "loop")   # a symlink loop is listed once
    first = data_identity(tmp_path / "d")
    assert first.startswith("listing:") and data_identity(tmp_path / "d") == first
    # the bytes change, the size and time stay: a listing does not see it (a content hash would)
    f = tmp_path / "d" / "a" / "x.jpg"
    st = f.stat()
    f.write_bytes(b"9999")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert data_identity(tmp_path / "d") == first
    (tmp_path / "d" / "a" / "z.jpg").write_bytes(b"")
    assert data_identity(tmp_path / "d") != first
    assert data_identity(tmp_path / "absent") == "absent"


def test_the_embedded_modes_keys_are_unchanged_by_the_data_identity(tmp_path):
    """The embedded data are keyed by their data stage; the real datasets' listings are paper mode's."""
    for st in _plan(["--quick", "--out", str(tmp_path)]):
        assert not any(k.startswith("data ") for k in st.config["inputs"]), st.name
    json.dumps([st.config for st in _plan(["--quick", "--out", str(tmp_path)])])
