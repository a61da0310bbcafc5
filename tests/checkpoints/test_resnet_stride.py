"""Where a Bottleneck ResNet's stride is (audit item 1): MSRA's ResNets and detectron2's default
(``MODEL.RESNETS.STRIDE_IN_1X1: True``) put it in each stage's first 1x1 conv, torchvision's in the
3x3 conv. The shapes are the same, so a file of one loads strictly into the other and computes other
features. The builder honours ``BackboneSpec.stride_in_1x1``, detectron2 files decide it from their
origin (or are refused naming the option), the card says it, and exports that would lose it refuse."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
import torchvision

from mocobench.checkpoints import CheckpointError, load_backbone
from mocobench.checkpoints.backbones import BackboneSpec, build_backbone, spec_problem
from mocobench.checkpoints.cli import inspect_main
from mocobench.checkpoints.keymaps import TORCHVISION_TO_DETECTRON2, apply_rules

MSRA_MEAN = [103.53, 116.28, 123.675]   # BGR, 0-255: detectron2's defaults, with std 1


@pytest.fixture(scope="module")
def msra() -> torch.nn.Module:
    """A ResNet-50 built the MSRA way (stride in conv1 of each strided block), random weights and
    running stats that are not the init values."""
    torch.manual_seed(0)
    m = torchvision.models.resnet50().eval()
    for layer in (m.layer2, m.layer3, m.layer4):
        layer[0].conv1.stride, layer[0].conv2.stride = (2, 2), (1, 1)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    return m


def d2_pkl(net: torch.nn.Module, path, *, pixel_mean=None, pixel_std=None, author=None):
    """A detectron2 model dict of ``net`` (its backbone under ``backbone.bottom_up.``, as a trained
    detectron2 model keeps it)."""
    model = {"backbone.bottom_up." + apply_rules(k, TORCHVISION_TO_DETECTRON2): v.numpy()
             for k, v in net.state_dict().items() if not k.startswith("fc.")}
    if pixel_mean is not None:
        model["pixel_mean"] = np.array(pixel_mean, np.float32).reshape(3, 1, 1)
        model["pixel_std"] = np.array(pixel_std, np.float32).reshape(3, 1, 1)
    obj = {"model": model} | ({"__author__": author} if author else {})
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)
    return path


def features(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    fc, net.fc = net.fc, torch.nn.Identity()
    try:
        with torch.no_grad():
            return net.eval()(x)
    finally:
        net.fc = fc


def ours(backbone, rgb: torch.Tensor) -> torch.Tensor:
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (backbone.mean, backbone.std))
    with torch.no_grad():
        return backbone.eval()((rgb - mean) / std)


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    # BGR 0-255 inputs give large activations: compare the whole vectors, not single elements
    return float((a - b).norm() / b.norm())


def test_the_builder_puts_the_stride_in_the_1x1_conv_and_dilation_still_removes_it():
    b = build_backbone(BackboneSpec("resnet50", stride_in_1x1=True))
    for name in ("layer2", "layer3", "layer4"):
        first = getattr(b.net, name)[0]
        assert (first.conv1.stride, first.conv2.stride, first.downsample[0].stride) == ((2, 2), (1, 1), (2, 2))
    assert b.net.layer1[0].conv1.stride == (1, 1)
    assert b.feature_maps(torch.zeros(1, 3, 64, 64))["res5"].shape[-1] == 2   # still stride 32
    dilated = build_backbone(BackboneSpec("resnet50", stride_in_1x1=True, dilation=(False, False, True)))
    assert dilated.net.layer4[0].conv1.stride == (1, 1) and dilated.net.layer4[0].conv2.dilation == (1, 1)
    assert dilated.feature_maps(torch.zeros(1, 3, 64, 64))["res5"].shape[-1] == 4   # stride 16
    assert BackboneSpec.from_dict(BackboneSpec("resnet50", stride_in_1x1=True).to_dict()).stride_in_1x1
    assert "stride_in_1x1" not in BackboneSpec("resnet50").to_dict()   # torchvision-style specs as before
    assert "only Bottleneck ResNets" in spec_problem({"arch": "resnet18", "stride_in_1x1": True})


@pytest.fixture(scope="module")
def unsaid(msra, tmp_path_factory):
    """The MSRA ResNet-50 in a detectron2 file that says nothing of its origin."""
    return d2_pkl(msra, tmp_path_factory.mktemp("d2") / "backbone.pkl")


def test_an_msra_detectron2_file_is_built_with_the_stride_in_the_1x1_conv(msra, tmp_path):
    """The auditor's case: before, it loaded strictly as torchvision's ResNet-50 (rel. error 0.075)."""
    path = d2_pkl(msra, tmp_path / "model_final.pkl", pixel_mean=MSRA_MEAN, pixel_std=[1.0] * 3,
                  author="Detectron2 Model Zoo")
    backbone, report = load_backbone(path)
    assert backbone.spec.stride_in_1x1 and backbone.net.layer2[0].conv1.stride == (2, 2)
    card = report.card()
    assert card["stride_in_1x1"]["value"] is True and "STRIDE_IN_1X1 True" in card["stride_in_1x1"]["source"]
    rgb = torch.rand(2, 3, 64, 64)
    bgr255 = rgb.flip(1) * 255 - torch.tensor(MSRA_MEAN).view(1, 3, 1, 1)   # the weights' own input
    assert rel_error(ours(backbone, rgb), features(msra, bgr255)) < 1e-5


@pytest.mark.parametrize("case", ["moco-converter", "torchvision-statistics"])
def test_detectron2_files_of_torchvision_resnets_keep_the_stride_in_the_3x3_conv(case, tmp_path):
    torch.manual_seed(0)
    net = torchvision.models.resnet50().eval()
    if case == "moco-converter":
        path = d2_pkl(net, tmp_path / "moco.pkl", author="MOCO")
    else:
        path = d2_pkl(net, tmp_path / "tv.pkl", pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])
    backbone, report = load_backbone(path)
    assert not backbone.spec.stride_in_1x1 and report.card()["stride_in_1x1"]["value"] is False
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(ours(backbone, x), features(net, (x - torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1))
                                                                / torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)),
                               rtol=1e-4, atol=1e-4)


def test_a_detectron2_file_that_cannot_say_is_refused_naming_the_file_and_the_option(msra, unsaid, tmp_path, capsys):
    path = unsaid   # no pixel statistics, no __author__
    with pytest.raises(CheckpointError) as e:
        load_backbone(path)
    assert "backbone.pkl" in str(e.value) and "--input-convention" in str(e.value) and "--stride-in-1x1" in str(e.value)
    with pytest.raises(CheckpointError, match=r"backbone\.pkl: .*cannot be decided.*--stride-in-1x1 true"):
        load_backbone(path, input_convention="bgr255")
    backbone, report = load_backbone(path, input_convention="bgr255", stride_in_1x1=True)
    assert report.card()["stride_in_1x1"] == {"value": True, "source": "given (--stride-in-1x1)"}
    rgb = torch.rand(1, 3, 64, 64)
    bgr255 = rgb.flip(1) * 255 - torch.tensor(MSRA_MEAN).view(1, 3, 1, 1)
    assert rel_error(ours(backbone, rgb), features(msra, bgr255)) < 1e-5
    # the FAIR-style statistics (BGR, std not 1) do not say it either
    other = d2_pkl(msra, tmp_path / "x101.pkl", pixel_mean=MSRA_MEAN, pixel_std=[57.375, 57.12, 58.395])
    with pytest.raises(CheckpointError, match=r"x101\.pkl: .*--stride-in-1x1"):
        load_backbone(other)
    # inspect takes the option and shows what was used
    assert inspect_main([str(path), "--input-convention", "bgr255"]) == 1
    assert "--stride-in-1x1" in capsys.readouterr().err
    assert inspect_main([str(path), "--input-convention", "bgr255", "--stride-in-1x1", "true"]) == 0
    assert "blocks:     stride in the 1x1 conv (MSRA-style) (given (--stride-in-1x1))" in capsys.readouterr().out
    assert inspect_main([str(path), "--input-convention", "bgr255", "--stride-in-1x1", "true", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["card"]["stride_in_1x1"]["value"] is True


def test_a_resnet18_has_no_stride_to_place(tmp_path):
    """BasicBlocks have no 1x1 conv: nothing to decide, nothing to refuse (an MSRA-statistics R-18)."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18().eval()
    _, report = load_backbone(d2_pkl(net, tmp_path / "r18.pkl", pixel_mean=MSRA_MEAN, pixel_std=[1.0] * 3))
    assert report.card()["stride_in_1x1"] is None
    with pytest.raises(CheckpointError, match="only Bottleneck ResNets"):
        load_backbone(d2_pkl(net, tmp_path / "r18b.pkl", author="MOCO"), stride_in_1x1=True)


@pytest.mark.parametrize("to", ["detectron2", "mmseg", "torchvision", "timm"])
def test_exports_that_would_lose_the_stride_are_refused(to, unsaid, tmp_path):
    """detectron2's config (STRIDE_IN_1X1 False), mmseg's style='pytorch', torchvision's and timm's
    models would all load these weights strictly and compute other features."""
    from mocobench.transfer.adapters.cli import convert

    out = tmp_path / f"out.{to}"
    with pytest.raises(ValueError, match=r"backbone\.pkl: .*stride in each stage's first 1x1 conv") as e:
        convert(str(unsaid), to, out, input_convention="rgb", stride_in_1x1=True)
    assert f"--to {to}" in str(e.value) and not out.exists()


def test_the_engines_refuse_it_and_files_with_a_spec_keep_it(unsaid, tmp_path):
    from mocobench.transfer.adapters.cli import convert, refuse_other_convention

    path = unsaid
    backbone, report = load_backbone(path, input_convention="rgb", stride_in_1x1=True)
    with pytest.raises(ValueError, match="this engine builds torchvision's layout"):
        refuse_other_convention(backbone, report, "this engine")   # what the detectron2 and mmseg engines call
    x = torch.rand(1, 3, 64, 64)
    for to in ("mocobench", "safetensors"):
        convert(str(path), to, tmp_path / f"out.{to}", input_convention="rgb", stride_in_1x1=True)
        again, again_report = load_backbone(tmp_path / f"out.{to}")
        assert again.spec.stride_in_1x1 and again_report.card()["stride_in_1x1"]["source"] == "stated by the file (its spec)"
        torch.testing.assert_close(ours(again, x), ours(backbone, x))


@pytest.fixture(scope="module")
def tiny_imagenet(tmp_path_factory):
    """``root/imagenet/{train,val}/n0<c>/*.JPEG``: 3 colour classes, 8 train and 3 val images each."""
    from unreadable_images import colour_classes

    return colour_classes(tmp_path_factory.mktemp("tiny"), {"train": 8, "val": 3})


def test_eval_and_preflight_take_the_option_and_the_record_and_leaderboard_keep_it(unsaid, tiny_imagenet, tmp_path,
                                                                                  capsys, monkeypatch):
    """Before, only inspect and convert took --stride-in-1x1: an undecidable file had to be converted
    to be evaluated. Now every eval takes it (in the work folder's key, the record and the feature
    cache key: the same weights with the stride elsewhere compute other features), and so does the
    pre-flight, whose random initialisations are then built the same way."""
    from mocobench.cli import main
    from mocobench.core.records import load_records
    from mocobench.leaderboard.table import build_table

    cache = tmp_path / "cache"

    def knn(results, *extra):
        return main(["eval", "knn", "--checkpoint", str(unsaid), "--data", str(tiny_imagenet), "--results",
                          str(tmp_path / results), "--img-size", "32", "--workers", "0", "--cache-dir", str(cache),
                          "--input-convention", "bgr255", *extra])

    assert knn("refused") == 1
    err = capsys.readouterr().err
    assert "backbone.pkl" in err and "--stride-in-1x1 true" in err and "mocobench eval, preflight" in err
    assert "write it once" not in err   # the convert route is no longer needed
    with pytest.raises(SystemExit) as e:
        knn("bad", "--stride-in-1x1", "maybe")
    assert e.value.code == 2 and "'maybe': true or false" in capsys.readouterr().err
    recs = {}
    for value in ("false", "true"):
        assert knn(value, "--stride-in-1x1", value) == 0
        (recs[value],) = load_records(tmp_path / value)[0]
    assert recs["false"]["checkpoint"]["stride_in_1x1"] is False and recs["true"]["checkpoint"]["stride_in_1x1"] is True
    assert recs["true"]["checkpoint"]["sha256"] == recs["false"]["checkpoint"]["sha256"]
    assert recs["true"]["run"]["work_dir"] != recs["false"]["run"]["work_dir"]   # not "evaluated already"
    assert recs["true"]["run"]["cache_hits"] == {"train": False, "val": False}   # not the other layout's features
    assert knn("again", "--stride-in-1x1", "true") == 0 and "evaluated already" in capsys.readouterr().out
    table = build_table([recs["false"], recs["true"]])
    plain, msra = sorted(r.key for r in table.measured_rows())   # one file, two rows
    assert plain.endswith(f"@{recs['true']['checkpoint']['sha256'][:8]}") and msra == f"{plain} stride in 1x1"
    assert any(r.card.endswith("BGR 0-255 · stride in 1x1") for r in table.measured_rows())
    # where it cannot apply: a ResNet-18 has no 1x1 conv to put the stride in, random or not
    assert main(["eval", "knn", "--checkpoint", "random:resnet18", "--data", str(tiny_imagenet), "--results",
                      str(tmp_path / "r18"), "--img-size", "32", "--workers", "0", "--no-cache",
                      "--stride-in-1x1", "true"]) == 2
    assert "random:resnet18: --stride-in-1x1 true: stride_in_1x1 for resnet18" in capsys.readouterr().err

    import mocobench.checkpoints.load as load

    built = []
    real = load.load_backbone
    monkeypatch.setattr(load, "load_backbone", lambda name, **kw: built.append((str(name), kw)) or real(name, **kw))
    report = tmp_path / "preflight.json"
    assert main(["preflight", str(unsaid), "--data", str(tiny_imagenet), "-n", "12", "--img-size", "32",
                           "--input-convention", "bgr255", "--stride-in-1x1", "true", "--force",
                           "--json", str(report)]) == 0
    assert json.loads(report.read_text())["sha256"] == recs["true"]["checkpoint"]["sha256"]
    assert [kw.get("stride_in_1x1") for _, kw in built] == [True, True, True]   # the random inits built so too
    built.clear()
    assert main(["preflight", str(unsaid), "--data", str(tiny_imagenet), "-n", "12", "--input-convention", "bgr255"]) == 1
    assert "--stride-in-1x1 true" in capsys.readouterr().err and not built[1:]
