"""One table of setting ranges, checked for flags, overrides and whole configs."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from mocobench.core import ranges
from mocobench.core.overrides import apply_overrides


@dataclasses.dataclass(frozen=True)
class Cfg:
    epochs: int = 10
    lr: float = 0.03
    label_fraction: float = 0.1
    K: int = 65536
    name: str = "x"


@pytest.mark.parametrize("key,text", [("epochs", "-3"), ("epochs", "0"), ("lr", "0"), ("lr", "nan"),
                                      ("lr", "inf"), ("label-fraction", "-0.5"), ("label_fraction", "1.5"),
                                      ("K", "0")])
def test_out_of_range_override_is_refused_naming_the_flag(key, text):
    with pytest.raises(ranges.SettingError, match=f"--{key}={text}"):
        apply_overrides(Cfg(), {key: text})


@pytest.mark.parametrize("key,text,want", [("epochs", "1", 1), ("lr", "1e-5", 1e-5),
                                           ("label_fraction", "0", 0.0), ("label_fraction", "1", 1.0)])
def test_edges_in_range_are_accepted(key, text, want):
    assert getattr(apply_overrides(Cfg(), {key: text}), key) == want


def test_argparse_type_is_a_usage_error(capsys):
    p = argparse.ArgumentParser(prog="x")
    p.add_argument("--epochs", type=ranges.arg("epochs"))
    p.add_argument("--lr", type=ranges.arg("lr", float))
    assert p.parse_args(["--epochs", "2", "--lr", "0.1"]).epochs == 2
    for bad in (["--epochs", "-3"], ["--lr", "nan"], ["--epochs", "two"]):
        with pytest.raises(SystemExit) as e:
            p.parse_args(bad)
        assert e.value.code == 2
        assert bad[0] in capsys.readouterr().err


def test_check_config_names_the_source():
    with pytest.raises(ranges.SettingError, match="preset tiny: --epochs=0"):
        ranges.check_config(Cfg(epochs=0), "preset tiny")
    assert ranges.check_config(Cfg()) == Cfg()


def test_range_text():
    assert str(ranges.UNIT) == ">= 0 and <= 1"
    assert str(ranges.POSITIVE) == "> 0"
