"""Strict loading: the exact keys and shapes a backbone holds, checked before anything is copied.

The only keys ever filled in are BatchNorm ``num_batches_tracked`` counters that some formats
(detectron2, VISSL) do not store; they are set to 0, their initial value, and listed in the report.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import torch

from mocobench.checkpoints.backbones import Backbone, BackboneSpec, build_backbone, canonical_keys
from mocobench.checkpoints.errors import CheckpointError
from mocobench.checkpoints.skip_init import SkipInit, build_uninitialised


def expected_keys(spec: BackboneSpec) -> dict[str, tuple[int, ...]]:
    """Every parameter and buffer of ``spec``'s backbone with its shape (memoised per spec)."""
    return _expected(json.dumps(spec.to_dict(), sort_keys=True))


@functools.lru_cache(maxsize=None)
def _expected(spec_json: str) -> dict[str, tuple[int, ...]]:
    with SkipInit(meta_only=True):
        return canonical_keys(BackboneSpec.from_dict(json.loads(spec_json)))


def check_state_keys(expected: dict[str, tuple[int, ...]], state: dict[str, Any], source: str) -> None:
    """Raise :class:`CheckpointError` unless ``state`` has exactly ``expected``'s keys and shapes."""
    missing = sorted(set(expected) - set(state))
    if missing:
        shown = ", ".join(missing[:20]) + (f", ... ({len(missing)} in all)" if len(missing) > 20 else "")
        raise CheckpointError(f"{source}: backbone keys missing from the checkpoint: {shown}")
    wrong = [f"{k} (file {tuple(state[k].shape)}, backbone {tuple(shape)})"
             for k, shape in expected.items() if tuple(state[k].shape) != tuple(shape)]
    if wrong:
        raise CheckpointError(f"{source}: shape mismatch for {', '.join(wrong[:10])}")
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise CheckpointError(f"{source}: keys not in the backbone: {', '.join(unexpected[:20])}")


def fill_bn_counters(expected: dict[str, tuple], state: dict) -> list[str]:
    """Set the BatchNorm ``num_batches_tracked`` counters ``state`` lacks to 0; their names.

    The counters are only used when BN's momentum is None; every other key must be in the file.
    """
    filled = []
    for k in expected:
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = torch.zeros((), dtype=torch.long)
            filled.append(k)
    return filled


def strict_load(backbone: Backbone, state: dict[str, torch.Tensor], source: str) -> list[str]:
    """Copy ``state`` into ``backbone.net``; every parameter and buffer must be there with its shape."""
    expected = {k: tuple(v.shape) for k, v in backbone.net.state_dict().items()}
    check_state_keys(expected, state, f"{source} ({backbone.arch})")
    backbone.net.load_state_dict(state, strict=True)
    return sorted(state)


def build_loaded(spec: BackboneSpec, state: dict[str, torch.Tensor], source: str) -> Backbone:
    """The backbone of ``spec`` holding ``state`` (already checked to have exactly its keys).

    The model is built without random initialisation and the file's tensors are assigned into it
    (no copy), cast to the model's dtypes (some releases are stored in fp16).
    """
    backbone = build_uninitialised(spec)
    if backbone is None:
        backbone = build_backbone(spec)
        strict_load(backbone, state, source)
        return backbone
    expected = backbone.net.state_dict()
    check_state_keys({k: tuple(v.shape) for k, v in expected.items()}, state, f"{source} ({spec.arch})")
    state = {k: v if v.dtype == expected[k].dtype else v.to(expected[k].dtype) for k, v in state.items()}
    backbone.net.load_state_dict(state, strict=True, assign=True)
    return backbone
