"""The known departures from the official recipes (``core/deviations.toml``, their one place) that
apply to a run: an evaluation's task, protocol and engine, and the pretraining config behind its
checkpoint."""

from __future__ import annotations

import fnmatch
import tomllib
from functools import lru_cache
from pathlib import Path

DEVIATIONS = Path(__file__).with_name("deviations.toml")
FIELDS = {"eval": ("task", "protocol", "engine", "precision"),
          "pretrain": ("method", "precision", "labels", "schedule", "augmentation", "optimizer")}


@lru_cache(maxsize=1)
def load() -> tuple[dict, ...]:
    with open(DEVIATIONS, "rb") as f:
        entries = tomllib.load(f).get("deviation", [])
    for i, e in enumerate(entries):
        kind = e.get("kind")
        unknown = set(e) - {"kind", "text", "where", *FIELDS.get(kind, ())}
        if kind not in FIELDS or not e.get("text") or unknown:
            raise ValueError(f"{DEVIATIONS}: entry {i + 1} needs kind (eval|pretrain) and text, and only the fields "
                             f"of its kind ({unknown or kind})")
        if not all(isinstance(p, str) for f in FIELDS[kind] if f in e for p in _patterns(e[f])):
            raise ValueError(f"{DEVIATIONS}: entry {i + 1}: a field is a pattern or a list of patterns")
    return tuple(entries)


def _patterns(value) -> list:
    return value if isinstance(value, list) else [value]


def applying(kind: str, **what: str | None) -> list[str]:
    """The texts of the entries of ``kind`` whose every named field matches ``what``: a field is a
    shell pattern or a list of them (any one matches); what is not stated (None) matches only "*"."""
    return [e["text"] for e in load() if e["kind"] == kind
            and all(any(fnmatch.fnmatchcase(str(what.get(f)), p) for p in _patterns(e[f]))
                    for f in FIELDS[kind] if f in e)]


def of_evaluation(task: str, protocol: str, engine: str, pretrain_config: dict | None, *,
                  precision: str | None = None) -> list[str]:
    """An evaluation record's deviations: its protocol's and its ``precision``'s (None: its engine's
    own, which no entry names), and those of the pretraining run behind the checkpoint when the
    checkpoint states its config (our own runs do; other releases follow their own code)."""
    out = applying("eval", task=task, protocol=protocol, engine=engine, precision=precision)
    if pretrain_config:
        cfg = pretrain_config
        labelled = cfg.get("method") == "unimoco" and (cfg.get("label_fraction") or 0) > 0
        labels = "given" if cfg.get("supervised_list") else "drawn" if labelled else "none"
        out += applying("pretrain", method=cfg.get("method"), precision=cfg.get("precision"), labels=labels,
                        schedule=cfg.get("schedule"), augmentation=cfg.get("augmentation"),
                        optimizer=cfg.get("optimizer"))
    return out
