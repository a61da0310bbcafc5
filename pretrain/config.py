"""The pretraining configuration: one frozen dataclass, presets as plain values, ``--key=value``.

Every field is used by the training loop or by the method the config names. A field that the run
would not use (another method's, ``momentum`` with AdamW, ``milestones`` of a cosine schedule) keeps
its preset value, and giving it on the command line is refused (:func:`check_resolved`), so a
recorded value never looks as if it had shaped the run. The resolved config
is stored in every checkpoint, in ``RUN_DIR/config.json`` and in the exported backbone's metadata.
``--key=value`` overrides go through ``mocobench.core.overrides.apply_overrides`` (``pretrain/cli.py``).

NOTE: STYLE.md suggests one dataclass per method; MoCo, UniMoCo and SMoG share the whole training
loop and most fields, so one flat dataclass keeps ``--key=value`` overrides in a single namespace and
every value's origin in this file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace

from mocobench.core.registry import Registry
from mocobench.core.schedules import Schedule, check_steps
from mocobench.core.settings import (AT_LEAST_0, AT_LEAST_1, OPEN_UNIT_BOTTOM, POSITIVE, UNIT, UNIT_OPEN_TOP,
                                     Range, setting)
from mocobench.pretrain.data import MAX_SEED
from mocobench.pretrain.fast_paths import COMPILE


# the values of the named-choice fields (checked at parse time, core.settings)
AUGMENTATIONS = ("moco_v1", "moco_v2", "smog")
OPTIMIZERS = ("sgd", "lars", "adamw")
SCHEDULES = ("step", "cosine")
PRECISIONS = ("bf16", "fp32")
INPUT_PIPELINES = ("pil", "device")


@dataclass(frozen=True)
class PretrainConfig:
    method: str = "moco_v2"  # a key of pretrain.methods.METHODS
    # -- backbone
    arch: str = "resnet50"  # torchvision name or timm:<name>
    cifar_stem: bool = False  # ResNets: 3x3 stride-1 conv1, no max-pool
    img_size: int = setting(224, range=AT_LEAST_1)  # side of the (global) crops
    # -- MoCo / UniMoCo (dim, m also SMoG)
    dim: int = setting(128, range=AT_LEAST_1)  # embedding size d
    K: int = setting(65536, range=AT_LEAST_1)  # queue length
    m: float = setting(0.999, range=UNIT)  # momentum of the key (momentum) encoder
    T: float = setting(0.07, range=POSITIVE)  # softmax temperature
    mlp: bool = False  # MoCo v2 MLP head
    # one process: key batch in G sub-batches with their own BN stats (refused under DDP: check_processes)
    shuffle_bn_groups: int = setting(1, range=AT_LEAST_1)
    label_fraction: float = setting(0.0, range=UNIT)  # UniMoCo: fraction of labeled images (class-balanced draw), 0..1
    supervised_list: str = ""  # UniMoCo: file of labeled image names (overrides label_fraction)
    # -- SMoG
    n_groups: int = setting(3000, range=AT_LEAST_1)  # number of groups C
    beta: float = setting(0.99, range=UNIT)  # group momentum β
    tau: float = setting(0.1, range=POSITIVE)  # group temperature τ
    hidden_dim: int = setting(2048, range=AT_LEAST_1)  # projection / prediction hidden width
    # R: k-means reset of the groups and momentum branch every R steps
    reset_every: int = setting(300, range=AT_LEAST_1)
    bank_size: int = setting(65536, range=AT_LEAST_1)  # memory bank of momentum features for the k-means
    kmeans_iters: int = setting(10, range=AT_LEAST_1)
    local_crops: int = setting(0, range=AT_LEAST_0)  # multi-crop: number of small crops
    local_size: int = setting(96, range=AT_LEAST_1)  # side of the small crops
    # -- augmentation
    augmentation: str = setting("moco_v2", choices=AUGMENTATIONS)
    crop_min_scale: float = setting(0.2, range=OPEN_UNIT_BOTTOM)
    # -- optimisation (lr is for the global batch_size, as in the papers)
    epochs: int = setting(200, range=AT_LEAST_1)
    batch_size: int = setting(256, range=AT_LEAST_1)  # global batch, split over the processes
    optimizer: str = setting("sgd", choices=OPTIMIZERS)  # (adamw: no weight decay on norms, biases, position
    #   embeddings, class/register tokens, Swin's relative position tables; pretrain.train.build_optimizer)
    lr: float = setting(0.03, range=POSITIVE)
    momentum: float = setting(0.9, range=UNIT_OPEN_TOP)
    weight_decay: float = setting(1e-4, range=AT_LEAST_0)
    schedule: str = setting("cosine", choices=SCHEDULES)
    milestones: tuple[int, ...] = setting((120, 160), range=AT_LEAST_0)  # step schedule: ×0.1 at these epochs
    warmup_epochs: float = setting(0.0, range=AT_LEAST_0)
    # -- runtime
    seed: int = setting(0, range=Range(0, MAX_SEED))  # at most MAX_SEED: every per-image seed fits torch's generator
    workers: int = setting(8, range=AT_LEAST_0, run=True)  # DataLoader workers per process
    device: str = setting("", run=True)  # "" = cuda if available else cpu
    precision: str = setting("bf16", choices=PRECISIONS)  # bf16: autocast; on any device (pretrain.fast_paths)
    channels_last: bool = True  # NHWC weights and views, on any device
    # torch.compile (inductor; GPU, or CPU with a C compiler): off | modules (each top-level sub-module)
    #   | step (the whole training step: pretrain.fast_paths.TrainStep)
    compile: str = setting("off", run=True, choices=COMPILE)   # pretrain.fast_paths
    input_pipeline: str = setting("pil", choices=INPUT_PIPELINES)  # pil: decode + PIL augmentations in DataLoader workers | device: workers
    #   read bytes, decode_jpeg + tensor-op augmentations on the training device (pretrain.gpu_augment)
    sync_bn: bool = False  # SyncBatchNorm in the online branch under DDP
    max_steps_per_epoch: int = setting(0, range=AT_LEAST_0)  # 0 = the whole epoch (short runs and tests)
    # steps between checkpoints (and one at every epoch end)
    ckpt_every: int = setting(1000, range=AT_LEAST_1, run=True)
    keep_checkpoints: int = setting(2, range=AT_LEAST_1, run=True)
    log_every: int = setting(20, range=AT_LEAST_1, run=True)

    def __post_init__(self):
        # a schedule without steps has no milestones: the record lists none (cosine presets inherit
        # the field's step-schedule default, 120/160, which they never used)
        if self.schedule != "step" and self.milestones:
            object.__setattr__(self, "milestones", ())

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    def lr_schedule(self) -> Schedule:
        """The rate over the run, by (fractional) epoch: ``epoch + batch / batches``. NOTE: the
        official MoCo code sets the rate once per epoch; for step schedules that is the same, for
        cosine the per-iteration curve differs by less than one epoch's step and allows warmup."""
        return Schedule(self.schedule, self.epochs, steps=tuple(self.milestones), warmup=self.warmup_epochs)


# -- paper presets ------------------------------------------------------------------------------
# MoCo v1 (He et al. 2020, Sec. 4 and the official main_moco.py defaults).
MOCO_V1_200EP = PretrainConfig(
    method="moco_v1", arch="resnet50", dim=128, K=65536, m=0.999, T=0.07, mlp=False,
    augmentation="moco_v1", epochs=200, batch_size=256, lr=0.03, momentum=0.9, weight_decay=1e-4,
    schedule="step", milestones=(120, 160))
# MoCo v2 (Chen et al. 2020): MLP head, T 0.2, aug+, cosine.
MOCO_V2_200EP = replace(MOCO_V1_200EP, method="moco_v2", T=0.2, mlp=True, augmentation="moco_v2",
                        schedule="cosine")
MOCO_V2_800EP = replace(MOCO_V2_200EP, epochs=800)
# UniMoCo (Dai et al. 2021): MoCo v2 settings, 800 epochs, 0/10/30/60/100 % labels.
UNIMOCO_800EP_0PCT = replace(MOCO_V2_800EP, method="unimoco", label_fraction=0.0)
UNIMOCO_800EP_10PCT = replace(UNIMOCO_800EP_0PCT, label_fraction=0.1)
UNIMOCO_800EP_30PCT = replace(UNIMOCO_800EP_0PCT, label_fraction=0.3)
UNIMOCO_800EP_60PCT = replace(UNIMOCO_800EP_0PCT, label_fraction=0.6)
UNIMOCO_800EP_100PCT = replace(UNIMOCO_800EP_0PCT, label_fraction=1.0)
# SMoG (Pang et al. 2022), ResNet-50: 3k groups, β 0.99, τ 0.1, reset every 300 iterations,
# LARS, batch 4096, 2x224 + 4x96 crops.
# NOTE: no official code; lr (LARS, 0.3·batch/256 = 4.8), weight decay 1e-6, 10 warmup epochs,
# momentum 0.99 and the bank size follow BYOL-style conventions and lightly's example, as far as the
# paper leaves them open.
SMOG_400EP = PretrainConfig(
    method="smog", arch="resnet50", dim=128, m=0.99, n_groups=3000, beta=0.99, tau=0.1, hidden_dim=2048,
    reset_every=300, bank_size=65536, augmentation="smog", crop_min_scale=0.14, local_crops=4,
    local_size=96, epochs=400, batch_size=4096, optimizer="lars", lr=4.8, weight_decay=1e-6,
    schedule="cosine", warmup_epochs=10)
SMOG_800EP = replace(SMOG_400EP, epochs=800)

# -- CPU presets: the embedded dataset at "small" scale (64 px images), about a minute on 2 cores -----
# timm's test_resnet (a 4-stage ResNet, deep stem, widths 32-48-48-96, 0.4M parameters) at 64 px:
# five times the steps per second of ResNet-18, which is what lets learning show within a minute.
# (ResNet-18 at 32 px learns nothing measurable in ~150 steps on `small`: kNN at random-init level.)
_TINY = dict(arch="timm:test_resnet", img_size=64, crop_min_scale=0.3, epochs=8, batch_size=32, lr=0.06,
             K=1024, warmup_epochs=1.0, schedule="cosine", workers=0, device="cpu", precision="fp32",
             channels_last=False, ckpt_every=200, log_every=5)
TINY = {
    "moco_v1": replace(MOCO_V1_200EP, **_TINY, m=0.99),
    "moco_v2": replace(MOCO_V2_200EP, **_TINY, m=0.99),
    "unimoco": replace(UNIMOCO_800EP_0PCT, **_TINY, m=0.99),
    "smog": replace(SMOG_400EP, **{**_TINY, "lr": 0.06}, optimizer="sgd", weight_decay=1e-4, m=0.99,
                    n_groups=64, hidden_dim=512, reset_every=100, bank_size=2048, local_crops=0),
}

# -- Transformer presets (issue 18) ----------------------------------------------------------------
# ViT-S/16 and Swin-T, 300 epochs, AdamW with linear warmup and cosine decay; weight decay skips norms,
# biases, position embeddings and the class token (pretrain.train.build_optimizer). Layer-wise lr decay
# belongs to fine-tuning (transfer/), not to pretraining, and is not set here.
# MoCo v2 / UniMoCo: the optimisation of MoCo v3's ViT-S recipe (Chen, Xie, He 2021: AdamW, lr 1.5e-4 per
# 256 images, wd 0.1, 40 warmup epochs, batch 4096, m 0.99, T 0.2, crops scale 0.08-1).
# NOTE: MoCo v2's method is kept as it is (queue, 2-layer MLP head 384-384-128 for ViT-S); MoCo v3's
# 3-layer projector, predictor and frozen random patch projection are MoCo v3 and are not used.
# NOTE: two departures from MoCo v3's optimisation: m stays 0.99 (MoCo v3 raises it to 1 with a half
# cosine over the iterations, --moco-m-cos), and AdamW skips norms, biases, position embeddings and the
# class token (MoCo v3 decays every parameter). docs/pretrain.md states both.
MOCO_V2_VIT_S_300EP = replace(MOCO_V2_200EP, arch="timm:vit_small_patch16_224", m=0.99, T=0.2, epochs=300,
                              batch_size=4096, optimizer="adamw", lr=1.5e-4 * 4096 / 256, weight_decay=0.1,
                              warmup_epochs=40, crop_min_scale=0.08)
UNIMOCO_VIT_S_300EP = {pct: replace(MOCO_V2_VIT_S_300EP, method="unimoco", label_fraction=pct / 100)
                       for pct in (0, 10, 30, 60, 100)}
# SMoG on Transformers. NOTE: the paper leaves the Transformer optimisation open; we follow the Swin
# self-supervised recipe SMoG compares with (MoBY, Xie et al. 2021: AdamW, lr 1e-3 at batch 512,
# wd 0.05, 5 warmup epochs, 300 epochs, m 0.99, two 224 crops of scale 0.08-1 with BYOL's augmentation),
# SMoG's own group settings (3000 groups, β 0.99, τ 0.1, reset every 300 iterations) and its projector
# widths (2048 hidden, 128 out). Multi-crop is off: timm's ViT-S/16 and Swin-T take fixed 224 px inputs
# (a 96 px crop is refused by their patch embedding), and MoBY uses two crops.
SMOG_VIT_S_300EP = replace(SMOG_400EP, arch="timm:vit_small_patch16_224", epochs=300, batch_size=512,
                           optimizer="adamw", lr=1e-3, weight_decay=0.05, warmup_epochs=5, m=0.99,
                           crop_min_scale=0.08, local_crops=0)
SMOG_SWIN_T_300EP = replace(SMOG_VIT_S_300EP, arch="timm:swin_tiny_patch4_window7_224")

# CPU: timm's test_vit (6 blocks, width 64, 2 heads, patch 16: 4x4 tokens on 64 px crops, 0.3M parameters,
# about 2.4 times the steps per second of test_resnet on one core), AdamW.
_TINY_VIT = dict(_TINY, arch="timm:test_vit", optimizer="adamw", lr=1e-3, weight_decay=0.05)
TINY_VIT = {
    "moco_v2": replace(MOCO_V2_200EP, **_TINY_VIT, m=0.99),
    "unimoco": replace(UNIMOCO_800EP_0PCT, **_TINY_VIT, m=0.99),
    # 32 groups, reset every 30 steps: kNN 32.0 vs 31.5 with tiny's 64 / 100 (docs/pretrain.md)
    "smog": replace(TINY["smog"], **_TINY_VIT, n_groups=32, reset_every=30),
}

PRESETS = Registry("preset", {
    "moco_v1_200ep": MOCO_V1_200EP,
    "moco_v2_200ep": MOCO_V2_200EP,
    "moco_v2_800ep": MOCO_V2_800EP,
    "unimoco_800ep_0pct": UNIMOCO_800EP_0PCT,
    "unimoco_800ep_10pct": UNIMOCO_800EP_10PCT,
    "unimoco_800ep_30pct": UNIMOCO_800EP_30PCT,
    "unimoco_800ep_60pct": UNIMOCO_800EP_60PCT,
    "unimoco_800ep_100pct": UNIMOCO_800EP_100PCT,
    "smog_400ep": SMOG_400EP,
    "smog_800ep": SMOG_800EP,
    **{f"tiny_{method}": cfg for method, cfg in TINY.items()},
    "moco_v2_vit_s_300ep": MOCO_V2_VIT_S_300EP,
    **{f"unimoco_vit_s_300ep_{pct}pct": cfg for pct, cfg in UNIMOCO_VIT_S_300EP.items()},
    "smog_vit_s_300ep": SMOG_VIT_S_300EP,
    "smog_swin_t_300ep": SMOG_SWIN_T_300EP,
    **{f"tiny_vit_{method}": cfg for method, cfg in TINY_VIT.items()},
}, also=("tiny", "tiny_vit"))
# the preset used when --preset is not given
DEFAULT_PRESET = {"moco_v1": "moco_v1_200ep", "moco_v2": "moco_v2_200ep",
                  "unimoco": "unimoco_800ep_0pct", "smog": "smog_400ep"}


def resolve_preset(name: str | None, method: str) -> PretrainConfig:
    """``tiny`` means ``tiny_<method>`` (``tiny_vit``: ``tiny_vit_<method>``); a preset of another
    method is an error."""
    name = name or DEFAULT_PRESET[method]
    if name in ("tiny", "tiny_vit"):
        name = f"{name}_{method}"
    cfg = PRESETS.lookup(name)
    if cfg.method != method:
        raise ValueError(f"preset {name!r} is for --method {cfg.method}, not {method}")
    return cfg


def from_dict(d: dict) -> PretrainConfig:
    """The config stored in a checkpoint (``to_dict()``) back as a dataclass."""
    d = dict(d)
    d["milestones"] = tuple(d.get("milestones", ()))
    if isinstance(d.get("compile"), bool):   # written before compile had scopes: true compiled the modules
        d["compile"] = "modules" if d["compile"] else "off"
    return PretrainConfig(**d)


# -- which fields a run uses ---------------------------------------------------------------------
MOCO_FIELDS = ("K", "T", "mlp", "shuffle_bn_groups")   # the queue, its temperature, the head, shuffle BN
LABEL_FIELDS = ("label_fraction", "supervised_list")
SMOG_FIELDS = ("n_groups", "beta", "tau", "hidden_dim", "reset_every", "bank_size", "kmeans_iters")
MULTI_CROP_FIELDS = ("local_crops", "local_size")


def unused_fields(cfg: PretrainConfig) -> dict[str, str]:
    """``{field: why the run does not use it}``: what this config's method, optimizer, schedule and
    augmentation leave aside (their preset values stay in the record, as every field does)."""
    out = {}
    if cfg.method == "smog":
        out.update({f: "--method smog (SMoG has groups, not a queue: --n_groups, --tau, --bank_size)"
                    for f in MOCO_FIELDS})
    else:
        out.update({f: f"--method {cfg.method} (a SMoG setting)" for f in SMOG_FIELDS})
    if cfg.method != "unimoco":
        out.update({f: f"--method {cfg.method} (only --method unimoco uses labels)" for f in LABEL_FIELDS})
    if cfg.method != "smog" or cfg.augmentation != "smog":
        out.update({f: f"--method {cfg.method} --augmentation={cfg.augmentation} (multi-crop is SMoG's, "
                       "with --augmentation=smog)" for f in MULTI_CROP_FIELDS})
    elif cfg.local_crops == 0:
        out["local_size"] = "--local_crops=0 (no small crops)"
    if cfg.optimizer == "adamw":
        out["momentum"] = "--optimizer=adamw (AdamW's betas are 0.9/0.999)"
    if cfg.schedule != "step":
        out["milestones"] = f"--schedule={cfg.schedule} (only a step schedule has milestones)"
    return out


def check_resolved(cfg: PretrainConfig, given: dict[str, str]) -> PretrainConfig:
    """``cfg`` if it can run as it says; a ``ValueError`` naming the option otherwise. ``given``:
    ``{field: key as typed}`` (``label-fraction``) of what the command line set (a preset's values are not refused
    for being unused, a value given for nothing is)."""
    unused = unused_fields(cfg)
    for name, key in given.items():
        if name in unused:
            raise ValueError(f"--{key} does not apply to {unused[name]}")
    if cfg.supervised_list and "label_fraction" in given:
        raise ValueError(f"--{given['label_fraction']} and --supervised-list: the list names the labeled images; "
                         "give one of them (the run records the fraction the list labels)")
    if "milestones" in given:
        check_steps(cfg.milestones, cfg.epochs, f"--{given['milestones']}")
    if cfg.schedule == "step" and not cfg.milestones:
        # a cosine preset holds no milestones (PretrainConfig.__post_init__): its rate would stay constant
        raise ValueError(f"--{given.get('schedule', 'schedule')}=step with no milestones: the rate would never "
                         "change; give the epochs at which it is multiplied by 0.1 with --milestones=E1,E2")
    if "warmup_epochs" in given and cfg.warmup_epochs >= cfg.epochs:
        # NOTE: only a given warmup is refused; a preset's warmup in a run shortened with --epochs
        # (a 1-epoch smoke run of a preset with 1 warmup epoch) is all warmup (core.schedules.Schedule)
        raise ValueError(f"--{given['warmup_epochs']}={cfg.warmup_epochs:g} is not shorter than the run "
                         f"({cfg.epochs} epochs): the rate would never reach --lr; give fewer warmup epochs "
                         "or more --epochs")
    if cfg.method == "smog":
        # the k-means of a reset (pretrain.smog.SMoG.reset) needs n_groups features in the bank
        if cfg.bank_size < cfg.n_groups:
            raise ValueError(f"bank_size={cfg.bank_size} is smaller than n_groups={cfg.n_groups}: SMoG's "
                             "k-means reset needs at least one bank feature per group")
        if 2 * cfg.batch_size * cfg.reset_every < cfg.n_groups:
            raise ValueError(f"reset_every={cfg.reset_every} steps of batch_size={cfg.batch_size} put "
                             f"{2 * cfg.batch_size * cfg.reset_every} features into the bank before the first "
                             f"reset, fewer than n_groups={cfg.n_groups}: the k-means reset needs one per group")
    return cfg


def check_processes(cfg: PretrainConfig, world: int) -> None:
    """Refuse what a run of ``world`` processes would not do as its config says: ``shuffle_bn_groups``
    is the one-process form of shuffle BN; under DDP the keys are shuffled across processes
    (``pretrain.moco.MoCo.keys``), and the groups would be recorded without taking effect."""
    if world > 1 and cfg.shuffle_bn_groups > 1:
        raise ValueError(f"shuffle_bn_groups={cfg.shuffle_bn_groups} applies to one process; with {world} processes "
                         "the keys use shuffle BN across processes: leave --shuffle-bn-groups at 1")
