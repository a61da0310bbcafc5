"""Atomic file writes and progress bars shared by every package.

Every file the suite writes (checkpoints, records, caches, exported configs) goes through one of
the ``atomic_*`` functions: the bytes are written to a temporary file in the destination folder,
flushed to disk, then renamed over the destination, so a reader never sees a half-written file and
a kill leaves either the old file or the new one. The one exception is :class:`StepLog`, an
append-only JSON-lines history that is rewritten atomically whenever a run resumes.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

T = TypeVar("T")


def _umask() -> int:
    # os.umask can only be read by setting it; set it back at once (no thread writes files here
    # between the two calls that would care).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], binary: bool = True) -> Path:
    """Call ``write(fileobj)`` on a temporary file next to ``path`` and rename it into place."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder; give a file name to write to")
    if path.parent.exists() and not path.parent.is_dir():
        raise NotADirectoryError(f"{path.parent}: is a file, so {path.name} cannot be written inside it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        # NOTE: mkstemp creates the file 0600 whatever the umask; a plain open() would give
        # 0666 & ~umask, which is what a team sharing a results folder expects.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and e.filename is None:
            # a write that fails (ENOSPC, EIO, EDQUOT) names no file: name the one being written
            raise type(e)(e.errno, f"{e.strerror or e} (writing {path})", str(path)) from e
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text), binary=False)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


class StepLog:
    """The JSON-lines history of a resumable loop (pretraining's ``log.jsonl``, detection's
    ``losses.jsonl``): rows of steps (``row[key]``, one per logged step) and event rows (with an
    ``event`` field: start, checkpoint, preempted, done), each naming its step.

    :meth:`resume` keeps exactly the history before ``start``, in file order: each step below
    ``start`` once, and the events of those steps. It rewrites the file atomically, so a torn last
    line, and the rows of the steps a kill made the run repeat, are cut. :meth:`append` then adds
    each new row at once (flushed, so a kill keeps the rows written so far). :meth:`resume` returns
    the steps below ``start`` that have no row (a loop that logs every step: a history lost by an
    older writer), for the caller to report.
    """

    def __init__(self, path: str | os.PathLike, key: str = "iteration"):
        self.path, self.key = Path(path), key

    def resume(self, start: int) -> list[int]:
        kept, seen = [], set()
        if start > 0 and self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    step = row[self.key]
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by a kill
                if not isinstance(step, int) or not 0 <= step < start:
                    continue
                if "event" not in row:
                    if step in seen:
                        continue
                    seen.add(step)
                kept.append(line)
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        return [s for s in range(start) if s not in seen]

    def append(self, row: dict) -> None:
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
        except OSError as e:
            if e.filename is not None:
                raise
            raise type(e)(e.errno, f"{e.strerror or e} (appending to {self.path})", str(self.path)) from e


def progress(iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str = "",
             unit: str = "it", unit_scale: bool = False, disable: bool | None = None, **kwargs):
    """A tqdm bar with rate and ETA on stderr.

    Shown on a terminal; when stderr is not a terminal (CI logs) the bar is refreshed at most every
    10 s so logs stay readable. ``MOCOBENCH_PROGRESS=0`` hides it everywhere.
    """
    from tqdm.auto import tqdm

    if disable is None:
        disable = os.environ.get("MOCOBENCH_PROGRESS", "1") == "0"
    mininterval = 0.5 if sys.stderr.isatty() else 10.0
    return tqdm(iterable, total=total, desc=desc, unit=unit, unit_scale=unit_scale,
                disable=disable, mininterval=mininterval, dynamic_ncols=True, **kwargs)


def move_aside(root: str | os.PathLike, paths: Iterable[Path], relative_to: Path | None = None) -> list[Path]:
    """Move ``paths`` (those that exist) under ``ROOT/superseded/<UTC time>/``, each at its place
    relative to ``relative_to`` (its name alone where it lies outside, or with no ``relative_to``);
    returns where they went. Outputs nothing may resume from are kept, not deleted; a name taken
    (a second move within the same second) gets this process's id appended."""
    import shutil
    import time

    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    moved = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            continue
        rel = Path(path.name)
        if relative_to is not None:
            try:
                rel = path.resolve().relative_to(Path(relative_to).resolve())
            except ValueError:
                pass
        dest = Path(root) / "superseded" / stamp / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            dest = dest.with_name(f"{dest.name}.{os.getpid()}")
        shutil.move(str(path), str(dest))
        moved.append(dest)
    return moved


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def one_line(text: object) -> str:
    """A message on one line (pickle's, torch's and timm's can span several): every command prints
    its errors as one line (``mocobench.cli.describe`` and the commands that catch their own)."""
    return " ".join(str(text).split())
