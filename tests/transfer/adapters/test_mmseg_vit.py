"""``mocobench convert VIT --to mmseg``: mmseg's own ``VisionTransformer`` loads it strictly and
computes timm's features; converting back gives the original tensors."""

from __future__ import annotations

import pytest
import torch

from mocobench.checkpoints import save_backbone
from mocobench.checkpoints.backbones import BackboneSpec, build_backbone
from mocobench.transfer.adapters.cli import main
from mocobench.transfer.adapters.mmseg_vit import from_mmseg_vit, mmseg_vit_kwargs, to_mmseg_vit


@pytest.fixture(scope="module")
def vit():
    backbone = build_backbone(BackboneSpec("timm:test_vit", img_size=64), seed=5).eval()
    with torch.no_grad():  # non-trivial norms, biases and tokens, so a swapped name shows
        for p in backbone.net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return backbone


def mmseg_vit(kwargs, checkpoint=None):
    pytest.importorskip("mmseg", reason="install the engine: ./run_all.sh engines mmseg")
    from mocobench.transfer.adapters.mmseg_compat import mmcv_ops_stub

    with mmcv_ops_stub():
        from mmseg.models.backbones import VisionTransformer

        init_cfg = dict(type="Pretrained", checkpoint=str(checkpoint)) if checkpoint else None
        model = VisionTransformer(**kwargs, out_indices=-1, init_cfg=init_cfg)
    model.eval()  # NOTE: mmseg's VisionTransformer.train() returns None, so no chaining
    return model


def timm_map(backbone, x):
    """timm's own last-layer features (after its final norm) on the patch grid: N x C x h x w."""
    net = backbone.net
    tokens = net.forward_features(x)[:, net.num_prefix_tokens:]   # N x hw x C
    n, hw, c = tokens.shape
    h, w = x.shape[-2] // 16, x.shape[-1] // 16
    return tokens.transpose(1, 2).reshape(n, c, h, w)


def test_mmseg_vit_loads_strictly_and_computes_timms_features(vit, tmp_path, capsys):
    path = save_backbone(tmp_path / "vit.pth", vit, {"method": "moco_v2"})
    out = tmp_path / "vit_mmseg.pth"
    assert main([str(path), "--to", "mmseg", "-o", str(out)]) == 0
    obj = torch.load(out, map_location="cpu", weights_only=True)
    sd, kwargs = obj["state_dict"], obj["meta"]["mmseg_vit"]
    assert kwargs["embed_dims"] == 64 and kwargs["num_layers"] == 6 and kwargs["patch_size"] == 16
    assert "layers.0.attn.attn.in_proj_weight" in sd and "ln1.weight" in sd and "layers.5.ffn.layers.1.bias" in sd
    kwargs = {**kwargs, "img_size": tuple(kwargs["img_size"])}
    model = mmseg_vit(kwargs)
    model.load_state_dict(sd, strict=True)
    x0 = torch.randn(2, 3, 64, 64)  # the built size: no position-embedding resampling
    # NOTE: at other sizes mmseg and timm resample the position embedding with different bicubic
    # kernels (about 1e-2 apart here), so only the shape is compared there
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        assert torch.allclose(model(x0)[0], timm_map(vit, x0), atol=1e-4)
        # mmseg's own loading path (init_cfg Pretrained, no prefix) gives the same model
        via_init = mmseg_vit(kwargs, checkpoint=out)
        via_init.init_weights()
        assert torch.allclose(via_init(x0)[0], timm_map(vit, x0), atol=1e-4)
        assert model(x)[0].shape == (2, 64, 4, 6)
    # and back: the original tensors, bit for bit
    back = from_mmseg_vit(sd)
    ref = vit.net.state_dict()
    assert set(back) == set(ref) and all(torch.equal(back[k], ref[k]) for k in ref)


def test_mmseg_vit_names_refuse_what_mmseg_cannot_hold(vit):
    sd = vit.net.state_dict()
    assert mmseg_vit_kwargs(vit.net)["num_heads"] == vit.net.blocks[0].attn.num_heads
    with pytest.raises(ValueError, match="blocks.0.ls1.gamma"):
        to_mmseg_vit({**sd, "blocks.0.ls1.gamma": torch.ones(64)})
    with pytest.raises(ValueError, match="layers.0.foo"):
        from_mmseg_vit({**to_mmseg_vit(sd), "layers.0.foo": torch.ones(1)})
