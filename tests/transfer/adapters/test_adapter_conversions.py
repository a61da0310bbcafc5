"""``mocobench convert``: ours -> detectron2 / mmseg / torchvision / timm / safetensors -> ours."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from mocobench.checkpoints import load_backbone, save_backbone
from mocobench.checkpoints.backbones import build_backbone
import argparse

from mocobench.transfer.adapters.cli import WRITERS, main
from mocobench.transfer.adapters.detectron2 import to_detectron2

META = {"method": "moco_v2", "epochs": 200, "label_fraction": None, "config": {"T": 0.2, "mlp": True}}


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    backbone = build_backbone("resnet18", seed=3)
    for mod in backbone.modules():  # non-initial BN statistics, so buffers are checked too
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_var.uniform_(0.5, 2)
            mod.num_batches_tracked.fill_(7)
    path = save_backbone(tmp_path_factory.mktemp("ours") / "r18.pth", backbone, META)
    return path, backbone.net.state_dict()


@pytest.fixture(scope="module")
def loaded(ours):
    return load_backbone(ours[0])


def write(loaded, target, out):
    """What ``mocobench convert`` does after loading (the CLI itself is tested below)."""
    backbone, report = loaded
    args = argparse.Namespace(config=None, config_out=None, data_root=None, norm=None)
    return WRITERS[target](backbone, report, out, args)


def assert_same(state, reference):
    assert set(state) == set(reference)
    for k, v in reference.items():
        assert torch.equal(state[k], v), k


@pytest.mark.parametrize("target", list(WRITERS))
def test_round_trip_through_every_target(ours, loaded, tmp_path, target):
    _, reference = ours
    out = tmp_path / f"converted.{target}"
    assert write(loaded, target, out) == [out]
    backbone, report = load_backbone(out)
    assert_same(backbone.net.state_dict(), reference)
    expected_format = {"detectron2": "detectron2", "mmseg": "mmpretrain", "mmdet": "mmpretrain",
                       "mmpretrain": "mmpretrain", "torchvision": "torchvision", "timm": "torchvision",
                       "safetensors": "safetensors", "mocobench": "mocobench-backbone"}[target]
    assert report.format == expected_format
    if target not in ("torchvision", "timm"):  # plain state dicts carry no metadata
        assert report.metadata["method"] == "moco_v2" and report.metadata["epochs"] == 200


def test_convert_cli_writes_weights_and_config(ours, tmp_path, capsys):
    import yaml

    path, _ = ours
    out = tmp_path / "r18.pkl"
    assert main([str(path), "--to", "detectron2", "-o", str(out), "--config", "moco-voc-c4-24k",
                 "--data-root", "/data"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and f"wrote {out.with_suffix('.yaml')}" in printed
    cfg = yaml.safe_load(out.with_suffix(".yaml").read_text())
    assert cfg["MODEL"]["WEIGHTS"] == str(out.resolve())


def test_detectron2_pkl_is_a_plain_pickle_with_moco_names(ours, loaded, tmp_path):
    _, reference = ours
    out = tmp_path / "r18.pkl"
    write(loaded, "detectron2", out)
    raw = out.read_bytes()
    assert not raw.startswith(b"PK")  # not a torch zip file
    obj = pickle.loads(raw)
    assert obj["__author__"] == "mocobench" and obj["matching_heuristics"] is True
    model = obj["model"]
    assert all(isinstance(v, np.ndarray) for v in model.values())
    # MoCo's converter rules, spelled out independently
    expected = {"conv1.weight": "stem.conv1.weight", "bn1.running_var": "stem.conv1.norm.running_var",
                "layer1.0.conv1.weight": "res2.0.conv1.weight", "layer1.1.bn2.bias": "res2.1.conv2.norm.bias",
                "layer2.0.downsample.0.weight": "res3.0.shortcut.weight",
                "layer4.0.downsample.1.running_mean": "res5.0.shortcut.norm.running_mean",
                "layer3.1.bn1.weight": "res4.1.conv1.norm.weight"}
    for tv, d2 in expected.items():
        np.testing.assert_array_equal(model[d2], reference[tv].numpy())
    assert len(model) == len(reference) and not any(k.startswith(("fc", "stem.fc")) for k in model)
    full = {k: v for k, v in to_detectron2(reference | {"fc.weight": torch.zeros(2, 512)}).items()}
    assert set(full) == set(model)


def test_mmseg_checkpoint_loads_with_weights_only(ours, loaded, tmp_path):
    _, reference = ours
    out = tmp_path / "r18_mmseg.pth"
    write(loaded, "mmseg", out)
    obj = torch.load(out, weights_only=True)
    assert set(obj) == {"meta", "state_dict"}
    assert set(obj["state_dict"]) == {"backbone." + k for k in reference}
    assert obj["meta"]["mocobench"]["method"] == "moco_v2"


def test_torchvision_and_timm_exports_miss_only_the_classifier(loaded, tmp_path):
    import timm
    import torchvision

    write(loaded, "torchvision", tmp_path / "tv.pth")
    result = torchvision.models.resnet18().load_state_dict(torch.load(tmp_path / "tv.pth", weights_only=True),
                                                           strict=False)
    assert set(result.missing_keys) == {"fc.weight", "fc.bias"} and not result.unexpected_keys
    write(loaded, "timm", tmp_path / "timm.pth")
    result = timm.create_model("resnet18", pretrained=False).load_state_dict(
        torch.load(tmp_path / "timm.pth", weights_only=True), strict=False)
    assert set(result.missing_keys) == {"fc.weight", "fc.bias"} and not result.unexpected_keys


def test_convert_errors_are_clear(tmp_path, capsys):
    assert main([str(tmp_path / "missing.pth"), "--to", "detectron2", "-o", str(tmp_path / "x.pkl")]) == 1
    assert "missing.pth" in capsys.readouterr().err
    assert main(["random:mobilenet_v2", "--to", "detectron2", "-o", str(tmp_path / "x.pkl")]) == 1
    assert "ResNets only" in capsys.readouterr().err
    assert not (tmp_path / "x.pkl").exists()


@pytest.mark.parametrize("to, options, named", [
    ("detectron2", ["--config", "moco-voc-c4-24k", "--norm", "Bogus"], "Bogus"),
    ("detectron2", ["--config", "nosuch"], "nosuch"),
    ("mmseg", ["--config", "nosuch"], "nosuch"),
    ("mmseg", ["--config", "fcn-r50-d8-cityscapes-40k", "--norm", "Bogus"], "Bogus"),
    ("mmdet", ["--config", "moco-voc-c4-24k"], "moco-voc-c4-24k"),   # a detectron2 config
])
def test_a_bad_config_option_is_refused_before_anything_is_written(ours, tmp_path, capsys, to, options, named):
    path, _ = ours
    out = tmp_path / "out" / "weights.bin"
    out.parent.mkdir()
    assert main([str(path), "--to", to, "-o", str(out), *options]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err and "--" in err
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("to", ["torchvision", "timm", "safetensors", "mocobench"])
@pytest.mark.parametrize("option", [["--config", "moco-voc-c4-24k"], ["--config-out", "c.yaml"],
                                    ["--norm", "BN"], ["--data-root", "/data"]])
def test_config_options_are_refused_for_targets_that_write_no_config(ours, tmp_path, capsys, to, option):
    path, _ = ours
    out = tmp_path / "out" / "weights.bin"
    out.parent.mkdir()
    assert main([str(path), "--to", to, "-o", str(out), *option]) == 2
    err = capsys.readouterr().err
    assert option[0] in err and "--to detectron2, mmseg, mmdet, mmpretrain" in err
    assert list(out.parent.iterdir()) == []


def test_config_shaping_options_without_a_config_are_refused(ours, tmp_path, capsys):
    path, _ = ours
    assert main([str(path), "--to", "detectron2", "-o", str(tmp_path / "w.pkl"), "--norm", "SyncBN"]) == 2
    assert "--norm" in capsys.readouterr().err and not (tmp_path / "w.pkl").exists()


def test_random_names_take_no_file_options(tmp_path, capsys):
    assert main(["random:resnet18", "--to", "torchvision", "-o", str(tmp_path / "w.pth"), "--arch", "resnet50"]) == 2
    assert "--arch" in capsys.readouterr().err
    assert main(["random:timm", "--to", "torchvision", "-o", str(tmp_path / "w.pth")]) == 2
    assert "random:timm" in capsys.readouterr().err
    assert not (tmp_path / "w.pth").exists()


def test_convert_takes_the_branch_and_input_convention_its_refusals_ask_for(tmp_path, capsys):
    """The loader's refusals say "say which with --branch raw|ema" / "--input-convention rgb|bgr255";
    convert must accept both and pass them to the loader."""
    from mocobench.checkpoints.keymaps import TORCHVISION_TO_DETECTRON2, apply_rules

    torch.manual_seed(0)
    raw, ema = build_backbone("resnet18", seed=1).net, build_backbone("resnet18", seed=2).net
    pair = tmp_path / "timm-train.pth.tar"
    torch.save({"epoch": 9, "state_dict": raw.state_dict(), "state_dict_ema": ema.state_dict()}, pair)
    out = tmp_path / "ema.pth"
    assert main([str(pair), "--to", "torchvision", "-o", str(out)]) == 1
    assert "--branch raw|ema" in capsys.readouterr().err and not out.exists()
    assert main([str(pair), "--to", "torchvision", "-o", str(out), "--branch", "ema"]) == 0
    assert_same(torch.load(out, weights_only=True), ema.state_dict())

    anon = tmp_path / "anon.pkl"   # detectron2 names, no pixel statistics, no __author__: undecidable
    with open(anon, "wb") as f:
        pickle.dump({"model": {apply_rules(k, TORCHVISION_TO_DETECTRON2): v.numpy()
                               for k, v in raw.state_dict().items() if "num_batches" not in k}}, f)
    out = tmp_path / "rgb.pth"
    assert main([str(anon), "--to", "torchvision", "-o", str(out)]) == 1
    assert "--input-convention rgb|bgr255" in capsys.readouterr().err and not out.exists()
    assert main([str(anon), "--to", "torchvision", "-o", str(out), "--input-convention", "rgb"]) == 0
    got = torch.load(out, weights_only=True)
    assert all(torch.equal(got[k], v) for k, v in raw.state_dict().items() if "num_batches" not in k)
