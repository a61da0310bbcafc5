"""Config fields that carry their own rules: the allowed range, and whether a field is a run setting.

Every config dataclass (pretraining, each evaluation protocol, the mmseg adapter's FCN config)
declares its fields with :func:`setting`::

    epochs: int = setting(200, range=AT_LEAST_1)
    workers: int = setting(8, range=AT_LEAST_0, run=True)

- ``range``: a value outside it is a :class:`SettingError` naming the flag, the value and the
  range, wherever the value comes in: a command-line flag (:func:`arg` as argparse's ``type=``),
  a ``--key=value`` override (:func:`mocobench.core.overrides.parse_overrides` calls
  :func:`check_field`) or a whole config (:func:`check_config`). So ``--epochs -3`` can never
  produce a record of an untrained model labelled as trained. Floats are always checked for being
  finite.
- ``choices``: a named-choice field (a schedule, an optimizer) lists its values; any other value is
  a :class:`SettingError` naming the flag and the choices, at parse time like a range, so
  ``--optimizer=foo`` never gets as far as building a model or writing a run folder.
- ``run``: the field changes how a run is carried out (DataLoader workers, log and checkpoint
  intervals, the device), not what it computes. A pretraining resume may change it; a result
  record keeps it under ``run``, apart from the protocol (:func:`protocol_and_run`), so the leaderboard
  compares protocols without a list of key names.

A field declared without :func:`setting` is a protocol field with no range beyond finiteness.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable

RANGE, RUN, CHOICES = "mocobench.range", "mocobench.run", "mocobench.choices"   # keys of a field's metadata


class SettingError(ValueError):
    """A setting whose value is outside its range."""


@dataclass(frozen=True)
class Range:
    lo: float | None = None          # smallest allowed value (None: unbounded)
    hi: float | None = None          # largest allowed value (None: unbounded)
    lo_open: bool = False            # lo itself is not allowed
    hi_open: bool = False            # hi itself is not allowed

    def holds(self, v: float) -> bool:
        if self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)):
            return False
        return not (self.hi is not None and (v > self.hi or (self.hi_open and v == self.hi)))

    def __str__(self) -> str:
        lo = "" if self.lo is None else f"{'>' if self.lo_open else '>='} {self.lo:g}"
        hi = "" if self.hi is None else f"{'<' if self.hi_open else '<='} {self.hi:g}"
        return " and ".join(p for p in (lo, hi) if p)


AT_LEAST_1 = Range(1)
AT_LEAST_0 = Range(0)
POSITIVE = Range(0, lo_open=True)
UNIT = Range(0, 1)
UNIT_OPEN_TOP = Range(0, 1, hi_open=True)
OPEN_UNIT_BOTTOM = Range(0, 1, lo_open=True)
PERCENT = Range(0, 100)


def setting(default: Any = dataclasses.MISSING, *, range: Range | None = None, run: bool = False,
            choices: tuple[str, ...] | None = None,
            factory: Callable[[], Any] | Any = dataclasses.MISSING) -> Any:
    """A dataclass field with its range, its choices and run flag (``factory``: a default factory)."""
    return dataclasses.field(default=default, default_factory=factory,
                             metadata={RANGE: range, RUN: run, CHOICES: choices})


def _field(cls_or_cfg: Any, name: str) -> dataclasses.Field:
    for f in dataclasses.fields(cls_or_cfg):
        if f.name == name:
            return f
    cls = cls_or_cfg if isinstance(cls_or_cfg, type) else type(cls_or_cfg)
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def range_of(cls_or_cfg: Any, name: str) -> Range | None:
    """The range field ``name`` of a config class (or instance) declares; None: any finite value."""
    return _field(cls_or_cfg, name).metadata.get(RANGE)


def choices_of(cls_or_cfg: Any, name: str) -> tuple[str, ...] | None:
    """The values field ``name`` may take (a named-choice field), or None: any value of its type."""
    return _field(cls_or_cfg, name).metadata.get(CHOICES)


def run_fields(cls_or_cfg: Any) -> frozenset[str]:
    """The names of the fields declared ``run=True``."""
    return frozenset(f.name for f in dataclasses.fields(cls_or_cfg) if f.metadata.get(RUN))


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def protocol_and_run(cfg: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(protocol, run)``: the fields of config ``cfg`` as JSON-ready dicts (tuples as lists),
    the protocol fields in the first, the ``run=True`` fields in the second."""
    run = run_fields(cfg)
    protocol, ran = {}, {}
    for f in dataclasses.fields(cfg):
        (ran if f.name in run else protocol)[f.name] = _plain(getattr(cfg, f.name))
    return protocol, ran


def protocol_changes(saved: dict, cfg: Any) -> dict[str, tuple]:
    """``{field: (saved value, cfg's value)}`` for every protocol field of config ``cfg`` (not
    ``run=True``) whose value differs from ``saved`` (a stored ``to_dict``/``asdict`` form of the
    same class; tuples and lists compare equal): what a resume from ``saved`` would change. Run
    settings (workers, log and checkpoint intervals) may differ."""
    now, _ = protocol_and_run(cfg)
    return {k: (saved.get(k), v) for k, v in now.items() if _plain(saved.get(k)) != v}


def preset_changes(preset: Any, cfg: Any, options: dict[str, Any] | None = None) -> dict[str, dict]:
    """What a run of config ``cfg`` changed from ``preset`` (the config of the same class that its
    protocol ships with), as a result record states it (``run.preset_changes``):
    ``{field: {"preset": v, "ran": v}}`` for each protocol field that differs (run settings may), and
    ``{key: {"preset": None, "ran": v}}`` for each engine option ``options`` sets beyond the protocol
    (a detectron2 ``--opts`` key, an mmseg ``--cfg-options`` key: the preset leaves it at the engine
    config's own value). ``{}`` is the preset as shipped, the only run the leaderboard compares with
    the paper's number (a 1-epoch run of the ``paper`` protocol is not the paper's protocol)."""
    saved, _ = protocol_and_run(preset)
    changes = {k: {"preset": was, "ran": now} for k, (was, now) in protocol_changes(saved, cfg).items()}
    return changes | {k: {"preset": None, "ran": v} for k, v in (options or {}).items()}


def check_value(value: Any, rng: Range | None, shown: str, choices: tuple[str, ...] | None = None) -> Any:
    """``value`` if ``rng`` allows it (tuples item by item; floats must be finite) and it is one of
    ``choices`` (when given); a :class:`SettingError` naming ``shown`` (the flag as the user typed it)
    otherwise."""
    if choices is not None and value not in choices:
        raise SettingError(f"{shown}={value}: must be one of {', '.join(choices)}")
    if isinstance(value, (tuple, list)):
        for v in value:
            check_value(v, rng, shown)
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise SettingError(f"{shown}={value}: must be a finite number")
    if rng is not None and not rng.holds(value):
        raise SettingError(f"{shown}={value}: must be {rng}")
    return value


def check_field(cls_or_cfg: Any, name: str, value: Any, shown: str | None = None) -> Any:
    """``value`` checked against field ``name``'s range and choices (``shown`` defaults to ``--name``)."""
    return check_value(value, range_of(cls_or_cfg, name), shown or f"--{name.replace('_', '-')}",
                       choices_of(cls_or_cfg, name))


def check_config(cfg: Any, source: str = "") -> Any:
    """Every field of config ``cfg`` checked; ``source`` (a preset or file name) prefixes errors."""
    for f in dataclasses.fields(cfg):
        try:
            check_field(cfg, f.name, getattr(cfg, f.name))
        except SettingError as e:
            raise SettingError(f"{source}: {e}" if source else str(e)) from None
    return cfg


def arg(rng: Range | None, kind: Callable[[str], Any] = int) -> Callable[[str], Any]:
    """An argparse ``type=`` that converts with ``kind`` and checks ``rng``:
    ``p.add_argument("--epochs", type=arg(range_of(LinearConfig, "epochs")))``, or a flag's own
    range where no config field holds it (``arg(AT_LEAST_0)`` for ``--seed``). Out of range is a
    usage error (exit 2)."""
    import argparse

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        try:
            return check_value(value, rng, text)
        except SettingError:
            rule = f"must be {rng}" if rng is not None else "must be a finite number"
            raise argparse.ArgumentTypeError(f"{text}: {rule}") from None

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse
