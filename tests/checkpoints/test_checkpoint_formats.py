"""Every format of checkpoints/formats.py: read from a file in its project's layout, exactly.

Parametrized over ``layouts.LAYOUTS``; a test checks that every entry of ``FORMATS`` has a layout,
so a new format without a test fails.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
import torchvision

from mocobench.checkpoints import CheckpointError, load_backbone
from mocobench.checkpoints.cli import inspect_main
from mocobench.checkpoints.formats import FORMATS

from layouts import LAYOUTS, body, delete_key, save


@pytest.fixture(scope="module")
def sources():
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(num_classes=8)
    # running stats that are not the init values, so a buffer loaded from the wrong place shows
    for mod in resnet.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-1, 1)
            mod.running_var.uniform_(0.5, 2)
    # img_size 32 keeps the ViT cheap; the reader derives the input size from pos_embed
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=8, img_size=32)
    return {"resnet": resnet, "vit": vit}


# what the report's metadata must say for some layouts (their files say so)
EXPECTED_METADATA = {
    "moco-v2": {"method": "moco_v2", "epochs": 200}, "unimoco": {"method": "unimoco"},
    "mocobench-pretrain-unimoco": {"method": "unimoco", "epochs": 800, "label_fraction": 0.1},
    "mocobench-pretrain-smog": {"method": "smog", "epochs": 400},
    "mocobench-backbone": {"method": "moco_v2", "epochs": 200},
    "solo-learn": {"method": "mocov2plus", "epochs": 400},
    "mmselfsup": {"epochs": 200, "mmselfsup_version": "1.0.0"},
    "dino-vit": {"method": "dino", "epochs": 100}, "moco-v3-vit": {"method": "moco_v3", "epochs": 300},
    "pycontrast-infomin": {"method": "InfoMin", "epochs": 200}, "swav": {"method": "swav"},
    "deepcluster-v2": {"method": "deepcluster_v2/sela_v2"},
}


def test_every_format_has_a_layout():
    tested = {fmt for _, _, fmt, _ in LAYOUTS.values()}
    # "torchvision/timm" is reported as "torchvision" or "timm" by arch
    tested |= {"torchvision/timm"} if {"torchvision", "timm"} <= tested else set()
    assert set(FORMATS) <= tested, f"formats without a test layout: {set(FORMATS) - tested}"


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layout_loads_exactly_and_strictly(layout, sources, tmp_path, capsys):
    build, source, expected_format, reasons = LAYOUTS[layout]
    model = sources[source]
    obj, how = build(model)
    path = tmp_path / "ckpt.bin"  # the name says nothing: detection reads the contents
    save(obj, how, path)

    backbone, report = load_backbone(path)
    assert report.format == expected_format
    want = body(model)
    got = backbone.net.state_dict()
    assert set(got) == set(want)
    for k, v in want.items():
        assert torch.equal(got[k], v), f"{layout}: {k} differs from the source weights"
    assert reasons <= set(report.dropped.values()), f"missing drop reasons: {reasons - set(report.dropped.values())}"
    meta = EXPECTED_METADATA.get(layout, {})
    assert {k: report.metadata.get(k) for k in meta} == meta
    if layout == "mocobench-pretrain-unimoco":
        fields = report.record_fields()
        assert (fields["method"], fields["epochs"], fields["label_fraction"]) == ("unimoco", 800, 0.1)

    # inspect reports the same dropped keys (and their reasons)
    assert inspect_main([str(path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["format"] == expected_format and shown["dropped"] == report.dropped
    assert shown["num_params"] == sum(p.numel() for p in model.parameters()) - sum(
        p.numel() for n, p in model.named_parameters() if n.startswith(("fc.", "head.")))

    # removing one backbone tensor from the file makes loading fail and names the key
    target = "layer3.1.conv2.weight" if source == "resnet" else "blocks.5.attn.qkv.weight"
    file_key = next(k for k, v in report.key_map.items() if v == target)
    if how == "safetensors":
        from safetensors.torch import load_file

        obj = {k: v for k, v in load_file(str(path)).items() if k != file_key}
    else:
        assert delete_key(obj, file_key)
    save(obj, how, path)
    with pytest.raises(CheckpointError, match=target.replace(".", r"\.")):
        load_backbone(path)


def test_moco_v3_vit_small_gets_twelve_heads(tmp_path):
    # MoCo v3's ViT-S: same shapes as timm's vit_small (6 heads) but 12 heads
    vit = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=8, num_heads=12, img_size=32)
    torch.save({"epoch": 300, "arch": "vit_small",
                "state_dict": {"module.base_encoder." + k: v for k, v in vit.state_dict().items()}}, tmp_path / "v3.pth")
    backbone, report = load_backbone(tmp_path / "v3.pth")
    assert report.arch == "timm:vit_small_patch16_224"
    assert backbone.net.blocks[0].attn.num_heads == 12
    x = torch.randn(1, 3, 32, 32)
    vit.eval(), backbone.eval()
    with torch.no_grad():
        assert torch.allclose(backbone(x), vit.forward_head(vit.forward_features(x), pre_logits=True), atol=1e-5)


def test_arch_override_and_unknown_arch(sources, tmp_path):
    obj, how = LAYOUTS["torchvision"][0](sources["resnet"])
    save(obj, how, tmp_path / "r18.pth")
    with pytest.raises(CheckpointError, match="missing"):
        load_backbone(tmp_path / "r18.pth", arch="resnet34")
    torch.save({"conv.weight": torch.zeros(3, 3)}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="match no known architecture"):
        load_backbone(tmp_path / "odd.pth")


def test_a_new_format_is_one_table_entry(sources, tmp_path, monkeypatch):
    """A made-up layout (weights under ``net``, prefix ``trunk.``, a ``proj.`` head, its own
    metadata) is read once one entry is added to FORMATS."""
    from mocobench.checkpoints.formats import Format, weights_in

    entry = Format("mylab", "a lab's trainer", detect=lambda o: isinstance(o, dict) and "net" in o,
                   weights=lambda o: weights_in(o, "net"), keep=("trunk.",), drop=(("proj.", "projection head"),),
                   metadata=lambda o, s: {"method": o["algo"], "epochs": o["ep"]})
    monkeypatch.setitem(FORMATS, "mylab", entry)
    sd = body(sources["resnet"])
    torch.save({"net": {"trunk." + k: v for k, v in sd.items()} | {"proj.weight": torch.zeros(4, 512)},
                "algo": "byol", "ep": 300}, tmp_path / "lab.pt")
    backbone, report = load_backbone(tmp_path / "lab.pt")
    conv = report.metadata.pop("input_convention")   # a format without one of its own: torchvision's
    assert conv["channels"] == "RGB" and conv["source"] == "the format's known convention (torchvision's)"
    assert (report.format, report.arch, report.metadata) == ("mylab", "resnet18", {"method": "byol", "epochs": 300})
    assert report.dropped == {"proj.weight": "projection head", "algo": "not backbone weights (metadata)",
                              "ep": "not backbone weights (metadata)"}
    assert all(torch.equal(backbone.net.state_dict()[k], v) for k, v in sd.items())


def test_resolve_never_names_a_format():
    """``load.resolve`` only calls the table's fields: no format name appears in load.py's code."""
    import ast
    import inspect

    from mocobench.checkpoints import load

    strings = {n.value for n in ast.walk(ast.parse(inspect.getsource(load)))
               if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert not strings & set(FORMATS)


@pytest.mark.parametrize("layout, used, not_used", [
    ("moco-v2", "online (query) encoder", "momentum encoder (encoder_k)"),
    ("dino-resnet", "teacher", "student network (DINO evaluates the teacher)"),
    ("pycontrast-infomin", "online (query) encoder", "momentum (EMA) encoder"),
    ("torchvision", "the only one", None),
])
def test_the_card_says_which_branch_was_used_and_which_were_not(layout, used, not_used, sources, tmp_path):
    """Issue 28: MoCo's query encoder (its key encoder, with other weights, listed), DINO's teacher."""
    build, source, _, _ = LAYOUTS[layout]
    obj, how = build(sources[source])
    path = tmp_path / "ckpt"
    save(obj, how, path)
    _, report = load_backbone(path)
    card = report.card()
    assert card["branch_used"] == used and (not_used in card["branches_not_used"] if not_used
                                            else card["branches_not_used"] == [])
    assert card["sha256"] == report.sha256 and card["size_bytes"] == path.stat().st_size
    assert report.record_fields()["branch"] == used and report.record_fields()["input_convention"] == "RGB 0-1"


def test_model_and_model_ema_are_a_raw_and_ema_pair(sources, tmp_path):
    """DeiT's and ConvNeXt's training checkpoints: raw weights under model, the EMA copy under
    model_ema (they loaded the raw weights silently, and --branch ema said there was no pair)."""
    sd = body(sources["resnet"])
    ema = {k: v + 1 if v.is_floating_point() else v.clone() for k, v in sd.items()}
    torch.save({"model": dict(sd), "model_ema": ema, "epoch": 300, "optimizer": {}}, tmp_path / "deit.pth")
    with pytest.raises(CheckpointError, match=r"deit\.pth: holds raw weights \(model\) and an EMA copy \(model_ema\)"):
        load_backbone(tmp_path / "deit.pth")
    for branch, want, used, not_used in (("raw", sd, "raw (non-EMA) weights", "EMA weights"),
                                         ("ema", ema, "EMA weights", "raw (non-EMA) weights (--branch ema used the EMA copy)")):
        backbone, report = load_backbone(tmp_path / "deit.pth", branch=branch)
        assert all(torch.equal(backbone.net.state_dict()[k], v) for k, v in want.items()), branch
        card = report.card()
        assert card["branch_used"] == used and not_used in card["branches_not_used"], card


def test_pycontrasts_model_ema_is_its_momentum_encoder_not_a_branch(sources, tmp_path):
    obj, how = LAYOUTS["pycontrast-infomin"][0](sources["resnet"])
    save(obj, how, tmp_path / "infomin.pth")
    with pytest.raises(CheckpointError, match="no raw/EMA pair"):
        load_backbone(tmp_path / "infomin.pth", branch="ema")
    _, report = load_backbone(tmp_path / "infomin.pth")
    assert report.dropped["model_ema"] == "momentum (EMA) encoder"


@pytest.mark.parametrize("version, loops, epochs", [
    # Lightning 2, on_train_epoch_end of epoch 399 (solo-learn's Checkpointer): processed, not completed
    ("2.0.7", {"epoch_progress": {"current": {"started": 400, "processed": 400, "completed": 399}}}, 400),
    # ModelCheckpoint after the epoch's validation: the last batch has run
    ("2.1.0", {"epoch_progress": {"current": {"started": 400, "processed": 399, "completed": 399}},
               "epoch_loop.batch_progress": {"is_last_batch": True}}, 400),
    # during epoch 399 (every_n_train_steps): 399 epochs are finished
    ("2.1.0", {"epoch_progress": {"current": {"started": 400, "processed": 399, "completed": 399}},
               "epoch_loop.batch_progress": {"is_last_batch": False}}, 399),
    # trainer.save_checkpoint after fit: no epoch in progress
    ("2.1.0", {"epoch_progress": {"current": {"started": 399, "processed": 399, "completed": 399}},
               "epoch_loop.batch_progress": {"is_last_batch": True}}, 399),
    # Lightning 1.5 saved current_epoch + 1 itself
    ("1.5.10", None, 399),
])
def test_lightning_epochs_count_finished_epochs(version, loops, epochs, sources, tmp_path):
    obj, how = LAYOUTS["solo-learn"][0](sources["resnet"])
    obj["pytorch-lightning_version"] = version
    obj["loops"] = {"fit_loop": loops} if loops else None
    if loops is None:
        del obj["loops"]
    save(obj, how, tmp_path / "ckpt.ckpt")
    _, report = load_backbone(tmp_path / "ckpt.ckpt")
    assert report.metadata["epochs"] == epochs


def solo_learn_cifar_resnet18() -> torch.nn.Module:
    """A ResNet-18 as solo-learn builds it for CIFAR (solo/methods/base.py: a 3x3 stride-1 conv1 padded
    by 2, no max-pool)."""
    net = torchvision.models.resnet18(num_classes=8)
    net.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)
    net.maxpool = torch.nn.Identity()
    return net


@pytest.mark.parametrize("hp, source", [
    ({"data": {"dataset": "cifar100", "num_classes": 100}}, "data.dataset 'cifar100'"),
    ({"dataset": "cifar10"}, "data.dataset 'cifar10'"),   # before solo-learn's Hydra configs
    ({}, "conv1 is 3x3 and hyper_parameters name no dataset"),
])
def test_solo_learn_cifar_resnet_is_read_with_its_own_stem(hp, source, tmp_path):
    """solo-learn pads its CIFAR conv1 by 2 where ours pads by 1: read with padding 1 (cifar_stem=True)
    the features were off by 18% (audit); by default the file was refused (conv1 3x3 against 7x7)."""
    from mocobench.checkpoints.write import save_backbone

    torch.manual_seed(0)
    net = solo_learn_cifar_resnet18()
    obj, how = LAYOUTS["solo-learn"][0](net)
    obj["hyper_parameters"] |= hp
    save(obj, how, tmp_path / "solo.ckpt")
    net.fc = torch.nn.Identity()
    net.eval()
    x = torch.randn(2, 3, 32, 32)
    backbone, report = load_backbone(tmp_path / "solo.ckpt")
    assert (report.format, report.arch) == ("solo-learn", "resnet18")
    assert backbone.spec.cifar_stem and backbone.spec.cifar_stem_padding == 2
    assert source in report.metadata["cifar_stem"]["source"] and report.metadata["cifar_stem"]["padding"] == 2
    with torch.no_grad():
        assert torch.allclose(backbone.eval()(x), net(x), atol=1e-5)
    # saying cifar_stem=True does not undo it; written in our format, the file says it
    assert load_backbone(tmp_path / "solo.ckpt", cifar_stem=True)[0].net.conv1.padding == (2, 2)
    save_backbone(tmp_path / "own.pth", backbone, {})
    again, _ = load_backbone(tmp_path / "own.pth")
    with torch.no_grad():
        assert again.spec.cifar_stem_padding == 2 and torch.equal(again.eval()(x), backbone(x))


def test_solo_learn_3x3_stem_for_a_dataset_it_keeps_the_imagenet_stem_for_is_refused(tmp_path):
    obj, how = LAYOUTS["solo-learn"][0](solo_learn_cifar_resnet18())
    obj["hyper_parameters"]["data"] = {"dataset": "imagenet100"}
    save(obj, how, tmp_path / "solo.ckpt")
    with pytest.raises(CheckpointError, match=r"solo\.ckpt: detected as solo-learn, but .*3x3 conv1.*'imagenet100'"):
        load_backbone(tmp_path / "solo.ckpt")


def test_solo_learn_imagenet_resnet_keeps_the_imagenet_stem(sources, tmp_path):
    obj, how = LAYOUTS["solo-learn"][0](sources["resnet"])
    obj["hyper_parameters"]["data"] = {"dataset": "imagenet"}
    save(obj, how, tmp_path / "solo.ckpt")
    backbone, report = load_backbone(tmp_path / "solo.ckpt")
    assert not backbone.spec.cifar_stem and "cifar_stem" not in report.metadata


def test_moco_v3_linear_vit_small_gets_twelve_heads(tmp_path):
    """MoCo v3's main_lincls.py checkpoint of its ViT-S (12 heads) read as timm's (6) gave other features."""
    vit = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=8, num_heads=12, img_size=32)
    obj, how = LAYOUTS["moco-v3-linear-vit"][0](vit)
    save(obj, how, tmp_path / "linear-vit-s-300ep.pth.tar")
    backbone, report = load_backbone(tmp_path / "linear-vit-s-300ep.pth.tar")
    assert (report.format, report.arch) == ("moco-v3-linear", "timm:vit_small_patch16_224")
    assert backbone.net.blocks[0].attn.num_heads == 12 and report.metadata["linear_epochs"] == 90
    x = torch.randn(1, 3, 32, 32)
    vit.eval(), backbone.eval()
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), vit.forward_head(vit.forward_features(x), pre_logits=True))


def test_a_backbone_key_under_a_classifier_name_is_kept(tmp_path):
    """timm's ConvNeXt keeps its final norm as head.norm: only the classifier (head.fc) is dropped."""
    net = timm.create_model("convnext_atto", pretrained=False, num_classes=8)
    torch.save(net.state_dict(), tmp_path / "convnext.pth")
    backbone, report = load_backbone(tmp_path / "convnext.pth", arch="timm:convnext_atto")
    assert report.key_map["head.norm.weight"] == "head.norm.weight"
    assert set(report.dropped) == {"head.fc.weight", "head.fc.bias"}
    assert torch.equal(backbone.net.state_dict()["head.norm.weight"], net.state_dict()["head.norm.weight"])


def test_numpy_scalars_in_a_detectron2_file_load(sources, tmp_path):
    """MoCo's converter of an older torch wrote num_batches_tracked as numpy integers."""
    obj, how = LAYOUTS["detectron2-pkl"][0](sources["resnet"])
    obj["model"]["res2.0.conv1.norm.num_batches_tracked"] = np.int64(7)
    save(obj, how, tmp_path / "d2.pkl")
    backbone, _ = load_backbone(tmp_path / "d2.pkl")
    assert int(backbone.net.state_dict()["layer1.0.bn1.num_batches_tracked"]) == 7
