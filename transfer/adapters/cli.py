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

from mocobench.core.registry import Registry
from mocobench.checkpoints import CheckpointError, LoadReport, load_backbone
from mocobench.checkpoints.backbones import Backbone
from mocobench.checkpoints.write import save_backbone, to_timm, to_torchvision, write_safetensors, write_state_dict


def _meta(report: LoadReport) -> dict:
    return {"source": report.path, "source_sha256": report.sha256, "source_format": report.format,
            "arch": report.arch, **{k: v for k, v in report.metadata.items() if k != "config"}}


def _detectron2(backbone: Backbone, report: LoadReport, out: Path, args) -> list[Path]:
    from mocobench.transfer.adapters.detectron2 import write_detectron2_config, write_detectron2_pkl

    written = [write_detectron2_pkl(out, backbone.net.state_dict(), _meta(report))]
    if args.config:
        cfg_out = Path(args.config_out or out.with_suffix(".yaml"))
        written.append(write_detectron2_config(args.config, out.resolve(), cfg_out, dataset_root=args.data_root,
                                               norm=args.norm or "naiveSyncBN"))
    return written


def _mm(backbone: Backbone, report: LoadReport, out: Path, args) -> list[Path]:
    from mocobench.transfer.adapters.mmseg import write_mmseg_checkpoint, write_mmseg_config

    written = [write_mmseg_checkpoint(out, backbone.net.state_dict(), _meta(report))]
    if args.config:
        cfg_out = Path(args.config_out or out.with_suffix(".py"))
        written.append(write_mmseg_config(args.config, out.resolve(), cfg_out,
                                          data_root=args.data_root, arch=report.arch,
                                          norm=args.norm or "SyncBN"))
    return written


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


def convert(ckpt: str, to: str, out: str | Path, *, arch: str | None = None, **options) -> list[Path]:
    """Python entry point of ``mocobench convert``; ``options``: config, config_out, data_root, norm."""
    WRITERS.lookup(to)
    targets = [Path(out)] + [Path(options[k]) for k in ("config_out",) if options.get(k)]
    if Path(ckpt).exists() and any(t.exists() and t.resolve() == Path(ckpt).resolve() for t in targets):
        raise ValueError(f"{out}: is the input checkpoint itself; write the conversion to another file")
    backbone, report = load_backbone(ckpt, arch=arch)
    refuse_other_convention(backbone, report, f"--to {to}")
    args = argparse.Namespace(config=None, config_out=None, data_root=None, norm=None)
    vars(args).update(options)
    return WRITERS[to](backbone, report, Path(out), args)


def refuse_other_convention(backbone, report: LoadReport, target: str) -> None:
    """The engines' configs and the other formats assume torchvision's input convention (RGB in
    [0, 1], ImageNet mean/std); weights that expect another (detectron2's BGR 0-255, applied by the
    loader as reversed stem channels and the file's own statistics) would be fed wrongly there."""
    from mocobench.checkpoints.convention import is_torchvision

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
    parser.add_argument("--config", help="also write an engine config for this protocol")
    parser.add_argument("--config-out", help="config path (default: next to the weights)")
    parser.add_argument("--data-root", help="dataset root written into the config")
    parser.add_argument("--norm", help="norm layer in the config (detectron2: naiveSyncBN|SyncBN|BN; mmseg: SyncBN|BN)")
    args = parser.parse_args(argv)
    try:
        written = convert(args.ckpt, args.to, args.out, arch=args.arch, config=args.config,
                          config_out=args.config_out, data_root=args.data_root, norm=args.norm)
    except (CheckpointError, ValueError) as e:
        print(f"mocobench convert: {e}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    if args.to in ("torchvision", "timm"):
        print(f"load it into the {args.to} model of the same arch; only the classifier is missing")
    return 0
