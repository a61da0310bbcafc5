"""Records -> the leaderboard table: one row per checkpoint, one column per (task, protocol,
dataset, engine, metric), cells ``mean ± std (n)`` over seeds.

Everything here is derived from the records on disk and from ``reported.csv`` (the papers'
numbers, kept as data). No number is typed into this file. pandas does the arithmetic: one
entry per (record, metric), the newest per seed kept, mean / std / n per cell (:func:`_aggregate`),
and the pivot to the wide CSV (:func:`to_csv`).

Invariants:
- a column never mixes protocols, datasets, engines or metrics: they are its key;
- a cell holds the records of one checkpoint for one column; if those records disagree on the
  protocol's settings (the resolved config minus per-run keys such as the seed, or the dataset's
  split sizes), the cell is an error and :func:`build_table` reports it with both files named;
- several records with the same seed in one cell: the newest (by timestamp) counts, so re-running
  one evaluation replaces its number instead of double-counting it.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from mocobench.core.records import TASKS, Problem, metric_problem

REPORTED_CSV = Path(__file__).with_name("reported.csv")

# The papers' column order: ImageNet linear (paper protocol first), kNN, semi-supervised,
# detection (VOC07+12, then COCO), segmentation (Cityscapes, then VOC 2012).
TASK_ORDER = {t: i for i, t in enumerate(TASKS)}
DATASET_ORDER = {"imagenet": 0, "voc07+12": 1, "voc": 1, "voc2007": 1, "coco": 2, "cityscapes": 3,
                 "voc2012": 4}
# Protocols that reproduce a paper's setting come first in their task, in this order.
PAPER_PROTOCOLS = ("paper", "moco-voc-c4-24k", "coco-c4-1x", "coco-c4-2x", "coco-fpn-1x",
                   "coco-fpn-2x", "moco-fcn", "mmseg-fcn-40k", "mmseg-fcn-80k")
# Metrics shown in the table per task, in order; the CSV's --all-metrics keeps every metric.
DISPLAY_METRICS = {
    "linear": ("top1", "top5"),
    "knn": ("top1",),
    "semi-1pct": ("top1",),
    "semi-10pct": ("top1",),
    "detection": ("AP50", "AP", "AP75", "bbox_AP", "segm_AP"),
    "segmentation": ("mIoU",),
}
METRIC_LABELS = {"top1": "top-1", "top5": "top-5", "bbox_AP": "APbb", "segm_AP": "APmk",
                 "bbox_AP50": "APbb50", "bbox_AP75": "APbb75"}
TASK_LABELS = {"linear": "linear", "knn": "kNN", "semi-1pct": "semi 1%", "semi-10pct": "semi 10%",
               "detection": "det", "segmentation": "seg"}
DATASET_LABELS = {"imagenet": "ImageNet", "voc07+12": "VOC07+12", "voc": "VOC", "voc2007": "VOC07",
                  "coco": "COCO", "cityscapes": "Cityscapes", "voc2012": "VOC12"}

# Exported-backbone file names that say nothing about the checkpoint: the row is then named
# after the folder that holds the file (``runs/moco_v2/backbone.pth`` -> ``moco_v2``).
GENERIC_STEMS = frozenset({"backbone", "checkpoint", "model", "model_best", "final", "last",
                           "checkpoint_final", "weights"})

METHOD_ORDER = {"moco_v1": 0, "moco_v2": 1, "moco": 1, "unimoco": 2, "smog": 3}


class TableError(ValueError):
    """The records cannot make a table (protocol mismatch in a cell, bad reported.csv)."""


def _real(dataset: str) -> str:
    """The real dataset whose layout an embedded id stands in for (``synth-small-coco`` -> ``coco``),
    else ``dataset`` itself (datasets/identity.py names them)."""
    return next((real for real in DATASET_ORDER if dataset.startswith("synth") and dataset.endswith("-" + real)),
                dataset)


@dataclass(frozen=True, order=True)
class Column:
    task: str
    protocol: str
    dataset: str
    engine: str
    metric: str

    def sort_key(self) -> tuple:
        proto = (PAPER_PROTOCOLS.index(self.protocol) if self.protocol in PAPER_PROTOCOLS
                 else len(PAPER_PROTOCOLS), self.protocol)
        metrics = DISPLAY_METRICS.get(self.task, ())
        metric = (metrics.index(self.metric) if self.metric in metrics else len(metrics), self.metric)
        return (TASK_ORDER.get(self.task, len(TASK_ORDER)), self.task,
                DATASET_ORDER.get(_real(self.dataset), len(DATASET_ORDER)), self.dataset,
                proto, self.engine, metric)

    @property
    def label(self) -> str:
        real = _real(self.dataset)
        ds = DATASET_LABELS.get(real, real)
        if real != self.dataset:   # the embedded stand-in of a real layout: synth-small-voc07+12
            ds = f"{ds} ({self.dataset[: -len(real) - 1]})"
        text = f"{ds} {TASK_LABELS.get(self.task, self.task)} {METRIC_LABELS.get(self.metric, self.metric)}"
        if self.engine == "torchvision" or self.engine == self.protocol:
            extra = self.protocol
        else:
            extra = f"{self.protocol}, {self.engine}"
        return f"{text} [{extra}]"

    def to_dict(self) -> dict[str, str]:
        return {"task": self.task, "protocol": self.protocol, "dataset": self.dataset,
                "engine": self.engine, "metric": self.metric}


@dataclass
class Row:
    key: str                      # unique within the table
    name: str                     # what the table shows
    method: str | None
    arch: str | None
    epochs: int | None
    label_fraction: float | None  # percent
    kind: str                     # "measured" | "reported" | "unverified"
    source: str = ""              # reported rows: where the numbers come from
    card: str = ""                # measured rows: the checkpoint card's identity (sha256, branch, input)
    random_init: bool = False     # measured rows: its records evaluated a random initialisation

    @property
    def label_fraction_text(self) -> str:
        if self.label_fraction is None:
            return ""
        return f"{self.label_fraction:g}%"


@dataclass
class Cell:
    """One row's number in one column: mean, sample std (n - 1; ``None`` for a single value) and n
    over seeds, or a paper's value with its own ± and n."""

    mean: float
    std: float | None
    n: int
    values: list[float] = field(default_factory=list)   # measured: one per seed, in seed order
    seeds: list[int] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    source: str = ""
    digits: int | None = None           # reported rows: as many decimals as the source gives
    deviations: tuple[str, ...] = ()    # measured: the departures from the official recipe its records state
    settings: dict = field(default_factory=dict)   # measured: the protocol settings its records ran (protocol_settings)
    # measured: {field: {"preset": v, "ran": v}} where its records ran other values than their protocol's
    # preset ({} none), as the records state it (``run.preset_changes``); None where no record states it
    preset_changes: dict | None = None

    @property
    def spread(self) -> float | None:
        """The std its seeds measured: None for one seed, and for seeds that all gave the same value
        (an evaluation that does not depend on its seed, such as kNN, gives that): a std of 0 there
        says nothing about how far another run could move."""
        return self.std if self.n >= 2 and self.std is not None and len(set(self.values)) > 1 else None

    def text(self, digits: int = 1) -> str:
        digits = self.digits if self.digits is not None else digits
        if self.std is None:
            return f"{self.mean:.{digits}f}" if self.n <= 1 else f"{self.mean:.{digits}f} ({self.n})"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f} ({self.n})"


# The band of a measured-against-paper comparison: Δ = measured mean − paper value lies within
# BAND_Z standard errors of the difference, sqrt(s_measured² / n_measured + s_paper² / n_paper). A
# spread that is not known (one seed here; a paper number without ±) is the stated default std of
# one run of that metric (docs/leaderboard.md gives its grounds).
BAND_Z = 2.0
DEFAULT_RUN_STD = {"top1": 0.2, "top5": 0.1, "AP50": 0.2, "AP": 0.2, "AP75": 0.4, "bbox_AP": 0.2,
                   "segm_AP": 0.2, "mIoU": 0.5}
FALLBACK_RUN_STD = 0.5


@dataclass(frozen=True)
class Comparison:
    """A measured cell against the paper's number in the same column."""

    paper: str        # the reported row's name
    measured: float
    reported: float
    band: float       # half-width of the band around 0 that Δ may lie in

    @property
    def delta(self) -> float:
        return self.measured - self.reported

    @property
    def within(self) -> bool:
        return abs(self.delta) <= self.band

    def text(self, digits: int = 1) -> str:
        return f"Δ {self.delta:+.{digits}f} {'✓' if self.within else '✗'} (±{self.band:.{digits}f})"


# A measured cell is "beyond noise" when it differs from the random init of its architecture by at
# least NOISE_Z pooled seed standard deviations (issue 26's rule); the spread comes from the cells'
# own seeds or, for a cell of one seed, from a committed baseline's runs of that cell.
NOISE_Z = 2.0


@dataclass(frozen=True)
class Noise:
    """A measured cell against its random-init row in the same column (``baseline`` None: there is
    none, so nothing says the cell differs from random init)."""

    baseline: str | None          # the random-init row's name
    diff: float | None            # this cell's mean − the random init's mean (None: not compared)
    pooled_std: float | None      # None: one of the two cells has no known spread
    spread: str                   # where the spread came from, in words (or why there is no baseline)
    mismatch: str = ""            # the protocol settings the two cells' records disagree on: not compared

    @property
    def threshold(self) -> float | None:
        return None if self.pooled_std is None else NOISE_Z * self.pooled_std

    @property
    def verdict(self) -> str:
        if self.baseline is None:
            return "no random init"
        if self.mismatch:
            return "settings differ"
        if self.pooled_std is None:
            return "spread unknown"
        # strict: a difference of 0 between cells without spread is no result
        return "beyond noise" if abs(self.diff) > NOISE_Z * self.pooled_std else "within noise"

    @property
    def mark(self) -> str:
        return {"beyond noise": "", "within noise": "≈", "spread unknown": "?", "no random init": "∅",
                "settings differ": "‡"}[self.verdict]

    def text(self, digits: int = 1) -> str:
        if self.verdict == "no random init":
            return f"not compared with random init: {self.spread}"
        if self.verdict == "settings differ":
            return f"not compared with {self.baseline}: their records ran other protocol settings ({self.mismatch})"
        if self.pooled_std is None:
            return f"{self.diff:+.{digits}f} vs {self.baseline}, spread unknown ({self.spread})"
        return (f"{self.diff:+.{digits}f} vs {self.baseline}: {self.verdict} "
                f"({NOISE_Z:g} x pooled std = {self.threshold:.{digits}f}; {self.spread})")


@dataclass
class Table:
    rows: list[Row]
    columns: list[Column]
    cells: dict[tuple[str, Column], Cell]
    problems: list[str] = field(default_factory=list)   # skipped record files
    errors: list[str] = field(default_factory=list)     # protocol mismatches
    # records read but refused (a NaN metric, a missing field): (message, content), so that the
    # CI gate can say why a cell it checks is empty
    refused: list[tuple[str, dict]] = field(default_factory=list)
    # measured cells that share a column with the paper row of the same method, arch, epochs and
    # label fraction (only rows of status "reported"): Δ and its band
    comparisons: dict[tuple[str, Column], Comparison] = field(default_factory=dict)
    # measured cells against the random init of their architecture in the same column: is the
    # difference beyond seed noise?
    noise: dict[tuple[str, Column], "Noise"] = field(default_factory=dict)
    # measured cells that share a column with their paper row but ran other settings than the
    # protocol's preset that row stands for: (the paper row's name, the settings that differ)
    uncompared: dict[tuple[str, Column], tuple[str, str]] = field(default_factory=dict)

    def cell(self, row: Row | str, column: Column) -> Cell | None:
        return self.cells.get((row.key if isinstance(row, Row) else row, column))

    def labels(self) -> dict[Column, str]:
        """Each column's header. Two columns may share a label (a legacy dataset id ``VOC07+12`` beside
        its canonical ``voc07+12``); those get their whole key, so no output merges or hides one."""
        labels = {c: c.label for c in self.columns}
        shared = {lab for lab in labels.values() if list(labels.values()).count(lab) > 1}
        return {c: (f"{lab} {{{c.dataset}/{c.task}/{c.protocol}/{c.engine}/{c.metric}}}" if lab in shared else lab)
                for c, lab in labels.items()}

    def measured_rows(self) -> list[Row]:
        return [r for r in self.rows if r.kind == "measured"]

    def reported_rows(self) -> list[Row]:
        return [r for r in self.rows if r.kind != "measured"]

    def restrict(self, *, rows: str = "all", columns: Iterable[Column] | None = None) -> "Table":
        """A view with only measured/reported rows and the columns that still hold a value."""
        keep = [r for r in self.rows if rows == "all" or (rows == "measured") == (r.kind == "measured")]
        keys = {r.key for r in keep}
        cols = [c for c in (self.columns if columns is None else columns)
                if any((k, c) in self.cells for k in keys)]
        return Table(keep, cols, {k: v for k, v in self.cells.items() if k[0] in keys},
                     self.problems, self.errors, self.refused,
                     {k: v for k, v in self.comparisons.items() if k[0] in keys},
                     {k: v for k, v in self.noise.items() if k[0] in keys},
                     {k: v for k, v in self.uncompared.items() if k[0] in keys})


# ---------------------------------------------------------------- names and fingerprints

def checkpoint_display_name(ckpt: dict) -> str:
    name = str(ckpt.get("name") or "?")
    path = ckpt.get("path")
    if name in GENERIC_STEMS and path and not str(path).startswith("random:"):
        parent = Path(str(path)).parent.name
        if parent:
            return parent
    return name


def _percent(fraction: Any) -> float | None:
    if fraction is None or fraction == "":
        return None
    f = float(fraction)
    return f * 100.0 if f <= 1.0 else f   # records may store 0.1 or 10 for 10%


def _stated_percent(text: str) -> float | None:
    """reported.csv's ``label_fraction``: a percent from 0 to 100 (never a fraction: ``1`` is 1 %), or
    None where the cell states none."""
    try:
        percent = float(text)
    except ValueError:
        return None
    return percent if 0.0 <= percent <= 100.0 else None


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def protocol_settings(rec: dict) -> dict[str, Any]:
    """What must agree between records of one cell: the protocol (the record's ``config``; its run
    settings and observations are kept apart under ``run``), and the dataset's split sizes."""
    settings = {f"config.{k}": v for k, v in _flatten(rec.get("config") or {}).items()}
    splits = (rec.get("dataset") or {}).get("splits") or {}
    settings.update({f"dataset.splits.{k}": v for k, v in splits.items()})
    return settings


def _describe_mismatch(a: tuple[str, dict], b: tuple[str, dict]) -> str:
    (fa, sa), (fb, sb) = a, b
    diffs = []
    for k in sorted(set(sa) | set(sb)):
        if sa.get(k, "<absent>") != sb.get(k, "<absent>"):
            diffs.append(f"{k} = {json.dumps(sa.get(k, '<absent>'))} in {fa} but "
                         f"{json.dumps(sb.get(k, '<absent>'))} in {fb}")
    return "; ".join(diffs[:5]) + (f"; ... ({len(diffs)} differences)" if len(diffs) > 5 else "")


def settings_differences(mine: dict, theirs: dict, other: str, limit: int = 5) -> str:
    """The protocol settings (:func:`protocol_settings`) on which ``mine`` and ``theirs`` disagree, in
    words: ``config.k = 20 here, 200 in random-resnet18``; "" when they agree."""
    diffs = [f"{k} = {json.dumps(mine.get(k, '<absent>'), default=str)} here, "
             f"{json.dumps(theirs.get(k, '<absent>'), default=str)} in {other}"
             for k in sorted(set(mine) | set(theirs)) if mine.get(k, "<absent>") != theirs.get(k, "<absent>")]
    return "; ".join(diffs[:limit]) + (f"; ... ({len(diffs)} differences)" if len(diffs) > limit else "")


def preset_differences(changes: dict) -> str:
    """A cell's ``preset_changes`` in words: ``epochs 1 (preset 100); lr 0.1 (preset 30)``."""
    return "; ".join(f"{k} {json.dumps(v.get('ran'), default=str)} (preset {json.dumps(v.get('preset'), default=str)})"
                     if isinstance(v, dict) else f"{k} {json.dumps(v, default=str)}" for k, v in sorted(changes.items()))


# ---------------------------------------------------------------- reported rows

def load_reported(path: str | Path = REPORTED_CSV) -> list[dict[str, Any]]:
    """The papers' numbers: one dict per (row, column) value, with its source and status."""
    path = Path(path)
    need = ("row", "method", "arch", "epochs", "label_fraction", "task", "protocol", "dataset",
            "engine", "metric", "value", "std", "n", "status", "source")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in need if c not in (reader.fieldnames or [])]
        if missing:
            raise TableError(f"{path}: missing columns {', '.join(missing)}")
        out = []
        for lineno, r in enumerate(reader, start=2):
            if r["status"] not in ("reported", "unverified"):
                raise TableError(f"{path}:{lineno}: status must be 'reported' or 'unverified', "
                                 f"not {r['status']!r}")
            if not r["source"].strip():
                raise TableError(f"{path}:{lineno}: every reported number needs a source")
            try:
                value = float(r["value"])
                std = float(r["std"]) if r["std"] else None
                n = int(r["n"]) if r["n"] else None
            except ValueError as e:
                raise TableError(f"{path}:{lineno}: {e}") from None
            labels = _stated_percent(r["label_fraction"])
            if labels is None:
                # a paper row is matched with measured ones on it (compare_with_papers), and a
                # self-supervised export states 0: an empty cell here matched no run (the MoCo rows did)
                raise TableError(f"{path}:{lineno}: row {r['row']!r} states no label_fraction: give the percent "
                                 f"of labelled pretraining images (0 for a self-supervised method, 100 for a "
                                 f"supervised one), not {r['label_fraction']!r}")
            if (why := metric_problem(r["metric"], value)):
                raise TableError(f"{path}:{lineno}: {why}")
            if std is not None and not (math.isfinite(std) and std >= 0):
                raise TableError(f"{path}:{lineno}: std {std!r} must be a finite number >= 0")
            digits = len(r["value"].partition(".")[2])
            out.append(r | {"value": value, "std": std, "n": n, "label_fraction": labels, "lineno": lineno,
                            "digits": digits})
    return out


# ---------------------------------------------------------------- the table

STRIDE_IN_1X1 = "stride in 1x1"   # a record's stride_in_1x1: true (MSRA's block layout), as rows and cards show it


def card_identity(ckpt: dict) -> str:
    """A record's checkpoint card identity, as the table shows it: ``sha256 6bfeba98 · online (query)
    encoder · RGB 0-1`` (records written before the cards lack the last two), and ``stride in 1x1``
    for a ResNet built the MSRA way."""
    parts = [f"sha256 {str(ckpt['sha256'])[:8]}" if ckpt.get("sha256") else "no file (random init)",
             ckpt.get("branch"), ckpt.get("input_convention"), STRIDE_IN_1X1 if ckpt.get("stride_in_1x1") else None]
    return " · ".join(str(p) for p in parts if p)


def random_init_seed(ckpt: dict) -> int | None:
    """The seed of a random initialisation's record (``random:ARCH[:SEED]``; 0 where the name gives
    none, as ``checkpoints/load.py`` builds it), None for a checkpoint that is no random init. A
    random init is told by what its record states it is (format ``random``, method ``random-init``),
    never by its name: a run folder may be called ``random_crop_only``."""
    if ckpt.get("format") != "random" and ckpt.get("method") not in ("random-init", "random"):
        return None
    seed = ckpt.get("init_seed")
    if isinstance(seed, int) and not isinstance(seed, bool):
        return seed
    last = str(ckpt.get("path") or "").split(":")
    # records written before they stated init_seed: the seed is the last part of random:ARCH:SEED
    return int(last[-1]) if len(last) > 2 and last[-1].isdigit() else 0


def _row_from_checkpoint(key: str, name: str, ckpt: dict) -> Row:
    epochs = ckpt.get("epochs")
    return Row(key=key, name=name, method=ckpt.get("method"), arch=ckpt.get("arch"),
               epochs=int(epochs) if isinstance(epochs, (int, float)) else None,
               label_fraction=_percent(ckpt.get("label_fraction")), kind="measured", card=card_identity(ckpt),
               random_init=random_init_seed(ckpt) is not None)


def build_table(records: list[dict], *, reported: list[dict] | None = None,
                files: list[str] | None = None, problems: Iterable[Problem | str] = (),
                all_metrics: bool = False, spreads: list[dict] | None = None,
                runs: list[int] | None = None) -> Table:
    """The table from ``records`` (+ ``reported`` rows). ``files[i]`` names ``records[i]`` in
    messages. Protocol mismatches are collected in ``Table.errors`` (see :func:`check_table`).
    ``spreads``: a baseline's entries (leaderboard/check.py), the seed spread of cells measured
    once (:func:`compare_with_random`). ``runs[i]``: the run ``records[i]`` belongs to, when the
    records are several runs of one pipeline with other seeds (:func:`load_table` with several
    folders): a row is then a checkpoint name, each run's checkpoint of that name its sample, and
    a cell's mean and std are over the runs' records."""
    files = files or [f"record {r.get('id', i)}" for i, r in enumerate(records)]
    runs = runs if runs is not None and len(set(runs)) > 1 else None

    # Rows: one per checkpoint, identified by (display name, sha256 or path; a random init by its
    # seed: random:ARCH and random:ARCH:0 are the same weights); over several runs, by the name alone
    # (a run pretrains its own "moco_v2", and the pipeline's --seed S seeds its random init with S),
    # which must then name one checkpoint per run. The same weights built with the stride in the 1x1
    # conv (``stride_in_1x1``, MSRA's ResNets) compute other features: another row (records without
    # the field, and ``false``, are torchvision's layout).
    def ident_of(ck: dict) -> tuple[str, str, str]:
        layout = STRIDE_IN_1X1 if ck.get("stride_in_1x1") else ""
        seed = random_init_seed(ck)
        if seed is not None:
            return checkpoint_display_name(ck), f"init{seed}", layout
        return checkpoint_display_name(ck), str(ck.get("sha256") or ck.get("path") or ""), layout

    def tag_of(ident: tuple[str, str, str]) -> str:
        # what tells the rows of one name apart: 8 hex digits of the sha256, or the init seed whole;
        # and the layout
        tag = ident[1] if ident[1].startswith("init") else ident[1][:8]
        return f"{tag} {ident[2]}" if ident[2] else tag

    identity: dict[tuple[str, str, str], str] = {}
    names: dict[str, set[tuple]] = {}
    for i, rec in enumerate(records):
        ident = ident_of(rec["checkpoint"])
        if runs is not None:
            names.setdefault(ident[0], set()).add((runs[i], ident[1:]))
            identity[ident] = ident[0]
        else:
            names.setdefault(ident[0], set()).add(ident)
    if runs is not None:
        for name, seen in names.items():
            per_run = [r for r, _ in seen]
            if len(per_run) != len(set(per_run)):
                raise TableError(f"several runs' records: the name {name!r} stands for more than one checkpoint "
                                 f"within one run, so its rows cannot be matched across the runs")
    else:
        for name, idents in names.items():
            for ident in sorted(idents):
                identity[ident] = name if len(idents) == 1 else f"{name}@{tag_of(ident)}"

    rows: dict[str, Row] = {}
    values = []  # one entry per (record, metric shown)
    for i, (rec, fname) in enumerate(zip(records, files)):
        ck = rec["checkpoint"]
        key = identity[ident_of(ck)]
        if runs is None:
            rows.setdefault(key, _row_from_checkpoint(key, key, ck))
        else:   # the card names no one file: the row is the runs' checkpoints of that name
            rows.setdefault(key, replace(_row_from_checkpoint(key, key, ck), card="one checkpoint per run"))
        seed = rec["seed"] if runs is None else f"run {runs[i] + 1} seed {rec['seed']}"
        settings = protocol_settings(rec)
        shown = DISPLAY_METRICS.get(rec["task"], ())
        for metric, value in rec["metrics"].items():
            if (why := metric_problem(metric, value)):   # load_records refuses these; a caller's list may not
                raise TableError(f"{fname}: {why}")
            if all_metrics or metric in shown:
                col = Column(rec["task"], str(rec["protocol"]), str(rec["dataset"].get("name")),
                             str(rec.get("engine") or "torchvision"), metric)
                values.append({"row": key, "column": col, "seed": seed, "value": float(value),
                               "timestamp": str(rec.get("timestamp", "")), "file": fname, "settings": settings,
                               "deviations": tuple((rec.get("run") or {}).get("deviations") or ()),
                               "preset_changes": _stated_changes(rec)})
    cells, errors = _aggregate(values)

    measured = sorted(rows.values(), key=_measured_order)
    table_rows = list(measured)
    for r in reported or []:
        key = f"reported: {r['row']}"
        if key not in rows:
            rows[key] = Row(key=key, name=r["row"], method=r["method"] or None, arch=r["arch"] or None,
                            epochs=int(r["epochs"]) if r["epochs"] else None,
                            label_fraction=r["label_fraction"],
                            kind=r["status"], source=r["source"])
            table_rows.append(rows[key])
        elif rows[key].kind != r["status"]:   # a row is compared with measured ones as a whole: one status
            raise TableError(f"{REPORTED_CSV.name}:{r['lineno']}: row {r['row']!r} is {r['status']!r} here and "
                             f"{rows[key].kind!r} on an earlier line; give the {r['status']} numbers a row name of their own")
        elif r["source"] not in rows[key].source:
            rows[key].source += f"; {r['source']}"
        col = Column(r["task"], r["protocol"], r["dataset"], r["engine"], r["metric"])
        if (key, col) in cells:
            raise TableError(f"{REPORTED_CSV.name}:{r['lineno']}: a second value for {r['row']!r} in "
                             f"column {col.label}")
        cells[(key, col)] = Cell(mean=r["value"], std=r["std"], n=r["n"] if r["n"] is not None else 1,
                                 values=[r["value"]], source=r["source"], digits=r.get("digits"))

    columns = sorted({c for _, c in cells}, key=Column.sort_key)
    refused = [(str(p), p.record) for p in problems if isinstance(getattr(p, "record", None), dict)]
    table = Table(table_rows, columns, cells, problems=[str(p) for p in problems], errors=errors,
                  refused=refused)
    table.comparisons, table.uncompared = compare_with_papers(table)
    table.noise = compare_with_random(table, spreads)
    return table


def compare_with_papers(table: Table) -> tuple[dict[tuple[str, Column], Comparison],
                                               dict[tuple[str, Column], tuple[str, str]]]:
    """Each measured cell against its paper row's number in the same column: the paper row is a
    reported (not unverified) row of the same method, arch, epochs and label fraction; where several
    have a number in the column, one with a published ± is preferred, then the first in the CSV.

    A paper row stands for its column's protocol as preset: a cell whose records state that they ran
    other values (``run.preset_changes``: fewer epochs, another lr) is not compared but listed in the
    second dict, with the settings that differ. Records that state nothing (written before every
    task stated them) are compared as they are."""
    out, uncompared = {}, {}
    papers = [r for r in table.reported_rows() if r.kind == "reported"]
    for row in table.measured_rows():
        ident = (row.method, row.arch, row.epochs, row.label_fraction)
        mine = [r for r in papers if (r.method, r.arch, r.epochs, r.label_fraction) == ident]
        for col in table.columns if mine else ():
            cell = table.cell(row, col)
            found = [(r, c) for r in mine if (c := table.cell(r, col)) is not None]
            if cell is None or not found:
                continue
            paper, theirs = sorted(found, key=lambda rc: rc[1].std is None)[0]
            if cell.preset_changes:
                uncompared[(row.key, col)] = (paper.name, preset_differences(cell.preset_changes))
                continue
            default = DEFAULT_RUN_STD.get(col.metric, FALLBACK_RUN_STD)
            s_mine = cell.spread if cell.spread is not None else default
            s_theirs = theirs.std if theirs.std is not None else default
            band = BAND_Z * math.sqrt(s_mine ** 2 / cell.n + s_theirs ** 2 / max(theirs.n, 1))
            out[(row.key, col)] = Comparison(paper.name, cell.mean, theirs.mean, band)
    return out, uncompared


def is_random_init(row: Row) -> bool:
    """Whether ``row`` is a random initialisation: what its records state (:func:`random_init_seed`),
    never its name."""
    return row.random_init or row.method in ("random-init", "random")


def entry_names(entry: dict, col: Column) -> bool:
    """Whether a baseline entry (leaderboard/check.py) names column ``col``: its task, protocol and
    metric, and its dataset and engine where it gives them."""
    return (entry.get("task") == col.task and entry.get("protocol") == col.protocol and entry.get("metric") == col.metric
            and entry.get("dataset") in (None, col.dataset) and entry.get("engine") in (None, col.engine))


def _spread_from_baseline(spreads: list[dict], row: Row, col: Column) -> tuple[float, int] | None:
    """The (std, n) of a baseline entry for this row's absolute value in this column, if any."""
    for e in spreads:
        # a std of 0 (runs that all gave the same value) measures no spread, as in Cell.spread
        if (e.get("checkpoint") == row.name and entry_names(e, col) and not e.get("relative_to")
                and e.get("std") is not None and float(e["std"]) > 0 and int(e.get("n") or 0) >= 2):
            return float(e["std"]), int(e["n"])
    return None


def compare_with_random(table: Table, spreads: list[dict] | None = None) -> dict[tuple[str, Column], Noise]:
    """Each measured cell of a pretrained row against the random-init row of the same architecture
    in the same column. The pooled seed std is sqrt(sum (n_i - 1) s_i^2 / sum (n_i - 1)) over the two
    cells, each cell's spread being its own seeds' (:attr:`Cell.spread`: n >= 2 and not all equal)
    or else the baseline's runs of that cell (``spreads``). Both cells need a spread: with one side's
    alone, the other side's single number could lie anywhere in its own run-to-run range, so the
    spread is unknown. Cells whose records ran other protocol settings are not compared (their
    difference would be the settings'). A cell with nothing to compare with (no random init of its
    architecture in its column, or several) is said to be so, never left looking like a result."""
    out: dict[tuple[str, Column], Noise] = {}
    measured = table.measured_rows()
    for row in measured:
        if is_random_init(row):
            continue
        randoms = [r for r in measured if is_random_init(r) and r.arch == row.arch]
        base = randoms[0] if len(randoms) == 1 else None
        for col in table.columns:
            mine, theirs = table.cell(row, col), (table.cell(base, col) if base else None)
            if mine is None:
                continue
            if theirs is None:
                why = (f"several random-init rows of {row.arch} ({', '.join(r.name for r in randoms)})" if randoms[1:]
                       else f"no random init of {row.arch or 'its architecture'} in this column")
                out[(row.key, col)] = Noise(None, None, None, why)
                continue
            if (differ := settings_differences(mine.settings, theirs.settings, base.name)):
                out[(row.key, col)] = Noise(base.name, None, None, "", mismatch=differ)
                continue
            parts, sources = [], []
            for r, c in ((row, mine), (base, theirs)):
                if c.spread is not None:
                    parts.append((c.spread, c.n))
                    sources.append(f"{r.name}: {c.n} seeds")
                elif (found := _spread_from_baseline(spreads or [], r, col)):
                    parts.append(found)
                    sources.append(f"{r.name}: the baseline's {found[1]} runs")
                elif c.n >= 2:
                    sources.append(f"{r.name}: its {c.n} seeds gave the same value, which measures no spread, "
                                   "and no baseline spread")
                else:
                    sources.append(f"{r.name}: one seed and no baseline spread")
            dof = sum(n - 1 for _, n in parts)
            pooled = (math.sqrt(sum((n - 1) * s * s for s, n in parts) / dof)
                      if len(parts) == 2 and dof > 0 else None)
            out[(row.key, col)] = Noise(base.name, mine.mean - theirs.mean, pooled, "; ".join(sources))
    return out


def _stated_changes(rec: dict) -> dict | None:
    """The record's ``run.preset_changes`` (its protocol fields that differ from the preset it names,
    and engine options beyond them), None where it does not state them (records written before
    every task stated them)."""
    changes = (rec.get("run") or {}).get("preset_changes")
    return changes if isinstance(changes, dict) else None


def _aggregate(values: list[dict]) -> tuple[dict[tuple[str, Column], Cell], list[str]]:
    """Cells from one entry per (record, metric): the newest record per seed counts (ties: the
    later file), then mean, std and n per (row, column); protocol mismatches as messages."""
    if not values:
        return {}, []
    df = pd.DataFrame(values)
    df["cell"] = df.groupby(["row", "column"], sort=False).ngroup()  # in order of first appearance
    # Settings are compared over every record of a cell, the replaced ones too: a rerun of a seed
    # with other settings must not silently take the old result's place.
    every = df.sort_values(["cell", "timestamp"], kind="stable")
    df = (df.sort_values("timestamp", kind="stable").drop_duplicates(["cell", "seed"], keep="last")
          .sort_values(["cell", "seed"], kind="stable"))
    stats = df.groupby("cell")["value"].agg(["mean", "std", "size"])
    cells, errors = {}, []
    for cell, g in df.groupby("cell", sort=True):
        key, col = g["row"].iloc[0], g["column"].iloc[0]
        mean, std, n = stats.loc[cell]
        cells[(key, col)] = Cell(mean=float(mean), std=None if math.isnan(std) else float(std), n=int(n),
                                 values=g["value"].tolist(), seeds=g["seed"].tolist(), files=g["file"].tolist(),
                                 deviations=tuple(dict.fromkeys(d for ds in g["deviations"] for d in ds)),
                                 settings=g["settings"].iloc[0], preset_changes=_cell_changes(g["preset_changes"]))
    for cell, g in every.groupby("cell", sort=True):
        key, col = g["row"].iloc[0], g["column"].iloc[0]
        first = (g["file"].iloc[0], g["settings"].iloc[0])
        other = next(((f, st) for f, st in zip(g["file"], g["settings"]) if st != first[1]), None)
        if other is not None:
            errors.append(f"protocol mismatch in cell ({key}, {col.task} [{col.protocol}] on {col.dataset}, "
                          f"engine {col.engine}): its records disagree on the protocol's settings: "
                          f"{_describe_mismatch(first, other)}. Re-run one of them with the other's "
                          f"settings, or give the variant its own protocol name.")
    return cells, list(dict.fromkeys(errors))


def _cell_changes(stated) -> dict | None:
    """A cell's departures from its preset: those a record states (its records agree on their config,
    so on these too), {} where every stating record ran the preset, None where none states them."""
    known = [c for c in stated if isinstance(c, dict)]   # pandas may hold an unstated one as NaN
    return next((c for c in known if c), {} if known else None)


def _measured_order(row: Row) -> tuple:
    # Pretrained methods in the papers' order, UniMoCo by label fraction, random init last.
    return (is_random_init(row), METHOD_ORDER.get(row.method or "", len(METHOD_ORDER)),
            row.label_fraction if row.label_fraction is not None else -1.0, row.name)


def check_table(table: Table) -> None:
    if table.errors:
        raise TableError("\n".join(table.errors))


def load_table(results_dir: str | Path | Sequence[str | Path], *, reported: bool = True, all_metrics: bool = False,
               spreads: list[dict] | None = None) -> Table:
    """Read every record under ``results_dir`` (skipping corrupt and newer-schema files, which are
    listed in ``Table.problems``) and build the table, with the papers' rows when ``reported``;
    ``spreads`` as :func:`build_table`. Several folders: one run each of the same pipeline with
    another ``--seed`` (``runs`` of :func:`build_table`)."""
    from mocobench.core.records import iter_record_files

    folders = [results_dir] if isinstance(results_dir, (str, Path)) else list(results_dir)
    records, files, problems, runs = [], [], [], []
    for run, folder in enumerate(folders):
        for path, rec in iter_record_files(folder):
            if isinstance(rec, Problem):
                problems.append(rec)
            else:
                records.append(rec)
                files.append(str(path))
                runs.append(run)
    return build_table(records, reported=load_reported() if reported else None, files=files,
                       problems=problems, all_metrics=all_metrics, spreads=spreads, runs=runs)


# ---------------------------------------------------------------- text outputs

ROW_FIELDS = ("checkpoint", "method", "arch", "epochs", "labels", "kind")


def _row_fields(row: Row) -> list[str]:
    return [row.name, row.method or "", row.arch or "", "" if row.epochs is None else str(row.epochs),
            row.label_fraction_text, row.kind]


NOISE_FOOTNOTE = (f"Against random init (the random-init row of the same architecture, same column): ≈ the "
                  f"difference is within noise (less than {NOISE_Z:g} pooled seed standard deviations); ? the "
                  f"spread of the cell or of its random init is not known (one seed, or seeds that all gave "
                  f"the same value, as an evaluation that does not depend on its seed such as kNN does, and "
                  f"no baseline gives that cell's spread), so the difference is not shown to be a result; "
                  f"‡ not compared: the two cells' records ran other protocol settings (each cell's note names "
                  f"them); ∅ no "
                  f"random-init row of its architecture in that column, so nothing says it differs from "
                  f"random init; unmarked: beyond noise.")


def _line(text: str) -> str:
    """``text`` on one line: a line break in a checkpoint's name would end a table row or list item."""
    return text.replace("\r\n", "\\n").replace("\r", "\\r").replace("\n", "\\n")


def _md(text: str) -> str:
    return _line(text).replace("|", "\\|")   # a pipe in a name would end its cell


def to_markdown(table: Table, digits: int = 1) -> str:
    labels = table.labels()
    head = list(ROW_FIELDS) + [_md(labels[c]) for c in table.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 6 + ["---:"] * len(table.columns)) + "|"]
    marks: dict[tuple[str, ...], str] = {}   # each distinct set of deviations gets its footnote mark
    unlike: dict[str, str] = {}   # each distinct "not compared: settings differ" gets its footnote mark
    for row in table.rows:
        cells = []
        for col in table.columns:
            c = table.cell(row, col)
            text = c.text(digits) if c else ""
            if c and c.deviations:
                text += " " + marks.setdefault(c.deviations, f"†{len(marks) + 1}")
            if (noise := table.noise.get((row.key, col))) and noise.mark:
                text += " " + (unlike.setdefault(noise.text(digits), f"‡{len(unlike) + 1}") if noise.mismatch
                               else noise.mark)
            if (cmp := table.comparisons.get((row.key, col))):
                text += f" · {cmp.text(digits)}"
            if (paper := table.uncompared.get((row.key, col))):
                why = f"not compared with {paper[0]}: ran other settings than its protocol's preset ({paper[1]})"
                text += " · Δ " + unlike.setdefault(why, f"‡{len(unlike) + 1}")
            cells.append(_md(text))
        lines.append("| " + " | ".join([_md(f) for f in _row_fields(row)] + cells) + " |")
    if marks:
        lines += ["", "Departures from the official recipes stated by the records (core/deviations.toml):", ""]
        lines += [f"- {mark} " + "; ".join(devs) for devs, mark in marks.items()]
    if unlike:
        lines += ["", "Not compared, because the cells ran other protocol settings:", ""]
        lines += [f"- {mark} {_line(why)}" for why, mark in unlike.items()]
    if table.comparisons:
        lines += ["", f"Δ: measured mean − the paper row's number in the same column; ✓ within ±{BAND_Z:g} standard "
                  "errors of the difference (seed std here, the paper's ± where published, else a stated "
                  "default per metric; docs/leaderboard.md), ✗ outside. Paper rows compared: "
                  + "; ".join(sorted({f"{k[0]} -> {c.paper}" for k, c in table.comparisons.items()})) + ". A "
                  "cell is compared only where its records ran the preset of the column's protocol, which the "
                  "paper row stands for; records that do not state their changes to the preset "
                  "(run.preset_changes: records written before every task stated them) are compared as they are."]
    if table.noise:
        lines += ["", NOISE_FOOTNOTE]
    cards = [(r.name, r.card) for r in table.measured_rows() if r.card]
    if cards:
        lines += ["", "Checkpoints (their cards are in RESULTS/cards/):", ""]
        lines += [f"- {_line(name)}: {card}" for name, card in cards]
    sources = [(r.name, r.kind, r.source) for r in table.reported_rows()]
    if sources:
        lines += ["", "Reported rows (numbers from the papers, not measured here):", ""]
        lines += [f"- {_line(name)}{' (UNVERIFIED)' if kind == 'unverified' else ''}: {_line(src)}"
                  for name, kind, src in sources]
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """Wide CSV: the row fields, then per column its mean, and its std and n when any cell of the
    column has several seeds (or a reported ±)."""
    long = pd.DataFrame([{"row": row.key, "column": i, "mean": _num(cell.mean),
                          "std": "" if cell.std is None else _num(cell.std), "n": cell.n}
                         for row in table.rows for i, col in enumerate(table.columns)
                         if (cell := table.cell(row, col))], columns=["row", "column", "mean", "std", "n"])
    wide = long.pivot(index="row", columns="column").reindex(index=[r.key for r in table.rows])
    multi = set(long.loc[long["n"] > 1, "column"])
    out = pd.DataFrame([_row_fields(r) + [r.card, r.source] for r in table.rows],
                       columns=[*ROW_FIELDS, "card", "source"])
    labels = table.labels()
    for i, col in enumerate(table.columns):
        label = labels[col]
        out[label] = wide[("mean", i)].fillna("").to_numpy()
        if i in multi:
            out[f"{label} std"] = wide[("std", i)].fillna("").to_numpy()
            out[f"{label} n"] = wide[("n", i)].map(lambda n: "" if pd.isna(n) else str(int(n))).to_numpy()
        noise = [table.noise.get((r.key, col)) for r in table.rows]
        if any(noise):
            out[f"{label} vs random init"] = [n.verdict if n else "" for n in noise]
            out[f"{label} minus random init"] = [_num(n.diff) if n else "" for n in noise]
            out[f"{label} noise threshold"] = [_num(n.threshold) if n and n.threshold is not None else ""
                                                   for n in noise]
        compared = [table.comparisons.get((r.key, col)) for r in table.rows]
        unlike = [table.uncompared.get((r.key, col)) for r in table.rows]
        if any(compared) or any(unlike):
            # a cell that ran other settings than the paper row's preset: its paper row, no Δ, and why
            out[f"{label} paper row"] = [c.paper if c else u[0] if u else "" for c, u in zip(compared, unlike)]
            out[f"{label} delta"] = [_num(c.delta) if c else "" for c in compared]
            out[f"{label} band"] = [_num(c.band) if c else "" for c in compared]
            out[f"{label} within band"] = [("yes" if c.within else "no") if c else
                                           f"not compared: ran {u[1]}" if u else "" for c, u in zip(compared, unlike)]
    return out.to_csv(index=False, lineterminator="\n")


def _num(x: float) -> str:
    return "" if x is None or math.isnan(x) else repr(round(x, 6))
