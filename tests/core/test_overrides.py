import dataclasses

import pytest

from mocobench.core.overrides import apply_overrides, field_name, field_types, parse_value, split_overrides


@dataclasses.dataclass(frozen=True)
class Cfg:
    lr: float = 0.1
    steps: int = 10
    crop: tuple[int, ...] = (512, 1024)
    scale: tuple[float, ...] = (0.5, 2.0)
    flip: bool = True
    mask_on: bool | None = None
    name: str = "x"


@pytest.mark.parametrize("key,text,expected", [
    ("lr", "0.03", 0.03), ("steps", "7", 7), ("crop", "769x769", (769, 769)), ("crop", "60,80", (60, 80)),
    ("scale", "(0.25, 4)", (0.25, 4.0)), ("flip", "off", False), ("flip", "YES", True),
    ("mask_on", "none", None), ("mask_on", "true", True), ("name", "moco-fcn", "moco-fcn"),
])
def test_values_follow_the_field_type(key, text, expected):
    assert parse_value(text, field_types(Cfg)[key], key) == expected


@pytest.mark.parametrize("key,text", [("steps", "1.5"), ("flip", "maybe"), ("crop", "a,b")])
def test_bad_values_name_the_key(key, text):
    with pytest.raises(ValueError, match=f"--{key}: expected"):
        parse_value(text, field_types(Cfg)[key], key)


@dataclasses.dataclass(frozen=True)
class Paper:
    K: int = 65536
    T: float = 0.07
    shuffle_bn_groups: int = 1
    name: str = "moco"


def test_split_overrides_takes_both_spellings_and_refuses_strays():
    assert split_overrides(["--lr=3", "--k", "10", "--l2-grid=1e-4,1e-3", "--lr2", "-1"]) == {
        "lr": "3", "k": "10", "l2-grid": "1e-4,1e-3", "lr2": "-1"}
    with pytest.raises(ValueError, match="--lr needs a value"):
        split_overrides(["--lr"])
    with pytest.raises(ValueError, match="unexpected argument 'x'"):
        split_overrides(["x"])


@pytest.mark.parametrize("key,field", [("K", "K"), ("k", "K"), ("t", "T"), ("shuffle-bn-groups", "shuffle_bn_groups"),
                                       ("Shuffle_BN_groups", "shuffle_bn_groups")])
def test_one_key_rule_for_every_config(key, field):
    assert field_name(Paper, key) == field


def test_exact_case_wins_and_ambiguity_is_refused():
    @dataclasses.dataclass(frozen=True)
    class Both:
        k: int = 1
        K: int = 2

    assert field_name(Both, "k") == "k" and field_name(Both, "K") == "K"
    with pytest.raises(ValueError, match="unknown option --kk"):
        field_name(Both, "kk")


def test_apply_overrides_converts_and_names_unknown_or_excluded_keys():
    cfg = apply_overrides(Paper(), {"k": "4096", "t": "0.2", "shuffle-bn-groups": "4"})
    assert cfg == Paper(K=4096, T=0.2, shuffle_bn_groups=4)
    with pytest.raises(ValueError, match=r"unknown option --queue for Paper; known: K, T, name, shuffle_bn_groups"):
        apply_overrides(Paper(), {"queue": "1"})
    with pytest.raises(ValueError, match="unknown option --name"):
        apply_overrides(Paper(), {"name": "x"}, exclude=("name",))
    with pytest.raises(ValueError, match="given twice"):
        apply_overrides(Paper(), {"K": "1", "k": "2"})


def test_a_key_given_twice_is_refused_whatever_the_spelling():
    """Before, ``--lr=0.1 --lr=0.5`` ran 0.5 without a word (while ``--LR=0.5`` was refused)."""
    with pytest.raises(ValueError, match=r"--lr given twice"):
        split_overrides(["--lr=0.1", "--lr", "0.5"])
    from mocobench.core.overrides import given_fields

    assert given_fields(Cfg, {"LR": "1", "mask-on": "true"}) == {"lr": "LR", "mask_on": "mask-on"}
    with pytest.raises(ValueError, match="given twice"):
        given_fields(Cfg, {"lr": "1", "LR": "2"})


def test_a_named_option_given_twice_is_refused():
    import argparse

    from mocobench.core.overrides import refuse_repeated

    p = argparse.ArgumentParser()
    p.add_argument("--arch")
    p.add_argument("--tag", action="append")
    refuse_repeated(["--arch", "a", "--tag", "x", "--tag=y", "--lr=1", "--lr=2"], p)   # overrides: not argparse's
    with pytest.raises(ValueError, match="--arch given twice"):
        refuse_repeated(["--arch", "a", "--lr=1", "--arch=b"], p)


def test_named_options_merge_with_the_overrides_by_one_rule():
    """The pretraining and classification commands' named options (``--arch``, ``--img-size``) join
    their ``--key=value`` overrides here (each command had its own copy of this loop)."""
    from mocobench.core.overrides import with_named

    overrides, given = with_named(Cfg, {"LR": "0.5"}, [("--mask-on", True), ("--steps", None)])
    assert overrides == {"LR": "0.5", "mask-on": "True"} and given == {"lr": "LR", "mask_on": "mask-on"}
    assert apply_overrides(Cfg(), overrides) == Cfg(lr=0.5, mask_on=True)
    with pytest.raises(ValueError, match="--steps given twice \\(as --Steps too\\)"):
        with_named(Cfg, {"Steps": "3"}, [("--steps", 4)])
    with pytest.raises(ValueError, match="--img-size does not apply to the knn protocol"):
        with_named(Cfg, {}, [("--img-size", 64)], owner="the knn protocol")
