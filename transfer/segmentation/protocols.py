"""Segmentation fine-tuning protocols: one frozen dataclass, presets as plain values.

``PROTOCOLS[name][dataset]`` is the preset; ``--key=value`` on the command line replaces fields
(:func:`override`). The resolved protocol goes into every training checkpoint and result record.

- ``moco-fcn``: MoCo's appendix. FCN-16s on a dilated R50; random scale in [0.5, 2.0], crop,
  horizontal flip; batch 16, weight decay 1e-4, SGD momentum 0.9; Cityscapes: crop 769, lr 0.01,
  90k iterations; VOC: crop 513, lr 0.003, 30k iterations (train_aug); lr x0.1 at 70% and 90%;
  SyncBN; inference on the full image.
- ``mmseg-fcn-40k`` / ``mmseg-fcn-80k``: the schedule of MMSegmentation's
  ``fcn_r50-d8_4xb2-{40k,80k}_cityscapes-512x1024`` (crop 512x1024, batch 8, lr 0.01 poly 0.9 down
  to 1e-4, weight decay 5e-4); on VOC 2012 ``mmseg-fcn-20k`` / ``mmseg-fcn-40k`` are
  ``fcn_r50-d8_4xb4-{20k,40k}_voc12aug-512x512`` (crop 512x512, batch 16, train_aug). With ``--engine mmseg`` those configs run as they are; with the
  torchvision engine the same schedule trains this module's FCN head.
  NOTE: mmseg's R50-D8 is output stride 8 with an auxiliary head on res4; the torchvision engine
  keeps MoCo's OS16 FCN head so that the two torchvision protocols differ only in the schedule.
- ``tiny``: a CPU smoke protocol (small crops, 40 iterations) for the embedded dataset; its
  numbers only rank checkpoints against each other on that data.
- ``tiny-frozen``: ``tiny`` with the backbone frozen (weights and BN statistics as loaded) and only
  the FCN head trained, for 200 iterations: the dense counterpart of the linear probe. On a CPU
  budget fine-tuning the whole network cannot tell the embedded run's pretraining from random init
  (docs/run_all.md gives the figures); a frozen backbone measures what pretraining put into the
  features. Not a paper protocol.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mocobench.core.overrides import apply_overrides, given_fields, split_overrides
from mocobench.core.registry import Registry
from mocobench.core.schedules import Schedule, steps_kept
from mocobench.core.settings import AT_LEAST_0, AT_LEAST_1, POSITIVE, UNIT_OPEN_TOP, setting
from mocobench.core.settings import preset_changes as changes_from


DEFAULT_LR_STEPS = (0.7, 0.9)   # MoCo's: x0.1 at 70 % and 90 % of the run

# field -> (the field that picks a mode, the mode that reads the field). Both engines read the field
# only in that mode (ours: lr_schedule() and inference.evaluate; mmseg: PolyLR or MultiStepLR and
# test_cfg, adapters/mmseg.py), so given on the command line for another mode it would not be read
# while run.preset_changes listed it: override() refuses it. (inference and schedule are the only
# modes: flip and scale_range are training augmentations, read in every mode.)
USED_ONLY_IN = {"poly_power": ("schedule", "poly"), "min_lr": ("schedule", "poly"),
                "lr_steps": ("schedule", "step"),
                "slide_crop": ("inference", "slide"), "slide_stride": ("inference", "slide")}


@dataclass(frozen=True)
class SegProtocol:
    name: str
    head: str = "fcn"                       # key of model.HEADS
    train_split: str = "train"
    val_split: str = "val"
    crop: tuple[int, int] = setting((769, 769), range=AT_LEAST_1)      # H, W of training crops
    batch_size: int = setting(16, range=AT_LEAST_1)                    # global, over all processes
    iters: int = setting(90_000, range=AT_LEAST_1)
    lr: float = setting(0.01, range=POSITIVE)
    momentum: float = setting(0.9, range=UNIT_OPEN_TOP)
    weight_decay: float = setting(1e-4, range=AT_LEAST_0)
    schedule: str = setting("step", choices=("step", "poly"))   # step: x0.1 at lr_steps
    lr_steps: tuple[float, ...] = setting(DEFAULT_LR_STEPS, range=UNIT_OPEN_TOP)  # fractions of iters (step only)
    poly_power: float = setting(0.9, range=POSITIVE)
    min_lr: float = setting(0.0, range=AT_LEAST_0)
    scale_range: tuple[float, float] = setting((0.5, 2.0), range=POSITIVE)  # random rescale of the original image
    flip: bool = True
    sync_bn: bool = True
    frozen_backbone: bool = False          # train the head only; the backbone's weights and BN as loaded
    inference: str = setting("whole", choices=("whole", "slide"))   # slide: slide_crop windows, slide_stride apart
    slide_crop: tuple[int, int] = setting((769, 769), range=AT_LEAST_1)
    slide_stride: tuple[int, int] = setting((513, 513), range=AT_LEAST_1)
    num_workers: int = setting(4, range=AT_LEAST_0, run=True)
    checkpoint_every: int = setting(5_000, range=AT_LEAST_1, run=True)  # iterations between resumable checkpoints
    log_every: int = setting(50, range=AT_LEAST_1, run=True)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def lr_schedule(self) -> Schedule:
        """By iteration. step: x0.1 at each fraction in ``lr_steps`` of ``iters`` (rounded to an
        iteration); poly: ``(lr - min_lr) * (1 - it/iters) ** poly_power + min_lr``, MMSegmentation's
        PolyLR."""
        return Schedule(self.schedule, self.iters, steps=self.step_iterations(), power=self.poly_power,
                        final_lr=self.min_lr if self.schedule == "poly" else 0.0)

    def step_iterations(self) -> tuple[int, ...]:
        """``lr_steps`` (fractions of the run) as iterations, for this module and MMSegmentation."""
        return tuple(int(round(f * self.iters)) for f in self.lr_steps)


MOCO_FCN_CITYSCAPES = SegProtocol(name="moco-fcn", crop=(769, 769), lr=0.01, iters=90_000)
MOCO_FCN_VOC = SegProtocol(name="moco-fcn", train_split="train_aug", crop=(513, 513), lr=0.003,
                           iters=30_000, slide_crop=(513, 513), slide_stride=(341, 341))
MMSEG_FCN_40K = SegProtocol(name="mmseg-fcn-40k", crop=(512, 1024), batch_size=8, iters=40_000,
                            lr=0.01, weight_decay=5e-4, schedule="poly", lr_steps=(), min_lr=1e-4, num_workers=2,
                            slide_crop=(512, 1024), slide_stride=(341, 683), checkpoint_every=4_000)
MMSEG_FCN_80K = dataclasses.replace(MMSEG_FCN_40K, name="mmseg-fcn-80k", iters=80_000,
                                    checkpoint_every=8_000)
# mmseg's fcn_r50-d8_4xb4-{20k,40k}_voc12aug-512x512 (4 GPUs x 4 images)
MMSEG_FCN_VOC_20K = dataclasses.replace(MMSEG_FCN_40K, name="mmseg-fcn-20k", train_split="train_aug",
                                        crop=(512, 512), batch_size=16, iters=20_000, slide_crop=(512, 512),
                                        slide_stride=(341, 341), checkpoint_every=2_000, num_workers=4)
MMSEG_FCN_VOC_40K = dataclasses.replace(MMSEG_FCN_VOC_20K, name="mmseg-fcn-40k", iters=40_000,
                                        checkpoint_every=4_000)
TINY = SegProtocol(name="tiny", crop=(96, 96), batch_size=4, iters=40, lr=0.02, weight_decay=1e-4,
                   scale_range=(0.75, 1.25), sync_bn=False, slide_crop=(96, 96), slide_stride=(64, 64),
                   num_workers=0, checkpoint_every=20, log_every=10)

TINY_FROZEN = dataclasses.replace(TINY, name="tiny-frozen", frozen_backbone=True, iters=200, checkpoint_every=100,
                                  log_every=20)

# protocol -> dataset -> preset
PROTOCOLS: Registry[Registry[SegProtocol]] = Registry("segmentation protocol", {
    name: Registry(f"dataset of segmentation protocol {name!r}", by_dataset) for name, by_dataset in {
        "moco-fcn": {"cityscapes": MOCO_FCN_CITYSCAPES, "voc2012": MOCO_FCN_VOC},
        "mmseg-fcn-20k": {"voc2012": MMSEG_FCN_VOC_20K},
        "mmseg-fcn-40k": {"cityscapes": MMSEG_FCN_40K, "voc2012": MMSEG_FCN_VOC_40K},
        "mmseg-fcn-80k": {"cityscapes": MMSEG_FCN_80K},
        "tiny": {"cityscapes": TINY, "voc2012": TINY},
        "tiny-frozen": {"cityscapes": TINY_FROZEN, "voc2012": TINY_FROZEN},
    }.items()})


def get_protocol(name: str, dataset: str) -> SegProtocol:
    return PROTOCOLS.lookup(name).lookup(dataset)


def override(protocol: SegProtocol, overrides: Mapping[str, str] | Sequence[str]) -> SegProtocol:
    """``protocol`` with overrides applied (``mocobench.core.overrides``' rules): ``{"crop": "512x1024"}``, or
    the command line's ``["--crop=512x1024", "iters=7"]`` (leading dashes optional)."""
    if not isinstance(overrides, Mapping):
        overrides = split_overrides(["--" + item.lstrip("-") for item in overrides])
    given = given_fields(SegProtocol, overrides)   # {field: key as typed}
    new = apply_overrides(protocol, overrides)
    if "lr_steps" not in given:   # fractions of the run, so a run's length does not move them; a poly run has none
        new = dataclasses.replace(new, lr_steps=steps_kept(protocol.lr_steps or DEFAULT_LR_STEPS, (1,), (1,),
                                                           new.schedule))
    for name, (mode, reads) in USED_ONLY_IN.items():
        if name in given and getattr(new, mode) != reads:
            raise ValueError(f"--{given[name]} does not apply to --{mode}={getattr(new, mode)}; "
                             f"only --{mode}={reads} uses it")
    return new


def preset_changes(protocol: SegProtocol, dataset: str, options: dict | None = None) -> dict:
    """A record's ``run.preset_changes``: what ``protocol`` changed from its preset on ``dataset``
    and the engine ``options`` beyond the protocol (mmseg's ``--cfg-options``, each as
    ``cfg_options.KEY``; :func:`mocobench.core.settings.preset_changes`)."""
    return changes_from(get_protocol(protocol.name, dataset), protocol, options)
