"""Every protocol field reaches the mmseg config, and reading the config back gives it again.

Pure Python (the config is plain Python: executed here, no mmseg needed): for each field, a
changed value must show in the config that mmseg would run, read back by ``describe``.
"""

from __future__ import annotations

import ast
import dataclasses

import pytest

from mocobench.transfer.adapters.mmseg import describe, mmseg_config_text, write_mmseg_config
from mocobench.transfer.segmentation.mmseg_engine import MMSEG_PROTOCOLS, fcn_config
from mocobench.transfer.segmentation.protocols import get_protocol

CHANGES = [("crop", (64, 96)), ("batch_size", 4), ("iters", 123), ("lr", 0.05), ("momentum", 0.8),
           ("weight_decay", 1e-3), ("poly_power", 1.0), ("min_lr", 0.0), ("scale_range", (0.75, 1.5)),
           ("flip", False), ("num_workers", 0), ("checkpoint_every", 7), ("log_every", 3),
           ("inference", "slide")]
# what changes with a field: the checkpoint interval is at most the schedule, the resize bound
# follows the crop, the sliding window appears with slide inference
DEPENDENT = {"iters": {"checkpoint_every"}, "crop": {"mmseg_scale"}, "inference": {"slide_crop", "slide_stride"}}


def _ran(protocol, dataset: str, arch: str = "resnet18", world: int = 1, device: str = "cpu") -> dict:
    fcn = fcn_config(protocol, dataset, arch, world, device)
    text = mmseg_config_text(fcn, "/w/backbone_mmseg.pth", data_root="/data")
    namespace: dict = {}
    exec(compile(ast.parse(text), "<mmseg config>", "exec"), namespace)
    return describe(namespace, world) | {"depth": namespace["model"]["backbone"]["depth"],
                                         "c5": namespace["model"]["decode_head"]["in_channels"]}


@pytest.mark.parametrize("name,dataset", sorted(MMSEG_PROTOCOLS))
@pytest.mark.parametrize("field,value", CHANGES, ids=[c[0] for c in CHANGES])
def test_every_protocol_field_takes_effect(name, dataset, field, value):
    base = get_protocol(name, dataset)
    assert getattr(base, field) != value
    got = _ran(dataclasses.replace(base, **{field: value}), dataset)
    expected = list(value) if isinstance(value, tuple) else value
    assert got[field] == expected
    # and nothing else moves, except what follows from it
    before = _ran(base, dataset)
    moved = {k for k in set(got) | set(before) if got.get(k) != before.get(k)}
    assert moved == {field} | DEPENDENT.get(field, set())


def test_schedule_step_sync_bn_and_arch():
    base = get_protocol("mmseg-fcn-40k", "cityscapes")
    step = _ran(dataclasses.replace(base, schedule="step", lr_steps=(0.5, 0.75), iters=100), "cityscapes")
    assert step["schedule"] == "step" and step["lr_steps"] == [0.5, 0.75]
    assert _ran(base, "cityscapes", world=2, device="cuda")["sync_bn"] is True
    assert _ran(base, "cityscapes")["sync_bn"] is False  # one process: plain BN, said so
    with pytest.raises(ValueError, match="SyncBatchNorm has no CPU kernel"):
        _ran(base, "cityscapes", world=2, device="cpu")
    with pytest.raises(ValueError, match="does not split over 3"):
        _ran(base, "cityscapes", world=3, device="cuda")
    assert (_ran(base, "cityscapes", "resnet50")["depth"], _ran(base, "cityscapes", "resnet50")["c5"]) == (50, 2048)
    assert (_ran(base, "cityscapes")["depth"], _ran(base, "cityscapes")["c5"]) == (18, 512)
    with pytest.raises(ValueError, match="head='deeplabv3'"):
        _ran(dataclasses.replace(base, head="deeplabv3"), "cityscapes")
    with pytest.raises(ValueError, match="not 'moco-fcn' on cityscapes"):
        _ran(get_protocol("moco-fcn", "cityscapes"), "cityscapes")


def test_resize_bound_follows_the_crop_in_mmseg_proportion():
    """mmseg's configs: Cityscapes crop 512x1024 in a (2048, 1024) bound, VOC 512x512 in (2048, 512)."""
    cs, voc = get_protocol("mmseg-fcn-40k", "cityscapes"), get_protocol("mmseg-fcn-20k", "voc2012")
    assert _ran(cs, "cityscapes")["mmseg_scale"] == [2048, 1024]
    assert _ran(voc, "voc2012")["mmseg_scale"] == [2048, 512]
    assert _ran(dataclasses.replace(cs, crop=(32, 64)), "cityscapes")["mmseg_scale"] == [128, 64]
    assert _ran(dataclasses.replace(voc, crop=(48, 64)), "voc2012")["mmseg_scale"] == [256, 48]


def test_convert_config_follows_the_arch(tmp_path):
    out = write_mmseg_config("fcn-r50-d8-voc12aug-20k", "/w/r18.pth", tmp_path / "c.py", arch="resnet18")
    namespace: dict = {}
    exec(compile(ast.parse(out.read_text()), str(out), "exec"), namespace)
    assert namespace["model"]["backbone"]["depth"] == 18 and namespace["data_root"] == "data/VOCdevkit/VOC2012/"
    with pytest.raises(ValueError, match="vit_small"):
        write_mmseg_config("fcn-r50-d8-voc12aug-20k", "/w/v.pth", tmp_path / "v.py", arch="vit_small")
