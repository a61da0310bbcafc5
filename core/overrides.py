"""``--key=value`` overrides of frozen config dataclasses: one parser for every package.

The text is converted by the field's type hint: ``bool`` (true/false/yes/no/on/off/1/0), ``int``,
``float``, ``str``, ``tuple[T, ...]`` (items separated by commas, spaces or ``x`` as in
``512x1024``; parentheses ignored) and ``X | None`` (``none``/``null`` give ``None``).

The command lines collect unknown options with :func:`split_overrides`; configs apply them with
:func:`apply_overrides` (or :func:`parse_overrides` when a protocol adjusts dependent fields).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mocobench.core import settings

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


def split_overrides(argv: Sequence[str]) -> dict[str, str]:
    """``--key=value`` and ``--key value`` tokens (what argparse did not know) as ``{key: text}``.

    Keys are returned as typed; :func:`parse_overrides` maps them to fields. A token that is not an
    option, an option without a value, or a key given twice (``--lr=0.1 --lr=0.5``: which one was
    meant?) is a ``ValueError`` naming it.
    """
    out, i = {}, 0
    while i < len(argv):
        tok = argv[i]
        if not tok.startswith("--") or len(tok) == 2:
            raise ValueError(f"unexpected argument {tok!r} (overrides are --key=value)")
        if "=" in tok:
            key, text = tok[2:].split("=", 1)
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            key, text = tok[2:], argv[i + 1]
            i += 1
        else:
            raise ValueError(f"{tok} needs a value (--key=value)")
        if key in out:
            raise ValueError(f"--{key} given twice ({out[key]!r} and {text!r}); give it once")
        out[key] = text
        i += 1
    return out


def field_name(cls, key: str, exclude: Iterable[str] = ()) -> str:
    """The field of dataclass ``cls`` that ``--key`` names.

    One rule for every config: ``-`` and ``_`` are the same; the exact spelling wins; otherwise the
    key matches a field that differs only in case (``--t=0.2`` is ``T``), if exactly one does.
    """
    names = [f.name for f in dataclasses.fields(cls) if f.name not in set(exclude)]
    name = key.replace("-", "_")
    if name in names:
        return name
    folded = [n for n in names if n.lower() == name.lower()]
    if len(folded) == 1:
        return folded[0]
    raise ValueError(f"unknown option --{key} for {cls.__name__}; known: {', '.join(sorted(names))}")


def given_fields(cls, overrides: Mapping[str, Any], exclude: Iterable[str] = ()) -> dict[str, str]:
    """``{field: key as typed}`` of the overrides: what a command line set explicitly, by field name
    (so ``--Milestones`` and ``--milestones`` are the same to every check). Two keys naming one field,
    or an unknown key, is a ``ValueError``."""
    out: dict[str, str] = {}
    for key in overrides:
        name = field_name(cls, key, exclude)
        if name in out:
            raise ValueError(f"--{key} given twice (as --{out[name]} too)")
        out[name] = key
    return out


def with_named(cls, overrides: Mapping[str, Any], named: Iterable[tuple[str, Any]],
               owner: str = "this command") -> tuple[dict[str, str], dict[str, str]]:
    """The overrides with a command's named options merged in, and ``{field: key as typed}`` of all
    of them. ``named``: ``(flag, value)`` pairs (``("--img-size", 64)`` sets field ``img_size``; a
    value of None was not given). A named option whose field ``cls`` lacks does not apply to
    ``owner``; one whose field is among the overrides too (``--img-size 64 --img_size=32``: which
    was meant?) is refused: both ``ValueError``s."""
    overrides = {k: str(v) for k, v in overrides.items()}
    given = given_fields(cls, overrides)
    fields = {f.name for f in dataclasses.fields(cls)}
    for flag, value in named:
        if value is None:
            continue
        key = flag.lstrip("-")
        name = key.replace("-", "_")
        if name not in fields:
            raise ValueError(f"{flag} does not apply to {owner}")
        if name in given:
            raise ValueError(f"{flag} given twice (as --{given[name]} too); give it once")
        overrides[key], given[name] = str(value), key
    return overrides, given


def refuse_repeated(argv: Sequence[str], parser) -> None:
    """A named option of argparse ``parser`` given twice is a ``ValueError`` (argparse keeps the last
    one silently, so ``--arch a --arch b`` would run b with no word about a)."""
    import argparse

    repeatable = (argparse._AppendAction, argparse._AppendConstAction, argparse._CountAction)
    dests = {s: a.dest for a in parser._actions for s in a.option_strings if not isinstance(a, repeatable)}
    seen: dict[str, str] = {}
    for tok in argv:
        if not tok.startswith("--"):
            continue
        opt = tok.split("=", 1)[0]
        dest = dests.get(opt)
        if dest is None:
            continue
        if dest in seen:
            raise ValueError(f"{opt} given twice (as {seen[dest]} too); give it once")
        seen[dest] = opt


def parse_overrides(cls, overrides: Mapping[str, Any], exclude: Iterable[str] = ()) -> dict[str, Any]:
    """``{"key": "text"}`` -> ``{field: value}`` for dataclass ``cls``; ``exclude`` fields are refused."""
    hints, changes = field_types(cls), {}
    for key, text in overrides.items():
        name = field_name(cls, key, exclude)
        if name in changes:
            raise ValueError(f"--{key} given twice (as --{name})")
        changes[name] = settings.check_field(cls, name, parse_value(str(text), hints[name], key), f"--{key}")
    return changes


def apply_overrides(cfg, overrides: Mapping[str, Any], exclude: Iterable[str] = ()):
    """A copy of the frozen dataclass ``cfg`` with ``--key=value`` overrides applied."""
    return dataclasses.replace(cfg, **parse_overrides(type(cfg), overrides, exclude))


def owned_keys_hit(key: str, owned: Iterable[str]) -> list[tuple[str, str]]:
    """Where an engine's free-form option (``--opts``, ``--cfg-options``) sets a dotted config key
    that one of our options owns (``owned``: dotted keys), compared by whole segments: the most
    specific owned key that ``key`` is or lies under, as ``[(key, owned key)]``; else every owned key
    under ``key`` (a parent, e.g. ``train_cfg=dict(...)``), as ``[(owned key, owned key), ...]``;
    else ``[]``."""
    parts = key.split(".")
    above = [k for k in owned if parts[:len(k.split("."))] == k.split(".")]
    if above:
        return [(key, max(above, key=lambda k: len(k.split("."))))]
    return [(k, k) for k in owned if k.split(".")[:len(parts)] == parts]
