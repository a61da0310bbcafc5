"""Frozen-backbone feature extraction and its on-disk cache.

``extract_features`` runs the backbone (eval mode, no grad; bf16 autocast + channels_last on GPU)
over a loader and returns ``N x D`` float32 features, the labels, and how many unreadable images it
skipped. ``cached_features`` wraps it with a cache: one float16 file per (checkpoint, dataset split,
transform) under the cache folder, written atomically, so the second ``fast`` linear probe or kNN
run on the same checkpoint and data reads features from disk and never runs the backbone.

Cache key (sha256 of a JSON document):
- the checkpoint: its file's sha256, or for ``random:ARCH[:SEED]`` the architecture and seed, and a
  digest of the weights as loaded (one file may hold several: ``--branch raw|ema``, and
  ``--input-convention`` flips the stem);
- the dataset split: its resolved path, the hash of its sorted (file, label, size, mtime) list;
- the transform: kind (centre crop / augmented view + view index + seed), img_size, resize,
  mean/std, and ``FEATURE_VERSION`` (bumped whenever the extraction code changes its output).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import torch

from mocobench.core.precision import evaluation_autocast as autocast
from mocobench.core.io import atomic_torch_save, progress
from mocobench.transfer.classification.data import to_device

FEATURE_VERSION = 3   # 3: augmented views drawn per image (data.SeededViews), not per loader


def default_cache_dir() -> Path:
    env = os.environ.get("MOCOBENCH_FEATURE_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mocobench" / "features"


def checkpoint_identity(report, backbone: torch.nn.Module | None = None) -> dict:
    """What identifies the weights: the file's sha256, or a random backbone's arch and seed; with
    ``backbone``, also the digest of the weights it holds (:func:`weights_digest`)."""
    if report.format == "random":
        out = {"random": report.arch, "seed": int(report.metadata.get("seed", 0))}
    elif not report.sha256:
        raise ValueError(f"{report.path}: no sha256 known for this checkpoint, cannot key the feature cache")
    else:
        out = {"sha256": report.sha256}
    if backbone is not None:
        out["weights"] = weights_digest(backbone)
        if getattr(getattr(backbone, "spec", None), "stride_in_1x1", False):
            out["stride_in_1x1"] = True   # the same weights (same digest) with the stride elsewhere: other features
    return out


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 of every tensor of ``module``'s state dict (name, dtype, shape, bytes): the weights a
    file's sha256 does not pin down, as one file may hold a raw and an EMA branch."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}\t{t.dtype}\t{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def files_hash(samples) -> str:
    """Hash of a dataset's sorted ``(path, label)`` list with each file's size and modification time
    (not the pixels): an image rewritten at the same size (a repaired download) is new data, as in
    ``datasets.identity.data_identity``."""
    h = hashlib.sha256()
    for path, label in sorted(samples):
        try:
            st = os.stat(path)
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size, mtime = -1, -1
        # os.fsencode: a file name that is not UTF-8 (undecodable bytes kept as surrogates) hashes as
        # its bytes
        h.update(os.fsencode(path) + f"\t{label}\t{size}\t{mtime}\n".encode())
    return h.hexdigest()


def cache_key(checkpoint: dict, dataset, transform: dict) -> str:
    doc = {"version": FEATURE_VERSION, "checkpoint": checkpoint,
           "dataset": {"root": str(Path(dataset.root).resolve()), "n": len(dataset.samples),
                       "files": files_hash(dataset.samples)},
           "transform": transform}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


@torch.no_grad()
def extract_features(backbone: torch.nn.Module, loader, device: torch.device,
                     desc: str = "features") -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(features N x D float32 on CPU, labels N int64, n_skipped)`` of every readable image."""
    was_training = backbone.training
    backbone.eval()
    feats, labels, skipped = [], [], 0
    total = len(loader.dataset) if hasattr(loader, "dataset") else None
    bar = progress(total=total, desc=desc, unit="img")
    try:
        for batch, n_skipped in loader:
            skipped += n_skipped
            bar.update(n_skipped)
            if batch is None:
                continue
            images, y = batch
            with autocast(device):
                f = backbone(to_device(images, device))  # B x D
            feats.append(f.float().cpu())
            labels.append(y.cpu())
            bar.update(len(y))
    finally:
        bar.close()
        backbone.train(was_training)
    if not feats:
        raise RuntimeError(f"{desc}: no readable image in the dataset")
    return torch.cat(feats), torch.cat(labels).long(), skipped


def cached_features(cache_dir: str | os.PathLike | None, key: str, compute, log=print):
    """``(features float32, labels, n_skipped, hit)``: read ``cache_dir/<key>.pt`` or compute and store.

    ``compute()`` returns ``(features, labels, n_skipped)``. Features are stored in float16 with
    one float32 scale (half the disk and the same probe accuracy); a corrupt cache file is recomputed and overwritten.
    """
    if cache_dir is None:
        f, y, s = compute()
        return f, y, s, False
    path = Path(cache_dir) / f"{key}.pt"
    if path.is_file():
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if obj.get("version") == FEATURE_VERSION and obj.get("key") == key:
                log(f"features: cache hit {path}")
                return (from_half(obj["features"], float(obj["scale"])), obj["labels"].long(),
                        int(obj["n_skipped"]), True)
        except Exception as e:  # noqa: BLE001 - a damaged cache file must never stop a run
            log(f"features: ignoring unreadable cache file {path} ({type(e).__name__}: {e})")
    t0 = time.perf_counter()
    f, y, s = compute()
    half, scale = to_half(f)
    try:
        atomic_torch_save({"version": FEATURE_VERSION, "key": key, "features": half, "scale": scale,
                           "labels": y, "n_skipped": int(s)}, path)
        where = f"cached at {path}"
    except OSError as e:   # a cache only saves time: a full or read-only disk must not cost the features
        import warnings

        where = f"not cached ({e})"
        warnings.warn(f"feature cache {path} could not be written: {e}; going on without it", stacklevel=2)
    log(f"features: {len(y)} x {f.shape[1]} in {time.perf_counter() - t0:.1f} s, {where}")
    # the first run sees the same float16-rounded features as every later cached run
    return from_half(half, scale), y, s, False


def to_half(f: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``(float16 features / scale, scale)``: one scalar scale brings the largest |value| to 1024.

    NOTE: features of some random-init backbones are ~1e-9 (torchvision's MobileNetV2 in eval mode)
    and would all round to 0 in float16; others could exceed float16's 65504. A global scalar keeps
    every probe's answer (kNN normalises, the linear probe standardises) and float16's relative
    precision (~5e-4) everywhere.
    """
    amax = float(f.abs().max())
    scale = amax / 1024.0 if amax > 0 else 1.0
    return (f / scale).half(), scale


def from_half(half: torch.Tensor, scale: float) -> torch.Tensor:
    return half.float() * scale
