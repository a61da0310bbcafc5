"""Key names: rule tables shared by the readers and the writers, and :func:`map_keys`.

A rule table is an ordered list of ``(regex, replacement)`` pairs; every rule is applied once, in
order, to every key (``re.sub(pattern, replacement, key, count=1)``). Wrapper prefixes are removed
with ``startswith`` by :func:`strip_prefix`, never with ``str.replace``, which would also match in
the middle of a key (``module.`` inside ``encoder.module.x``).
"""

from __future__ import annotations

import re
from typing import Iterable

from mocobench.checkpoints.errors import CheckpointError

Rules = tuple[tuple[str, str], ...]


def apply_rules(key: str, rules: Rules) -> str:
    for pattern, replacement in rules:
        key = re.sub(pattern, replacement, key, count=1)
    return key


def strip_prefix(key: str, prefixes: Iterable[str]) -> str | None:
    """``key`` without the first prefix of ``prefixes`` it starts with; ``None`` if none does."""
    for prefix in prefixes:
        if key.startswith(prefix):
            return key[len(prefix):]
    return None


# torchvision ResNet -> detectron2 ResNet, the rules of MoCo's convert-pretrain-to-detectron2.py:
# keys outside ``layerN`` belong to the stem; layer1..4 are res2..5; bnK is convK's norm; the
# projection shortcut is ``shortcut`` (+ ``.norm``). The classifier is removed before these run.
TORCHVISION_TO_DETECTRON2: Rules = (
    (r"^(?!layer)", "stem."),
    (r"^layer1\.", "res2."),
    (r"^layer2\.", "res3."),
    (r"^layer3\.", "res4."),
    (r"^layer4\.", "res5."),
    (r"(^|\.)bn([123])\.", r"\1conv\2.norm."),
    (r"\.downsample\.0\.", ".shortcut."),
    (r"\.downsample\.1\.", ".shortcut.norm."),
)

# The inverse (reading detectron2 ``.pkl`` files back into torchvision names).
DETECTRON2_TO_TORCHVISION: Rules = (
    (r"^stem\.", ""),
    (r"^res2\.", "layer1."),
    (r"^res3\.", "layer2."),
    (r"^res4\.", "layer3."),
    (r"^res5\.", "layer4."),
    (r"\.shortcut\.norm\.", ".downsample.1."),
    (r"\.shortcut\.", ".downsample.0."),
    (r"(^|\.)conv([123])\.norm\.", r"\1bn\2."),
)

# mmseg / mmdet / mmpretrain ``ResNet`` (``style='pytorch'``) uses torchvision's names under a
# ``backbone.`` prefix (its norms are built with postfixes 1..3 -> ``bn1..3``).
MM_BACKBONE_PREFIX = "backbone."


# Classifier / projection keys of a backbone model after prefix stripping: dropped as "head".
HEAD_PREFIXES = ("fc.", "classifier.", "head.", "head_dist.")
HEAD_REASON = "head (classifier / projection MLP)"


def map_keys(state: dict, keep: tuple[str, ...], drop: tuple[tuple[str, str], ...] = (), rules: Rules = (),
             heads: tuple[str, ...] = HEAD_PREFIXES) -> tuple[dict, dict[str, str], dict[str, str], dict[str, str]]:
    """``(mapped, key_map, dropped, classifier)`` of a flat weights dict, in three steps per key.

    1. A key starting with a ``drop`` prefix is dropped with its reason.
    2. Otherwise the wrapper prefix is stripped: the first of ``keep`` that some non-dropped key
       starts with is the one in use (where none does, ``mapped`` is empty and the caller refuses
       the file).
    3. ``rules`` rename the rest; names starting with ``heads`` are dropped as the classifier.

    ``mapped`` holds the values under canonical names, ``key_map`` the file key of each;
    ``classifier`` maps the keys dropped in step 3 to their names: a backbone may own a name that
    starts like a classifier (timm ConvNeXt's ``head.norm``), which the caller, knowing the
    backbone's keys, takes back.

    Raises :class:`CheckpointError` (without the file's name; the caller adds it) when a key is
    neither dropped by a rule nor under the prefix in use (a branch the format's table does not
    know, a second wrapper, a stray key: dropping it would let a load succeed with part of the file
    unread), or when two file keys map to the same name (one would silently replace the other).
    """
    def dropped_reason(k):
        return next((reason for prefix, reason in drop if k.startswith(prefix)), None)

    live = [k for k in state if isinstance(k, str) and dropped_reason(k) is None]
    prefix = next((p for p in keep if any(k.startswith(p) for k in live)), None)
    mapped, key_map, dropped, classifier, unexplained = {}, {}, {}, {}, []
    source_of: dict[str, str] = {}
    for k in state:
        if not isinstance(k, str):
            unexplained.append(repr(k))
            continue
        reason = dropped_reason(k)
        if reason is not None:
            dropped[k] = reason
            continue
        rest = strip_prefix(k, (prefix,)) if prefix is not None else None
        if rest is None:
            unexplained.append(k)
            continue
        name = apply_rules(rest, rules)
        if name.startswith(heads):
            dropped[k], classifier[k] = HEAD_REASON, name
            continue
        if name in source_of:
            raise CheckpointError(f"file keys {source_of[name]!r} and {k!r} both map to the backbone key "
                                  f"{name!r}; refusing to let one replace the other")
        source_of[name] = k
        mapped[name] = state[k]
        key_map[k] = name
    if unexplained and prefix is not None:
        shown = ", ".join(unexplained[:20]) + (f", ... ({len(unexplained)} in all)" if len(unexplained) > 20 else "")
        raise CheckpointError(f"{len(unexplained)} key(s) are neither under the backbone prefix {prefix!r} nor "
                              f"a part of the file the format explains (momentum encoder, head, queue, ...): "
                              f"{shown}")
    return mapped, key_map, dropped, classifier
