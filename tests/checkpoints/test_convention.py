"""The input convention of a checkpoint is found, stated and applied (issue 28): a detectron2 .pkl in
the MSRA convention (BGR, 0-255, its own means, std 1) gives the features of the RGB model it was
made from, through our probes' RGB [0, 1] input; the engines that assume torchvision's normalisation
refuse it."""

from __future__ import annotations

import pickle

import pytest
import torch
import torchvision

from mocobench.checkpoints import load_backbone
from mocobench.checkpoints.backbones import IMAGENET_MEAN, IMAGENET_STD
from mocobench.checkpoints.keymaps import TORCHVISION_TO_DETECTRON2, apply_rules


def msra_pkl(rgb: torch.nn.Module, path):
    """The same network for BGR pixels in 0-255 minus the ImageNet means (in BGR order), std 1: the stem
    takes the channels reversed and divided by 255 x the RGB model's std."""
    sd = {k: v.clone() for k, v in rgb.state_dict().items() if not k.startswith("fc.") and "num_batches" not in k}
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    sd["conv1.weight"] = (sd["conv1.weight"] / (255 * std)).flip(1)
    model = {apply_rules(k, TORCHVISION_TO_DETECTRON2): v.numpy() for k, v in sd.items()}
    model["pixel_mean"] = (torch.tensor(IMAGENET_MEAN) * 255).flip(0).view(3, 1, 1).numpy()   # 103.53, 116.28, 123.675
    model["pixel_std"] = torch.ones(3, 1, 1).numpy()
    with open(path, "wb") as f:
        pickle.dump({"model": model}, f)
    return path


def test_an_msra_bgr_pkl_is_read_as_bgr_and_gives_the_rgb_models_features(tmp_path):
    torch.manual_seed(0)
    rgb = torchvision.models.resnet18().eval()
    backbone, report = load_backbone(msra_pkl(rgb, tmp_path / "R-18-msra.pkl"))
    conv = report.metadata["input_convention"]
    assert (conv["channels"], conv["scale"]) == ("BGR", "0-255") and "pixel_mean" in conv["source"]
    assert conv["mean"] == pytest.approx([103.53, 116.28, 123.675], abs=1e-3) and conv["std"] == [1.0, 1.0, 1.0]
    assert backbone.mean == pytest.approx(IMAGENET_MEAN) and backbone.std == pytest.approx((1 / 255,) * 3)
    image = torch.rand(2, 3, 64, 64)   # RGB in [0, 1], as every probe feeds it
    ours = backbone.eval()((image - torch.tensor(backbone.mean).view(1, 3, 1, 1)) / torch.tensor(backbone.std).view(1, 3, 1, 1))
    rgb.fc = torch.nn.Identity()
    theirs = rgb((image - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_conventions_are_said_with_their_source(tmp_path):
    torch.manual_seed(0)
    net = torchvision.models.resnet18()
    torch.save(net.state_dict(), tmp_path / "tv.pth")
    _, report = load_backbone(tmp_path / "tv.pth")
    conv = report.metadata["input_convention"]
    assert conv["channels"] == "RGB" and conv["source"].startswith("default")
    sd = {apply_rules(k, TORCHVISION_TO_DETECTRON2): v.numpy() for k, v in net.state_dict().items()
          if not k.startswith("fc.") and "num_batches" not in k}
    with open(tmp_path / "moco.pkl", "wb") as f:
        pickle.dump({"model": sd, "__author__": "MOCO", "matching_heuristics": True}, f)
    _, report = load_backbone(tmp_path / "moco.pkl")
    assert report.metadata["input_convention"]["source"].startswith("the format's known convention: __author__ 'MOCO'")


def test_an_export_that_assumes_torchvision_normalisation_refuses_bgr_weights(tmp_path, capsys):
    """(The engines call the same refusal, transfer/adapters/cli.py refuse_other_convention.)"""
    from mocobench.cli import main

    torch.manual_seed(0)
    pkl = msra_pkl(torchvision.models.resnet18(), tmp_path / "msra.pkl")
    assert main(["convert", str(pkl), "--to", "detectron2", "-o", str(tmp_path / "out.pkl")]) == 1
    err = capsys.readouterr().err
    assert "expect BGR pixels on a 0-255 scale" in err and "--to detectron2" in err
    assert not (tmp_path / "out.pkl").exists()


def test_a_raw_and_ema_pair_is_refused_until_the_branch_is_said(tmp_path, capsys):
    """Issue 28: releases report either the raw weights or the EMA copy (VAN: 72.0 against 75.4), so
    the loader does not guess; --branch picks one and the card says which."""
    from mocobench.checkpoints import CheckpointError
    from mocobench.cli import main

    torch.manual_seed(0)
    raw, ema = torchvision.models.resnet18(), torchvision.models.resnet18()
    path = tmp_path / "timm-train.pth.tar"
    torch.save({"epoch": 99, "state_dict": raw.state_dict(), "state_dict_ema": ema.state_dict()}, path)
    with pytest.raises(CheckpointError, match="say which with --branch raw|ema"):
        load_backbone(path)
    got, report = load_backbone(path, branch="ema")
    assert torch.equal(got.net.state_dict()["conv1.weight"], ema.state_dict()["conv1.weight"])
    assert report.card()["branch_used"] == "EMA weights"
    got, report = load_backbone(path, branch="raw")
    assert torch.equal(got.net.state_dict()["conv1.weight"], raw.state_dict()["conv1.weight"])
    assert report.card()["branch_used"] == "raw (non-EMA) weights"
    torch.save(raw.state_dict(), tmp_path / "plain.pth")
    with pytest.raises(CheckpointError, match="no raw/EMA pair"):
        load_backbone(tmp_path / "plain.pth", branch="ema")
    assert main(["inspect", str(path)]) == 1 and "--branch raw|ema" in capsys.readouterr().err
    assert main(["inspect", str(path), "--branch", "ema"]) == 0 and "branch:     EMA weights" in capsys.readouterr().out


def test_an_undecidable_convention_is_refused_until_it_is_said(tmp_path):
    from mocobench.checkpoints import CheckpointError

    torch.manual_seed(0)
    rgb = torchvision.models.resnet18().eval()
    sd = {apply_rules(k, TORCHVISION_TO_DETECTRON2): v.numpy() for k, v in rgb.state_dict().items()
          if not k.startswith("fc.") and "num_batches" not in k}
    with open(tmp_path / "anon.pkl", "wb") as f:
        pickle.dump({"model": sd}, f)
    with pytest.raises(CheckpointError, match="say which with --input-convention rgb|bgr255"):
        load_backbone(tmp_path / "anon.pkl")
    backbone, report = load_backbone(tmp_path / "anon.pkl", input_convention="rgb")
    assert report.metadata["input_convention"]["source"] == "given (--input-convention rgb)"
    assert backbone.mean == pytest.approx(IMAGENET_MEAN)
    _, report = load_backbone(tmp_path / "anon.pkl", input_convention="bgr255")
    assert report.record_fields()["input_convention"] == "BGR 0-255"


def _timm_state(tmp_path, name="test_vit"):
    import timm

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=0)
    path = tmp_path / "model.pth"
    torch.save(model.state_dict(), path)
    return model, path


def test_timm_weights_take_their_own_statistics_from_config_json_or_the_arch_tag(tmp_path, capsys):
    """timm's Hugging Face layout keeps the statistics in ``config.json`` beside the weights; an arch
    with a pretrained tag takes timm's ``pretrained_cfg`` of that tag; the card names the source, the
    backbone normalises with them, and the record's identity carries them."""
    import json

    from timm.models import get_pretrained_cfg

    from mocobench.cli import main as ckpt_main

    model, path = _timm_state(tmp_path)
    # no config, no tag: the default, said as such
    backbone, report = load_backbone(path, arch="timm:test_vit")
    assert tuple(backbone.mean) == pytest.approx(IMAGENET_MEAN)
    assert report.metadata["input_convention"]["source"].startswith("default")
    assert report.record_fields()["input_convention"] == "RGB 0-1"

    # the tag's pretrained_cfg (timm's registry, no download)
    tagged = get_pretrained_cfg("test_vit.r160_in1k")
    backbone, report = load_backbone(path, arch="timm:test_vit.r160_in1k")
    conv = report.metadata["input_convention"]
    assert tuple(backbone.mean) == pytest.approx(tagged.mean) and tuple(backbone.std) == pytest.approx(tagged.std)
    assert "pretrained_cfg of test_vit.r160_in1k" in conv["source"] and conv["eval_crop_pct"] == tagged.crop_pct

    # config.json beside the file wins, and is what the card shows
    (tmp_path / "config.json").write_text(json.dumps({
        "architecture": "test_vit", "pretrained_cfg": {"tag": "mine", "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3],
                                                       "crop_pct": 0.9, "interpolation": "bicubic"}}))
    backbone, report = load_backbone(path, arch="timm:test_vit")
    assert tuple(backbone.mean) == pytest.approx((0.4, 0.5, 0.6)) and tuple(backbone.std) == pytest.approx((0.2, 0.25, 0.3))
    assert report.record_fields()["input_convention"] == "RGB 0-1 mean 0.4,0.5,0.6 std 0.2,0.25,0.3"
    # the features are the model's own on the input normalised its way
    x = torch.rand(2, 3, 64, 64)
    ref = model.eval()((x - torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1)) / torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1))
    mean, std = torch.tensor(backbone.mean).view(1, 3, 1, 1), torch.tensor(backbone.std).view(1, 3, 1, 1)
    assert torch.allclose(backbone.eval()((x - mean) / std), ref, atol=1e-5)
    assert ckpt_main(["inspect", str(path), "--arch", "timm:test_vit"]) == 0
    out = capsys.readouterr().out
    assert "the file's config.json (timm pretrained_cfg mine)" in out and "crop_pct 0.9, bicubic" in out
    # --input-convention still decides when given
    _, report = load_backbone(path, arch="timm:test_vit", input_convention="rgb")
    assert report.metadata["input_convention"]["source"].startswith("given")


def test_a_timm_config_of_another_architecture_or_an_unknown_tag_is_refused(tmp_path):
    import json

    from mocobench.checkpoints.errors import CheckpointError

    _, path = _timm_state(tmp_path)
    with pytest.raises(CheckpointError, match="timm has no pretrained tag 'test_vit.nope'"):
        load_backbone(path, arch="timm:test_vit.nope")
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "vit_base_patch16_224",
                                                      "pretrained_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3}}))
    with pytest.raises(CheckpointError, match="describes 'vit_base_patch16_224'.*loaded as timm:test_vit"):
        load_backbone(path, arch="timm:test_vit")
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(CheckpointError, match="config.json .beside the weights.: not readable JSON"):
        load_backbone(path, arch="timm:test_vit")
