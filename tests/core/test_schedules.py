"""One learning-rate schedule for every protocol (issue 24): each shape against an independent
statement of its formula (the papers' and the engines' own definitions), the one rule for a
shortened run, and every protocol reading its schedule from it."""

from __future__ import annotations

import math

import pytest

from mocobench.core.schedules import Schedule, keep_shape


def test_step_is_gamma_per_step_passed():
    s = Schedule("step", 200, steps=(120, 160))           # MoCo v1: x0.1 at 120 and 160
    assert [s.lr(0.03, t) for t in (0, 119.99, 120, 159.5, 160, 199.9)] == pytest.approx(
        [0.03, 0.03, 0.003, 0.003, 0.0003, 0.0003])


def test_cosine_after_a_warmup_from_zero():
    s = Schedule("cosine", 100, warmup=10)
    assert s.lr(1.0, 0) == pytest.approx(1e-13) and s.lr(1.0, 0) > 0   # the first step still moves
    assert s.lr(1.0, 5) == pytest.approx(0.5)
    for t in (10, 32.5, 55, 77.5, 100):   # 0.5 (1 + cos(pi (t - w) / (T - w)))
        assert s.lr(1.0, t) == pytest.approx(0.5 * (1 + math.cos(math.pi * (t - 10) / 90)))
    assert s.lr(1.0, 55) == pytest.approx(0.5) and s.lr(1.0, 100) == pytest.approx(0.0, abs=1e-12)


def test_detectron2_warmup_multistep():
    """detectron2's WarmupMultiStepLR: factor = f (1 - a) + a, a = it / warmup, times gamma^steps."""
    s = Schedule("step", 24000, steps=(18000, 22000), warmup=100, warmup_start=0.001)
    assert s.lr(0.02, 0) == pytest.approx(0.02 * 0.001)
    assert s.lr(0.02, 50) == pytest.approx(0.02 * (0.001 * 0.5 + 0.5))
    assert [s.lr(0.02, it) for it in (100, 17999, 18000, 22000)] == pytest.approx([0.02, 0.02, 0.002, 0.0002])


def test_poly_as_mmsegmentation_states_it():
    s = Schedule("poly", 40000, power=0.9, final_lr=1e-4)
    for it in (0, 1000, 20000, 39999, 40000):
        assert s.lr(0.01, it) == pytest.approx((0.01 - 1e-4) * (1 - it / 40000) ** 0.9 + 1e-4)


def test_a_run_that_is_all_warmup_and_bad_schedules():
    assert Schedule("cosine", 1, warmup=1.0).lr(0.06, 0.5) == pytest.approx(0.03)
    assert Schedule("cosine", 1, warmup=1.0).lr(0.06, 1.0) == pytest.approx(0.06)
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'linear'"):
        Schedule("linear", 10)
    with pytest.raises(ValueError, match="positive length"):
        Schedule("step", 0)


def test_keep_shape_moves_steps_to_the_same_fraction():
    assert keep_shape((60, 80), 100, 10) == (6, 8)
    assert keep_shape((120, 160), 200, 8) == (5, 6)        # 4.8 -> 5, 6.4 -> 6
    assert keep_shape((1, 2), 100, 10) == (1, 1)           # never at 0: at least one unit
    assert keep_shape((60,), 80, 80) == (60,)


def test_every_protocol_shortens_by_the_one_rule():
    """Before: pretraining kept 120/160 on a 10-epoch run, detection scaled only when a step fell
    past the end (and truncated), semi scaled without rounding."""
    from mocobench.pretrain.cli import resolve
    from mocobench.transfer.classification import protocols as C
    from mocobench.transfer.detection.protocols import resolve_protocol

    _, cfg = resolve(["--method", "moco_v1", "--preset", "moco_v1_200ep", "--data", "d", "--out", "o", "--epochs=10"])
    assert cfg.milestones == keep_shape((120, 160), 200, 10) == (6, 8)
    assert cfg.lr_schedule().lr(0.03, 6) == pytest.approx(0.003)
    _, given = resolve(["--method", "moco_v1", "--preset", "moco_v1_200ep", "--data", "d", "--out", "o", "--epochs=10", "--milestones=3,9"])
    assert given.milestones == (3, 9)
    lin = C.apply_overrides(C.LINEAR_PRESETS["paper"], {"epochs": "10"})
    assert lin.milestones == keep_shape((60, 80), 100, 10)
    det = resolve_protocol("moco-voc-c4-24k", {"max_iter": "20000"})   # before: steps stayed 18000, 22000
    assert det.steps == keep_shape((18000, 22000), 24000, 20000) == (15000, 18333)
    semi = C.apply_overrides(C.SEMI_PRESETS["mmselfsup"], {"epochs": "7"})   # 12, 16 of 20 -> 4.2, 5.6
    assert semi.milestones == (4, 6)    # resolved when the config is, so the record says what ran
    sched = C.lr_schedule(semi, 7)
    assert sched.steps == (4, 6) and sched.lr(0.01, 4) == pytest.approx(0.001)


def test_protocols_keep_their_published_schedules():
    from mocobench.pretrain.config import PRESETS
    from mocobench.transfer.detection.protocols import PROTOCOLS as DET
    from mocobench.transfer.segmentation.protocols import get_protocol

    v1 = PRESETS["moco_v1_200ep"].lr_schedule()
    assert (v1.shape, v1.length, v1.steps) == ("step", 200, (120, 160))
    det = DET["moco-voc-c4-24k"].lr_schedule()
    assert (det.steps, det.warmup, det.warmup_start) == ((18000, 22000), 100, 0.001)
    seg = get_protocol("moco-fcn", "cityscapes").lr_schedule()
    assert seg.steps == (63000, 81000)


def test_a_schedule_without_steps_records_none_in_every_protocol():
    """Before: MoCo v2's cosine pretraining recorded milestones 120, 160, and mmseg's poly presets
    lr_steps 0.7, 0.9, which neither run used (the classification probes already dropped them)."""
    from mocobench.pretrain.cli import resolve
    from mocobench.pretrain.config import PRESETS, from_dict
    from mocobench.transfer.segmentation.protocols import get_protocol, override

    _, v2 = resolve(["--method", "moco_v2", "--data", "d", "--out", "o"])
    assert v2.schedule == "cosine" and v2.milestones == ()
    _, v1 = resolve(["--method", "moco_v1", "--data", "d", "--out", "o", "--schedule=cosine"])
    assert v1.milestones == ()
    # a checkpoint written before this rule resumes: its stored config reads the same
    old = {**PRESETS["moco_v2_200ep"].to_dict(), "milestones": [120, 160]}
    assert from_dict(old).milestones == ()
    assert get_protocol("mmseg-fcn-40k", "cityscapes").lr_steps == ()
    assert override(get_protocol("moco-fcn", "cityscapes"), {"schedule": "poly"}).lr_steps == ()
    back = override(get_protocol("mmseg-fcn-40k", "cityscapes"), {"schedule": "step"})
    assert back.lr_steps == (0.7, 0.9) and back.lr_schedule().steps == (28000, 36000)


@pytest.mark.parametrize("what, words", [
    ("pretrain", ["--milestones=3,12", "10 epochs", "epoch 12"]),
    ("linear", ["--milestones=3,12", "10 epochs", "epoch 12"]),
    ("detection", ["--STEPS=100,600", "500 iterations", "iteration 600"]),
    ("seg-poly", ["--lr_steps", "--schedule=poly"]),
    ("seg-step", ["--poly-power", "--schedule=step"]),
    ("seg-end", ["lr_steps", "1"]),
])
def test_a_step_the_run_never_takes_is_refused_in_every_protocol(what, words):
    """A step at or past the end of the run never acts while the record lists it: refused, naming the
    option as typed. Before: detection's went to detectron2, which dropped it (solver_steps), and the
    record said it ran; segmentation's poly schedule ignored --lr_steps."""
    from mocobench.pretrain.cli import resolve
    from mocobench.transfer.classification import protocols as C
    from mocobench.transfer.detection.protocols import resolve_protocol
    from mocobench.transfer.segmentation.protocols import get_protocol, override

    calls = {
        "pretrain": lambda: resolve(["--method", "moco_v1", "--data", "d", "--out", "o", "--epochs=10",
                                     "--milestones=3,12"]),
        "linear": lambda: C.apply_overrides(C.LINEAR_PRESETS["paper"], {"epochs": "10", "milestones": "3,12"}),
        "detection": lambda: resolve_protocol("moco-voc-c4-24k", {"max_iter": "500", "STEPS": "100,600"}),
        "seg-poly": lambda: override(get_protocol("mmseg-fcn-40k", "cityscapes"), ["--lr_steps=0.5"]),
        "seg-step": lambda: override(get_protocol("moco-fcn", "cityscapes"), ["--poly-power=2"]),
        "seg-end": lambda: override(get_protocol("moco-fcn", "cityscapes"), ["--lr_steps=0.5,1"]),
    }
    with pytest.raises(ValueError) as e:
        calls[what]()
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_steps_kept_and_check_steps_state_the_rule():
    from mocobench.core.schedules import check_steps, steps_kept

    assert steps_kept((60, 80), (100,), (10,), "step") == (6, 8)
    assert steps_kept((60, 80), (100,), (100,), "step") == (60, 80)
    assert steps_kept((60, 80), (100,), (10,), "cosine") == ()
    assert steps_kept((12, 16), (20, 20), (20, 20), "step") == (12, 16)
    with pytest.raises(ValueError, match="12,16.*runs of 20 and 30.*--milestones"):
        steps_kept((12, 16), (20, 30), (10, 30), "step")
    check_steps((5, 9), 10, "--milestones")   # the last epoch of a 10-epoch run is 9
    with pytest.raises(ValueError, match="never reaches epoch 10"):
        check_steps((5, 10), 10, "--milestones")
