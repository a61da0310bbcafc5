"""``mocobench convert CKPT --to FORMAT -o OUT``: any readable checkpoint into another engine's format.

Optionally writes the engine's config next to the weights (``--config PROTOCOL``): detectron2
YAML for ``moco-voc-c4-24k``/``coco-{c4,fpn}-{1x,2x}``, MMSegmentation Python for
``fcn-r50-d8-cityscapes-{40k,80k}``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from mocobench.core.errors import UsageError
from mocobench.core.io import atomic_write_text, one_line
from mocobench.core.registry import Registry
from mocobench.checkpoints import CheckpointError, LoadReport, load_backbone
from mocobench.checkpoints.backbones import Backbone
from mocobench.checkpoints.write import save_backbone, to_timm, to_torchvision, write_safetensors, write_state_dict


def _meta(report: LoadReport) -> dict:
    return {"source": report.path, "source_sha256": report.sha256, "source_format": report.format,
            "arch": report.arch, **{k: v for k, v in report.metadata.items() if k != "config"}}


def _detectron2(backbone: Backbone, report: LoadReport, out: Path, args) -> list[Path]:
    from mocobench.transfer.adapters.detectron2 import detectron2_config_text, write_detectron2_pkl

    # the config first: a bad option is refused before anything is written
    config = args.config and detectron2_config_text(args.config, out.resolve(), dataset_root=args.data_root,
                                                    norm=args.norm or "naiveSyncBN")
    written = [write_detectron2_pkl(out, backbone.net.state_dict(), _meta(report))]
    if config:
        written.append(atomic_write_text(_config_out(out, args, ".yaml"), config))
    return written


def _mm(backbone: Backbone, report: LoadReport, out: Path, args) -> list[Path]:
    from mocobench.transfer.adapters.mmseg import mmseg_protocol_config_text, write_mmseg_checkpoint

    config = args.config and mmseg_protocol_config_text(args.config, out.resolve(), data_root=args.data_root,
                                                        arch=report.arch, norm=args.norm or "SyncBN")
    written = [write_mmseg_checkpoint(out, backbone.net.state_dict(), _meta(report))]
    if config:
        written.append(atomic_write_text(_config_out(out, args, ".py"), config))
    return written


def _config_out(out: Path, args, suffix: str) -> Path:
    return Path(args.config_out or out.with_suffix(suffix))


def _mmseg(backbone: Backbone, report: LoadReport, out: Path, args) -> list[Path]:
    """A plain timm ViT gets mmseg's ``VisionTransformer`` names; everything else as mmdet/mmpretrain."""
    if not backbone.single_stride:
        return _mm(backbone, report, out, args)
    from mocobench.transfer.adapters.mmseg_vit import write_mmseg_vit_checkpoint

    if args.config:
        raise ValueError(f"--config: the mmseg configs are FCN-D8 on a ResNet; none for {report.arch} yet")
    return [write_mmseg_vit_checkpoint(out, backbone.net, _meta(report))]


def _torchvision(backbone: Backbone, report: LoadReport, out: Path, args) -> list[Path]:
    return [write_state_dict(out, to_torchvision(backbone.net.state_dict(), report.arch))]


def _timm(backbone: Backbone, report: LoadReport, out: Path, args) -> list[Path]:
    state, _ = to_timm(backbone.net.state_dict(), report.arch)
    return [write_state_dict(out, state)]


def _safetensors(backbone: Backbone, report: LoadReport, out: Path, args) -> list[Path]:
    return [write_safetensors(out, backbone.net.state_dict(), backbone.spec.to_dict(), _meta(report))]


def _mocobench(backbone: Backbone, report: LoadReport, out: Path, args) -> list[Path]:
    return [save_backbone(out, backbone, _meta(report))]


# --to FORMAT -> writer(backbone, report, out, args) -> written paths
WRITERS: Registry[Callable] = Registry("target format", {
    "detectron2": _detectron2,
    "mmseg": _mmseg,
    "mmdet": _mm,
    "mmpretrain": _mm,
    "torchvision": _torchvision,
    "timm": _timm,
    "safetensors": _safetensors,
    "mocobench": _mocobench,
})


# The options that shape an engine config, and the targets that write one with the weights.
CONFIG_OPTIONS = ("config", "config_out", "data_root", "norm")
CONFIG_TARGETS = ("detectron2", "mmseg", "mmdet", "mmpretrain")


def _flag(option: str) -> str:
    return "--" + option.replace("_", "-")


def check_options(ckpt: str, to: str, out: str | Path, *, arch: str | None = None, branch: str | None = None,
                  input_convention: str | None = None, **options) -> None:
    """Refuse (:class:`UsageError`) what the command line gets wrong, before anything is read or
    written: a config option for a target that writes no config, or without ``--config``; a config
    name or norm the target does not know; options a ``random:`` name has no use for."""
    WRITERS.lookup(to)
    unknown = sorted(set(options) - set(CONFIG_OPTIONS))
    if unknown:
        raise UsageError(f"unknown option(s) {', '.join(unknown)} (known: {', '.join(CONFIG_OPTIONS)})")
    given = [k for k in CONFIG_OPTIONS if options.get(k) is not None]
    if given and to not in CONFIG_TARGETS:
        raise UsageError(f"{', '.join(map(_flag, given))}: only --to {', '.join(CONFIG_TARGETS)} write an engine "
                         f"config; --to {to} writes the weights alone")
    if given and not options.get("config"):
        raise UsageError(f"{', '.join(map(_flag, given))} shape(s) the engine config: give --config PROTOCOL too")
    config, norm = options.get("config"), options.get("norm")
    if config:
        from mocobench.transfer.adapters.detectron2 import NORMS as D2_NORMS
        from mocobench.transfer.adapters.detectron2 import PROTOCOLS as D2_PROTOCOLS
        from mocobench.transfer.adapters.mmseg import MMSEG_CONFIGS, MMSEG_NORMS

        names, norms = (D2_PROTOCOLS, D2_NORMS) if to == "detectron2" else (MMSEG_CONFIGS, MMSEG_NORMS)
        if config not in names:
            raise UsageError(f"--config {config}: not a --to {to} config (known: {', '.join(names)})")
        if norm is not None and norm not in norms:
            raise UsageError(f"--norm {norm}: not a --to {to} norm (known: {', '.join(norms)})")
        config_out = options.get("config_out")
        if config_out and Path(config_out).resolve() == Path(out).resolve():
            raise UsageError(f"--config-out {config_out}: is the weights file -o; write the config to another file")
    if str(ckpt).startswith("random:"):
        from mocobench.checkpoints.load import describe

        # the name's form and arch, and options it has no use for (CheckpointUsageError)
        describe(ckpt, arch=arch, branch=branch, input_convention=input_convention)


# targets whose files carry the backbone's spec, so a stride-in-1x1 ResNet reads back as one
SPEC_TARGETS = ("mocobench", "safetensors")


def convert(ckpt: str, to: str, out: str | Path, *, arch: str | None = None, branch: str | None = None,
            input_convention: str | None = None, stride_in_1x1: bool | None = None, **options) -> list[Path]:
    """Python entry point of ``mocobench convert``; ``options``: config, config_out, data_root, norm.

    ``branch``, ``input_convention`` and ``stride_in_1x1`` go to the loader, as ``mocobench inspect``'s do. Every
    option is checked before anything is written (:func:`check_options`, then the writer builds the
    engine config before it writes the weights).
    """
    check_options(ckpt, to, out, arch=arch, branch=branch, input_convention=input_convention, **options)
    targets = [Path(out)] + [Path(options[k]) for k in ("config_out",) if options.get(k)]
    if Path(ckpt).exists() and any(t.exists() and t.resolve() == Path(ckpt).resolve() for t in targets):
        raise ValueError(f"{out}: is the input checkpoint itself; write the conversion to another file")
    backbone, report = load_backbone(ckpt, arch=arch, branch=branch, input_convention=input_convention,
                                     stride_in_1x1=stride_in_1x1)
    refuse_other_convention(backbone, report, f"--to {to}", keeps_spec=to in SPEC_TARGETS)
    args = argparse.Namespace(config=None, config_out=None, data_root=None, norm=None)
    vars(args).update(options)
    return WRITERS[to](backbone, report, Path(out), args)


def refuse_other_convention(backbone, report: LoadReport, target: str, *, keeps_spec: bool = False) -> None:
    """The engines' configs and the other formats assume torchvision's input convention (RGB in
    [0, 1], ImageNet mean/std); weights that expect another (detectron2's BGR 0-255, applied by the
    loader as reversed stem channels and the file's own statistics) would be fed wrongly there.

    They also assume torchvision's Bottleneck (the stride in the 3x3 conv: detectron2's
    ``STRIDE_IN_1X1 False`` in our configs, mmseg's ``style='pytorch'``, torchvision's and timm's
    models), which a state dict cannot override; a backbone with the stride in its 1x1 conv is
    refused unless the target keeps the spec (``keeps_spec``: our own and safetensors files)."""
    from mocobench.checkpoints.convention import is_torchvision

    if backbone.spec.stride_in_1x1 and not keeps_spec:
        why = (report.metadata.get("stride_in_1x1") or {}).get("source", "its spec")
        raise ValueError(f"{report.path}: a {report.arch} with the stride in each stage's first 1x1 conv (MSRA-style: "
                         f"{why}); {target} builds torchvision's layout (the stride in the 3x3 conv, detectron2's "
                         "STRIDE_IN_1X1 False), which would load these weights without an error and compute other "
                         "features, so it is refused: evaluate it with the torchvision engine, or convert it --to "
                         f"{' or '.join(SPEC_TARGETS)}, whose files keep the layout")

    if not is_torchvision(backbone.mean, backbone.std):
        conv = report.metadata.get("input_convention", {})
        raise ValueError(f"{report.path}: its weights expect {conv.get('channels')} pixels on a {conv.get('scale')} "
                         f"scale with mean {conv.get('mean')} and std {conv.get('std')} ({conv.get('source')}); {target} "
                         "assumes torchvision's RGB ImageNet normalisation, so it is refused: evaluate it with the "
                         "torchvision engine, which applies its convention")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mocobench convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpt", help="checkpoint file (any supported format), zoo name or random:ARCH")
    parser.add_argument("--to", required=True, choices=list(WRITERS))
    parser.add_argument("-o", "--out", required=True, help="output weights file")
    parser.add_argument("--arch", help="override arch detection (e.g. resnet50, timm:vit_small_patch16_224)")
    parser.add_argument("--branch", choices=("raw", "ema"), help="a file with raw weights and an EMA copy: which one")
    parser.add_argument("--input-convention", choices=("rgb", "bgr255"),
                        help="what the weights expect, where the file does not say")
    parser.add_argument("--stride-in-1x1", choices=("true", "false"),
                        help="a ResNet-50 or deeper: the stride in each stage's first 1x1 conv (MSRA, detectron2's "
                             "STRIDE_IN_1X1) or not (torchvision), where the file does not say")
    targets = ", ".join(CONFIG_TARGETS)
    parser.add_argument("--config", help=f"also write an engine config for this protocol (--to {targets})")
    parser.add_argument("--config-out", help="config path (default: next to the weights; with --config)")
    parser.add_argument("--data-root", help="dataset root written into the config (with --config)")
    parser.add_argument("--norm", help="norm layer in the config (with --config; detectron2: naiveSyncBN|SyncBN|BN|"
                                       "FrozenBN|GN; mmseg, mmdet, mmpretrain: SyncBN|BN)")
    args = parser.parse_args(argv)
    stride = None if args.stride_in_1x1 is None else args.stride_in_1x1 == "true"
    options = dict(arch=args.arch, branch=args.branch, input_convention=args.input_convention, stride_in_1x1=stride,
                   config=args.config, config_out=args.config_out, data_root=args.data_root, norm=args.norm)
    try:
        written = convert(args.ckpt, args.to, args.out, **options)   # checks every option first
    except UsageError as e:   # a ValueError too: caught first
        print(f"mocobench convert: {one_line(e)}", file=sys.stderr)
        return 2
    except (CheckpointError, ValueError) as e:
        print(f"mocobench convert: {one_line(e)}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    if args.to in ("torchvision", "timm"):
        print(f"load it into the {args.to} model of the same arch; only the classifier is missing")
    return 0
