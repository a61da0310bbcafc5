"""Result records: one flat JSON file per evaluation; the leaderboard is derived from them.

This module owns the schema. ``transfer/`` builds records with :func:`new_record` and writes them
with :func:`write_record`; ``leaderboard/`` reads them back with :func:`load_records`.

Schema (version 2)::

    schema_version  int      SCHEMA_VERSION at write time
    id              str      unique id of this record (also in the file name)
    checkpoint      dict     name, path, sha256, format, arch, method, epochs, label_fraction
    task            str      one of TASKS
    protocol        str      e.g. "paper", "fast", "dino-knn", "moco-voc-c4-24k", "tiny"
    engine          str      "torchvision" | "detectron2" | "mmseg"
    dataset         dict     name, path, splits {split: number of images}
    metrics         dict     metric name -> float; every metric is a percentage (accuracies,
                             AP, IoU): a finite number in [0, 100], never NaN (see metric_problem)
    seed            int
    config          dict     the protocol that ran: every setting that decides what is computed
                             (the leaderboard compares it, whole, between the records of a cell)
    run             dict     how this run was carried out and what it measured about itself:
                             run settings (``setting(run=True)`` fields: workers, intervals), world
                             size, paths, resume points, sweep choices, cache hits, timings, skipped
                             images, deviations from the papers, the pre-flight verdict
    env             dict     code_version, python, torch, torchvision, timm, device, hostname,
                             threads, cpu_capability (when torch ran)
    wall_time_s     float
    timestamp       str      UTC, ISO 8601

Version 1 kept both in ``config``; :func:`upgrade_v1` splits such a record when it is read.
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mocobench.core.io import atomic_write_json

SCHEMA_VERSION = 2

TASKS = ("linear", "knn", "semi-1pct", "semi-10pct", "detection", "segmentation")
REQUIRED = ("schema_version", "id", "checkpoint", "task", "protocol", "engine", "dataset",
            "metrics", "seed", "config", "run", "env", "wall_time_s", "timestamp")
CHECKPOINT_FIELDS = ("name", "path", "sha256", "format", "arch", "method", "epochs", "label_fraction")


METRIC_RANGE = (0.0, 100.0)   # every metric of a record is a percentage


def metric_problem(name: str, value: Any) -> str | None:
    """Why ``value`` is no usable value of metric ``name`` (None when it is one): a metric is a
    finite number in ``METRIC_RANGE``, wherever it is read (records, baselines, the table). A NaN
    compares false with every floor, so a gate that let one through would pass a broken run."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"metric {name!r} is {value!r}, not a number"
    if not math.isfinite(value):
        return f"metric {name!r} is {value!r}, not a finite number"
    lo, hi = METRIC_RANGE
    if not lo <= value <= hi:
        return f"metric {name!r} is {value!r}, outside [{lo:g}, {hi:g}] (metrics are percentages)"
    return None


class RecordError(ValueError):
    """A record file that cannot be used; the message names the file and the problem."""


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """``mocobench <version>+g<commit>[.dirty]`` when run from a git checkout (asked once per
    process: a process that writes many records runs git once)."""
    from mocobench.core import __version__

    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", ""
    if not commit:
        return __version__
    return f"{__version__}+g{commit}{'.dirty' if dirty else ''}"


def _version(package: str) -> str:
    """The package's ``__version__`` if it is imported already, else its installed version (so
    writing a record never imports timm or torchvision just to name them)."""
    import sys
    from importlib import metadata

    module = sys.modules.get(package)
    if module is not None and hasattr(module, "__version__"):
        return str(module.__version__)
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "missing"


def environment(device: str) -> dict[str, Any]:
    """Where the numbers came from. ``threads`` (torch's intra-op threads) and ``cpu_capability``
    (the vector instructions its CPU kernels use) are what CPU results vary with between machines
    that run the same code (docs/leaderboard.md, "Same command, same numbers")."""
    env: dict[str, Any] = {"code_version": code_version(), "python": platform.python_version(),
                           "torch": _version("torch"), "torchvision": _version("torchvision"),
                           "timm": _version("timm"), "device": device, "hostname": socket.gethostname()}
    torch = sys.modules.get("torch")   # a record written without torch (a scorer) names no threads
    if torch is not None:
        env["threads"] = torch.get_num_threads()
        env["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return env


def new_record(*, checkpoint: dict, task: str, protocol: str, dataset: dict, metrics: dict,
               config: dict, run: dict, seed: int, wall_time_s: float, device: str,
               engine: str = "torchvision") -> dict[str, Any]:
    """A complete, validated record. ``checkpoint`` needs at least ``name``; missing
    checkpoint fields are stored as ``None`` (unknown), never guessed. ``config`` is the protocol,
    ``run`` the run's settings and observations (the schema above)."""
    rec = {
        "schema_version": SCHEMA_VERSION,
        "id": uuid.uuid4().hex[:12],
        "checkpoint": {k: checkpoint.get(k) for k in CHECKPOINT_FIELDS} | {
            k: v for k, v in checkpoint.items() if k not in CHECKPOINT_FIELDS},
        "task": task,
        "protocol": protocol,
        "engine": engine,
        "dataset": dataset,
        "metrics": {k: float(v) for k, v in metrics.items()},
        "seed": int(seed),
        "config": config,
        "run": run,
        "env": environment(device),
        "wall_time_s": float(wall_time_s),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    validate(rec, "<new record>")
    return rec


def validate(rec: Any, source: str) -> dict:
    """Raise :class:`RecordError` naming ``source`` unless ``rec`` is a usable record."""
    if not isinstance(rec, dict):
        raise RecordError(f"{source}: not a JSON object")
    version = rec.get("schema_version")
    if not isinstance(version, int):
        raise RecordError(f"{source}: no integer schema_version")
    if version > SCHEMA_VERSION:
        raise RecordError(f"{source}: schema_version {version} is newer than this mocobench "
                          f"understands ({SCHEMA_VERSION}); upgrade mocobench to read it")
    if version < 1:
        raise RecordError(f"{source}: unknown schema_version {version}")
    if version == 1:
        rec = upgrade_v1(rec)
    missing = [k for k in REQUIRED if k not in rec]
    if missing:
        raise RecordError(f"{source}: missing fields {', '.join(missing)}")
    if rec["task"] not in TASKS:
        raise RecordError(f"{source}: unknown task {rec['task']!r} (known: {', '.join(TASKS)})")
    if not isinstance(rec["checkpoint"], dict) or not rec["checkpoint"].get("name"):
        raise RecordError(f"{source}: checkpoint.name is missing")
    # The fields the table groups and matches on: a seed "1" beside a seed 1 would count twice,
    # a protocol null would open a column of its own.
    for key in ("protocol", "engine"):
        if not (isinstance(rec[key], str) and rec[key]):
            raise RecordError(f"{source}: {key} must be a non-empty string, not {rec[key]!r}")
    if isinstance(rec["seed"], bool) or not isinstance(rec["seed"], int):
        raise RecordError(f"{source}: seed must be a whole number, not {rec['seed']!r}")
    if not isinstance(rec["dataset"], dict) or not (isinstance(rec["dataset"].get("name"), str)
                                                    and rec["dataset"]["name"]):
        raise RecordError(f"{source}: dataset must be an object with a non-empty name, not {rec['dataset']!r}")
    if not isinstance(rec["dataset"].get("splits", {}), dict):
        raise RecordError(f"{source}: dataset.splits must map split names to image counts")
    v = rec["checkpoint"].get("label_fraction")   # the row's label fraction is read as a number
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
        raise RecordError(f"{source}: checkpoint.label_fraction must be a number or null, not {v!r}")
    if not isinstance(rec["config"], dict) or not isinstance(rec["run"], dict):
        raise RecordError(f"{source}: config and run must be JSON objects")
    if not isinstance(rec["metrics"], dict):
        raise RecordError(f"{source}: metrics must map names to numbers")
    if not rec["metrics"]:
        raise RecordError(f"{source}: the record has no metrics (an evaluation that measured nothing)")
    for name, value in rec["metrics"].items():
        if (why := metric_problem(name, value)):
            raise RecordError(f"{source}: {why}")
    return rec


# The keys that schema-1 writers put into ``config`` although they describe the run, not the
# protocol (compared by each component of a dotted key), and the prefixes and suffixes of what
# those evaluations measured about themselves. Frozen with schema 1: writers of schema 2 keep
# run settings apart themselves (``core.settings.setting(run=True)`` and each task's ``run``).
_V1_RUN_KEYS = frozenset({
    "seed", "seeds", "results", "results_dir", "out", "out_dir", "output", "output_dir", "run_dir",
    "work_dir", "device", "workers", "num_workers", "checkpoint", "checkpoint_arg", "checkpoint_path",
    "data", "data_dir", "data_root", "root", "path", "cache", "cache_dir", "resume", "log_every",
    "print_freq", "progress", "verbose", "dist_url", "world_size", "rank", "local_rank", "gpu", "nproc",
    "threads", "num_threads", "pin_memory", "labels", "unreadable", "feature_dim", "deviations", "preflight"})
_V1_RUN_PREFIXES = ("chosen_", "cache_", "best_", "selected_", "final_", "resumed_")
_V1_RUN_SUFFIXES = ("_time_s", "_holdout_top1", "_seconds")


def _v1_run_key(key: str) -> bool:
    return key in _V1_RUN_KEYS or key.startswith(_V1_RUN_PREFIXES) or key.endswith(_V1_RUN_SUFFIXES)


def _split_v1(config: dict) -> tuple[dict, dict]:
    protocol, run = {}, {}
    for k, v in config.items():
        if _v1_run_key(k):
            run[k] = v
        elif isinstance(v, dict):
            p, r = _split_v1(v)
            protocol[k] = p
            if r:
                run[k] = r
        else:
            protocol[k] = v
    return protocol, run


def upgrade_v1(rec: dict) -> dict:
    """A schema-1 record in the shape of schema 2: its ``config`` split into protocol and run."""
    config = rec.get("config")
    if not isinstance(config, dict) or "run" in rec:
        return rec
    protocol, run = _split_v1(config)
    return {**rec, "config": protocol, "run": run}


def record_filename(rec: dict) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(rec["checkpoint"]["name"]))
    return f"{rec['task']}-{rec['protocol']}-{safe}-s{rec['seed']}-{rec['id']}.json"


def write_record(results_dir: str | os.PathLike, rec: dict, fallback_dir: str | os.PathLike | None = None) -> Path:
    """Write ``rec`` atomically as its own file under ``results_dir``; returns the path.

    A result can take hours to compute, so a failed write (full disk, read-only folder, a file
    where the folder should be) does not lose it: the record is printed to stderr as JSON, then
    written to ``fallback_dir`` (the run's work folder) or, failing that, the current folder, and
    the error raised names both the path that failed and where the record now is.
    """
    validate(rec, "<record to write>")
    name = record_filename(rec)
    target = Path(results_dir) / name
    try:
        return atomic_write_json(target, rec)
    except OSError as first:
        text = json.dumps(rec, indent=2, sort_keys=True)
        print(f"could not write the record to {target} ({first.strerror or first}); the record:\n{text}",
              file=sys.stderr)
        for folder in [fallback_dir, Path.cwd()]:
            if folder is None:
                continue
            try:
                saved = atomic_write_json(Path(folder) / name, rec)
            except OSError:
                continue
            raise RecordWriteError(f"{target}: {first.strerror or first}; the record was saved to {saved} "
                                   f"instead (move it into the results folder)", saved) from first
        raise RecordWriteError(f"{target}: {first.strerror or first}; no fallback folder was writable, the "
                               f"record is printed above", None) from first


class RecordWriteError(OSError):
    """A record could not be written where asked; ``saved`` is where it went instead (or None)."""

    def __init__(self, message: str, saved: Path | None):
        super().__init__(message)
        self.saved = saved

    def __str__(self) -> str:
        return self.args[0]


@dataclass
class Problem:
    path: Path
    message: str
    record: dict | None = None   # a refused record's content, when it was a JSON object

    def __str__(self) -> str:
        return self.message


CARD_FORMAT = "mocobench-checkpoint-card"


def iter_record_files(results_dir: str | os.PathLike):
    """Yield ``(path, record)`` for every valid record file under ``results_dir`` (recursively)
    and ``(path, Problem)`` for every file that is skipped; baseline files are passed over."""
    root = Path(results_dir)
    if not root.exists():
        yield root, Problem(root, f"{root}: results directory does not exist")
        return
    for path in sorted(root.rglob("*.json")):
        if path.name.startswith("."):
            continue  # a temporary file of a write in progress
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            yield path, Problem(path, f"{path}: corrupt record, skipped ({e})")
            continue
        if isinstance(rec, dict) and "schema_version" not in rec and "entries" in rec:
            continue  # a baseline file kept next to the records
        if isinstance(rec, dict) and rec.get("file_type") == CARD_FORMAT:
            continue  # a checkpoint card written beside the records (transfer/runner.py)
        try:
            yield path, validate(rec, str(path))
        except RecordError as e:
            yield path, Problem(path, f"{e}; skipped", rec if isinstance(rec, dict) else None)


def load_records(results_dir: str | os.PathLike) -> tuple[list[dict], list[Problem]]:
    """Every valid record under ``results_dir`` (recursively), plus one problem per file skipped.

    A corrupt file, a record of a newer schema, or one missing fields is reported, never fatal.
    """
    records, problems = [], []
    for _, item in iter_record_files(results_dir):
        (problems if isinstance(item, Problem) else records).append(item)
    return records, problems
