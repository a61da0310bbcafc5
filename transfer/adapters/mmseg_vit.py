"""timm plain ViT <-> MMSegmentation ``VisionTransformer`` (mmseg 1.2.2, ``mmseg/models/backbones/vit.py``).

mmseg builds each block from mmcv bricks: ``ln1``/``ln2`` norms, ``attn.attn`` a torch
``nn.MultiheadAttention`` (one ``in_proj_weight`` holding q, k, v stacked by rows, as timm's
``qkv``), ``ffn.layers.0.0`` / ``ffn.layers.1`` the two linears; the final norm is ``ln1`` of the
backbone itself (``final_norm=True``). ``cls_token`` and ``pos_embed`` keep their names and shapes.

NOTE: the file holds these names *without* mmseg's ``backbone.`` prefix, unlike the ResNet file
(:func:`mocobench.transfer.adapters.mmseg.to_mmseg`): ``VisionTransformer.init_weights`` loads
``checkpoint["state_dict"]`` into the backbone as it is and ignores ``init_cfg``'s ``prefix``, as
mmseg's own ``tools/model_converters/vit2mmseg.py`` files expect. Use it as the backbone's
``init_cfg=dict(type='Pretrained', checkpoint=...)`` (or ``pretrained=``), with the arguments of
:func:`mmseg_vit_kwargs`, which the file also carries under ``meta["mmseg_vit"]``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from mocobench.checkpoints.keymaps import Rules, apply_rules
from mocobench.core.io import atomic_torch_save
from mocobench.transfer.adapters.mmseg import _plain_meta

# (timm name, mmseg name); ``{i}`` is the block index, a name ending in "." a module prefix
NAMES = (
    ("patch_embed.proj.", "patch_embed.projection."),
    ("blocks.{i}.norm1.", "layers.{i}.ln1."),
    ("blocks.{i}.norm2.", "layers.{i}.ln2."),
    ("blocks.{i}.attn.qkv.weight", "layers.{i}.attn.attn.in_proj_weight"),
    ("blocks.{i}.attn.qkv.bias", "layers.{i}.attn.attn.in_proj_bias"),
    ("blocks.{i}.attn.proj.", "layers.{i}.attn.attn.out_proj."),
    ("blocks.{i}.mlp.fc1.", "layers.{i}.ffn.layers.0.0."),
    ("blocks.{i}.mlp.fc2.", "layers.{i}.ffn.layers.1."),
    ("norm.", "ln1."),
)


def _rules(pairs) -> Rules:
    """``(source, target)`` name templates -> anchored ``(regex, replacement)`` rules."""
    def pattern(src):
        return "^" + re.escape(src).replace(re.escape("{i}"), r"(\d+)") + ("" if src.endswith(".") else "$")
    return tuple((pattern(src), dst.replace("{i}", r"\1")) for src, dst in pairs)


TIMM_TO_MMSEG_VIT: Rules = _rules(NAMES)
MMSEG_VIT_TO_TIMM: Rules = _rules((m, t) for t, m in NAMES)
SAME_NAME = ("cls_token", "pos_embed")


def _rename(state: dict[str, torch.Tensor], rules: Rules, what: str) -> dict[str, torch.Tensor]:
    """Every key renamed by ``rules``; a key no rule renames (layer scale, register tokens, q/k
    norms, a pre-norm...) has no place in the other layout and is an error naming it."""
    out, left = {}, []
    for k, v in state.items():
        name = apply_rules(k, rules)
        if name == k and k not in SAME_NAME:
            left.append(k)
        out[name] = v
    if left:
        raise ValueError(f"{what}: {len(left)} key(s) have no counterpart in mmseg's VisionTransformer: "
                         f"{', '.join(sorted(left)[:8])}")
    return out


def to_mmseg_vit(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Canonical (timm) ViT state dict -> mmseg ``VisionTransformer`` state dict (classifier dropped)."""
    state = {k: v.detach().cpu().clone() for k, v in state.items() if not k.startswith(("head.", "fc_norm."))}
    return _rename(state, TIMM_TO_MMSEG_VIT, "timm ViT -> mmseg")


def from_mmseg_vit(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """mmseg ``VisionTransformer`` state dict -> timm names."""
    return _rename(state, MMSEG_VIT_TO_TIMM, "mmseg ViT -> timm")


def mmseg_vit_kwargs(net: torch.nn.Module) -> dict[str, Any]:
    """The ``VisionTransformer(...)`` arguments that rebuild timm ViT ``net`` in mmseg."""
    block = net.blocks[0]
    patch = net.patch_embed.patch_size
    if getattr(net, "no_embed_class", False) or not getattr(net, "has_class_token", True) \
            or len(set(patch)) != 1 or not isinstance(getattr(block, "ls1", torch.nn.Identity()), torch.nn.Identity):
        raise ValueError(f"{type(net).__name__}: only plain ViTs (class token in the position embedding, "
                         "square patches, no layer scale) map onto mmseg's VisionTransformer")
    hidden = block.mlp.fc1.out_features
    if hidden % net.embed_dim:
        raise ValueError(f"MLP width {hidden} is no integer multiple of {net.embed_dim}; mmseg's "
                         "VisionTransformer builds mlp_ratio x embed_dims")
    return {"img_size": tuple(net.patch_embed.img_size), "patch_size": patch[0], "in_channels": 3,
            "embed_dims": net.embed_dim, "num_layers": len(net.blocks), "num_heads": block.attn.num_heads,
            "mlp_ratio": hidden // net.embed_dim,
            "qkv_bias": block.attn.qkv.bias is not None, "patch_bias": net.patch_embed.proj.bias is not None,
            "norm_cfg": {"type": "LN", "eps": block.norm1.eps},
            "final_norm": not isinstance(net.norm, torch.nn.Identity), "with_cls_token": True}


def write_mmseg_vit_checkpoint(path: str | os.PathLike, net: torch.nn.Module, meta: dict | None = None) -> Path:
    """``{"meta": {"mocobench", "mmseg_vit": kwargs}, "state_dict": {mmseg name: tensor}}``."""
    kwargs = mmseg_vit_kwargs(net)
    kwargs = {**kwargs, "img_size": list(kwargs["img_size"])}
    obj = {"meta": {"mocobench": _plain_meta(meta), "author": "mocobench", "mmseg_vit": _plain_meta(kwargs)},
           "state_dict": to_mmseg_vit(net.state_dict())}
    return atomic_torch_save(obj, path)
