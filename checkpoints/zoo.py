"""The checkpoint zoo: ``checkpoints/zoo.toml`` read into :class:`ZooEntry` values."""

from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

ZOO_PATH = Path(__file__).with_name("zoo.toml")


@dataclass(frozen=True)
class ZooEntry:
    name: str
    url: str
    format: str
    arch: str
    method: str
    epochs: int | None = None
    # the fraction of ImageNet's labels its pretraining used (0 self-supervised, 1 supervised), as
    # our own exports state it: part of the identity a measured row meets its paper row by
    label_fraction: float | None = None
    sha256: str = ""  # full digest if published ("" if not)
    sha256_prefix: str = ""  # torchvision's file-name hash prefix
    md5: str = ""  # full digest or the 8-digit prefix the publisher lists
    md5_source: str = ""
    paper: str = ""
    # the row of leaderboard/reported.csv that holds this checkpoint's published numbers (that file
    # is their one place; the leaderboard compares a measured row of this checkpoint with it)
    paper_row: str = ""

    @property
    def filename(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    def to_dict(self) -> dict:
        return asdict(self)


def load_zoo(path: str | os.PathLike = ZOO_PATH) -> dict[str, ZooEntry]:
    with open(path, "rb") as f:
        table = tomllib.load(f)
    known = set(ZooEntry.__dataclass_fields__) - {"name"}
    zoo = {}
    for name, fields in table.items():
        unknown = set(fields) - known
        if unknown:
            raise ValueError(f"{path}: [{name}] has unknown fields {sorted(unknown)}")
        zoo[name] = ZooEntry(name=name, **fields)
    return zoo


def cache_dir() -> Path:
    """``$MOCOBENCH_CACHE`` or ``~/.cache/mocobench``."""
    return Path(os.environ.get("MOCOBENCH_CACHE") or Path.home() / ".cache" / "mocobench")


def cached_path(entry: ZooEntry, root: str | os.PathLike | None = None) -> Path:
    """Where ``fetch`` puts ``entry``: ``<cache>/<name>/<file name in the URL>``."""
    return Path(root or cache_dir()) / entry.name / entry.filename
