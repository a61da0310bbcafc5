"""Which departures from the official recipes a record carries into the table (core/deviations.toml):
those of what its pretraining and its evaluation ran, and no others."""

from __future__ import annotations

import pytest
import torch

from mocobench.core.deviations import of_evaluation
from mocobench.pretrain.config import PRESETS

PER_ITERATION = "cosine learning rate per iteration"
BLUR = "Gaussian blur with torchvision's 23-tap kernel"
BF16_EVAL = "bf16 autocast on CUDA; the official evaluation code"


def pretrain_departures(preset: str, **changes) -> list[str]:
    """The departures a kNN record of a checkpoint exported from ``preset`` carries from its pretraining."""
    return of_evaluation("knn", "dino-knn", "torchvision", {**PRESETS[preset].to_dict(), **changes})


def has(texts: list[str], start: str) -> bool:
    return any(t.startswith(start) for t in texts)


@pytest.mark.parametrize("preset, per_iteration, blur", [
    ("moco_v1_200ep", False, False),        # step schedule, and MoCo v1's augmentation has no blur
    ("moco_v2_200ep", True, True),
    ("moco_v2_800ep", True, True),
    ("unimoco_800ep_0pct", True, True),     # main_unimoco.py steps its cosine per epoch too
    ("unimoco_800ep_100pct", True, True),
    ("smog_400ep", False, False),           # no official code to depart from; BYOL's blur kernel
])
def test_pretraining_departures_follow_what_the_run_used(preset, per_iteration, blur):
    found = pretrain_departures(preset)
    assert has(found, PER_ITERATION) == per_iteration and has(found, BLUR) == blur, found


CONSTANT_M = "momentum m constant (0.99); MoCo v3 raises it"
DECAY_ALL = "AdamW applies no weight decay to norms"


@pytest.mark.parametrize("preset, vit_recipe", [
    ("moco_v2_vit_s_300ep", True), ("unimoco_vit_s_300ep_100pct", True),
    ("moco_v2_200ep", False), ("smog_vit_s_300ep", False),   # SGD; SMoG takes no MoCo v3 recipe
])
def test_the_moco_vit_presets_state_what_they_do_not_take_from_moco_v3(preset, vit_recipe):
    found = pretrain_departures(preset)
    assert has(found, CONSTANT_M) == vit_recipe and has(found, DECAY_ALL) == vit_recipe, found


def test_the_departures_follow_the_recipe_not_the_method_name():
    """MoCo v1 given a cosine schedule departs from main_moco.py's per-epoch step; given MoCo v2's
    augmentation it blurs as we do; MoCo v2 with a step schedule does not depart."""
    assert has(pretrain_departures("moco_v1_200ep", schedule="cosine"), PER_ITERATION)
    assert has(pretrain_departures("moco_v1_200ep", augmentation="moco_v2"), BLUR)
    assert not has(pretrain_departures("moco_v2_200ep", schedule="step"), PER_ITERATION)


def test_a_bf16_evaluation_departs_from_the_official_fp32():
    for task, protocol in (("linear", "paper"), ("semi-1pct", "simclr"), ("segmentation", "moco-fcn")):
        assert has(of_evaluation(task, protocol, "torchvision", None, precision="bf16"), BF16_EVAL)
        assert not has(of_evaluation(task, protocol, "torchvision", None, precision="fp32"), BF16_EVAL)
    assert not has(of_evaluation("detection", "moco-voc-c4-24k", "detectron2", None), BF16_EVAL)
    # the engines' own AMP (--opts SOLVER.AMP.ENABLED True, mmengine's AmpOptimWrapper) is fp16
    for task, protocol, engine in (("detection", "moco-voc-c4-24k", "detectron2"),
                                   ("segmentation", "mmseg-fcn-40k", "mmseg")):
        assert has(of_evaluation(task, protocol, engine, None, precision="fp16"), "fp16 AMP")
        assert not has(of_evaluation(task, protocol, engine, None, precision="fp32"), "fp16 AMP")


def test_the_record_states_the_precision_its_evaluation_ran_at():
    """transfer/runner.py puts the precision core/precision.py chose into the record's config: bf16 on
    CUDA, fp32 on CPU or where the task turned bf16 off (detection's config says so); a third-party
    engine states what its config ran (fp16 with its AMP option, else fp32)."""
    from mocobench.transfer.runner import Outcome, evaluation_precision

    def ran(device: str, engine: str = "torchvision", **config) -> str | None:
        return evaluation_precision(Outcome(metrics={}, dataset={}, config=config, engine=engine), torch.device(device))

    assert ran("cuda") == "bf16" and ran("cpu") == "fp32"
    assert ran("cuda", bf16=False) == "fp32" and ran("cuda", bf16=True) == "bf16"
    assert ran("cuda", engine="detectron2") is None   # an engine that states nothing is not guessed
    assert ran("cuda", engine="detectron2", precision="fp16") == "fp16"
    assert ran("cpu", engine="mmseg", precision="fp32") == "fp32"


def test_dino_knn_states_its_bilinear_resize():
    """DINO's eval_knn.py resizes bicubic; ours bilinearly, for kNN as for the linear probes."""
    assert has(of_evaluation("knn", "dino-knn", "torchvision", None, precision="fp32"), "bilinear resize")
    assert not has(of_evaluation("linear", "paper", "torchvision", None, precision="fp32"), "bilinear resize")
