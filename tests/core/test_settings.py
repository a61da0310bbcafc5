"""Config fields carry their range and run flag; flags, overrides and whole configs are checked by them."""

from __future__ import annotations

import argparse
import dataclasses
import typing

import pytest

from mocobench.core import settings
from mocobench.core.overrides import apply_overrides
from mocobench.core.settings import AT_LEAST_1, POSITIVE, UNIT, setting


@dataclasses.dataclass(frozen=True)
class Cfg:
    epochs: int = setting(10, range=AT_LEAST_1)
    lr: float = setting(0.03, range=POSITIVE)
    label_fraction: float = setting(0.1, range=UNIT)
    K: int = setting(65536, range=AT_LEAST_1)
    workers: int = setting(4, range=settings.AT_LEAST_0, run=True)
    steps: tuple[int, ...] = setting((3, 5), range=AT_LEAST_1)
    scale: float = 1.0
    name: str = "x"


@pytest.mark.parametrize("key,text", [("epochs", "-3"), ("epochs", "0"), ("lr", "0"), ("lr", "nan"),
                                      ("lr", "inf"), ("label-fraction", "-0.5"), ("label_fraction", "1.5"),
                                      ("K", "0"), ("steps", "3,0"), ("scale", "nan"), ("workers", "-1")])
def test_out_of_range_override_is_refused_naming_the_flag(key, text):
    with pytest.raises(settings.SettingError, match=f"--{key}={text.split(',')[-1]}"):
        apply_overrides(Cfg(), {key: text})


@pytest.mark.parametrize("key,text,want", [("epochs", "1", 1), ("lr", "1e-5", 1e-5),
                                           ("label_fraction", "0", 0.0), ("label_fraction", "1", 1.0),
                                           ("scale", "-2", -2.0), ("workers", "0", 0)])
def test_edges_in_range_are_accepted(key, text, want):
    assert getattr(apply_overrides(Cfg(), {key: text}), key) == want


def test_argparse_type_is_a_usage_error(capsys):
    p = argparse.ArgumentParser(prog="x")
    p.add_argument("--epochs", type=settings.arg(settings.range_of(Cfg, "epochs")))
    p.add_argument("--lr", type=settings.arg(settings.range_of(Cfg, "lr"), float))
    assert p.parse_args(["--epochs", "2", "--lr", "0.1"]).epochs == 2
    for bad in (["--epochs", "-3"], ["--lr", "nan"], ["--epochs", "two"]):
        with pytest.raises(SystemExit) as e:
            p.parse_args(bad)
        assert e.value.code == 2
        assert bad[0] in capsys.readouterr().err


def test_check_config_names_the_source():
    with pytest.raises(settings.SettingError, match="preset tiny: --epochs=0"):
        settings.check_config(Cfg(epochs=0), "preset tiny")
    assert settings.check_config(Cfg()) == Cfg()


def test_range_text():
    assert str(settings.UNIT) == ">= 0 and <= 1"
    assert str(settings.POSITIVE) == "> 0"


def test_split_keeps_run_settings_apart():
    protocol, run = settings.protocol_and_run(Cfg(workers=2))
    assert run == {"workers": 2}
    assert protocol == {"epochs": 10, "lr": 0.03, "label_fraction": 0.1, "K": 65536, "steps": [3, 5],
                        "scale": 1.0, "name": "x"}
    assert settings.run_fields(Cfg) == {"workers"}


def _config_classes():
    from mocobench.pretrain.config import PretrainConfig
    from mocobench.transfer.adapters.mmseg import FCNConfig
    from mocobench.transfer.classification.protocols import FastLinearConfig, KNNConfig, LinearConfig, SemiConfig
    from mocobench.transfer.detection.protocols import DetectionProtocol
    from mocobench.transfer.segmentation.protocols import SegProtocol

    return (PretrainConfig, LinearConfig, FastLinearConfig, KNNConfig, SemiConfig, DetectionProtocol, SegProtocol,
            FCNConfig)


def _presets():
    from mocobench.pretrain.config import PRESETS
    from mocobench.transfer.classification.protocols import PROTOCOLS as CLS
    from mocobench.transfer.detection.protocols import PROTOCOLS as DET
    from mocobench.transfer.segmentation.protocols import PROTOCOLS as SEG

    yield from (("pretrain", k, v) for k, v in PRESETS.items())
    yield from ((task, k, v) for task, table in CLS.items() for k, v in table.items())
    yield from (("detection", k, v) for k, v in DET.items())
    yield from ((f"segmentation {ds}", k, v) for k, table in SEG.items() for ds, v in table.items())


@pytest.mark.parametrize("cls", _config_classes(), ids=lambda c: c.__name__)
def test_every_numeric_field_declares_its_range(cls):
    """A count, size, rate or fraction without a range is the way ``--epochs -3`` gets through."""
    hints = typing.get_type_hints(cls)
    numeric = {int, float, int | None, float | None, tuple[int, ...], tuple[float, ...], tuple[int, int],
               tuple[float, float]}
    bare = [f.name for f in dataclasses.fields(cls)
            if hints[f.name] in numeric and settings.range_of(cls, f.name) is None]
    assert not bare, f"{cls.__name__}: numeric fields without a range: {bare}"


def test_every_preset_is_in_range():
    checked = 0
    for where, name, cfg in _presets():
        settings.check_config(cfg, f"{where} preset {name}")
        checked += 1
    assert checked > 30


def test_run_settings_of_pretraining_are_the_ones_a_resume_may_change():
    from mocobench.pretrain.config import PretrainConfig

    assert settings.run_fields(PretrainConfig) == {"workers", "device", "log_every", "ckpt_every",
                                                   "keep_checkpoints", "compile"}


def test_protocol_changes_ignore_run_settings_and_tuple_list_forms():
    """The one rule a resume uses (pretraining, detection, segmentation): a changed protocol field is
    named with both values; a changed run setting is not a change; a stored list equals a tuple."""
    saved = {"epochs": 10, "lr": 0.03, "label_fraction": 0.1, "K": 65536, "workers": 4, "steps": [3, 5],
             "scale": 1.0, "name": "x"}
    assert settings.protocol_changes(saved, Cfg(workers=0)) == {}
    assert settings.protocol_changes(saved, Cfg(lr=0.1, steps=(3, 6))) == {"lr": (0.03, 0.1),
                                                                            "steps": ([3, 5], [3, 6])}
    assert settings.protocol_changes({k: v for k, v in saved.items() if k != "K"}, Cfg()) == {"K": (None, 65536)}


def test_a_named_choice_is_checked_where_the_value_comes_in():
    """Before, ``--optimizer=foo`` passed ``--print-config`` and failed after the model was built."""

    @dataclasses.dataclass(frozen=True)
    class C:
        schedule: str = setting("cosine", choices=("step", "cosine"))

    assert apply_overrides(C(), {"schedule": "step"}).schedule == "step"
    with pytest.raises(settings.SettingError, match=r"--Schedule=foo: must be one of step, cosine"):
        apply_overrides(C(), {"Schedule": "foo"})
    with pytest.raises(settings.SettingError, match="must be one of"):
        settings.check_config(C(schedule="poly"))
    assert settings.choices_of(C, "schedule") == ("step", "cosine")
