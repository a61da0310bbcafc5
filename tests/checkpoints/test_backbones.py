import pytest
import torch
import torchvision

from mocobench.checkpoints.backbones import BackboneSpec, build_backbone, canonical_keys


@pytest.mark.parametrize("arch,channels", [
    ("resnet18", {"res2": 64, "res3": 128, "res4": 256, "res5": 512}),
    ("mobilenet_v2", {"res2": 24, "res3": 32, "res4": 96, "res5": 320}),
])
def test_feature_maps_have_strides_4_to_32(arch, channels):
    b = build_backbone(arch, seed=0).eval()
    x = torch.randn(2, 3, 64, 96)
    maps = b.feature_maps(x)
    assert list(maps) == ["res2", "res3", "res4", "res5"]
    for (name, fmap), stride in zip(maps.items(), (4, 8, 16, 32)):
        assert fmap.shape == (2, channels[name], 64 // stride, 96 // stride)
    assert b.stage_channels == channels
    assert b(x).shape == (2, b.num_features)


def test_pooled_features_equal_torchvision_model_without_fc():
    torch.manual_seed(0)
    ref = torchvision.models.resnet18().eval()
    b = build_backbone("resnet18").eval()
    b.net.load_state_dict({k: v for k, v in ref.state_dict().items() if not k.startswith("fc.")})
    x = torch.randn(2, 3, 64, 64)
    ref.fc = torch.nn.Identity()
    torch.testing.assert_close(b(x), ref(x))


def test_canonical_keys_have_no_classifier_and_match_built_model():
    keys = canonical_keys("resnet50")
    assert not any(k.startswith("fc.") for k in keys)
    assert keys == {k: tuple(v.shape) for k, v in build_backbone("resnet50").net.state_dict().items()}


def test_dilated_res5_matches_torchvision_and_keeps_stride_16():
    torch.manual_seed(0)
    ref = torchvision.models.resnet50(replace_stride_with_dilation=[False, False, True]).eval()
    b = build_backbone("resnet50", dilation=(False, False, True)).eval()
    b.net.load_state_dict({k: v for k, v in ref.state_dict().items() if not k.startswith("fc.")})
    x = torch.randn(1, 3, 64, 64)
    expected = ref.layer4(ref.layer3(ref.layer2(ref.layer1(ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))))))
    torch.testing.assert_close(b.feature_maps(x)["res5"], expected)
    # BasicBlock ResNets (which torchvision refuses to dilate) also give stride 16.
    assert build_backbone("resnet18", dilation=(False, False, True)).feature_maps(x)["res5"].shape[-1] == 4


def test_seed_makes_initialisation_reproducible():
    a = build_backbone("resnet18", seed=3).net.state_dict()
    b = build_backbone("resnet18", seed=3).net.state_dict()
    c = build_backbone("resnet18", seed=4).net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])


def test_cifar_stem_keeps_resolution():
    b = build_backbone("resnet18", cifar_stem=True).eval()
    assert b.feature_maps(torch.randn(1, 3, 32, 32))["res2"].shape[-1] == 32


def test_cifar_stem_pads_conv1_by_1_and_solo_learns_by_2():
    """Ours (and the common CIFAR ResNet) pads the 3x3 conv1 by 1; solo-learn's by 2 (a 34x34 map)."""
    assert build_backbone("resnet18", cifar_stem=True).net.conv1.padding == (1, 1)
    spec = BackboneSpec("resnet18", cifar_stem=True, cifar_stem_padding=2)
    b = build_backbone(spec).eval()
    assert b.net.conv1.padding == (2, 2) and b.feature_maps(torch.randn(1, 3, 32, 32))["res2"].shape[-1] == 34
    assert BackboneSpec.from_dict(spec.to_dict()) == spec and canonical_keys(spec) == canonical_keys(
        BackboneSpec("resnet18", cifar_stem=True))
    # the spec of every other backbone is written as before
    assert "cifar_stem_padding" not in BackboneSpec("resnet18", cifar_stem=True).to_dict()
    with pytest.raises(ValueError, match="only with cifar_stem"):
        build_backbone(BackboneSpec("resnet18", cifar_stem_padding=2))


def test_timm_vit_gives_pooled_features_and_a_pyramid():
    b = build_backbone("timm:vit_tiny_patch16_224", img_size=64).eval()
    x = torch.randn(1, 3, 64, 64)
    assert b(x).shape == (1, 192)
    assert {k: v.shape[-1] for k, v in b.feature_maps(x).items()} == {"res2": 16, "res3": 8, "res4": 4, "res5": 2}


def test_unknown_arch_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown backbone arch 'resnet7'"):
        build_backbone("resnet7")


def test_timm_resnet_dilation_is_output_stride():
    """A timm ResNet dilated at res5 keeps its parameter names and shapes (so a checkpoint loads
    into it) and halves res5's stride; a ViT cannot be dilated and says so."""
    plain = build_backbone("timm:test_resnet", img_size=64, seed=0).eval()  # a CNN: img_size is dropped
    os16 = build_backbone("timm:test_resnet", dilation=(False, False, True), seed=0).eval()
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in os16.state_dict().items()}
    x = torch.randn(1, 3, 96, 96)
    assert plain.feature_maps(x)["res5"].shape[-1] == 3 and os16.feature_maps(x)["res5"].shape[-1] == 6
    with pytest.raises(ValueError, match="cannot be dilated"):
        build_backbone("timm:vit_tiny_patch16_224", img_size=32, dilation=(False, False, True))


@pytest.mark.parametrize("dilation, stride", [((False, False, True), 16), ((False, True, True), 8)])
def test_dilated_mobilenet_v2_is_the_a_trous_form_of_the_same_network(dilation, stride):
    """Stride traded for dilation (DeepLab's "a trous" rule) computes the undilated network's res5
    at every other position: the dilated map subsampled by 32 / stride equals the original map,
    with the same parameters. (Used by segmentation, issue 14.)"""
    torch.manual_seed(0)
    plain = build_backbone("mobilenet_v2").eval()
    dilated = build_backbone("mobilenet_v2", dilation=dilation).eval()
    assert set(plain.net.state_dict()) == set(dilated.net.state_dict())
    dilated.net.load_state_dict(plain.net.state_dict())
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        a, b = plain.feature_maps(x)["res5"], dilated.feature_maps(x)["res5"]
    assert b.shape[-2:] == (128 // stride, 160 // stride)
    step = 32 // stride
    torch.testing.assert_close(b[:, :, ::step, ::step], a, rtol=1e-4, atol=1e-4)
