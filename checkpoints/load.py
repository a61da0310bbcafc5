"""``load_backbone``: any checkpoint file, zoo name or ``random:ARCH`` into a canonical :class:`Backbone`.

:func:`resolve` reads, detects (``formats.FORMATS``), maps keys (``keymaps``), finds the arch
(stated by the file, or ``arch_guess``) and checks every key and shape (``strict``) without
building the model; :func:`read_checkpoint` then builds and fills it, :func:`inspect_checkpoint`
only counts its parameters.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mocobench.checkpoints.arch_guess import CANDIDATE_ARCHS, HEADS_NOT_IN_SHAPES, guess_arch, vit_img_size
from mocobench.checkpoints.backbones import (BOTTLENECK_RESNETS, Backbone, BackboneSpec, build_backbone, is_timm,
                                             spec_problem)
from mocobench.checkpoints.convention import apply as apply_convention
from mocobench.checkpoints.convention import given_convention, timm_convention, torchvision_convention
from mocobench.checkpoints.errors import CheckpointError, CheckpointUsageError
from mocobench.checkpoints.formats import FORMATS, detect_format, foreign_names
from mocobench.checkpoints.keymaps import map_keys
from mocobench.checkpoints.report import LoadReport, cached_sha256
from mocobench.checkpoints.safe_pickle import read_file
from mocobench.checkpoints.skip_init import build_uninitialised
from mocobench.checkpoints.strict import build_loaded, check_state_keys, expected_keys, fill_bn_counters
from mocobench.checkpoints.zoo import ZOO_PATH, cached_path, load_zoo


def load_backbone(path_or_name: str | os.PathLike, *, arch: str | None = None, branch: str | None = None,
                  input_convention: str | None = None, **build_kwargs) -> tuple[Backbone, LoadReport]:
    """Load a backbone strictly; ``random:ARCH[:SEED]`` builds a seeded random one.

    ``path_or_name`` is a file (any format of ``checkpoints/formats.py``, detected from its
    contents), a zoo name (``moco_v2_800ep``; the file must have been fetched with
    ``mocobench fetch NAME``), or ``random:ARCH[:SEED]``. ``arch`` overrides arch detection.

    ``branch`` (``raw`` | ``ema``) picks between a file's raw weights and its EMA copy, which must be
    said where a file holds both; ``input_convention`` (``rgb`` | ``bgr255``) says what the weights
    expect where the file does not (checkpoints/convention.py).

    ``build_kwargs`` (``dilation``, ``cifar_stem``, ``img_size``, ``stride_in_1x1``) override how the
    backbone is built (segmentation asks for a dilated res5, for instance); they never change
    parameter shapes. ``stride_in_1x1`` says where a Bottleneck ResNet's stride is where the file
    cannot (a detectron2 file of unknown origin); ``None`` leaves it to the file.
    """
    build_kwargs = {k: v for k, v in build_kwargs.items() if v is not None}   # None: the file says
    text = str(path_or_name)
    if text.startswith("random:"):
        report = _random_report(text, arch=arch, branch=branch, input_convention=input_convention)
        return build_backbone(report.arch, seed=report.metadata["seed"], **build_kwargs), report
    path, entry = resolve_name(text)
    backbone, report = read_checkpoint(path, arch=arch or (entry.arch if entry else None), branch=branch,
                                       input_convention=input_convention, **build_kwargs)
    if entry is not None:
        annotate_zoo(report, entry)
    return backbone, report


RANDOM_USAGE = "random:ARCH[:SEED] or random:timm:NAME[:SEED] (e.g. random:resnet50:0)"


def _random_report(text: str, **options: str | None) -> LoadReport:
    """The report of ``random:ARCH[:SEED]`` (``random:timm:NAME[:SEED]``). A name that does not say a
    known arch and an integer seed, or ``options`` (``arch``, ``branch``, ``input_convention``) given
    with it, is a :class:`CheckpointUsageError`: the arch is in the name, and there is no file to
    choose a branch in or to say the convention of, so a command that took them would ignore them."""
    said = [f"--{k.replace('_', '-')}" for k, v in options.items() if v]
    if said:
        raise CheckpointUsageError(f"{', '.join(said)} cannot be used with {text}: a random initialisation's "
                                   f"arch is in its name ({RANDOM_USAGE}) and it has no file to choose in")
    parts = text.split(":")
    if parts[1] == "timm":  # random:timm:vit_small_patch16_224[:seed]
        rand_arch, rest = "timm:" + (parts[2] if len(parts) > 2 else ""), parts[3:]
    else:
        rand_arch, rest = parts[1], parts[2:]
    try:
        seed = int(rest[0]) if len(rest) == 1 else 0 if not rest else None
    except ValueError:
        seed = None
    if rand_arch in ("", "timm:") or seed is None:
        raise CheckpointUsageError(f"{text}: not a random initialisation name; expected {RANDOM_USAGE}")
    problem = spec_problem({"arch": rand_arch})
    if problem:
        raise CheckpointUsageError(f"{text}: {problem}")
    return LoadReport(path=text, name=f"random-{rand_arch.replace(':', '-')}", sha256=None,
                      format="random", arch=rand_arch,
                      metadata={"method": "random-init", "epochs": 0, "seed": seed,
                                "input_convention": torchvision_convention(
                                    "default (a random initialisation, normalised as torchvision's)")})


def describe(path_or_name: str | os.PathLike, *, arch: str | None = None, branch: str | None = None,
             input_convention: str | None = None, **build_kwargs) -> LoadReport:
    """What :func:`load_backbone` would report, without building the backbone or loading weights
    (the file is read, detected and checked): enough to name the checkpoint's record and work
    folder, e.g. to skip a finished evaluation without loading it."""
    build_kwargs = {k: v for k, v in build_kwargs.items() if v is not None}   # None: the file says
    text = str(path_or_name)
    if text.startswith("random:"):
        report = _random_report(text, arch=arch, branch=branch, input_convention=input_convention)
        # what load_backbone would refuse only once it builds: a stride for a ResNet without 1x1 convs
        if build_kwargs.get("stride_in_1x1") and (problem := spec_problem({"arch": report.arch, "stride_in_1x1": True})):
            raise CheckpointUsageError(f"{text}: --stride-in-1x1 true: {problem}")
        return report
    path, entry = resolve_name(text)
    _, _, report = resolve(path, arch=arch or (entry.arch if entry else None), branch=branch,
                           input_convention=input_convention, **build_kwargs)
    if entry is not None:
        annotate_zoo(report, entry)
    return report


def _choose_branch(path: Path, obj: Any, branch: str | None,
                   pairs: tuple[tuple[str, str], ...]) -> tuple[Any, dict[str, str]]:
    """A file with raw weights and an EMA copy (timm's ``state_dict`` and ``state_dict_ema``, DeiT's and
    ConvNeXt's ``model`` and ``model_ema``: the format's ``pairs``): the one ``branch`` names goes under
    the raw entry's name, the other is kept aside as not used (``<raw>_raw``); and why the entry not
    used is dropped. Releases report either, so an unsaid choice is refused; a choice the file does
    not offer is refused too."""
    if branch not in (None, "raw", "ema"):
        raise CheckpointError(f"--branch {branch!r}: one of raw, ema")
    pair = next(((raw, ema) for raw, ema in pairs if isinstance(obj, dict) and isinstance(obj.get(raw), dict)
                 and isinstance(obj.get(ema), dict)), None)
    if pair is None:
        if branch is not None:
            offered = ", ".join(f"{raw} and {ema}" for raw, ema in pairs) or "none in this format"
            raise CheckpointError(f"{path}: --branch {branch}: the file holds no raw/EMA pair to choose from "
                                  f"({offered})")
        return obj, {}
    raw, ema = pair
    if branch is None:
        raise CheckpointError(f"{path}: holds raw weights ({raw}) and an EMA copy ({ema}), and releases report "
                              "either (VAN: 72.0 raw against 75.4 EMA); say which with --branch raw|ema")
    if branch == "raw":
        return obj, {ema: "EMA weights"}
    out = {k: v for k, v in obj.items() if k not in pair}
    return (out | {raw: obj[ema], f"{raw}_raw": obj[raw]},
            {f"{raw}_raw": "raw (non-EMA) weights (--branch ema used the EMA copy)"})


def resolve(path: str | os.PathLike, *, arch: str | None = None, branch: str | None = None,
            input_convention: str | None = None, **build_kwargs):
    """``(spec, state, report)``: the file read, detected, mapped and checked; no weights loaded.

    ``state`` has exactly the backbone's canonical keys and shapes (else :class:`CheckpointError`
    naming the keys); ``report.num_params`` is still 0.
    """
    path = Path(path)
    obj, container = read_file(path)
    problem = foreign_names(obj)
    if problem:
        raise CheckpointError(f"{path}: {problem}")
    fmt = detect_format(obj)
    if fmt is None:
        top = sorted(map(str, obj))[:12] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: unrecognised checkpoint layout (container {container}; "
                              f"top-level keys: {top}); known formats: {', '.join(FORMATS)}")
    obj, unused = _choose_branch(path, obj, branch, fmt.ema_pairs)
    state, top_dropped = fmt.weights(obj)
    top_dropped |= unused
    try:
        convention = given_convention(input_convention) if input_convention else fmt.convention(obj, state)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    problem = fmt.refuse(state)
    if problem:
        raise CheckpointError(f"{path}: {problem}")
    try:
        metadata = {k: v for k, v in fmt.metadata(obj, state).items() if v is not None}
        mapped, key_map, dropped, classifier = map_keys(state, fmt.keep, fmt.drop, fmt.rules, fmt.heads)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: detected as {fmt.name}, but {e}") from None
    if not mapped:
        raise CheckpointError(f"{path}: detected as {fmt.name} ({fmt.saved_by}) but no backbone "
                              f"weights were found under {fmt.keep}")
    mapped = {name: _to_tensor(path, k, state[k]) for k, name in key_map.items()}
    _refuse_non_finite(path, mapped)
    spec, arch_source, stride = _spec(path, fmt, obj, state, metadata, mapped, arch, build_kwargs)
    try:
        if not input_convention and fmt.timm_convention and is_timm(spec.arch):
            convention = timm_convention(path, spec.arch) or convention
        mean, std = apply_convention(convention, mapped, spec.arch)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    expected = expected_keys(spec)
    for k, name in classifier.items():   # the backbone's own keys under a classifier's name (ConvNeXt's head.norm)
        if name in expected:
            if name in mapped:
                raise CheckpointError(f"{path}: file keys {next(f for f, n in key_map.items() if n == name)!r} and "
                                      f"{k!r} both map to the backbone key {name!r}; refusing to let one replace the other")
            mapped[name], key_map[k] = _to_tensor(path, k, state[k]), name
            _refuse_non_finite(path, {name: mapped[name]})
            del dropped[k]
    metadata["input_convention"] = convention | {"applied_mean": list(mean), "applied_std": list(std)}
    if stride is not None:
        metadata["stride_in_1x1"] = stride
    filled = fill_bn_counters(expected, mapped)
    check_state_keys(expected, mapped, f"{path} ({fmt.name}, arch {spec.arch})")
    report = LoadReport(path=str(path), name=path.stem, sha256=cached_sha256(path),
                        format=fmt.label(spec.arch) if fmt.label else fmt.name, arch=spec.arch,
                        used_keys=sorted(mapped), dropped=top_dropped | dropped, metadata=metadata,
                        key_map=key_map, filled=filled, container=container,
                        format_why=f"{fmt.saved_by} (detected from the file's keys)", arch_source=arch_source)
    return spec, mapped, report


def _refuse_non_finite(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        # A diverged run's weights give features of NaN and a meaningless (yet written) result.
        raise CheckpointError(f"{path}: {len(bad)} backbone tensor(s) hold NaN or infinite values, e.g. "
                              f"{', '.join(sorted(bad)[:5])}; refusing to evaluate a diverged checkpoint")


def _to_tensor(path: Path, key: str, v: Any) -> torch.Tensor:
    """A weight of the file as a tensor: numpy arrays and scalars (detectron2 ``.pkl`` files) are
    converted (0-d stays 0-d; a read-only buffer is copied); anything else is refused by name."""
    if isinstance(v, np.generic):
        v = np.asarray(v)
    if isinstance(v, np.ndarray):
        if v.dtype.kind not in "biuf":
            raise CheckpointError(f"{path}: the file key {key!r} holds a numpy array of dtype {v.dtype}, not numbers")
        return torch.from_numpy(np.require(v, requirements=("C", "W")))
    if not isinstance(v, torch.Tensor):
        raise CheckpointError(f"{path}: the file key {key!r} holds a {type(v).__name__}, not a tensor or array")
    return v


def _spec(path: Path, fmt, obj: dict, state: dict, metadata: dict, mapped: dict, arch: str | None,
          build_kwargs: dict) -> tuple[BackboneSpec, str, dict | None]:
    """How to build the backbone: what the file states (``arch=`` replaces its arch), else the
    guessed arch with the ViT input size its position embedding implies; how the arch was decided
    (the card's ``arch_source``); and for a Bottleneck ResNet where its stride is and what says so
    (``{"value", "source"}``, else None)."""
    try:
        stated = fmt.spec(obj, metadata)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    source = ("given (--arch or the zoo entry)" if arch else "stated by the file" if (stated or {}).get("arch")
              else "guessed from the backbone's key shapes (arch_guess)")
    guessed = not arch and not (stated or {}).get("arch")
    arch = arch or (stated or {}).get("arch")
    if arch is None:
        shapes = {k: tuple(v.shape) for k, v in mapped.items()}
        arch, _ = guess_arch(shapes, metadata.get("arch"))
        if arch is None:
            raise CheckpointError(f"{path}: detected as {fmt.name}, but its {len(mapped)} backbone keys "
                                  f"match no known architecture ({', '.join(CANDIDATE_ARCHS)}); pass arch=")
    if stated:
        fields = dict(stated) | {"arch": arch}
    else:
        shapes = {k: tuple(v.shape) for k, v in mapped.items() if k in ("pos_embed", "patch_embed.proj.weight")}
        fields = {"arch": arch, "img_size": vit_img_size(arch, shapes), "extra": fmt.extra(arch)}
    if is_timm(arch) and fields.get("img_size") is None and "patch_embed.proj.weight" in mapped:
        fields["img_size"] = 224
    given = {k: v for k, v in build_kwargs.items() if v is not None}
    fields = fields | given
    if guessed and arch in HEADS_NOT_IN_SHAPES and not fmt.says_whose_model \
            and "timm_kwargs" not in (fields.get("extra") or {}):
        names, why = HEADS_NOT_IN_SHAPES[arch]
        hint = metadata.get("arch")
        if not (isinstance(hint, str) and hint.split(".")[0] in names):
            raise CheckpointError(
                f"{path}: a {arch} state dict ({fmt.name}), but its shapes do not say how many attention heads it "
                f"has ({why}) and the file does not say whose model it is; give --arch {arch} for timm's "
                "(MoCo v3's are read from its own checkpoint files, or with load_backbone(..., "
                "extra={'timm_kwargs': {'num_heads': 12}}))")
    stride = None
    if arch in BOTTLENECK_RESNETS:
        if "stride_in_1x1" in given:
            stride = {"value": bool(given["stride_in_1x1"]), "source": "given (--stride-in-1x1)"}
        elif stated:
            stride = {"value": bool(stated.get("stride_in_1x1", False)), "source": "stated by the file (its spec)"}
        else:
            value, why = fmt.stride_in_1x1(obj, state)
            if value is None:
                raise CheckpointError(
                    f"{path}: detected as {fmt.name} ({arch}), but where its blocks' stride is cannot be decided: "
                    f"{why}; say it with --stride-in-1x1 true (MSRA-style, stride in the 1x1 conv) or false "
                    "(torchvision-style, in the 3x3 conv) to mocobench eval, preflight, inspect or convert, or "
                    "load_backbone(..., stride_in_1x1=...)")
            stride = {"value": value, "source": why}
        fields["stride_in_1x1"] = stride["value"]
    elif given.get("stride_in_1x1"):
        raise CheckpointError(f"{path}: --stride-in-1x1 true for {arch}: only Bottleneck ResNets "
                              f"({', '.join(BOTTLENECK_RESNETS)}) have a 1x1 conv to put the stride in")
    return BackboneSpec.from_dict(fields), source, stride


def read_checkpoint(path: str | os.PathLike, *, arch: str | None = None, branch: str | None = None,
                    input_convention: str | None = None, **build_kwargs):
    """``(backbone, report)``: :func:`resolve`, then build the backbone and load it strictly."""
    spec, state, report = resolve(path, arch=arch, branch=branch, input_convention=input_convention, **build_kwargs)
    backbone = build_loaded(spec, state, str(path))
    conv = report.metadata["input_convention"]
    backbone.mean, backbone.std = tuple(conv["applied_mean"]), tuple(conv["applied_std"])
    report.num_params = sum(p.numel() for p in backbone.net.parameters())
    return backbone, report


def inspect_checkpoint(path: str | os.PathLike, *, arch: str | None = None, branch: str | None = None,
                       input_convention: str | None = None, **build_kwargs) -> LoadReport:
    """The report of :func:`read_checkpoint` without loading weights (the backbone is built
    uninitialised, only to count parameters)."""
    spec, _, report = resolve(path, arch=arch, branch=branch, input_convention=input_convention, **build_kwargs)
    backbone = build_uninitialised(spec) or build_backbone(spec)
    report.num_params = sum(p.numel() for p in backbone.net.parameters())
    return report


def resolve_name(text: str):
    """``(path, zoo entry or None)`` for a file path (its entry where it is a fetched zoo file) or a zoo
    name (which must be fetched already)."""
    path = Path(text)
    if path.exists() or os.sep in text or "/" in text:
        return path, fetched_entry(path)
    zoo = load_zoo()
    if text not in zoo:
        raise CheckpointError(f"{text}: no such file, and not a checkpoint name in {ZOO_PATH} "
                              f"(known: {', '.join(zoo)})")
    entry = zoo[text]
    cached = cached_path(entry)
    if not cached.is_file():
        raise CheckpointError(f"{text}: zoo checkpoint not downloaded yet; run "
                              f"'mocobench fetch {text}' (it goes to {cached})")
    return cached, entry


def fetched_entry(path: Path):
    """The zoo entry whose fetched file ``path`` is, else None. ``fetch`` checked the file against the
    entry's hashes when it put it there, so the file keeps the entry's identity when it is named by
    its path (as the pipeline names its reference checkpoints) rather than by the entry's name."""
    if not path.is_file():
        return None
    for entry in load_zoo().values():
        cached = cached_path(entry)
        if cached.is_file() and os.path.samefile(cached, path):
            return entry
    return None


def annotate_zoo(report: LoadReport, entry) -> None:
    report.name = entry.name
    stated = {"method": entry.method, "epochs": entry.epochs, "label_fraction": entry.label_fraction}
    report.metadata = {k: v for k, v in stated.items() if v is not None} | report.metadata
    report.metadata["zoo"] = entry.to_dict()
