"""The pipeline's plan, resume keys and launch logic, without running any real stage (the `--quick`
run itself is tests/gate/; SLURM is tests/mocobench/test_slurm_cluster.py)."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import pytest

from mocobench import pipeline as P
from mocobench import resume
from mocobench.launch import Launcher, run_forked
from mocobench.stages import plan


def _plan(argv, records=()):
    """The plan, with ``records`` written as files ``OUT/recs/<i>.json``."""
    args = P.parse_args(argv)
    files = []
    for i, rec in enumerate(records):
        path = Path(args.out) / "recs" / f"{i}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rec))
        files.append((path, rec))
    return plan(args, P.choose_mode(args), Path(args.out), files)


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


def test_quick_plan_gates_three_methods_and_a_real_pretrained_backbone(tmp_path):
    """Issue 14: MoCo v2, UniMoCo (100 % labels) and SMoG on classification beside their random init;
    torchvision's ImageNet MobileNetV2 and its random init on fine-tuned segmentation. Issue 26: the
    quick run's own checkpoints on frozen-backbone segmentation, and UniMoCo 100 % alone on detection
    (the 3 minutes hold one detection run)."""
    stages = _plan(["--quick", "--out", str(tmp_path)])
    methods = [s.argv[s.argv.index("--method") + 1] for s in stages if s.argv[0] == "pretrain"]
    assert methods == ["moco_v2", "unimoco", "smog"]
    by_ckpt: dict[str, set[str]] = {}
    for s in stages:
        if s.argv[0] == "eval":
            by_ckpt.setdefault(s.name.split()[2], set()).add(s.argv[1])
    cls, dense = {"linear", "knn", "semi"}, {"detection", "segmentation"}
    # and frozen-backbone segmentation of the quick run's own checkpoints (issue 26)
    ours = cls | {"segmentation"}
    assert by_ckpt == {"moco_v2": ours, "unimoco_100pct": ours | dense, "smog": ours,
                       "random-timm-test_resnet": ours, "mobilenet_v2-b0353104": {"segmentation"},
                       "random-mobilenet_v2": {"segmentation"}}


def test_an_evaluation_takes_only_known_checkpoint_groups_or_runs():
    from mocobench.modes import Eval, Mode, Run

    knn = Eval("knn", "knn", "dino-knn", "knn", "imagenet", on=("references",))
    with pytest.raises(ValueError, match=r"knn evaluates references, neither a checkpoint group "
                                         r"\(pretrained, reference, reference-random\) nor a pretraining run \(moco\)"):
        Mode("m", "small", "timm:test_resnet", (Run("moco", "moco_v2", "tiny"),), (knn,))
    with pytest.raises(ValueError, match="a pretraining run may not be named like a checkpoint group"):
        Mode("m", "small", "timm:test_resnet", (Run("reference", "moco_v2", "tiny"),), ())
    with pytest.raises(ValueError, match="checkpoint groups"):
        Eval("linear-fast", "linear", "fast", "linear", "imagenet", on=())
    Mode("m", "small", "timm:test_resnet", (Run("moco", "moco_v2", "tiny"),),
         (Eval("knn", "knn", "dino-knn", "knn", "imagenet", on=("moco", "reference")),))


def test_an_evaluation_that_names_a_run_takes_that_runs_checkpoint_alone(tmp_path):
    """Quick mode's detection names UniMoCo 100 %: neither the other runs nor random init take it,
    and with --methods leaving that run out, no detection stage is planned."""
    det = [s.name for s in _plan(["--quick", "--out", str(tmp_path)]) if s.argv[:2] == ["eval", "detection"]]
    assert det == ["eval det-voc-tiny-fpn unimoco_100pct"]
    assert not [s for s in _plan(["--quick", "--methods", "moco_v2", "--out", str(tmp_path / "b")])
                if s.argv[:2] == ["eval", "detection"]]


def test_a_random_init_that_is_both_baseline_and_reference_takes_both_groups_evaluations(tmp_path, monkeypatch):
    """A reference of the mode's own architecture: its random init is the pretrained runs' baseline
    too, planned once, and takes the evaluations of both groups (the quick run's classification is
    for "pretrained" only, its fine-tuned segmentation for the references and their random inits)."""
    from mocobench import modes

    ref = modes.Reference("published_test_resnet", "timm:test_resnet", lambda: None, "not installed")
    monkeypatch.setitem(modes.MODES, "quick", modes.Mode(**{**modes.MODES["quick"].__dict__, "references": (ref,)}))
    stages = _plan(["--quick", "--out", str(tmp_path)])
    evals = [s.name.split()[1] for s in stages if s.argv[0] == "eval" and s.name.split()[2] == "random-timm-test_resnet"]
    assert len(evals) == len(set(evals))   # planned once
    assert {"linear-fast", "knn-dino-knn", "semi10-tiny", "seg-cityscapes-tiny-frozen", "seg-cityscapes-tiny"} == set(evals)


def test_an_absent_reference_checkpoint_is_named_not_fatal(tmp_path, monkeypatch):
    from mocobench import modes

    ref = modes.Reference("imagenet_mobilenet_v2", "mobilenet_v2", lambda: None, "install the weights package")
    monkeypatch.setitem(modes.MODES, "quick", modes.Mode(**{**modes.MODES["quick"].__dict__, "references": (ref,)}))
    stages = _plan(["--quick", "--out", str(tmp_path)])
    ref_stages = [s for s in stages if s.name.split()[-1] == "imagenet_mobilenet_v2"]
    assert len(ref_stages) == len([e for e in modes.MODES["quick"].evals if "reference" in e.on]) == 1
    assert all(s.missing == "install the weights package" for s in ref_stages)
    assert not any(s.missing for s in stages if s not in ref_stages)


def test_seed_reaches_pretraining_evaluation_and_random_init(tmp_path):
    stages = _plan(["--quick", "--seed", "3", "--out", str(tmp_path)])
    for s in stages:
        if s.argv[0] == "pretrain":
            assert "--seed=3" in s.argv
        elif s.argv[0] == "eval":
            assert s.argv[s.argv.index("--seed") + 1] == "3" and s.name.endswith(" seed 3")
            ckpt = s.argv[s.argv.index("--checkpoint") + 1]
            assert not ckpt.startswith("random:") or ckpt.endswith(":3")
    names = [s.name for s in stages]
    assert "eval knn-dino-knn random-timm-test_resnet seed 3" in names
    assert "--seed=0" not in str([s.argv for s in _plan(["--quick", "--out", str(tmp_path / "b")])])


@pytest.mark.parametrize("argv, message", [
    (["--jobs", "0"], "--jobs 0: must be at least 1"),
    (["--threads", "0"], "--threads 0: must be at least 1"),
    (["--seed", "-1"], "--seed -1: must be at least 0"),
    (["--seed", "184466"], "--seed 184466: must be >= 0 and <= 184465 (the pretraining runs' seed)"),
    (["--jobs", "2", "--slurm", "debug"], "leave --jobs out"),
    (["--jobs", "2", "--nproc", "2"], "leave --jobs out"),
])
def test_jobs_threads_and_seed_are_checked(argv, message, capsys):
    with pytest.raises(SystemExit):
        P.parse_args(["--quick", *argv])
    assert message in capsys.readouterr().err


class _FakeRun:
    """A stage that 'runs' until the test ends it: what the scheduler sees of a process."""

    def __init__(self, log, name):
        self.name, self.rc, self.cpu = name, None, 0.0
        log.append(("start", name))

    def poll(self):
        return self.rc

    def stop(self):
        self.rc = -15


def test_side_by_side_stages_wait_for_what_they_need(tmp_path, monkeypatch, capsys):
    """With --jobs 2: never more than two at once, an evaluation starts only after its pretraining
    ended, kNN after the linear probe that fills its feature cache; every stage ends once."""
    events, running = [], []

    def start(self, stage, env):
        assert env["OMP_NUM_THREADS"] == "1"
        run = _FakeRun(events, stage.name)
        running.append(run)
        assert sum(r.rc is None for r in running) <= 2
        return run

    def sleep(_):   # each tick of the scheduler ends the oldest running stage
        live = [r for r in running if r.rc is None]
        if live:
            live[0].rc = 0
            events.append(("end", live[0].name))

    monkeypatch.setattr(Launcher, "start", start)
    monkeypatch.setattr(P.time, "sleep", sleep)
    monkeypatch.setattr(P, "leaderboard", lambda out, mode: 0)
    assert P.main(["--quick", "--out", str(tmp_path), "--jobs", "2", "--no-preload"]) == 0
    order = [name for kind, name in events if kind == "start"]
    ended = [name for kind, name in events if kind == "end"]
    assert sorted(order) == sorted(ended) and len(order) == len(set(order)) == 23
    for name in order:
        if name.startswith("eval "):
            ckpt = name.split()[2]
            if f"pretrain {ckpt}" in order:
                assert ended.index(f"pretrain {ckpt}") < [n for k, n in events if k == "start"].index(name)
        if name.startswith("eval knn"):
            lin = name.replace("knn-dino-knn", "linear-fast")
            assert events.index(("end", lin)) < events.index(("start", name))
    assert "2 at a time, 1 thread(s) each" in capsys.readouterr().out


def test_chains_add_each_stage_cost_to_its_longest_waiting_chain():
    from mocobench.stages import Stage

    mk = lambda name, cost, needs=(), after=(): Stage(name, [], Path(name), cost=cost,  # noqa: E731
                                                      needs=list(needs), after=list(after))
    stages = [mk("a", 1), mk("b", 10, ["a"]), mk("c", 2, ["a"]), mk("d", 5, ["c"]), mk("e", 4, ["c"], ["d"]),
              mk("f", 3, ["gone"])]
    assert P.chains(stages) == {"a": 12.0, "b": 10.0, "c": 11.0, "d": 9.0, "e": 4.0, "f": 3.0}


def test_side_by_side_stages_start_the_longest_chain_first(tmp_path, monkeypatch):
    """A free slot goes to the ready stage with the most work behind it: in the quick run, after the
    data, UniMoCo's pretraining (its detection run behind it) and SMoG's (the longest chains) start
    before MoCo v2's; no ready stage ever waits for one with a shorter chain."""
    started, running = [], []
    args = P.parse_args(["--quick", "--out", str(tmp_path)])
    stages = plan(args, P.choose_mode(args), tmp_path, [])
    chain = P.chains(stages)
    needs = {s.name: s.needs + s.after for s in stages}

    def start(self, stage, env):
        ended = {n for n, r in running if r.rc is not None}
        ready = [n for n in needs if n not in started and all(d in ended for d in needs[n])]
        assert chain[stage.name] == max(chain[n] for n in ready), (stage.name, ready)
        run = _FakeRun([], stage.name)
        started.append(stage.name)
        running.append((stage.name, run))
        return run

    def sleep(_):
        live = [r for _, r in running if r.rc is None]
        if live:
            live[0].rc = 0

    monkeypatch.setattr(Launcher, "start", start)
    monkeypatch.setattr(P.time, "sleep", sleep)
    monkeypatch.setattr(P, "leaderboard", lambda out, mode: 0)
    assert P.main(["--quick", "--out", str(tmp_path), "--jobs", "2", "--no-preload"]) == 0
    assert started[0] == "data synth"
    assert set(started[1:3]) == {"pretrain smog", "pretrain unimoco_100pct"}
    # the first to end is UniMoCo's: its detection (56 CPU-s) goes before MoCo v2's pretraining (22 + 7)
    assert started[3:5] == ["eval det-voc-tiny-fpn unimoco_100pct", "pretrain moco_v2"]


def test_default_plan_has_four_pretraining_runs(tmp_path):
    stages = _plan(["--out", str(tmp_path)])
    pre = [s for s in stages if s.argv[0] == "pretrain"]
    methods = [s.argv[s.argv.index("--method") + 1] for s in pre]
    assert methods == ["moco_v2", "unimoco", "unimoco", "smog"]
    fractions = [s.argv[s.argv.index("--label-fraction") + 1] for s in pre if "--label-fraction" in s.argv]
    assert len(set(fractions)) == 2
    assert all(s.argv[s.argv.index("--preset") + 1] == "tiny" for s in pre)
    assert "small" in stages[0].argv


def _finish(stages, out: Path, backbone: bool = True) -> list[dict]:
    """Pretend every stage ran: resume entries marked finished, backbones and records in place."""
    records = []
    for st in stages:
        resume.write_entry(out, st.name, st.key, st.config, finished=True)
        if st.argv[0] == "pretrain" and backbone:
            Path(st.output).parent.mkdir(parents=True, exist_ok=True)
            Path(st.output).write_bytes(b"x")
        if st.argv[:2] == ["data", "synth"]:
            Path(st.output).mkdir(parents=True, exist_ok=True)
            (Path(st.output) / "synth_info.json").write_text('{"scale": "small"}')
    for st in stages:
        if st.argv[0] == "eval":
            ckpt = st.argv[st.argv.index("--checkpoint") + 1]
            ev = next(e for e in P.MODES["quick"].evals if st.name.startswith(f"eval {e.label} "))
            records.append({"id": f"r{len(records)}", "task": ev.task, "protocol": ev.protocol, "seed": 0,
                            "checkpoint": {"name": Path(ckpt).parent.name, "path": ckpt}})
    return records


def test_resume_skips_finished_work(tmp_path):
    first = _plan(["--quick", "--out", str(tmp_path)])
    records = _finish(first, tmp_path)
    stages = {s.name: s for s in _plan(["--quick", "--out", str(tmp_path)], records)}
    assert "exists" in stages["pretrain moco_v2"].done
    assert stages["eval knn-dino-knn moco_v2"].done.startswith("record r")
    assert all(s.done and not s.stale for s in stages.values())
    # a deleted record is redone (and nothing else)
    kept = [r for r in records if not (r["task"] == "knn" and "moco_v2" in r["checkpoint"]["path"])]
    stages = {s.name: s for s in _plan(["--quick", "--out", str(tmp_path)], kept)}
    assert [n for n, s in stages.items() if not s.done] == ["eval knn-dino-knn moco_v2"]


def test_quick_then_default_run_redoes_what_changed(tmp_path):
    """Issue 13: a --quick run followed by a default run in the same --out reused the quick run's
    4-epoch backbone and its results. Each stage now has a resume key; a changed one is redone and
    its old outputs (run folder, records) are moved aside."""
    records = _finish(_plan(["--quick", "--out", str(tmp_path)]), tmp_path)
    stages = {s.name: s for s in _plan(["--out", str(tmp_path)], records)}
    pre = stages["pretrain moco_v2"]
    assert pre.done is None and pre.stale == [tmp_path / "runs" / "moco_v2"]
    assert "mode 'quick' -> 'default'" in pre.stale_why and "--epochs=4" in pre.stale_why
    knn = stages["eval knn-dino-knn moco_v2"]
    i = next(i for i, r in enumerate(records) if r["task"] == "knn" and "moco_v2" in r["checkpoint"]["path"])
    assert knn.done is None and tmp_path / "recs" / f"{i}.json" in knn.stale
    # the random baseline's evaluations ran with other schedules too (semi 2 vs 4 epochs)
    assert stages["eval semi10-tiny random-timm-test_resnet"].done is None


def test_changed_eval_arg_redoes_the_evaluations_only(tmp_path):
    """Issue 13: a changed --eval-arg was ignored (the old records counted as done)."""
    records = _finish(_plan(["--quick", "--out", str(tmp_path)]), tmp_path)
    stages = _plan(["--quick", "--out", str(tmp_path), "--eval-arg=--batch-size=7"], records)
    for st in stages:
        if st.argv[0] == "eval":
            assert st.done is None and "+--batch-size=7" in st.stale_why, st.name
        else:
            assert st.done, st.name


def _clear_code_caches():
    for f in (resume.source_digest, resume.protocol_modules, resume.module_file):
        f.cache_clear()


def test_protocol_code_is_the_import_graph():
    """Issue 24: the code of a stage is what its entry module imports, read from the source: the
    VOC reader and the core helpers are detection's code, the pipeline is nobody's."""
    det = dict(resume.protocol_modules(resume.PROTOCOL_ENTRY[("eval", "detection")]))
    knn = dict(resume.protocol_modules(resume.PROTOCOL_ENTRY[("eval", "knn")]))
    assert "mocobench.datasets.voc" in det and "mocobench.core.records" in det
    assert "mocobench.checkpoints.load" in det and "mocobench.checkpoints.load" in knn
    assert "mocobench.datasets.voc" not in knn and "mocobench.transfer.detection.cli" not in knn
    for modules in (det, knn):
        assert not any(m.split(".")[1] in ("pipeline", "cli", "modes", "stages", "resume") for m in modules)
        assert all(path.is_file() for path in modules.values())


def test_changed_protocol_code_redoes_its_stages(tmp_path, monkeypatch):
    """Issue 24: an edit to the VOC reader (in mocobench.datasets, which a hand-kept folder list
    missed) redoes the detection stages, not kNN nor the pretraining."""
    real_file = resume.module_file.__wrapped__
    edited = tmp_path / "voc.py"
    edited.write_bytes(real_file("mocobench.datasets.voc").read_bytes() + b"\n# edited\n")
    out = tmp_path / "out"
    _clear_code_caches()
    records = _finish(_plan(["--quick", "--out", str(out)]), out)
    monkeypatch.setattr(resume, "module_file", functools.lru_cache(maxsize=None)(
        lambda name: edited if name == "mocobench.datasets.voc" else real_file(name)))
    resume.source_digest.cache_clear()
    resume.protocol_modules.cache_clear()
    try:
        stages = {s.name: s for s in _plan(["--quick", "--out", str(out)], records)}
    finally:
        monkeypatch.undo()
        _clear_code_caches()
    det = "eval det-voc-tiny-fpn unimoco_100pct"
    assert stages[det].done is None and stages[det].stale_why == "configuration changed: code changed"
    assert stages["eval knn-dino-knn moco_v2"].done and stages["pretrain moco_v2"].done


def test_interrupted_stage_continues_and_older_outputs_are_redone(tmp_path):
    stages = _plan(["--quick", "--out", str(tmp_path)])
    pre = next(s for s in stages if s.name == "pretrain moco_v2")
    resume.write_entry(tmp_path, pre.name, pre.key, pre.config, finished=False)   # started, killed
    (tmp_path / "runs" / "moco_v2" / "checkpoints").mkdir(parents=True)
    again = next(s for s in _plan(["--quick", "--out", str(tmp_path)]) if s.name == pre.name)
    assert again.done is None and again.resumes and not again.stale
    # a run folder with no resume entry (an older pipeline's) is not resumed from
    resume.entry_path(tmp_path, pre.name).unlink()
    again = next(s for s in _plan(["--quick", "--out", str(tmp_path)]) if s.name == pre.name)
    assert again.stale == [tmp_path / "runs" / "moco_v2"] and "without a resume key" in again.stale_why


def test_stale_outputs_are_moved_aside_before_the_stage_runs(tmp_path, monkeypatch, capsys):
    ran = []

    def fake_run(self, stage, env):
        ran.append(stage.name)
        assert not (tmp_path / "results" / "old.json").exists()   # moved before the run
        return 0

    results = tmp_path / "results"
    results.mkdir()
    old = {"schema_version": 1, "id": "old", "checkpoint": {"name": "random-timm-test_resnet",
           "path": "random:timm:test_resnet"}, "task": "knn", "protocol": "dino-knn", "engine": "torchvision",
           "dataset": {"name": "synth-small"}, "metrics": {"top1": 1.0}, "seed": 0, "config": {}, "env": {}, "wall_time_s": 1.0,
           "timestamp": "t"}
    (results / "old.json").write_text(json.dumps(old))
    monkeypatch.setattr(Launcher, "run", fake_run)
    monkeypatch.setattr(P, "leaderboard", lambda out, mode: 0)
    assert P.main(["--quick", "--out", str(tmp_path), "--only", "knn-dino-knn random", "--no-preload",
                   "--jobs", "1"]) == 0
    assert ran == ["eval knn-dino-knn random-timm-test_resnet"]
    moved = list((tmp_path / "superseded").rglob("old.json"))
    assert len(moved) == 1 and "moved aside" in capsys.readouterr().out
    entry = resume.read_entry(tmp_path, ran[0])
    assert entry["finished"] and entry["config"]["mode"] == "quick"


def test_given_checkpoints_skip_pretraining(tmp_path):
    stages = _plan(["--quick", "--out", str(tmp_path), "--checkpoint", "/ckpts/r50.pth", "--no-random"])
    assert not [s for s in stages if s.argv[0] == "pretrain"]
    evals = [s for s in stages if s.argv[0] == "eval"]
    assert evals and all(s.argv[s.argv.index("--checkpoint") + 1] == "/ckpts/r50.pth" for s in evals)


def test_real_data_mode_finds_datasets_and_names_the_missing_ones(tmp_path):
    root = tmp_path / "data"
    for d in ("imagenet/train", "imagenet/val", "VOCdevkit/VOC2007/Annotations", "VOCdevkit/VOC2012/Annotations",
              "VOCdevkit/VOC2012/SegmentationClass", "VOCdevkit/VOC2012/SegmentationClassAug"):
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
    launcher = Launcher(nproc=8, nnodes=2, node_rank=1, master_addr="node0", master_port=1234)
    cmd = launcher.command(["eval", "linear"], distributed=True)
    assert cmd[1:3] == ["-m", "torch.distributed.run"]
    assert {"--nproc-per-node=8", "--nnodes=2", "--node-rank=1", "--master-addr=node0",
            "--master-port=1234"} <= set(cmd)
    assert cmd[-4:] == ["-m", "mocobench", "eval", "linear"]
    # single-process stages (kNN, fast linear) never go through torchrun
    assert launcher.command(["eval", "knn"], distributed=False)[1:] == ["-m", "mocobench", "eval", "knn"]
    assert Launcher(nproc=1).command(["pretrain"], distributed=True)[1:3] == ["-m", "mocobench"]


def test_failed_stages_are_reported_not_fatal(tmp_path, monkeypatch, capsys):
    def fake_run(self, stage, env):
        stage.log.parent.mkdir(parents=True, exist_ok=True)
        if stage.argv[:2] == ["eval", "knn"]:
            stage.log.write_text("Traceback ...\nRuntimeError: boom\n")
            return 1
        return 0

    monkeypatch.setattr(Launcher, "run", fake_run)
    monkeypatch.setattr(P, "leaderboard", lambda out, mode: 0)
    rc = P.main(["--quick", "--out", str(tmp_path), "--checkpoint", "/x.pth", "--no-random", "--no-preload",
                 "--jobs", "1"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "FAIL     eval knn-dino-knn x" in out and "RuntimeError: boom" in out
    assert "ok       eval linear-fast x" in out and "ok       eval seg-cityscapes-tiny x" in out and "(cpu " in out
    assert not resume.read_entry(tmp_path, "eval knn-dino-knn x")["finished"]


def test_slurm_request_fits_each_stage():
    """Issue 15: every stage asked for --nproc GPUs and 10 x nproc CPUs, which sbatch refuses on a
    cluster without GPUs. The request is explicit now, and stages that need no GPU ask for none."""
    from mocobench.slurm import SlurmOptions, describe, request
    from mocobench.stages import Stage

    launcher = Launcher(nproc=4, nnodes=2)
    opts = SlurmOptions("gpu", gpus_per_node=4, mem="64G", timeout_min=60, extra={"account": "abc"})
    data = request(opts, Stage("data synth", [], Path("x"), gpu=False), launcher)
    assert "gpus_per_node" not in data and data["nodes"] == 1 and data["cpus_per_task"] == 1
    pre = request(opts, Stage("pretrain moco_v2", [], Path("x"), distributed=True), launcher)
    assert (pre["gpus_per_node"], pre["nodes"], pre["cpus_per_task"], pre["mem"]) == (4, 2, 4, "64G")
    assert pre["additional_parameters"] == {"account": "abc"}
    knn = request(opts, Stage("eval knn x", [], Path("x")), launcher)
    assert (knn["gpus_per_node"], knn["nodes"]) == (1, 1)
    # detectron2 starts a process per GPU itself: one node's GPUs, one task, no torchrun
    d2_stage = Stage("eval det-voc-c4-24k x", ["eval", "detection", "--engine=detectron2"], Path("x"), all_gpus=True)
    d2 = request(opts, d2_stage, launcher)
    assert (d2["gpus_per_node"], d2["nodes"], d2["cpus_per_task"]) == (4, 1, 4)
    # run here, it sees --nproc GPUs (the first of those visible), as a torchrun stage runs nproc processes
    assert launcher.stage_env(d2_stage, {})["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"
    assert Launcher(nproc=2).stage_env(d2_stage, {"CUDA_VISIBLE_DEVICES": "5,3,7"})["CUDA_VISIBLE_DEVICES"] == "5,3"
    assert Launcher(nproc=2).stage_env(Stage("eval knn x", [], Path("x")), {"A": "1"}) == {"A": "1"}
    from mocobench.stages import launches_its_own

    assert launches_its_own(d2_stage.argv) and launches_its_own(["--engine", "detectron2", "--seed", "1"])
    assert not launches_its_own(["--engine", "torchvision"]) and not launches_its_own(["--x", "--engine"])
    none = request(SlurmOptions("cpu", gpus_per_node=0, cpus_per_task=3), Stage("pretrain m", [], Path("x"),
                                                                                 distributed=True), launcher)
    assert "gpus_per_node" not in none and none["cpus_per_task"] == 3
    assert describe(none).startswith("partition=cpu nodes=2 ntasks-per-node=1 cpus-per-task=3 time=4320min")


def test_slurm_options_are_checked(capsys):
    with pytest.raises(SystemExit):
        P.parse_args(["--quick", "--slurm-mem", "8G"])
    assert "--slurm-mem only apply with --slurm PARTITION" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        P.parse_args(["--quick", "--slurm", "debug", "--slurm-arg", "account"])
    assert "expected KEY=VALUE" in capsys.readouterr().err
    args = P.parse_args(["--quick", "--slurm", "debug", "--slurm-arg", "qos=high", "--slurm-arg=--account=a"])
    assert args.slurm_extra == {"qos": "high", "account": "a"}


def test_forked_stage_has_exit_code_and_log(tmp_path):
    """A stage run in a forked child reports the command's exit code and writes its output (and
    argparse's errors) to the stage log, as a fresh process would."""
    import sys

    if not hasattr(__import__("os"), "fork"):
        pytest.skip("no fork on this platform")
    log = tmp_path / "logs" / "stage.log"
    assert run_forked(["--version"], [sys.executable, "-m", "mocobench", "--version"], log, {}) == 0
    text = log.read_text()
    assert text.startswith("$ ") and "mocobench" in text.splitlines()[1]
    bad = tmp_path / "logs" / "bad.log"
    assert run_forked(["data", "synth", "--no-such-flag"], ["x"], bad, {}) == 2
    assert "error: the following arguments are required: --out" in bad.read_text()


def test_second_node_runs_only_torchrun_stages_and_writes_no_state(tmp_path, monkeypatch, capsys):
    """With --nnodes 2 every node runs the pipeline on a shared OUT: node 1 joins the torchrun stages
    only; single-process stages, resume entries, moving stale outputs and the leaderboard are node 0's
    (else records and files would be written twice)."""
    ran = []
    monkeypatch.setattr(Launcher, "run", lambda self, stage, env: ran.append((stage.name, stage.log.name)) or 0)
    monkeypatch.setattr(P, "leaderboard", lambda out, mode: ran.append(("leaderboard", "")) or 0)
    argv = ["--quick", "--out", str(tmp_path), "--nproc", "1", "--nnodes", "2", "--master-addr", "node0", "--no-preload"]
    assert P.main([*argv, "--node-rank", "1"]) == 0
    assert ran == [(f"pretrain {n}", f"pretrain-{n}.node1.log") for n in ("moco_v2", "unimoco_100pct", "smog")]
    assert not (tmp_path / "state").exists() and "node 0   eval knn-dino-knn moco_v2" in capsys.readouterr().out
    ran.clear()
    assert P.main([*argv, "--node-rank", "0"]) == 0
    assert ("data synth", "data-synth.log") in ran and ("leaderboard", "") in ran and len(ran) == 24
    with pytest.raises(SystemExit):
        P.parse_args([*argv, "--node-rank", "2"])


@pytest.mark.slow
def test_sigterm_to_the_pipeline_lets_pretraining_save_its_step(synth_small, tmp_path):
    """A scheduler's SIGTERM to the local pipeline reaches the running stage (before: the forked stage
    was left running, orphaned): pretraining saves its step and the next run continues from it."""
    import signal

    from pipeline_runs import PRETRAIN, events, pipeline, wait_for_step, with_data

    out = with_data(tmp_path / "out", synth_small)
    run_dir = out / "runs" / "moco_v2"
    proc = pipeline(out, *PRETRAIN, background=True)
    wait_for_step(run_dir, proc, 3)
    proc.send_signal(signal.SIGTERM)
    text = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130 and "run the same command again" in text, text[-3000:]
    stopped = [e for e in events(run_dir) if e.get("event") == "preempted"]
    assert len(stopped) == 1 and stopped[0]["signal"] == "SIGTERM", events(run_dir)[-3:]
    again = pipeline(out, *PRETRAIN)
    assert again.returncode == 0, again.stdout[-3000:]
    assert [e["step"] for e in events(run_dir) if e.get("event") == "start"] == [0, stopped[0]["step"]]


def _paper_root(root: Path) -> Path:
    for d in ("imagenet/train", "imagenet/val", "VOCdevkit/VOC2007/Annotations", "VOCdevkit/VOC2012/Annotations",
              "VOCdevkit/VOC2012/SegmentationClass", "VOCdevkit/VOC2012/SegmentationClassAug", "coco/annotations",
              "coco/train2017", "coco/val2017", "cityscapes/leftImg8bit",
              "cityscapes/gtFine"):
        (root / d).mkdir(parents=True)
    for pct in (1, 10):
        (root / "imagenet" / f"{pct}percent.txt").write_text("a.JPEG\n")
    return root


def test_paper_mode_is_the_papers_recipe(tmp_path):
    """Issue 25 item 4: every ResNet-50 preset the papers report, fp32 pretraining, detectron2 for
    detection, 5 trials for VOC detection and segmentation, the supervised R50 reference row."""
    root = _paper_root(tmp_path / "data")
    stages = _plan(["--data-root", str(root), "--preset", "paper", "--out", str(tmp_path / "o")])
    runs = [s.name.split()[1] for s in stages if s.argv[0] == "pretrain"]
    assert runs == ["moco_v1_200ep", "moco_v2_200ep", "moco_v2_800ep", "unimoco_800ep_0pct", "unimoco_800ep_10pct",
                    "unimoco_800ep_30pct", "unimoco_800ep_60pct", "unimoco_800ep_100pct", "smog_400ep", "smog_800ep"]
    assert all(s.argv[-2:] == ["--precision=fp32", "--channels_last=false"] for s in stages if s.argv[0] == "pretrain")
    det = [s for s in stages if s.argv[:2] == ["eval", "detection"]]
    assert det and all(s.argv[s.argv.index("--engine") + 1] == "detectron2" for s in det)
    # detectron2 starts a process per GPU itself: under torchrun every rank would start a whole run
    assert not any(s.distributed for s in det) and all(s.distributed for s in stages if s.argv[0] == "pretrain")
    assert all(s.all_gpus for s in det) and not any(s.all_gpus for s in stages if s not in det)
    by_ckpt = {}
    for s in stages:
        if s.argv[0] == "eval":
            label, ckpt = s.name.split()[1:3]
            by_ckpt.setdefault((label, ckpt), []).append(int(s.argv[s.argv.index("--seed") + 1]) if "--seed" in s.argv else 0)
    assert by_ckpt[("det-voc-c4-24k", "moco_v2_800ep")] == [0, 1, 2, 3, 4]
    assert by_ckpt[("seg-cityscapes-fcn", "moco_v2_800ep")] == [0, 1, 2, 3, 4]
    assert by_ckpt[("seg-voc2012-fcn", "smog_400ep")] == [0, 1, 2, 3, 4]
    assert by_ckpt[("det-coco-c4-1x", "moco_v2_800ep")] == [0] and by_ckpt[("linear-paper", "smog_800ep")] == [0]
    supervised = [s for s in stages if "torchvision_r50_supervised" in s.name]
    assert supervised and all("mocobench fetch torchvision_r50_supervised" in s.missing for s in supervised)
    assert len({s.name for s in stages}) == len(stages)   # the reference's random R50 is the baseline's, once


def test_paper_mode_runs_the_transformer_presets_on_request(tmp_path):
    """Issue 25 item 4: the Transformer presets are paper-mode runs, picked by name or as
    'transformers' (never by a method name alone); each architecture gets its random init, and
    MoCo's R50-C4 detection protocols run on neither."""
    from mocobench.pretrain.config import PRESETS

    root = _paper_root(tmp_path / "data")
    base = ["--data-root", str(root), "--preset", "paper", "--out", str(tmp_path / "o")]
    stages = _plan(base + ["--methods", "transformers"])
    runs = [s.name.split()[1] for s in stages if s.argv[0] == "pretrain"]
    assert runs == [n for n, c in PRESETS.items() if c.arch.startswith("timm:") and not n.startswith("tiny")]
    assert {"smog_swin_t_300ep", "moco_v2_vit_s_300ep", "unimoco_vit_s_300ep_10pct"} <= set(runs)
    evaluated = {s.name.split()[2] for s in stages if s.argv[0] == "eval"}
    assert {"random-timm-vit_small_patch16_224", "random-timm-swin_tiny_patch4_window7_224"} <= evaluated
    transformers = set(runs) | {c for c in evaluated if "vit" in c or "swin" in c}
    for s in stages:
        if s.argv[0] == "eval" and s.name.split()[2] in transformers:
            assert s.argv[1] != "detection", s.name
    assert any(s.name == "eval seg-cityscapes-fcn smog_swin_t_300ep" for s in stages)
    # the R50 baseline keeps its detection; a method name picks the ResNet-50 runs only
    assert any(s.name == "eval det-voc-c4-24k random-resnet50" for s in stages)
    smog = [s.name.split()[1] for s in _plan(base + ["--methods", "smog"]) if s.argv[0] == "pretrain"]
    assert smog == ["smog_400ep", "smog_800ep"]
    one = [s.name.split()[1] for s in _plan(base + ["--methods", "smog,smog_vit_s_300ep"]) if s.argv[0] == "pretrain"]
    assert one == ["smog_400ep", "smog_800ep", "smog_vit_s_300ep"]


def test_paper_mode_options_take_effect_or_are_refused(tmp_path, capsys):
    root = _paper_root(tmp_path / "data")
    base = ["--data-root", str(root), "--preset", "paper", "--out", str(tmp_path / "o")]
    stages = _plan(base + ["--methods", "moco_v2_800ep,unimoco", "--fast", "--det-engine", "torchvision"])
    runs = [s.name.split()[1] for s in stages if s.argv[0] == "pretrain"]
    assert runs == ["moco_v2_800ep", "unimoco_800ep_0pct", "unimoco_800ep_10pct", "unimoco_800ep_30pct",
                    "unimoco_800ep_60pct", "unimoco_800ep_100pct"]
    assert not any("--precision=fp32" in s.argv for s in stages)
    det = [s for s in stages if s.argv[:2] == ["eval", "detection"]]
    assert {s.argv[s.argv.index("--engine") + 1] for s in det} == {"torchvision"} and all(s.distributed for s in det)
    # the papers' VOC segmentation trains on train_aug, COCO detection on train2017: a data root
    # without them has those stages missing, not failing when they start
    shutil.rmtree(root / "VOCdevkit/VOC2012/SegmentationClassAug")
    (root / "coco/train2017").rmdir()
    missing = {s.name.split()[1]: s.missing for s in _plan(base)
               if s.argv[0] == "eval" and s.missing and s.name.split()[2] == "moco_v2_800ep"}
    assert "SegmentationClassAug" in missing["seg-voc2012-fcn"] and "train2017/" in missing["det-coco-c4-1x"]
    assert "seg-cityscapes-fcn" not in missing
    for argv, words in ((base + ["--methods", "byol"], "--methods byol"),
                        (["--quick", "--fast"], "--fast applies to --preset paper"),
                        (["--quick", "--det-engine", "detectron2"], "--det-engine applies to --preset paper")):
        with pytest.raises(SystemExit) as e:
            P.parse_args(argv)
        assert e.value.code == 2 and words in capsys.readouterr().err


def test_the_paper_dry_run_checks_every_command_and_projects_gpu_hours(tmp_path, capsys):
    """Issue 25 item 6: a bad --eval-arg fails in the dry run (every stage's command is parsed and
    checked in process), and each stage says its projected H200 GPU-hours, with the total."""
    root = _paper_root(tmp_path / "data")
    base = ["--data-root", str(root), "--preset", "paper", "--out", str(tmp_path / "o"), "--dry-run",
            "--methods", "moco_v2_800ep", "--no-random"]
    assert P.main(base) == 0
    out = capsys.readouterr().out
    assert "~270.7 GPU-h: 800 epochs of ImageNet at 1052 img/s (fp32" in out   # 800 x 1,281,167 / 1052 / 3600
    assert "~6.3 GPU-h: 24000 iterations x 16 images at 17 img/s" in out
    assert "projected: " in out and "GPU-hours (H200, docs/gpu/)" in out
    assert P.main(base + ["--eval-arg=--lr=abc"]) == 1
    out = capsys.readouterr().out
    assert "invalid  eval linear-paper moco_v2_800ep" in out and "--lr: expected float, got 'abc'" in out
    assert P.main(base + ["--pretrain-arg=--K=many"]) == 1
    assert "invalid  pretrain moco_v2_800ep" in capsys.readouterr().out


def test_every_mode_evaluation_is_configuration_resolved_in_process():
    """Issue 24: a mode's evaluations are protocol + field changes + options, resolved by the same code
    the stage runs, in this process; a bad change fails when the mode is built or checked, not when
    its stage starts. The command a stage runs is written from the same fields."""
    from mocobench.core.settings import SettingError
    from mocobench.modes import DET_300, MODES, Eval
    from mocobench.transfer.detection.protocols import ProtocolError

    resolved = {(m.name, ev.label): ev.resolved() for m in MODES.values() for ev in m.evals}
    assert len(resolved) == 21
    det = resolved[("default", "det-voc-tiny-fpn")]
    assert (det.max_iter, det.steps, det.base_lr) == (DET_300["max_iter"], (230,), 0.015)
    assert resolved[("quick", "semi10-tiny")].lr_grid == (0.05,) and resolved[("quick", "semi10-tiny")].epochs == 2
    assert resolved[("default", "linear-fast")].img_size == 64 and resolved[("paper", "linear-paper")].epochs == 100
    assert resolved[("paper", "seg-voc2012-fcn")].crop == (513, 513)   # the dataset picks the preset
    ev = next(e for e in MODES["default"].evals if e.label == "det-voc-tiny-fpn")
    assert ev.argv[-3:] == ("--max_iter=300", "--steps=230", "--base_lr=0.015")
    bad = Eval("x", "detection", "tiny-fpn", "detection", "voc", overrides=(("max_iter", -5),))
    with pytest.raises(ProtocolError, match="--max_iter=-5: must be >= 1"):
        bad.resolved()
    with pytest.raises(SettingError, match="--lr_grid=0.0: must be > 0"):
        Eval("y", "semi-10pct", "tiny", "semi", "imagenet", overrides=(("lr_grid", (0.05, 0.0)),)).resolved()
    with pytest.raises(ValueError, match="unknown evaluation command 'lineal'"):
        Eval("z", "linear", "fast", "lineal", "imagenet")
