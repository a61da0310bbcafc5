"""What loading a checkpoint did (:class:`LoadReport`) and the file's sha256, computed once."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mocobench.core.io import sha256_file


@dataclass
class LoadReport:
    """What ``load_backbone`` did; ``record_fields()`` is what a result record stores."""

    path: str
    name: str
    sha256: str | None
    format: str
    arch: str
    used_keys: list[str] = field(default_factory=list)
    # key in the file -> why it was not loaded ("head", "momentum encoder", "queue", "optimizer", ...)
    dropped: dict[str, str] = field(default_factory=dict)
    # what the checkpoint says about itself: method, epochs, label_fraction, config, ...
    metadata: dict[str, Any] = field(default_factory=dict)
    # key in the file -> canonical key it was loaded into
    key_map: dict[str, str] = field(default_factory=dict)
    # canonical keys the file does not store and that were set to their initial value (only
    # BatchNorm ``num_batches_tracked`` counters, which detectron2/VISSL files omit)
    filled: list[str] = field(default_factory=list)
    container: str = ""  # torch-zip | torch-legacy | pickle | safetensors
    num_params: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Everything, as plain values (``mocobench inspect --json``)."""
        return {"path": self.path, "name": self.name, "sha256": self.sha256, "format": self.format,
                "container": self.container, "arch": self.arch, "num_params": self.num_params,
                "used_keys": list(self.used_keys), "key_map": dict(self.key_map),
                "dropped": dict(self.dropped), "filled": list(self.filled),
                "metadata": dict(self.metadata)}

    def record_fields(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "sha256": self.sha256, "format": self.format,
                "arch": self.arch, "method": self.metadata.get("method"),
                "epochs": self.metadata.get("epochs"),
                "label_fraction": self.metadata.get("label_fraction")}


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int, inode: int) -> str:
    return sha256_file(path)


def cached_sha256(path: str | os.PathLike) -> str:
    """sha256 of the file, memoised on (path, size, mtime, inode): evaluating one checkpoint on
    several tasks in one process hashes it once."""
    st = os.stat(path)
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
