"""Every entry of the METHODS registry: builds, trains a step, exports a strictly loadable backbone."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mocobench.checkpoints.load import load_backbone
from mocobench.core.overrides import apply_overrides
from mocobench.pretrain.config import PRESETS, TINY, resolve_preset
from mocobench.pretrain.fast_paths import TrainStep
from mocobench.pretrain.methods import METHODS
from mocobench.pretrain.train import export_backbone


@pytest.mark.parametrize("name", list(METHODS))
def test_method_trains_and_exports(name, tmp_path):
    cfg = dataclasses.replace(TINY[name], img_size=16, K=16, n_groups=4, hidden_dim=16, bank_size=32,
                              reset_every=1)
    torch.manual_seed(0)
    method = METHODS[name]
    model = method.build(cfg)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    step = TrainStep(method, model, opt, precision="fp32", device="cpu")
    labels = torch.tensor([0, 1, -1, 0])
    for _ in range(2):  # SMoG: step 2 is a reset step (reset_every=1)
        views = [torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)]
        loss = step(views, labels)
        assert loss.ndim == 0 and torch.isfinite(loss)
    path = export_backbone(cfg, model, tmp_path / "backbone.pth", step=2, epochs_done=1)
    backbone, report = load_backbone(path)
    assert report.metadata["method"] == name and report.metadata["config"]["arch"] == cfg.arch
    online = method.online_encoder(model).state_dict()
    for k, v in backbone.net.state_dict().items():
        assert torch.equal(v, online[k]), k


def test_presets_and_overrides():
    for name, cfg in PRESETS.items():
        assert cfg.method in METHODS, name
    assert resolve_preset("tiny", "smog") is TINY["smog"]
    v1 = PRESETS["moco_v1_200ep"]
    assert (v1.K, v1.m, v1.T, v1.mlp, v1.lr, v1.milestones) == (65536, 0.999, 0.07, False, 0.03, (120, 160))
    v2 = PRESETS["moco_v2_800ep"]
    assert (v2.T, v2.mlp, v2.schedule, v2.epochs, v2.augmentation) == (0.2, True, "cosine", 800, "moco_v2")
    cfg = apply_overrides(v1, {"K": "4096", "shuffle-bn-groups": "4", "milestones": "60,80", "mlp": "true"})
    assert (cfg.K, cfg.shuffle_bn_groups, cfg.milestones, cfg.mlp) == (4096, 4, (60, 80), True)
    with pytest.raises(ValueError, match="unknown option --queue_size"):
        apply_overrides(v1, {"queue_size": "1"})
    with pytest.raises(ValueError, match="is for --method moco_v1"):
        resolve_preset("moco_v1_200ep", "smog")


def test_cli_overrides_use_the_shared_rules():
    from mocobench.pretrain.cli import resolve

    base = ["--method", "unimoco", "--data", "d", "--out", "o", "--preset", "tiny"]
    _, cfg = resolve(base + ["--K", "4096", "--t=0.3", "--shuffle-bn-groups=2", "--label_fraction=0.5"])
    assert (cfg.K, cfg.T, cfg.shuffle_bn_groups, cfg.label_fraction) == (4096, 0.3, 2, 0.5)
    with pytest.raises(ValueError, match="unknown option --lab "):  # no argparse abbreviation
        resolve(base + ["--lab=0.5"])
