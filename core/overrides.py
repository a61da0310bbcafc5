"""``--key=value`` overrides of frozen config dataclasses: one parser for every package.

The text is converted by the field's type hint: ``bool`` (true/false/yes/no/on/off/1/0), ``int``,
``float``, ``str``, ``tuple[T, ...]`` (items separated by commas, spaces or ``x`` as in
``512x1024``; parentheses ignored) and ``X | None`` (``none``/``null`` give ``None``).
"""

from __future__ import annotations

import types
import typing
from typing import Any

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


def field_types(cls) -> dict[str, Any]:
    """The resolved type hint of every field of dataclass ``cls``."""
    return typing.get_type_hints(cls)


def parse_value(text: str, hint: Any, key: str) -> Any:
    """``text`` converted to ``hint``; a ``ValueError`` that names ``--key`` otherwise."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and text.strip().lower() in ("none", "null"):
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    try:
        if hint is bool:
            if text.lower() in TRUE:
                return True
            if text.lower() in FALSE:
                return False
            raise ValueError
        if origin is tuple:
            item = args[0] if args else float
            parts = text.replace("(", " ").replace(")", " ").replace("x", ",").replace(" ", ",").split(",")
            return tuple(item(p) for p in parts if p.strip())
        if hint in (int, float, str):
            return hint(text)
    except ValueError:
        name = getattr(hint, "__name__", str(hint))
        raise ValueError(f"--{key}: expected {name}, got {text!r}") from None
    return text
