"""Detection fine-tuning protocols: one frozen dataclass, presets as plain values.

The MoCo presets follow the official MoCo detection configs (``detection/configs/`` of
facebookresearch/moco, on top of detectron2's defaults):

- ``Base-RCNN-C4-BN.yaml``: R50-C4, ``Res5ROIHeadsExtraNorm``, SyncBN everywhere, ``FREEZE_AT 0``,
  RGB input with ImageNet mean/std (torchvision-style checkpoints), batch 16, lr 0.02,
  precise BN before testing;
- ``pascal_voc_R_50_C4_24k_moco.yaml``: VOC07+12 trainval -> VOC07 test, 24k iterations, steps
  18k/22k, warmup 100, train short side 480..800 step 32, test 800;
- ``coco_R_50_C4_{1x,2x}_moco.yaml``: Mask R-CNN C4, 90k (60k/80k) or 180k (120k/160k)
  iterations, train short side 640..800 step 32, test 800;
- ``coco_R_50_FPN_{1x,2x}_moco.yaml``: Mask R-CNN FPN with SyncBN in FPN and heads (4conv1fc box
  head, 4-conv mask head).

``tiny`` is this project's CPU protocol for the embedded dataset and the tests: ResNet-sized
settings shrunk to ~100 px images and a short schedule. Its numbers are smoke figures, not
comparable with the papers'.

Overrides: ``resolve_protocol("moco-voc-c4-24k", {"max_iter": "200"})``; the resolved protocol
goes into every result record.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mocobench.core.overrides import given_fields, parse_overrides
from mocobench.core.registry import Registry
from mocobench.core.schedules import Schedule, check_steps, steps_kept
from mocobench.core.settings import AT_LEAST_0, AT_LEAST_1, POSITIVE, UNIT, UNIT_OPEN_TOP, setting
from mocobench.core.settings import preset_changes as changes_from


class ProtocolError(ValueError):
    """An unknown protocol or a bad override; the message says which."""


@dataclass(frozen=True)
class DetectionProtocol:
    name: str
    dataset: str                      # "voc" | "coco" | "any" (tiny runs on both)
    model: str = "c4"                 # "c4" | "fpn"
    mask_on: bool | None = None       # None: masks for COCO, boxes only for VOC
    # -- solver (detectron2's SOLVER.*), for ``reference_batch`` images per iteration --
    ims_per_batch: int = setting(16, range=AT_LEAST_1)
    reference_batch: int = setting(16, range=AT_LEAST_1)  # lr is scaled linearly by ims_per_batch / reference_batch
    base_lr: float = setting(0.02, range=POSITIVE)
    momentum: float = setting(0.9, range=UNIT_OPEN_TOP)
    weight_decay: float = setting(1e-4, range=AT_LEAST_0)
    max_iter: int = setting(24000, range=AT_LEAST_1)
    steps: tuple[int, ...] = setting((18000, 22000), range=AT_LEAST_0)
    gamma: float = setting(0.1, range=POSITIVE)
    warmup_iters: int = setting(100, range=AT_LEAST_0)
    warmup_factor: float = setting(0.001, range=UNIT)      # linear warmup from base_lr * warmup_factor
    # -- input (INPUT.*): the short side is drawn from min_size_train, the long side capped --
    min_size_train: tuple[int, ...] = setting(tuple(range(480, 801, 32)), range=AT_LEAST_1)
    max_size_train: int = setting(1333, range=AT_LEAST_1)
    min_size_test: int = setting(800, range=AT_LEAST_1)
    max_size_test: int = setting(1333, range=AT_LEAST_1)
    hflip: bool = True
    # -- model (MODEL.*) --
    anchor_sizes: tuple[int, ...] = setting((32, 64, 128, 256, 512), range=AT_LEAST_1)
    fpn_channels: int = setting(256, range=AT_LEAST_1)  # FPN.OUT_CHANNELS, also the FPN box/mask head convs' width
    aspect_ratios: tuple[float, ...] = setting((0.5, 1.0, 2.0), range=POSITIVE)
    rpn_pre_nms_top_n_train: int = setting(12000, range=AT_LEAST_1)
    rpn_post_nms_top_n_train: int = setting(2000, range=AT_LEAST_1)
    rpn_pre_nms_top_n_test: int = setting(6000, range=AT_LEAST_1)
    rpn_post_nms_top_n_test: int = setting(1000, range=AT_LEAST_1)
    rpn_batch_size_per_image: int = setting(256, range=AT_LEAST_1)
    roi_batch_size_per_image: int = setting(512, range=AT_LEAST_1)
    roi_pool_size: int = setting(14, range=AT_LEAST_1)  # C4 only: RoIAlign output (res5 halves it); FPN uses 7 / 14
    score_thresh_test: float = setting(0.05, range=UNIT)
    nms_thresh_test: float = setting(0.5, range=UNIT)
    detections_per_img: int = setting(100, range=AT_LEAST_1)
    # backbone BN frozen (statistics and affine kept as loaded: detectron2's FrozenBN, its default for
    # ImageNet-supervised backbones) instead of fine-tuned (the MoCo protocols: SyncBN)
    frozen_bn: bool = False
    # -- test --
    precise_bn_iters: int = setting(200, range=AT_LEAST_0)       # TEST.PRECISE_BN (0: off)
    # -- run --
    checkpoint_period: int = setting(5000, range=AT_LEAST_1, run=True)
    num_workers: int = setting(4, range=AT_LEAST_0, run=True)
    bf16: bool = True                 # autocast on GPU only

    @property
    def train_sets(self) -> tuple[tuple[str, str], ...]:
        return (("2007", "trainval"), ("2012", "trainval"))

    def uses_masks(self, dataset: str) -> bool:
        return self.mask_on if self.mask_on is not None else dataset == "coco"

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def lr_schedule(self) -> Schedule:
        """detectron2's WarmupMultiStepLR: a linear warmup from ``warmup_factor``, times ``gamma``
        at each step, by iteration (the rate it multiplies is linearly scaled by the batch)."""
        return Schedule("step", self.max_iter, steps=tuple(self.steps), gamma=self.gamma,
                        warmup=self.warmup_iters, warmup_start=self.warmup_factor)


MOCO_VOC_C4_24K = DetectionProtocol(name="moco-voc-c4-24k", dataset="voc")

_COCO = dict(dataset="coco", min_size_train=tuple(range(640, 801, 32)), mask_on=True)
COCO_C4_1X = DetectionProtocol(name="coco-c4-1x", max_iter=90000, steps=(60000, 80000),
                               warmup_iters=1000, **_COCO)
COCO_C4_2X = DetectionProtocol(name="coco-c4-2x", max_iter=180000, steps=(120000, 160000),
                               warmup_iters=1000, **_COCO)
_FPN = dict(model="fpn", rpn_pre_nms_top_n_train=2000, rpn_post_nms_top_n_train=1000,
            rpn_pre_nms_top_n_test=1000, rpn_post_nms_top_n_test=1000)
COCO_FPN_1X = DetectionProtocol(name="coco-fpn-1x", max_iter=90000, steps=(60000, 80000),
                                warmup_iters=1000, **_COCO, **_FPN)
COCO_FPN_2X = DetectionProtocol(name="coco-fpn-2x", max_iter=180000, steps=(120000, 160000),
                                warmup_iters=1000, **_COCO, **_FPN)

# CPU smoke protocol for the embedded dataset (~100-160 px scenes, objects of 8-60 px), sized
# for ResNet-18 on 2 cores: 2 images per iteration, 16 RoIs per image pooled 6x6 (res5 on every RoI
# is most of the C4 detector's cost), 80 iterations.
TINY = DetectionProtocol(
    name="tiny", dataset="any", ims_per_batch=2, reference_batch=2, base_lr=0.01, max_iter=80,
    steps=(60,), warmup_iters=10, min_size_train=(112, 128, 144), max_size_train=240,
    min_size_test=128, max_size_test=240, anchor_sizes=(16, 32, 64, 128),
    rpn_pre_nms_top_n_train=400, rpn_post_nms_top_n_train=100, rpn_pre_nms_top_n_test=200,
    rpn_post_nms_top_n_test=50, rpn_batch_size_per_image=64, roi_batch_size_per_image=16,
    roi_pool_size=6, detections_per_img=50, precise_bn_iters=4, checkpoint_period=1000, num_workers=0)

# the same with an FPN detector: for backbones that are not torchvision ResNets (timm CNNs,
# MobileNetV2), e.g. the CPU pipeline's timm:test_resnet
# (64-channel FPN: at 256 the FPN, RPN and 4-conv box head cost ~100 s per CPU run, against ~20 s)
TINY_FPN = dataclasses.replace(TINY, name="tiny-fpn", model="fpn", fpn_channels=64)

PROTOCOLS = Registry("detection protocol", {p.name: p for p in (MOCO_VOC_C4_24K, COCO_C4_1X, COCO_C4_2X, COCO_FPN_1X,
                                                                 COCO_FPN_2X, TINY, TINY_FPN)})


def resolve_protocol(name: str, overrides: dict[str, str] | None = None) -> DetectionProtocol:
    """The preset ``name`` with ``--key=value`` overrides (``mocobench.core.overrides``' rules) applied."""
    try:
        PROTOCOLS.lookup(name)
        changes = parse_overrides(DetectionProtocol, overrides or {}, exclude=("name",))
        given = given_fields(DetectionProtocol, overrides or {}, exclude=("name",))   # {field: key as typed}
    except ValueError as e:
        raise ProtocolError(str(e)) from None
    p = dataclasses.replace(PROTOCOLS[name], **changes)
    if p.model not in ("c4", "fpn"):
        raise ProtocolError(f"model must be c4 or fpn, not {p.model!r}")
    base = PROTOCOLS[name]
    try:
        if "steps" in changes:
            check_steps(p.steps, p.max_iter, f"--{given['steps']}", "iteration")
        else:   # a shortened run keeps its schedule's shape
            p = dataclasses.replace(p, steps=steps_kept(base.steps, (base.max_iter,), (p.max_iter,), "step"))
    except ValueError as e:
        raise ProtocolError(str(e)) from None
    return p


def preset_changes(p: DetectionProtocol, options: dict | None = None, engine_defaults: dict | None = None) -> dict:
    """A record's ``run.preset_changes``: what ``p`` changed from its preset ``PROTOCOLS[p.name]``,
    as an engine runs that preset (``engine_defaults``: fields the engine sets when they are not
    given, detectron2's fp32), and the engine ``options`` beyond the protocol
    (:func:`mocobench.core.settings.preset_changes`). A shortened run lists ``max_iter`` and the
    ``steps`` it moved."""
    return changes_from(dataclasses.replace(PROTOCOLS[p.name], **(engine_defaults or {})), p, options)
