"""Resume keys: when a stage counts as done, and what is moved aside when its configuration changed.

A stage's *configuration* is everything that decides its result: the pipeline mode, the exact
``mocobench`` arguments (overrides, ``--pretrain-arg``/``--eval-arg``, paths), a digest of the
protocol's source code, and the keys of the stages whose output it reads (a backbone's pretraining,
the embedded dataset), the sha256 of a given checkpoint file, or the listing of a real dataset
(:func:`data_identity`). Its *key* is the sha256 of that configuration.

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
import time
from pathlib import Path

from mocobench.core.io import atomic_write_json

# The module whose imports decide a command's result (its "protocol code version"): the code of a
# command is every module of the project it imports, directly or not, read from the source (the
# import graph), so an edit to a reader in ``mocobench.datasets`` or a helper in ``mocobench.core``
# redoes the stages that use it, and nothing else. The top floor (this package's own modules: the
# pipeline, the command table) only orchestrates and is left out.
PROTOCOL_ENTRY: dict[tuple[str, ...], str] = {
    ("data",): "mocobench.datasets.cli",
    ("pretrain",): "mocobench.pretrain.cli",
    ("preflight",): "mocobench.transfer.preflight",
    ("eval", "linear"): "mocobench.transfer.classification.cli",
    ("eval", "knn"): "mocobench.transfer.classification.cli",
    ("eval", "semi"): "mocobench.transfer.classification.cli",
    ("eval", "detection"): "mocobench.transfer.detection.cli",
    ("eval", "segmentation"): "mocobench.transfer.segmentation.cli",
}

# The floors below the top one; a module outside them is not protocol code.
FLOORS = ("mocobench.core", "mocobench.datasets", "mocobench.checkpoints", "mocobench.pretrain",
          "mocobench.transfer", "mocobench.leaderboard")


def _is_protocol_module(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FLOORS)


@functools.lru_cache(maxsize=None)
def module_file(name: str) -> Path | None:
    """The source file of module ``name`` (its ``__init__.py`` for a package), or None if it is no
    module of the project (an attribute imported with ``from``, or a module that does not exist)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def _imports_of(path: Path, name: str) -> set[str]:
    """The project modules a source file imports anywhere in it (also inside functions: the lazy
    imports of heavy engines are part of the protocol too)."""
    import ast

    tree = ast.parse(path.read_bytes(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # a submodule, when it is one
    return {m for m in found if _is_protocol_module(m)}


@functools.lru_cache(maxsize=None)
def protocol_modules(entry: str) -> tuple[tuple[str, Path], ...]:
    """Every project module below the top floor that ``entry`` imports, directly or not, with its
    parent packages (their ``__init__`` runs on import), sorted by name."""
    seen: dict[str, Path] = {}
    todo = [entry]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = module_file(name)
        if path is None:
            continue
        seen[name] = path
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(2, len(parts)) if _is_protocol_module(".".join(parts[:i]))]
        todo += sorted(_imports_of(path, name) - seen.keys())
    return tuple(sorted(seen.items()))


@functools.lru_cache(maxsize=None)
def source_digest(entry: str) -> str:
    """sha256 (16 hex digits) of the package version and the source of every module ``entry``
    imports (``protocol_modules``)."""
    from mocobench.core import __version__

    h = hashlib.sha256(__version__.encode())
    for name, path in protocol_modules(entry):
        h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def protocol_code(argv: list[str]) -> str:
    """The code version of the command ``mocobench ARGV``."""
    for n in (2, 1):
        entry = PROTOCOL_ENTRY.get(tuple(argv[:n]))
        if entry:
            return source_digest(entry)
    raise KeyError(f"no protocol entry module known for 'mocobench {' '.join(argv[:2])}' (add it to PROTOCOL_ENTRY)")


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
    from mocobench.core.io import move_aside

    moved = move_aside(out, paths, relative_to=out)
    if moved:
        print(f"      moved aside ({why}): " + ", ".join(str(m) for m in moved), flush=True)
    return moved
