"""Backbone factory: every probe, detector and segmenter gets its backbone from here.

A :class:`Backbone` wraps one torchvision or timm model whose classifier has been removed. Its
``net`` attribute holds the model with the library's own parameter names; ``net.state_dict()`` is
the *canonical* state dict that every checkpoint format is mapped into (torchvision names for
``resnet50``, ``mobilenet_v2``...; timm names for ``timm:vit_small_patch16_224``...). Weights are
never downloaded: models are always built with random initialisation.

Two views of an image batch ``x`` (N x 3 x H x W):
- ``backbone(x)``: pooled features, N x ``num_features`` (global average pool for CNNs, the
  class token / pooled token for ViTs), what linear, kNN and semi-supervised probes use;
- ``backbone.feature_maps(x)``: ``{"res2": stride 4, "res3": stride 8, "res4": stride 16,
  "res5": stride 32}`` maps (stride relative to the input; a CIFAR stem divides each by 4), what
  detection and segmentation heads use. ``backbone.stage_channels`` gives their channel counts.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

STAGES = ("res2", "res3", "res4", "res5")

# Torchvision classification backbones the factory knows how to cut into stages.
TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                       "wide_resnet50_2", "wide_resnet101_2", "resnext50_32x4d", "resnext101_32x8d")
# The ResNets built of Bottleneck blocks (1x1, 3x3, 1x1): the only ones where the stride of a stage's
# first block can sit in either convolution (``BackboneSpec.stride_in_1x1``).
BOTTLENECK_RESNETS = tuple(a for a in TORCHVISION_RESNETS if a not in ("resnet18", "resnet34"))
# mobilenet_v2 ``features`` indices whose outputs are at stride 4/8/16/32.
MOBILENET_V2_STAGE_ENDS = {"res2": 3, "res3": 6, "res4": 13, "res5": 18}


@dataclass(frozen=True)
class BackboneSpec:
    """What is needed to rebuild a backbone; stored in checkpoints and result records."""

    arch: str
    # ResNets: a 3x3 stride-1 conv1 and no max-pool, for 32x32 inputs (CIFAR)
    cifar_stem: bool = False
    # torchvision ResNets and MobileNetV2, timm CNNs: replace stride by dilation in (res3, res4, res5).
    dilation: tuple[bool, bool, bool] = (False, False, False)
    # timm only: input size the model is built for (ViT position embeddings).
    img_size: int | None = None
    extra: dict = field(default_factory=dict)
    # Bottleneck ResNets: the stride of a stage's first block in its 1x1 conv (MSRA's original
    # ResNets, detectron2's MODEL.RESNETS.STRIDE_IN_1X1 True) instead of its 3x3 conv (torchvision's).
    # The parameter shapes are the same, so only the file's origin or the user can say which.
    stride_in_1x1: bool = False
    # cifar_stem only: conv1's zero padding. 1 is the common CIFAR ResNet's (ours, pretrain/); 2 is
    # solo-learn's (its CIFAR ResNets: a 34x34 map out of a 32x32 input). Same shapes, other features.
    cifar_stem_padding: int = 1

    def to_dict(self) -> dict:
        d = {"arch": self.arch, "cifar_stem": self.cifar_stem, "dilation": list(self.dilation),
             "img_size": self.img_size, "extra": dict(self.extra)}
        # only when set: the specs of torchvision-style backbones (files written before the field
        # existed, the key of strict.expected_keys' cache) stay as they were
        if self.stride_in_1x1:
            d["stride_in_1x1"] = True
        if self.cifar_stem_padding != 1:
            d["cifar_stem_padding"] = self.cifar_stem_padding
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "BackboneSpec":
        return cls(arch=d["arch"], cifar_stem=bool(d.get("cifar_stem", False)),
                   dilation=tuple(d.get("dilation", (False, False, False))),
                   img_size=d.get("img_size"), extra=dict(d.get("extra") or {}),
                   stride_in_1x1=bool(d.get("stride_in_1x1", False)),
                   cifar_stem_padding=int(d.get("cifar_stem_padding", 1)))


# conv1's padding of the CIFAR stems (BackboneSpec.cifar_stem_padding): 1 the common one, 2 solo-learn's
CIFAR_STEM_PADDINGS = (1, 2)


# The timm constructor arguments a spec may carry in ``extra["timm_kwargs"]``: sizes of the
# architecture that its parameter shapes do not show (MoCo v3's ViT-S has 12 heads, formats.py) or
# that shrink a model for tests (a Swin's width and depths). A spec is read from checkpoint files,
# so nothing else is passed on: ``pretrained``, ``checkpoint_path``, ``pretrained_cfg_overlay``
# and their kin would make timm fetch or read other files with its own loader.
TIMM_KWARGS = ("num_heads", "embed_dim", "depth", "depths")


def check_timm_kwargs(kwargs: object) -> dict:
    """``kwargs`` as ``timm.create_model`` takes them (lists become tuples); ``ValueError`` naming
    any argument outside :data:`TIMM_KWARGS` or a value that is not a positive integer (or a list
    of them)."""
    if not isinstance(kwargs, dict):
        raise ValueError(f"timm_kwargs must be a dict, not {type(kwargs).__name__}")
    bad = sorted(str(k) for k in kwargs if k not in TIMM_KWARGS)
    if bad:
        raise ValueError(f"timm_kwargs {', '.join(bad)} not allowed: only the architecture's sizes "
                         f"({', '.join(TIMM_KWARGS)}) are passed to timm, nothing that loads weights or files")
    out = {}
    for k, v in kwargs.items():
        items = list(v) if isinstance(v, (list, tuple)) else [v]
        if not items or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in items):
            raise ValueError(f"timm_kwargs {k}={v!r}: expected a positive integer or a list of them")
        out[k] = tuple(items) if isinstance(v, (list, tuple)) else v
    return out


def spec_problem(d: dict) -> str | None:
    """What is wrong with a spec read from a file (``BackboneSpec.to_dict``'s fields), or ``None``.

    A file's spec decides what is built, so each field is checked for its type here rather than
    failing deep inside torchvision or timm, and unknown fields are refused rather than ignored.
    """
    fields = ("arch", "cifar_stem", "dilation", "img_size", "extra", "stride_in_1x1", "cifar_stem_padding")
    unknown = sorted(str(k) for k in d if k not in fields)
    if unknown:
        return f"unknown field(s) {', '.join(unknown)} (a spec has {', '.join(fields)})"
    arch = d.get("arch")
    if not isinstance(arch, str):
        return f"arch {arch!r} is not a string"
    try:
        family(arch)
    except ValueError as e:
        return str(e)
    if is_timm(arch):
        import timm

        if not timm.is_model(arch[len("timm:"):]):
            return f"arch {arch!r}: timm has no model of that name"
    if not isinstance(d.get("cifar_stem", False), bool):
        return f"cifar_stem {d['cifar_stem']!r} is not true or false"
    padding = d.get("cifar_stem_padding", 1)
    if not isinstance(padding, int) or isinstance(padding, bool) or padding not in CIFAR_STEM_PADDINGS:
        return f"cifar_stem_padding {padding!r} is not one of {', '.join(map(str, CIFAR_STEM_PADDINGS))}"
    if padding != 1 and not d.get("cifar_stem"):
        return f"cifar_stem_padding {padding} without cifar_stem: only the CIFAR stem's conv1 has that padding"
    if not isinstance(d.get("stride_in_1x1", False), bool):
        return f"stride_in_1x1 {d['stride_in_1x1']!r} is not true or false"
    if d.get("stride_in_1x1") and arch not in BOTTLENECK_RESNETS:
        return f"stride_in_1x1 for {arch}: only Bottleneck ResNets ({', '.join(BOTTLENECK_RESNETS)}) have a 1x1 conv to stride"
    dilation = d.get("dilation", [False] * 3)
    if not (isinstance(dilation, (list, tuple)) and len(dilation) == 3 and all(isinstance(x, bool) for x in dilation)):
        return f"dilation {dilation!r} is not three booleans (res3, res4, res5)"
    img_size = d.get("img_size")
    if img_size is not None and not (isinstance(img_size, int) and not isinstance(img_size, bool) and img_size > 0):
        return f"img_size {img_size!r} is not a positive integer"
    extra = d.get("extra") or {}
    if not isinstance(extra, dict) or set(extra) - {"timm_kwargs"}:
        return f"extra {extra!r}: only timm_kwargs may be there"
    if "timm_kwargs" in extra:
        if not is_timm(arch):
            return f"extra timm_kwargs for {arch}, which is not a timm model"
        try:
            check_timm_kwargs(extra["timm_kwargs"])
        except ValueError as e:
            return str(e)
    return None


def is_timm(arch: str) -> bool:
    return arch.startswith("timm:")


def family(arch: str) -> str:
    """``resnet`` | ``mobilenet_v2`` | ``timm``: decides how the model is cut into stages."""
    if is_timm(arch):
        return "timm"
    if arch in TORCHVISION_RESNETS:
        return "resnet"
    if arch == "mobilenet_v2":
        return "mobilenet_v2"
    raise ValueError(f"unknown backbone arch {arch!r}; known: {', '.join(TORCHVISION_RESNETS)}, "
                     "mobilenet_v2, or timm:<model name>")


def build_classifier_model(arch: str, num_classes: int = 1000, cifar_stem: bool = False,
                           dilation=(False, False, False), img_size: int | None = None,
                           timm_kwargs: dict | None = None, stride_in_1x1: bool = False,
                           cifar_stem_padding: int = 1) -> nn.Module:
    """The full library model *with* its classifier (randomly initialised), as pretraining wants it.

    ``num_classes`` sizes the last layer, which is how the official MoCo builds its encoders
    (``base_encoder(num_classes=dim)``). ``timm_kwargs`` (from ``spec.extra["timm_kwargs"]``) are
    extra ``timm.create_model`` arguments that do not show in parameter shapes, e.g. MoCo v3's
    ViT-S has 12 attention heads where timm's ``vit_small_patch16_224`` has 6. ``stride_in_1x1``
    moves each Bottleneck stage's stride from the 3x3 conv to the first 1x1 conv (MSRA ResNets).
    ``cifar_stem_padding`` is conv1's padding under ``cifar_stem`` (2: solo-learn's CIFAR ResNets).
    """
    fam = family(arch)
    if cifar_stem_padding not in CIFAR_STEM_PADDINGS or (cifar_stem_padding != 1 and not cifar_stem):
        raise ValueError(f"cifar_stem_padding {cifar_stem_padding!r}: one of {CIFAR_STEM_PADDINGS}, "
                         "and other than 1 only with cifar_stem")
    if stride_in_1x1 and arch not in BOTTLENECK_RESNETS:
        raise ValueError(f"stride_in_1x1 for {arch}: only Bottleneck ResNets ({', '.join(BOTTLENECK_RESNETS)}) "
                         "have a 1x1 conv to stride")
    if fam == "timm":
        import timm

        kwargs = {"pretrained": False, "num_classes": num_classes}
        if img_size is not None:
            kwargs["img_size"] = img_size
        if any(dilation):
            # timm CNNs dilate through output_stride: res5 dilated = 16, res4 and res5 = 8
            strides = {(False, False, True): 16, (False, True, True): 8}
            if tuple(dilation) not in strides:
                raise ValueError(f"{arch}: dilation {tuple(dilation)} is not an output stride timm can build "
                                 "(use (False, False, True) or (False, True, True))")
            kwargs["output_stride"] = strides[tuple(dilation)]
        kwargs.update(check_timm_kwargs(timm_kwargs or {}))   # size arguments only: pretrained stays False
        while True:
            try:
                return timm.create_model(arch[len("timm:"):], **kwargs)
            except TypeError as e:
                if "output_stride" in str(e):
                    raise ValueError(f"{arch} cannot be dilated (its timm constructor has no output_stride)") from e
                # CNNs (timm ResNets, ConvNeXts...) take any input size and have no img_size argument
                if "img_size" not in str(e) or kwargs.pop("img_size", None) is None:
                    raise
    if timm_kwargs:
        raise ValueError(f"timm_kwargs {sorted(timm_kwargs)} given for {arch}, which is not a timm model")
    import torchvision

    ctor = getattr(torchvision.models, arch)
    if fam == "resnet":
        model = ctor(weights=None, num_classes=num_classes)
        if stride_in_1x1:
            _stride_in_1x1(model)
        _dilate_stages(model, dilation)
        if cifar_stem:
            # NOTE: CIFAR-style stem (3x3 conv, stride 1, no max-pool) as in SimCLR/MoCo CIFAR
            # experiments; it changes conv1's shape, so such checkpoints only load into this variant.
            # solo-learn pads its conv1 by 2, not 1 (cifar_stem_padding): the weights fit either.
            model.conv1 = nn.Conv2d(3, 64, 3, 1, cifar_stem_padding, bias=False)
            model.maxpool = nn.Identity()
        return model
    if cifar_stem:
        raise ValueError(f"--cifar-stem is only supported for ResNets, not {arch}")
    model = ctor(weights=None, num_classes=num_classes)
    if fam == "mobilenet_v2":
        _dilate_mobilenet_v2(model, dilation)
    elif any(dilation):
        raise ValueError(f"{arch} cannot be dilated (only ResNets, MobileNetV2 and timm CNNs can)")
    return model


def _stride_in_1x1(model: nn.Module) -> None:
    """Move the stride of every strided Bottleneck (the first of layer2..4) from its 3x3 conv
    (``conv2``, torchvision's "ResNet v1.5") to its first 1x1 conv (``conv1``), as in MSRA's
    original ResNets and detectron2's ``STRIDE_IN_1X1: True``. The shortcut keeps its stride."""
    for name in ("layer2", "layer3", "layer4"):
        for block in getattr(model, name):
            if block.conv2.stride != (1, 1):
                block.conv1.stride, block.conv2.stride = block.conv2.stride, (1, 1)


def _dilate_stages(model: nn.Module, dilation) -> None:
    """Trade stride for dilation in layer2..4 (res3..res5), in place, for any torchvision ResNet.

    NOTE: torchvision's ``replace_stride_with_dilation`` refuses BasicBlock (ResNet-18/34); doing it
    here on the built model works for both block types and gives the same result for Bottleneck:
    the stage's first block keeps the previous dilation, the others get the new one, and strided
    convolutions (the 3x3, or the first 1x1 with ``stride_in_1x1``, and the shortcut) get stride 1.
    Parameter shapes do not change.
    """
    current = 1
    for i, dilate in enumerate(dilation):
        if not dilate:
            continue
        layer = getattr(model, f"layer{i + 2}")
        previous, current = current, current * 2
        for j, block in enumerate(layer):
            d = previous if j == 0 else current
            for conv in block.modules():
                if isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3):
                    conv.stride, conv.dilation, conv.padding = (1, 1), (d, d), (d, d)
                elif isinstance(conv, nn.Conv2d):
                    conv.stride = (1, 1)   # the 1x1 convs: the shortcut's, and conv1 under stride_in_1x1


# the blocks of mobilenet_v2 ``features`` that halve the resolution at the start of res3, res4, res5
MOBILENET_V2_STRIDED = (4, 7, 14)


def _dilate_mobilenet_v2(model: nn.Module, dilation) -> None:
    """Trade stride for dilation in res3..res5 of torchvision's MobileNetV2, in place, the way
    :func:`_dilate_stages` does for ResNets (and DeepLab for MobileNets): the stage's strided block
    gets stride 1 at the dilation so far, the blocks after it the doubled one. Only the 3x3
    depthwise convolutions change; parameter shapes do not."""
    dilated = {MOBILENET_V2_STRIDED[i] for i, d in enumerate(dilation) if d}
    rate = 1
    for i, block in enumerate(model.features):
        convs = [m for m in block.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
        if i == 0 or not convs:     # the stem keeps its stride; the last block is a 1x1 convolution
            continue
        conv = convs[-1]
        if i in dilated:
            conv.stride, conv.dilation, conv.padding = (1, 1), (rate, rate), (rate, rate)
            rate *= 2
        elif rate > 1:
            conv.dilation, conv.padding = (rate, rate), (rate, rate)


def _remove_classifier(model: nn.Module, arch: str) -> tuple[nn.Module, int]:
    fam = family(arch)
    if fam == "timm":
        model.reset_classifier(0)
        return model, model.num_features
    if fam == "resnet":
        n = model.fc.in_features
        model.fc = nn.Identity()
        return model, n
    n = model.classifier[-1].in_features
    model.classifier = nn.Identity()
    return model, n


class Backbone(nn.Module):
    """A classifier-free library model plus the two views (pooled, stage maps) of its features."""

    def __init__(self, spec: BackboneSpec, net: nn.Module, num_features: int):
        super().__init__()
        self.spec = spec
        self.arch = spec.arch
        self.net = net
        self.num_features = num_features
        self.family = family(spec.arch)
        self.mean = IMAGENET_MEAN
        self.std = IMAGENET_STD
        self.stage_channels = self._probe_stage_channels()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # N x num_features

    @property
    def single_stride(self) -> bool:
        """A plain ViT: every block at the patch stride (16), so res4 is its one native map and
        res2, res3, res5 are resampled from it (see ``_timm_maps``)."""
        return self.family == "timm" and len({f["reduction"] for f in self.net.feature_info}) == 1

    # -- stage maps ---------------------------------------------------------------------------
    def feature_maps(self, x: torch.Tensor, stages=STAGES) -> "OrderedDict[str, torch.Tensor]":
        if self.family == "resnet":
            return self._resnet_maps(x, stages)
        if self.family == "mobilenet_v2":
            return self._mobilenet_maps(x, stages)
        return self._timm_maps(x, stages)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        return n.maxpool(n.relu(n.bn1(n.conv1(x))))

    def _resnet_maps(self, x, stages):
        out = OrderedDict()
        x = self.stem(x)
        last = max(STAGES.index(s) for s in stages)
        for i, name in enumerate(STAGES[: last + 1]):
            x = getattr(self.net, f"layer{i + 1}")(x)
            if name in stages:
                out[name] = x
        return out

    def _mobilenet_maps(self, x, stages):
        out = OrderedDict()
        ends = {v: k for k, v in MOBILENET_V2_STAGE_ENDS.items()}
        last = max(MOBILENET_V2_STAGE_ENDS[s] for s in stages)
        for i, block in enumerate(self.net.features[: last + 1]):
            x = block(x)
            if (i + 1) in ends and ends[i + 1] in stages:
                out[ends[i + 1]] = x
        return out

    def _timm_maps(self, x, stages):
        net = self.net
        if self.single_stride:
            # Plain ViT (every block at the patch stride): one stride-16 map; a simple pyramid
            # (ViTDet-style, parameter-free: resampling instead of learned deconvolutions) provides the
            # other strides. Hierarchical Transformers (Swin: strides 4-32) take the CNN path below.
            feats = net.forward_intermediates(x, indices=1, intermediates_only=True)[-1]
            pyramid = {"res2": F.interpolate(feats, scale_factor=4.0, mode="bilinear", align_corners=False),
                       "res3": F.interpolate(feats, scale_factor=2.0, mode="bilinear", align_corners=False),
                       "res4": feats,
                       "res5": F.max_pool2d(feats, 2)}
            return OrderedDict((s, pyramid[s]) for s in STAGES if s in stages)
        feats = net.forward_intermediates(x, intermediates_only=True)
        # CNNs in timm report 4 or 5 stages; the last four are strides 4..32.
        feats = feats[-4:]
        return OrderedDict((s, f) for s, f in zip(STAGES, feats) if s in stages)

    @torch.no_grad()
    def _probe_stage_channels(self) -> dict[str, int]:
        size = self.spec.img_size or 64
        was_training = self.training
        self.eval()
        try:
            maps = self.feature_maps(torch.zeros(1, 3, size, size))
        finally:
            self.train(was_training)
        return {k: v.shape[1] for k, v in maps.items()}


def build_backbone(arch: str | BackboneSpec, *, cifar_stem: bool = False,
                   dilation=(False, False, False), img_size: int | None = None,
                   stride_in_1x1: bool = False, seed: int | None = None) -> Backbone:
    """A randomly initialised backbone (``seed`` makes the initialisation reproducible)."""
    spec = arch if isinstance(arch, BackboneSpec) else BackboneSpec(
        arch=arch, cifar_stem=cifar_stem, dilation=tuple(dilation), img_size=img_size, stride_in_1x1=stride_in_1x1)
    if seed is not None:
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
    try:
        model = build_classifier_model(spec.arch, num_classes=1000, cifar_stem=spec.cifar_stem,
                                       dilation=spec.dilation, img_size=spec.img_size,
                                       timm_kwargs=spec.extra.get("timm_kwargs"), stride_in_1x1=spec.stride_in_1x1,
                                       cifar_stem_padding=spec.cifar_stem_padding)
    finally:
        if seed is not None:
            torch.random.set_rng_state(state)
    net, num_features = _remove_classifier(model, spec.arch)
    return Backbone(spec, net, num_features)


def canonical_keys(arch: str | BackboneSpec) -> dict[str, tuple[int, ...]]:
    """Every parameter and buffer name of the backbone with its shape (what a checkpoint must hold)."""
    with torch.device("meta"):
        spec = arch if isinstance(arch, BackboneSpec) else BackboneSpec(arch=arch)
        model = build_classifier_model(spec.arch, num_classes=1000, cifar_stem=spec.cifar_stem,
                                       dilation=spec.dilation, img_size=spec.img_size,
                                       timm_kwargs=spec.extra.get("timm_kwargs"), stride_in_1x1=spec.stride_in_1x1,
                                       cifar_stem_padding=spec.cifar_stem_padding)
        net, _ = _remove_classifier(model, spec.arch)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}
