import dataclasses

import pytest

from core.overrides import field_types, parse_value


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
