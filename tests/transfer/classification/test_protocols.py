import dataclasses

import pytest

from mocobench.transfer.classification import protocols as P


@pytest.mark.parametrize("task,name", [(t, n) for t, table in P.PROTOCOLS.items() for n in table])
def test_every_preset_is_frozen_plain_values_and_overridable(task, name):
    protocol, cfg = P.get_preset(task, name)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.img_size = 1
    d = P.to_dict(cfg)
    assert all(isinstance(v, (int, float, str, bool, list)) for v in d.values())
    small = P.apply_overrides(cfg, {"img-size": "64"})
    assert small.img_size == 64 and P.resize_for(small) == 73  # 64 * 256 / 224


def test_paper_preset_is_mocos_protocol():
    cfg = P.LINEAR_PRESETS["paper"]
    assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size, cfg.epochs, cfg.milestones) == \
        (30.0, 0.9, 0.0, 256, 100, (60, 80))
    assert P.resize_for(cfg) == 256 and cfg.img_size == 224 and cfg.fc_init_std == 0.01


def test_overrides_parse_types_and_scale_milestones():
    cfg = P.apply_overrides(P.LINEAR_PRESETS["paper"], {"epochs": "10", "lr": "3", "schedule": "step"})
    assert cfg.epochs == 10 and cfg.lr == 3.0 and cfg.milestones == (6, 8)
    cfg = P.apply_overrides(P.LINEAR_PRESETS["paper"], {"epochs": "10", "milestones": "5,9"})
    assert cfg.milestones == (5, 9)
    fast = P.apply_overrides(P.FAST_PRESETS["fast"], {"l2_grid": "1e-3, 1e-2"})
    assert fast.l2_grid == (1e-3, 1e-2)
    semi = P.apply_overrides(P.SEMI_PRESETS["simclr"], {"nesterov": "false"})
    assert semi.nesterov is False


def test_unknown_key_and_bad_value_are_clear_errors():
    with pytest.raises(ValueError, match="unknown option --lrr"):
        P.apply_overrides(P.LINEAR_PRESETS["paper"], {"lrr": "1"})
    with pytest.raises(ValueError, match="nesterov"):
        P.apply_overrides(P.SEMI_PRESETS["simclr"], {"nesterov": "maybe"})
    with pytest.raises(ValueError, match="unknown linear protocol"):
        P.get_preset("linear", "papr")


def test_cli_override_parsing_and_label_fraction():
    from pathlib import Path

    from mocobench.core.overrides import split_overrides
    from mocobench.transfer.classification.cli import label_pct

    assert split_overrides(["--lr=3", "--k", "10", "--l2-grid=1e-4,1e-3"]) == {
        "lr": "3", "k": "10", "l2-grid": "1e-4,1e-3"}
    with pytest.raises(ValueError, match="needs a value"):
        split_overrides(["--lr"])
    assert label_pct(Path("1percent.txt"), 10, 999) == 1
    assert label_pct(Path("10percent.txt"), 100, 999) == 10
    assert label_pct(Path("my_list.txt"), 100, 999, given=10) == 10
    # a stated fraction is checked against the list's size, whoever states it (issue 27)
    with pytest.raises(ValueError, match=r"5 of 999 train images \(0.5 %\) is not a 10 % subset \(stated by its name\)"):
        label_pct(Path("10percent.txt"), 5, 999)
    with pytest.raises(ValueError, match=r"is not a 1 % subset \(stated by --label-pct\)"):
        label_pct(Path("my_list.txt"), 100, 999, given=1)
    with pytest.raises(ValueError, match="--label-pct 1 contradicts the labels file 10percent.txt"):
        label_pct(Path("10percent.txt"), 100, 999, given=1)
    assert label_pct(Path("unimoco_10percent.txt"), 120, 1200) == 10  # by size
    with pytest.raises(ValueError, match="neither a 1 % nor a 10 % subset"):
        label_pct(Path("unimoco_30percent.txt"), 360, 1200)


@pytest.mark.parametrize("overrides, milestones", [
    ({"epochs": "10", "milestones": "5,7"}, (5, 7)),     # before: ran at 2, 4 (moved again), recorded 5, 7
    ({"epochs": "10"}, (6, 8)),                          # before: ran at 6, 8, recorded 12, 16
    ({"milestones": "5,7"}, (5, 7)),
    ({"epochs_1pct": "10", "epochs_10pct": "10"}, (6, 8)),
])
def test_semi_steps_where_its_record_says(overrides, milestones):
    from mocobench.transfer.classification.protocols import lr_schedule
    from mocobench.transfer.classification.semi import epochs_for

    cfg = P.apply_overrides(P.SEMI_PRESETS["mmselfsup"], overrides)
    assert cfg.milestones == milestones
    for pct in (1, 10):
        epochs = epochs_for(cfg, pct)
        rates = [lr_schedule(cfg, epochs).lr(1.0, e) for e in range(epochs)]   # what fine_tune runs
        steps = tuple(e for e in range(1, epochs) if rates[e] < rates[e - 1])
        assert steps == milestones


@pytest.mark.parametrize("task, protocol, overrides, words", [
    ("semi", "mmselfsup", {"epochs_10pct": "10"}, ["12,16", "--milestones"]),   # before: 12, 16 of 10 epochs
    ("semi", "mmselfsup", {"epochs": "10", "milestones": "5,12"}, ["--milestones=5,12", "10 epochs"]),
    ("linear", "paper", {"schedule": "cosine", "milestones": "3"}, ["--milestones", "cosine"]),
    ("linear", "paper", {"schedule": "foo"}, ["--schedule=foo"]),
    ("linear", "fast", {"l2-grid": ""}, ["--l2-grid", "empty"]),
    ("semi", "simclr", {"lr-grid": ""}, ["--lr-grid", "empty"]),
    ("linear", "fast", {"holdout_fraction": "0"}, ["--holdout_fraction=0"]),
    ("semi", "simclr", {"holdout-fraction": "0"}, ["--holdout-fraction=0"]),
])
def test_settings_that_cannot_run_as_recorded_are_refused(task, protocol, overrides, words):
    _, preset = P.get_preset(task, protocol)
    with pytest.raises(ValueError) as e:
        P.apply_overrides(preset, overrides)
    for w in words:
        assert w in str(e.value), str(e.value)


def test_a_cosine_schedule_records_no_milestones():
    cfg = P.apply_overrides(P.LINEAR_PRESETS["paper"], {"schedule": "cosine"})
    assert cfg.milestones == ()
    one = P.apply_overrides(P.FAST_PRESETS["fast"], {"holdout_fraction": "0", "l2_grid": "0.1"})
    assert one.holdout_fraction == 0   # one L2, nothing to choose: no held-out images needed


def test_the_protocols_whose_seed_changes_nothing_are_named():
    """kNN, and the fast probe with one L2 strength and no augmented views, give the same numbers for
    every seed (``mocobench eval --seeds`` refuses several seeds of them); the others depend on it."""
    assert P.seed_unused(P.KNN_PRESETS["dino-knn"])
    assert P.seed_unused(P.apply_overrides(P.FAST_PRESETS["fast"], {"l2-grid": "1e-3"}))
    assert P.seed_unused(P.FAST_PRESETS["fast"]) is None   # the held-out draw chooses the L2 strength
    assert P.seed_unused(P.apply_overrides(P.FAST_PRESETS["fast-aug"], {"l2-grid": "1e-3"})) is None
    for cfg in (*P.LINEAR_PRESETS.values(), *P.SEMI_PRESETS.values()):
        assert P.seed_unused(cfg) is None
