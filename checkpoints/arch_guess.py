"""Which architecture a checkpoint holds, from its (mapped) key names and shapes.

Files of other projects rarely name their arch in a form we can build; the candidates are matched
against the canonical keys and shapes of each (``strict.expected_keys``), a stated name only
decides the order in which they are tried.
"""

from __future__ import annotations

from mocobench.checkpoints.backbones import TORCHVISION_RESNETS, BackboneSpec, is_timm
from mocobench.checkpoints.strict import expected_keys

CANDIDATE_ARCHS = (*TORCHVISION_RESNETS, "mobilenet_v2",
                   "timm:vit_small_patch16_224", "timm:vit_base_patch16_224", "timm:vit_tiny_patch16_224",
                   "timm:vit_large_patch16_224", "timm:vit_small_patch8_224", "timm:vit_base_patch8_224")

# Names other projects store in their checkpoints -> our arch names.
ARCH_ALIASES = {"vit_small": "timm:vit_small_patch16_224", "vit_base": "timm:vit_base_patch16_224",
                "vit_tiny": "timm:vit_tiny_patch16_224", "vit_large": "timm:vit_large_patch16_224",
                "deit_small": "timm:vit_small_patch16_224", "deit_tiny": "timm:vit_tiny_patch16_224"}

# Archs whose shapes do not fix how they are built -> (the names a file's own ``arch`` may give that
# say it is the model timm builds, why the shapes do not tell). A ViT-S/16's qkv is 3C x C whatever
# its head count.
HEADS_NOT_IN_SHAPES = {
    "timm:vit_small_patch16_224": (("vit_small_patch16_224", "deit_small_patch16_224"),
                                   "timm's, DeiT's and DINO's ViT-S/16 have 6 attention heads, MoCo v3's 12"),
}

# ViT candidates: embedding width and patch size (read from the names, to skip building the rest)
VIT_SHAPES = {"timm:vit_tiny_patch16_224": (192, 16), "timm:vit_small_patch16_224": (384, 16),
              "timm:vit_base_patch16_224": (768, 16), "timm:vit_large_patch16_224": (1024, 16),
              "timm:vit_small_patch8_224": (384, 8), "timm:vit_base_patch8_224": (768, 8)}


def _family_candidates(keys: dict[str, tuple]) -> tuple[str, ...]:
    if "layer1.0.conv1.weight" in keys:
        return TORCHVISION_RESNETS
    if "features.0.0.weight" in keys:
        return ("mobilenet_v2",)
    if "patch_embed.proj.weight" in keys:
        shape = keys["patch_embed.proj.weight"]  # C x 3 x P x P
        return tuple(a for a, (width, patch) in VIT_SHAPES.items() if (width, patch) == (shape[0], shape[-1]))
    return CANDIDATE_ARCHS


def _mismatch(arch: str, keys: dict[str, tuple]) -> tuple[int, int, int]:
    """``(missing, wrong shape, extra)`` key counts of ``keys`` against ``arch``'s canonical keys."""
    want = expected_keys(BackboneSpec(arch=arch))
    # A ViT trained at another input size differs only in pos_embed's length (img_size fixes it).
    size_free = {"pos_embed"} if is_timm(arch) else set()
    missing = sum(1 for k in want if k not in keys and not k.endswith("num_batches_tracked"))
    wrong = sum(1 for k, s in want.items() if k in keys and keys[k] != s and k not in size_free)
    extra = sum(1 for k in keys if k not in want)
    return missing, wrong, extra


def guess_arch(keys: dict[str, tuple], hint: str | None = None) -> tuple[str | None, bool]:
    """``(arch, exact)``: the candidate whose canonical keys and shapes match; else the closest, which
    the caller's strict check then names the differing keys of."""
    candidates = _family_candidates(keys)
    family_clear = candidates != CANDIDATE_ARCHS
    hint = ARCH_ALIASES.get(hint, hint) if isinstance(hint, str) else None
    if hint in candidates:
        candidates = (hint, *[c for c in candidates if c != hint])
    best, best_score, part_of, fewest_missing = None, None, None, None
    for arch in candidates:
        missing, wrong, extra = _mismatch(arch, keys)
        score = missing + wrong + extra
        if score == 0:
            return arch, True
        if best_score is None or score < best_score:
            best, best_score = arch, score
        # every key of the file is one of arch's, with its shape: arch with keys missing (a file
        # without its BN running stats), however many
        if wrong == extra == 0 and (fewest_missing is None or missing < fewest_missing):
            part_of, fewest_missing = arch, missing
    if family_clear and part_of is not None:
        return part_of, False
    # Only a near miss counts as "this arch with keys missing"; otherwise nothing matched.
    return (best, False) if best_score is not None and best_score <= max(8, len(keys) // 10) else (None, False)


def vit_img_size(arch: str, shapes: dict[str, tuple]) -> int | None:
    """Input size a ViT checkpoint was trained at, from its position embedding (1 x (1+HW) x C)."""
    pos, proj = shapes.get("pos_embed"), shapes.get("patch_embed.proj.weight")
    if not is_timm(arch) or pos is None or proj is None:
        return None
    side = int(round((pos[1] - 1) ** 0.5))
    return side * proj[-1] if side * side == pos[1] - 1 else None
