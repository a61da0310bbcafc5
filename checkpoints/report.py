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
    format_why: str = ""  # what the detected format is (whose layout) and what found it
    arch_source: str = ""  # stated by the file | given (--arch / the zoo) | guessed from the shapes

    def branches(self) -> tuple[str, list[str]]:
        """``(branch used, branches available but not used)``, from what was dropped and why: MoCo's
        query encoder against its momentum (key) encoder, DINO's teacher against its student, raw
        weights against an EMA copy."""
        reasons = set(self.dropped.values())
        other = sorted({r for r in reasons if any(w in r for w in ("momentum", "student", "EMA"))})
        # (a raw/EMA pair is only loaded with --branch; checkpoints/load.py refuses the unsaid choice)
        if any(r.startswith("raw (non-EMA)") for r in other):
            used = "EMA weights"
        elif any("student" in r for r in other):
            used = "teacher"
        elif any("momentum" in r for r in other):
            used = "online (query) encoder"
        elif any("EMA" in r for r in other):
            used = "raw (non-EMA) weights"
        else:
            used = "the only one"
        return used, other

    def card(self) -> dict[str, Any]:
        """The checkpoint card: what the file is, which of its branches, which input convention and
        (ResNet-50 and deeper) which block layout were used, and how each was decided (``mocobench inspect``; written beside every evaluation)."""
        used, other = self.branches()
        size = os.path.getsize(self.path) if self.sha256 and os.path.isfile(self.path) else None
        return {"file": self.path, "size_bytes": size, "sha256": self.sha256, "format": self.format,
                "format_why": self.format_why, "container": self.container, "branch_used": used,
                "branches_not_used": other, "arch": self.arch, "arch_source": self.arch_source,
                "input_convention": self.metadata.get("input_convention"),
                # Bottleneck ResNets: whether the stride is in the 1x1 conv (MSRA) or the 3x3 (torchvision)
                "stride_in_1x1": self.metadata.get("stride_in_1x1"), "num_params": self.num_params,
                "keys_used": len(self.used_keys), "keys_dropped": len(self.dropped), "keys_filled": len(self.filled)}

    def to_dict(self) -> dict[str, Any]:
        """Everything, as plain values (``mocobench inspect --json``)."""
        return {"path": self.path, "name": self.name, "sha256": self.sha256, "format": self.format,
                "container": self.container, "arch": self.arch, "num_params": self.num_params,
                "used_keys": list(self.used_keys), "key_map": dict(self.key_map),
                "dropped": dict(self.dropped), "filled": list(self.filled),
                "metadata": dict(self.metadata), "card": self.card()}

    def record_fields(self) -> dict[str, Any]:
        conv = self.metadata.get("input_convention") or {}
        return {"name": self.name, "path": self.path, "sha256": self.sha256, "format": self.format,
                "arch": self.arch, "method": self.metadata.get("method"),
                "epochs": self.metadata.get("epochs"),
                "label_fraction": self.metadata.get("label_fraction"),
                # the card's identity: the branch and the input convention the numbers came from
                "branch": self.branches()[0],
                "input_convention": convention_identity(conv)}


def convention_identity(conv: dict) -> str | None:
    """``RGB 0-1``, ``BGR 0-255``; RGB weights normalised with other statistics than ImageNet's name
    them (``RGB 0-1 mean 0.5,0.5,0.5 std 0.5,0.5,0.5``), as their numbers come from other inputs."""
    if not conv:
        return None
    from mocobench.checkpoints.convention import is_torchvision

    text = f"{conv['channels']} {conv['scale']}"
    if conv["channels"] == "RGB" and conv["scale"] == "0-1" and not is_torchvision(conv["mean"], conv["std"]):
        text += " mean " + ",".join(f"{v:g}" for v in conv["mean"]) + " std " + ",".join(f"{v:g}" for v in conv["std"])
    return text


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int, inode: int) -> str:
    return sha256_file(path)


def cached_sha256(path: str | os.PathLike) -> str:
    """sha256 of the file, memoised on (path, size, mtime, inode): evaluating one checkpoint on
    several tasks in one process hashes it once."""
    st = os.stat(path)
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
