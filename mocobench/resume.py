"""Resume keys: when a stage counts as done, and what is moved aside when its configuration changed.

A stage's *configuration* is everything that decides its result: the pipeline mode, the exact
``mocobench`` arguments (overrides, ``--pretrain-arg``/``--eval-arg``, paths), a digest of the
protocol's source code, and the keys of the stages whose output it reads (a backbone's pretraining,
the dataset) or the sha256 of a given checkpoint file. Its *key* is the sha256 of that configuration.

Before a stage runs, the pipeline writes ``OUT/state/<stage>.json`` = {key, configuration,
finished: false}; after it succeeds, ``finished: true``. A stage is done only when its entry has
the same key, is finished, and its output is still there (the backbone; the record). A stage
whose entry has the same key but is not finished continues from its own checkpoints
(``--resume auto``, the work directories). A stage whose entry differs (or is absent while an
output exists: a run of an older pipeline) is redone from scratch, and its old outputs (run
folder, records, work folder) are first moved under ``OUT/superseded/<time>/`` so that nothing
stale is resumed from, reused, or averaged into the leaderboard.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from core.io import atomic_write_json

ROOT = Path(__file__).resolve().parent.parent

# The source folders whose code decides a command's result (its "protocol code version"). A change
# in any .py file below them makes the stages of that command, and the stages downstream, run again.
PROTOCOL_CODE: dict[tuple[str, ...], tuple[str, ...]] = {
    ("data",): ("core/data/synth",),
    ("pretrain",): ("pretrain", "checkpoints"),
    ("eval", "linear"): ("transfer/classification", "checkpoints"),
    ("eval", "knn"): ("transfer/classification", "checkpoints"),
    ("eval", "semi"): ("transfer/classification", "checkpoints"),
    ("eval", "detection"): ("transfer/detection", "transfer/adapters", "checkpoints"),
    ("eval", "segmentation"): ("transfer/segmentation", "transfer/adapters", "checkpoints"),
}


@functools.lru_cache(maxsize=None)
def source_digest(folders: tuple[str, ...]) -> str:
    """sha256 (16 hex digits) of the package version and every ``.py`` file below ``folders``."""
    from core import __version__

    h = hashlib.sha256(__version__.encode())
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def protocol_code(argv: list[str]) -> str:
    """The code version of the command ``mocobench ARGV``."""
    for n in (2, 1):
        folders = PROTOCOL_CODE.get(tuple(argv[:n]))
        if folders:
            return source_digest(folders)
    raise KeyError(f"no protocol code folders known for 'mocobench {' '.join(argv[:2])}' (add it to PROTOCOL_CODE)")


@functools.lru_cache(maxsize=None)
def file_identity(checkpoint: str) -> str:
    """A given checkpoint's identity: the sha256 of the file, or the name itself (zoo, random:)."""
    path = Path(checkpoint)
    if not path.is_file():
        return checkpoint
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"sha256:{h.hexdigest()}"


def configuration(mode: str, argv: list[str], inputs: dict[str, str]) -> dict:
    return {"mode": mode, "command": list(argv), "code": protocol_code(argv), "inputs": dict(sorted(inputs.items()))}


def key_of(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def slug(stage_name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in stage_name)


def entry_path(out: Path, stage_name: str) -> Path:
    return out / "state" / f"{slug(stage_name)}.json"


def read_entry(out: Path, stage_name: str) -> dict | None:
    path = entry_path(out, stage_name)
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        print(f"resume: {path} is unreadable ({e}); the stage runs again", flush=True)
        return None
    return entry if isinstance(entry, dict) and "key" in entry else None


def write_entry(out: Path, stage_name: str, key: str, config: dict, finished: bool) -> None:
    atomic_write_json(entry_path(out, stage_name),
                      {"stage": stage_name, "key": key, "finished": finished, "config": config,
                       "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


def what_changed(old: dict, new: dict) -> str:
    """A short account of how two configurations differ, e.g. ``command: +--epochs=4``."""
    parts = []
    for field in ("mode", "code", "inputs"):
        if old.get(field) != new.get(field):
            parts.append(f"{field} {old.get(field)!r} -> {new.get(field)!r}" if field == "mode"
                         else f"{field} changed")
    a, b = old.get("command", []), new.get("command", [])
    if a != b:
        gone = [x for x in a if x not in b]
        added = [x for x in b if x not in a]
        parts.append("command " + " ".join([*(f"-{x}" for x in gone), *(f"+{x}" for x in added)] or ["reordered"]))
    return "; ".join(parts) or "unknown"


def decide(entry: dict | None, key: str, config: dict, output_present: bool,
           leftovers: bool) -> tuple[str, str]:
    """``("done" | "continue" | "fresh" | "redo", why)`` for a stage with this key; ``leftovers``:
    some of its outputs or state (a run folder, a work folder, a record) exist."""
    if entry is not None and entry["key"] == key:
        if entry.get("finished") and output_present:
            return "done", ""
        return "continue", ""
    if entry is not None:
        return "redo", f"configuration changed: {what_changed(entry.get('config', {}), config)}"
    if leftovers:
        return "redo", "outputs of a run without a resume key (an older pipeline or a manual run)"
    return "fresh", ""


def supersede(out: Path, paths: list[Path], why: str) -> list[Path]:
    """Move ``paths`` (those that exist) under ``OUT/superseded/<time>/``, keeping their place
    relative to ``OUT``; returns where they went."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    moved = []
    for path in paths:
        if not path.exists():
            continue
        try:
            rel = path.resolve().relative_to(out.resolve())
        except ValueError:
            rel = Path(path.name)
        dest = out / "superseded" / stamp / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            dest = dest.with_name(f"{dest.name}.{os.getpid()}")
        shutil.move(str(path), str(dest))
        moved.append(dest)
    if moved:
        print(f"      moved aside ({why}): " + ", ".join(str(m) for m in moved), flush=True)
    return moved
