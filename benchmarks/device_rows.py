"""The device check's rows at the papers' downstream sizes (issue 29): the real engines through our
commands, the linear protocol's step, and the Transformer presets' pretraining step.

- ``engines``: ``mocobench eval detection --engine detectron2`` (Faster R-CNN R50-C4 on VOC,
  ``moco-voc-c4-24k``; Mask R-CNN R50-C4 on COCO, ``coco-c4-1x``) and ``mocobench eval segmentation
  --engine mmseg`` (FCN R50-D8 on Cityscapes at 769 x 769 crops, ``mmseg-fcn-40k``), each for a few
  dozen iterations at the papers' per-GPU size (2 images of 800 px; 2 crops of 769) on the
  embedded dataset (``--scale tiny``, its images resized to those sizes by the engines' own
  pipelines). The rate is the engine's own: detectron2's "Overall training speed" (its first
  iterations left out) and the mean of mmengine's per-iteration ``time`` after the first three.
- ``linear``: one step of the ``paper`` linear protocol: the frozen ResNet-50's forward without
  gradients (as ``transfer.classification.linear.train_linear_paper`` runs it) and the fc's SGD step.
- ``transformers``: MoCo v2 and SMoG pretraining steps on ViT-S/16 and Swin-T (the Transformer
  presets; MoCo v2 on Swin-T is its ViT-S/16 preset on Swin-T), bf16, random views.

Every row carries ``gpu_h_paper``: the GPU-hours of the paper's whole schedule at the row's rate
(its iterations times the GPUs the schedule's batch takes at the row's per-GPU size, at perfect
scaling), and ``paper_schedule`` saying what that is.
"""

from __future__ import annotations

import dataclasses
import re
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F

IMAGENET_TRAIN = 1_281_167


@dataclasses.dataclass(frozen=True)
class RowSizes:
    engine_iters: int         # iterations of each engine row (detectron2's timer leaves out its first 3)
    det_args: tuple           # the detection protocol's size fields for the engine rows
    seg_args: tuple           # the segmentation protocol's size fields
    det_per_gpu: int          # images per iteration in the engine rows (one GPU's share of the batch)
    seg_per_gpu: int
    linear_arch: str
    linear_img: int
    transformers: dict        # label -> timm arch
    transformer_img: int


FULL_ROWS = RowSizes(
    engine_iters=40,
    det_args=("--ims_per_batch=2", "--min_size_train=800", "--max_size_train=1333", "--num_workers=8"),
    seg_args=("--crop=769x769", "--batch-size=2", "--num-workers=8"),
    det_per_gpu=2, seg_per_gpu=2, linear_arch="resnet50", linear_img=224,
    transformers={"ViT-S/16": "timm:vit_small_patch16_224", "Swin-T": "timm:swin_tiny_patch4_window7_224"},
    transformer_img=224)
# NOTE: on a CPU the engines run at the sizes of their tests (64 px, few proposals): the rows check
# that every path runs, their rates are no measurement. timm has no test-sized Swin; the smoke run
# registers one (timm's SwinTransformer at a fraction of Swin-T's width and depth, test_swin below).
SMOKE_ROWS = RowSizes(
    engine_iters=5,
    det_args=("--ims_per_batch=2", "--min_size_train=64", "--max_size_train=112", "--min_size_test=64",
              "--max_size_test=112", "--rpn_pre_nms_top_n_train=100", "--rpn_post_nms_top_n_train=20",
              "--rpn_pre_nms_top_n_test=50", "--rpn_post_nms_top_n_test=10", "--roi_batch_size_per_image=8",
              "--rpn_batch_size_per_image=32", "--precise_bn_iters=1", "--num_workers=0", "--warmup_iters=1"),
    seg_args=("--crop=64x64", "--batch-size=2", "--num-workers=0"),
    det_per_gpu=2, seg_per_gpu=2, linear_arch="timm:test_resnet", linear_img=32,
    transformers={"ViT-S/16": "timm:test_vit", "Swin-T": "timm:mocobench_test_swin"},
    transformer_img=32)


def register_test_swin() -> None:
    """``timm:mocobench_test_swin``: Swin-T's architecture (patch 4, windows, shifted windows, patch
    merging) with width 16, one block per stage and 2 px windows, for the CPU smoke run."""
    import inspect

    import timm
    from timm.models import register_model
    from timm.models.swin_transformer import SwinTransformer

    if "mocobench_test_swin" in timm.list_models("mocobench_*"):
        return

    def mocobench_test_swin(pretrained: bool = False, **kwargs):
        small = {"embed_dim": 16, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1), "window_size": 2}
        takes = inspect.signature(SwinTransformer).parameters   # not timm's pretrained_cfg and the like
        return SwinTransformer(**{**small, **{k: v for k, v in kwargs.items() if k in takes}})

    register_model(mocobench_test_swin)


def _eval(argv: list[str]) -> None:
    from mocobench.cli import main

    rc = main(argv)
    if rc:
        raise RuntimeError(f"mocobench {' '.join(argv[:2])} exited {rc}")


def _device_arg(device: torch.device) -> str:
    return "cpu" if device.type == "cpu" else f"cuda:{device.index or 0}"


def detectron2_rate(log: str) -> tuple[float, float | None]:
    """``(seconds per iteration, peak GiB or None)`` from detectron2's ``log.txt``: the IterationTimer's
    "Overall training speed" (its warm-up iterations left out) and the last ``max_mem``."""
    speed = re.findall(r"Overall training speed: \d+ iterations in \S+ \(([\d.]+) s / it\)", log)
    if not speed:
        raise RuntimeError("detectron2's log has no 'Overall training speed' line (fewer than 4 iterations?)")
    mem = re.findall(r"max_mem: (\d+)M", log)
    return float(speed[-1]), (round(int(mem[-1]) / 1024, 2) if mem else None)


def mmengine_rate(log: str, skip: int = 3) -> tuple[float, float | None]:
    """``(seconds per iteration, peak GiB or None)`` from mmengine's log: the mean ``time`` of the
    ``Iter(train)`` lines after the first ``skip`` and the largest ``memory`` (MB)."""
    lines = [ln for ln in log.splitlines() if "Iter(train)" in ln]
    times = [float(m.group(1)) for ln in lines if (m := re.search(r"\btime: ([\d.]+)", ln))]
    if len(times) <= skip:
        raise RuntimeError(f"mmengine's log has {len(times)} training iterations with a time; need more than {skip}")
    mem = [int(m.group(1)) for ln in lines if (m := re.search(r"\bmemory: (\d+)", ln))]
    return statistics.fmean(times[skip:]), (round(max(mem) / 1024, 2) if mem else None)


def detectron2_row(protocol: str, dataset: str, data: Path, work: Path, rs: RowSizes, device: torch.device) -> dict:
    from mocobench.transfer.detection.protocols import PROTOCOLS

    run = work / f"detectron2-{protocol}"
    _eval(["eval", "detection", "--checkpoint", "random:resnet50", "--dataset", dataset,
           "--data", str(data / "VOCdevkit" if dataset == "voc" else data), "--protocol", protocol,
           "--engine", "detectron2", "--results", str(run / "results"), "--work-dir", str(run / "work"),
           f"--max_iter={rs.engine_iters}", *rs.det_args, "--device", _device_arg(device)])
    (log,) = (run / "work").rglob("log.txt")
    s_it, peak = detectron2_rate(log.read_text())
    p = PROTOCOLS[protocol]
    gpus = p.ims_per_batch // rs.det_per_gpu
    return {"it_s": 1 / s_it, "img_s": rs.det_per_gpu / s_it, "peak_mem_gib": peak,
            "gpu_h_paper": p.max_iter * gpus * s_it / 3600,
            "paper_schedule": f"{p.max_iter} iterations of {p.ims_per_batch} images ({gpus} GPUs x {rs.det_per_gpu})"}


def mmseg_row(data: Path, work: Path, rs: RowSizes, device: torch.device) -> dict:
    from mocobench.transfer.segmentation.protocols import get_protocol

    run = work / "mmseg-fcn-cityscapes"
    _eval(["eval", "segmentation", "--checkpoint", "random:resnet50", "--dataset", "cityscapes",
           "--data", str(data / "cityscapes"), "--protocol", "mmseg-fcn-40k", "--engine", "mmseg",
           "--results", str(run / "results"), "--work-dir", str(run / "work"), f"--iters={rs.engine_iters}",
           "--log-every=1", f"--checkpoint-every={rs.engine_iters}", *rs.seg_args, "--device", _device_arg(device)])
    logs = sorted((run / "work").rglob("20*/20*.log"))   # mmengine: WORK/<run>/<timestamp>/<timestamp>.log
    if not logs:
        raise RuntimeError(f"{run / 'work'}: no mmengine log")
    s_it, peak = mmengine_rate(logs[-1].read_text())
    p = get_protocol("mmseg-fcn-40k", "cityscapes")
    moco = get_protocol("moco-fcn", "cityscapes")
    gpus, moco_gpus = p.batch_size // rs.seg_per_gpu, moco.batch_size // rs.seg_per_gpu
    return {"it_s": 1 / s_it, "img_s": rs.seg_per_gpu / s_it, "peak_mem_gib": peak,
            "gpu_h_paper": p.iters * gpus * s_it / 3600,
            "paper_schedule": f"mmseg-fcn-40k: {p.iters} iterations of {p.batch_size} crops ({gpus} GPUs x "
                              f"{rs.seg_per_gpu}); MoCo's moco-fcn ({moco.iters} x {moco.batch_size} crops of 769) at this "
                              f"rate: {moco.iters * moco_gpus * s_it / 3600:.1f} GPU-h"}


def linear_row(batch: int, rs: RowSizes, device: torch.device, warmup: int, steps: int) -> dict:
    from mocobench.checkpoints.backbones import build_backbone
    from mocobench.core.precision import evaluation_autocast as autocast
    from mocobench.transfer.classification.linear import init_fc
    from mocobench.transfer.classification.data import prepare_model
    from mocobench.transfer.classification.protocols import PROTOCOLS

    from benchmarks.timing import peak_gib, reset_peak, sgd_step, timed

    cfg = PROTOCOLS["linear"]["paper"]
    backbone = prepare_model(build_backbone(rs.linear_arch, seed=0), device).eval().requires_grad_(False)
    fc = init_fc(backbone.num_features, 1000, cfg.fc_init_std).to(device)
    opt = torch.optim.SGD(fc.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    x = torch.randn(batch, 3, rs.linear_img, rs.linear_img, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 1000, (batch,), device=device)

    def step():
        with torch.no_grad(), autocast(device):
            feats = backbone(x)
        sgd_step(opt, F.cross_entropy(fc(feats.float()), y))

    reset_peak(device)
    r = {**timed(step, warmup, steps, device, batch), "peak_mem_gib": peak_gib(device)}
    return {**r, "gpu_h_paper": cfg.epochs * IMAGENET_TRAIN / r["img_s"] / 3600,
            "paper_schedule": f"{cfg.epochs} epochs of ImageNet's train set (augmented images through the frozen backbone)"}


TRANSFORMER_ROWS = (("moco_v2", "ViT-S/16", "moco_v2_vit_s_300ep"), ("moco_v2", "Swin-T", "moco_v2_vit_s_300ep"),
                    ("smog", "ViT-S/16", "smog_vit_s_300ep"), ("smog", "Swin-T", "smog_swin_t_300ep"))


def transformer_config(method: str, label: str, preset: str, sz, rs: RowSizes, device: torch.device):
    from mocobench.pretrain.config import PRESETS

    cfg = PRESETS[preset]
    smog = sz.smog if method == "smog" else {}
    # the preset's lr is for its batch; scaled linearly to the row's, as the papers do
    return dataclasses.replace(cfg, arch=rs.transformers[label], img_size=rs.transformer_img, batch_size=sz.batch,
                               K=sz.K, lr=cfg.lr * sz.batch / cfg.batch_size, device=str(device), precision="bf16",
                               channels_last=False, compile="off", **smog)


def transformer_row(cfg, sz, device: torch.device, model_step) -> dict:
    r = model_step(cfg, sz, device)
    return {**r, "gpu_h_paper": cfg.epochs * IMAGENET_TRAIN / r["img_s"] / 3600,
            "paper_schedule": f"{cfg.epochs} epochs of ImageNet, model step only (random views; no input path)"}


def rows(data: Path, work: Path, sz, rs: RowSizes, device: torch.device, model_step):
    """``(section, method, variant, pipeline, run)`` of every row of this module, in order;
    ``model_step(cfg, sizes, device)``: the device check's pretraining step row."""
    if "timm:mocobench_test_swin" in rs.transformers.values():
        register_test_swin()
    for protocol, dataset, model in (("moco-voc-c4-24k", "voc", "Faster R-CNN R50-C4"),
                                     ("coco-c4-1x", "coco", "Mask R-CNN R50-C4")):
        yield ("engines", f"detectron2 {model}", protocol, f"{rs.det_per_gpu} images per iteration",
               lambda protocol=protocol, dataset=dataset: detectron2_row(protocol, dataset, data, work, rs, device))
    yield ("engines", "mmseg FCN R50-D8", "mmseg-fcn-40k, Cityscapes", f"{rs.seg_per_gpu} crops per iteration",
           lambda: mmseg_row(data, work, rs, device))
    yield ("linear", rs.linear_arch, "paper protocol step", f"batch {sz.batch}, frozen backbone",
           lambda: linear_row(sz.batch, rs, device, sz.model_warmup, sz.model_steps))
    for method, label, preset in TRANSFORMER_ROWS:
        cfg = transformer_config(method, label, preset, sz, rs, device)
        yield ("transformers", method, f"{label}, bf16", f"{preset}, random views", lambda cfg=cfg: transformer_row(cfg, sz, device, model_step))


def make_data(work: Path) -> Path:
    """The embedded dataset at its tiny scale (VOC, COCO and Cityscapes layouts), in seconds."""
    from mocobench.datasets.cli import main

    out = work / "synth"
    if main(["synth", "--out", str(out), "--scale", "tiny"]):
        raise RuntimeError(f"could not generate the embedded dataset in {out}")
    return out
