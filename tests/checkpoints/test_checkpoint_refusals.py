"""What loading refuses rather than reads past: keys no rule explains, two keys for one name, a spec
that would make timm load something else, one-line messages for a library's multi-line ones.

docs/checkpoints.md: "keys that are neither backbone nor explained (head, momentum encoder, queue,
...) are an error too"; every drop a real layout needs is a named rule, so a key no rule names is
one the loader cannot account for.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import timm
import torch
import torchvision

from mocobench.checkpoints import CheckpointError, load_backbone
from mocobench.checkpoints.backbones import build_classifier_model
from mocobench.checkpoints.cli import inspect_main
from mocobench.checkpoints.formats import detect_format

from layouts import LAYOUTS, body, save

STRAY = "zz_unexplained.weight"   # no format's prefix, drop rule or head name covers it


@pytest.fixture(scope="module")
def sources():
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=8, img_size=32)
    return {"resnet": torchvision.models.resnet18(num_classes=8), "vit": vit}


def weights_of(obj, how: str) -> dict:
    """The flat weights dict inside a layout's object (the dict itself, so it can be added to)."""
    return obj if how == "safetensors" else detect_format(obj).weights(obj)[0]


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_a_key_no_rule_explains_is_refused_in_every_layout(layout, sources, tmp_path):
    build, source, _, _ = LAYOUTS[layout]
    obj, how = build(sources[source])
    stray = torch.zeros(3)
    weights_of(obj, how)[STRAY] = stray.numpy() if how == "pickle" else stray
    path = tmp_path / "ckpt"
    save(obj, how, path)
    with pytest.raises(CheckpointError, match=STRAY.replace(".", r"\.")) as e:
        load_backbone(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("stray", ["module.new_branch.conv1.weight", "conv1.weight", "encoder_q.conv1.weight"])
def test_moco_keys_outside_the_query_encoder_are_refused_by_name(stray, sources, tmp_path):
    """The auditor's cases: a branch MoCo's table does not know, a bare key, a second wrapper."""
    obj, how = LAYOUTS["moco-v2"][0](sources["resnet"])
    obj["state_dict"][stray] = torch.zeros(3)
    save(obj, how, tmp_path / "moco.pth")
    with pytest.raises(CheckpointError) as e:
        load_backbone(tmp_path / "moco.pth")
    text = str(e.value)
    assert "moco.pth" in text and "'module.encoder_q.'" in text and text.endswith(f": {stray}"), text


def test_two_file_keys_that_map_to_one_backbone_key_are_refused(sources, tmp_path):
    """detectron2's stem.conv1.weight is renamed conv1.weight; a file that also holds conv1.weight
    would have one silently replace the other."""
    obj, how = LAYOUTS["detectron2-pkl"][0](sources["resnet"])
    obj["model"]["conv1.weight"] = np.zeros((64, 3, 7, 7), np.float32)
    save(obj, how, tmp_path / "d2.pkl")
    with pytest.raises(CheckpointError) as e:
        load_backbone(tmp_path / "d2.pkl")
    text = str(e.value)
    assert "d2.pkl" in text and "'stem.conv1.weight'" in text and "and 'conv1.weight'" in text
    assert "backbone key 'conv1.weight'" in text


def own_vit_file(tmp_path, vit, timm_kwargs: dict, container: str):
    """Our own backbone file (torch or safetensors) whose spec carries ``timm_kwargs``."""
    from mocobench.checkpoints.write import write_safetensors

    spec = {"arch": "timm:vit_tiny_patch16_224", "cifar_stem": False, "dilation": [False] * 3, "img_size": 32,
            "extra": {"timm_kwargs": timm_kwargs}}
    if container == "safetensors":
        return write_safetensors(tmp_path / "own.safetensors", body(vit), spec, {})
    path = tmp_path / "own.pth"
    torch.save({"format": "mocobench-backbone", "version": 1, "spec": spec, "state_dict": body(vit), "meta": {}}, path)
    return path


@pytest.mark.parametrize("container", ["torch", "safetensors"])
@pytest.mark.parametrize("kwargs, named", [
    ({"checkpoint_path": "OTHER"}, "checkpoint_path"),
    ({"pretrained": True}, "pretrained"),
    ({"pretrained_cfg_overlay": {"file": "OTHER"}}, "pretrained_cfg_overlay"),
    ({"num_heads": "3; import os"}, "num_heads"),
])
def test_a_files_spec_cannot_hand_timm_loading_arguments(kwargs, named, container, sources, tmp_path, monkeypatch):
    """SECURITY: timm.create_model(checkpoint_path=...) reads another file with timm's own loader
    (outside safe_pickle), pretrained=True downloads; a file's spec must not reach either."""
    other = tmp_path / "other.pth"
    torch.save(body(sources["vit"]), other)   # a file timm could load, so a pass-through would succeed
    kwargs = {k: (str(other) if v == "OTHER" else {"file": str(other)} if v == {"file": "OTHER"} else v)
              for k, v in kwargs.items()}
    path = own_vit_file(tmp_path, sources["vit"], kwargs, container)
    calls = []
    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    with pytest.raises(CheckpointError, match=named) as e:
        load_backbone(path)
    assert str(path) in str(e.value)
    assert not any(named in kw or kw.get("pretrained") for kw in calls)


def test_size_arguments_in_a_spec_still_load_and_round_trip(sources, tmp_path):
    """MoCo v3's ViT-S (12 heads, formats.py) exported to our formats keeps its heads."""
    from mocobench.transfer.adapters.cli import convert

    vit = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=8, num_heads=12, img_size=32)
    torch.save({"epoch": 300, "state_dict": {"module.base_encoder." + k: v for k, v in vit.state_dict().items()}},
               tmp_path / "v3.pth")
    for to in ("mocobench", "safetensors"):
        convert(str(tmp_path / "v3.pth"), to, tmp_path / f"v3.{to}")
        backbone, _ = load_backbone(tmp_path / f"v3.{to}")
        assert backbone.spec.extra["timm_kwargs"] == {"num_heads": 12}
        assert backbone.net.blocks[0].attn.num_heads == 12


def test_build_classifier_model_passes_only_size_arguments_to_timm():
    with pytest.raises(ValueError, match="checkpoint_path"):
        build_classifier_model("timm:test_vit", timm_kwargs={"checkpoint_path": "/x.pth"})
    with pytest.raises(ValueError, match="not a timm model"):
        build_classifier_model("resnet18", timm_kwargs={"num_heads": 2})


@pytest.mark.parametrize("spec, words", [
    ({"dilation": 5}, ["dilation 5"]),
    ({"img_size": "abc"}, ["img_size 'abc'"]),
    ({"arch": "nosuch"}, ["'nosuch'"]),
    ({"arch": "timm:nosuch"}, ["timm:nosuch"]),
    ({"cifar_stem": "yes"}, ["cifar_stem"]),
    ({"cifar_stem": True, "cifar_stem_padding": 3}, ["cifar_stem_padding 3"]),
    ({"cifar_stem_padding": 2}, ["cifar_stem_padding 2 without cifar_stem"]),
    ({"extra": {"timm_kwargs": {"num_heads": 2}}}, ["not a timm model"]),
    ({"secret": 1}, ["secret"]),
])
def test_an_own_files_spec_is_checked_field_by_field(spec, words, tmp_path):
    path = tmp_path / "own.pth"
    full = {"arch": "resnet18", "cifar_stem": False, "dilation": [False] * 3, "img_size": None, "extra": {}} | spec
    torch.save({"format": "mocobench-backbone", "version": 1, "spec": full,
                "state_dict": body(torchvision.models.resnet18()), "meta": {}}, path)
    with pytest.raises(CheckpointError) as e:
        load_backbone(path)
    assert str(e.value).startswith(f"{path}: ") and all(w in str(e.value) for w in words), str(e.value)


def test_a_pickle_that_asks_for_a_huge_allocation_is_refused_naming_the_file(tmp_path):
    class Huge:
        def __reduce__(self):
            return (bytearray, (2 ** 56,))

    path = tmp_path / "huge.pkl"
    path.write_bytes(pickle.dumps(Huge(), protocol=2))   # 44 bytes
    with pytest.raises(CheckpointError, match="huge.pkl: refused to load: .*allocate"):
        load_backbone(path)


def test_a_pickled_numpy_array_is_an_unrecognised_layout_not_an_internal_error(tmp_path):
    path = tmp_path / "array.pkl"
    with open(path, "wb") as f:
        pickle.dump(np.zeros(3), f, protocol=2)
    with pytest.raises(CheckpointError, match="array.pkl: unrecognised checkpoint layout"):
        load_backbone(path)


def test_a_multi_line_library_message_is_printed_on_one_line(tmp_path, capsys):
    """pickle's persistent-id error spans two lines; inspect prints one."""
    path = tmp_path / "persid.pkl"
    path.write_bytes(b"\x80\x02X\x01\x00\x00\x00aQ.")   # BINPERSID with no persistent_load
    assert inspect_main([str(path)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "persid.pkl" in err and "persistent id" in err


CAFFE2 = {"conv1_w": np.zeros((64, 3, 7, 7), np.float32), "res_conv1_bn_s": np.ones(64, np.float32),
          "res2_0_branch2a_w": np.zeros((64, 64, 1, 1), np.float32), "res2_0_branch2a_bn_s": np.ones(64, np.float32)}


@pytest.mark.parametrize("layout", ["flat", "blobs", "model"])
def test_caffe2_names_are_refused_as_such_whatever_the_wrapper(layout, tmp_path):
    """detectron2's ImageNet .pkl models and Detectron's {"blobs": ...}: refused before any format is
    detected (they read as an unknown architecture or an unrecognised layout before)."""
    obj = {"flat": CAFFE2, "blobs": {"blobs": CAFFE2},
           "model": {"model": CAFFE2, "__author__": "Caffe2", "matching_heuristics": True}}[layout]
    with open(tmp_path / "R-50.pkl", "wb") as f:
        pickle.dump(obj, f, protocol=2)
    with pytest.raises(CheckpointError, match=r"R-50\.pkl: Caffe2 names .*convert them with detectron2"):
        load_backbone(tmp_path / "R-50.pkl")


def test_a_value_that_is_not_an_array_is_refused_naming_the_file_and_key(tmp_path):
    from mocobench.checkpoints.keymaps import TORCHVISION_TO_DETECTRON2, apply_rules

    model = {apply_rules(k, TORCHVISION_TO_DETECTRON2): v.numpy()
             for k, v in torchvision.models.resnet18().state_dict().items() if not k.startswith("fc.")}
    model["res2.0.conv1.norm.running_mean"] = "not numbers"
    with open(tmp_path / "d2.pkl", "wb") as f:
        pickle.dump({"model": model, "__author__": "MOCO"}, f, protocol=2)
    with pytest.raises(CheckpointError, match=r"d2\.pkl: the file key 'res2\.0\.conv1\.norm\.running_mean' holds a str"):
        load_backbone(tmp_path / "d2.pkl")


def test_a_vit_small_state_dict_must_say_whose_it_is(tmp_path):
    """timm's, DeiT's and DINO's ViT-S/16 have 6 heads, MoCo v3's 12 (its convert_to_deit.py writes the
    same {"model": ...} as DeiT's release): the shapes do not tell, so a plain state dict that does
    not say is refused; --arch (timm's model) or a file that names its timm model loads it."""
    vit = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=8, img_size=32)
    torch.save({"model": body(vit)}, tmp_path / "deit_s.pth")
    with pytest.raises(CheckpointError, match=r"deit_s\.pth: .*attention heads.*--arch timm:vit_small_patch16_224"):
        load_backbone(tmp_path / "deit_s.pth")
    backbone, report = load_backbone(tmp_path / "deit_s.pth", arch="timm:vit_small_patch16_224")
    assert backbone.net.blocks[0].attn.num_heads == 6
    torch.save({"arch": "vit_small_patch16_224", "epoch": 300, "state_dict": body(vit)}, tmp_path / "timm_s.pth")
    backbone, _ = load_backbone(tmp_path / "timm_s.pth")
    assert backbone.net.blocks[0].attn.num_heads == 6


@pytest.mark.parametrize("seq", ["encoder_q", "online_net", "encoder", "base_encoder"])
@pytest.mark.parametrize("change", ["differs", "missing"])
def test_an_mmselfsup_alias_that_is_not_the_backbone_is_refused(seq, change, sources, tmp_path):
    """OpenSelfSup / mmselfsup 0.x save the backbone twice (``self.backbone = encoder_q[0]``); where the
    two copies differ, which one is the backbone cannot be told."""
    from layouts import mmselfsup_0x

    obj, how = mmselfsup_0x(seq, None)(sources["resnet"])
    state = obj["state_dict"]
    if change == "differs":
        state[f"{seq}.0.layer1.0.conv1.weight"] = state[f"{seq}.0.layer1.0.conv1.weight"] + 1
    else:
        del state[f"{seq}.0.bn1.running_mean"]
    save(obj, how, tmp_path / "mm.pth")
    word = "tensors that differ: layer1.0.conv1.weight" if change == "differs" else "one name only: bn1.running_mean"
    with pytest.raises(CheckpointError) as e:
        load_backbone(tmp_path / "mm.pth")
    assert str(e.value).startswith(f"{tmp_path / 'mm.pth'}: ") and f"{seq}.0.*" in str(e.value) \
        and word in str(e.value), str(e.value)


@pytest.mark.parametrize("drop", ["running", "bn1.running_mean"])
@pytest.mark.parametrize("layout", ["torchvision", "moco-v2"])
def test_missing_bn_statistics_are_named_not_an_unknown_architecture(drop, layout, sources, tmp_path):
    """A ResNet (layer1.0.conv1.weight) without its BN running statistics: the loader names the keys
    the nearest ResNet misses, rather than "match no known architecture ... pass arch=" (audit)."""
    obj, how = LAYOUTS[layout][0](sources["resnet"])
    weights = weights_of(obj, how)
    for k in [k for k in weights if drop in k]:
        del weights[k]
    save(obj, how, tmp_path / "ckpt.pth")
    with pytest.raises(CheckpointError) as e:
        load_backbone(tmp_path / "ckpt.pth")
    msg = str(e.value)
    assert "arch resnet18" in msg and "backbone keys missing from the checkpoint: bn1.running_mean" in msg, msg
    assert "no known architecture" not in msg
    if drop == "running":
        assert "layer1.0.bn1.running_var" in msg and "(40 in all)" in msg, msg


def test_keys_of_no_known_resnet_still_match_no_architecture(tmp_path):
    """A ResNet-like file whose shapes fit none of the candidates (16-wide blocks in layer1, as a CIFAR
    ResNet-20's) is still "no known architecture", not a ResNet-18 with keys missing."""
    state = body(torchvision.models.resnet18())
    state = {k: (v[:16].clone() if k.startswith("layer1") and v.ndim and v.shape[0] == 64 else v)
             for k, v in state.items()}
    torch.save(state, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="no known architecture"):
        load_backbone(tmp_path / "odd.pth")
