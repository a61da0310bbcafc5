"""Linear probes: the L-BFGS fit against scikit-learn, the frozen-backbone check, the paper loop."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mocobench.datasets.imagefolder import collate_skip
from mocobench.transfer.classification import protocols as P
from mocobench.transfer.classification.linear import (BackboneChangedError, check_unchanged,
                                            fast_linear_probe, fit_logistic_regression,
                                            holdout_split, init_fc, snapshot,
                                            train_linear_paper)


def blobs(n_per_class, C, D, seed, spread=1.0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(C, D, generator=g) * 2
    y = torch.arange(C).repeat_interleave(n_per_class)
    return centres[y] + spread * torch.randn(len(y), D, generator=g), y


def test_lbfgs_logistic_regression_matches_sklearn():
    sklearn = pytest.importorskip("sklearn.linear_model")
    X, y = blobs(30, 4, 8, seed=0, spread=2.0)
    l2 = 1e-2
    W, b = fit_logistic_regression(X.double(), y, 4, l2, max_iter=500)
    # sklearn minimises C * sum CE + 1/2 ||W||^2 (intercept unpenalised): C = 1 / (N * l2)
    ref = sklearn.LogisticRegression(C=1.0 / (len(y) * l2), tol=1e-8, max_iter=2000)
    ref.fit(X.double().numpy(), y.numpy())
    probs = torch.softmax(X.double() @ W + b, dim=1)
    torch.testing.assert_close(probs, torch.from_numpy(ref.predict_proba(X.double().numpy())), atol=2e-4, rtol=0)


def test_holdout_split_is_per_class_disjoint_and_complete():
    y = torch.tensor([0] * 10 + [1] * 5 + [2] * 1)
    fit, held = holdout_split(y, 0.2, seed=3)
    assert sorted(fit.tolist() + held.tolist()) == list(range(16))
    assert (y[held] == 0).sum() == 2 and (y[held] == 1).sum() == 1 and (y[held] == 2).sum() == 0


def test_fast_probe_chooses_l2_on_holdout_and_beats_chance():
    X, y = blobs(40, 5, 16, seed=1, spread=1.5)
    Xv, yv = blobs(20, 5, 16, seed=1, spread=1.5)  # same centres (same seed), new noise? no: same draw
    Xv = Xv + 0.5 * torch.randn_like(Xv)
    cfg = P.apply_overrides(P.FAST_PRESETS["fast"], {"l2_grid": "1e-4,1e-1,100"})
    metrics, info = fast_linear_probe([X, X + 0.1 * torch.randn_like(X)], y, Xv, yv, 5, cfg,
                                      torch.device("cpu"))
    assert set(info["l2_sweep_holdout_top1"]) == {"0.0001", "0.1", "100"}
    assert info["chosen_l2"] != 100  # a huge penalty shrinks W to ~0: chance on held-out
    assert metrics["top1"] > 80 and info["n_fit"] + info["n_holdout"] == 200


def test_lr_schedule_step_and_cosine():
    cfg = P.LINEAR_PRESETS["paper"]
    assert [P.lr_schedule(cfg).lr(30.0, e) for e in (0, 59, 60, 79, 80, 99)] == pytest.approx(
        [30, 30, 3, 3, 0.3, 0.3])
    v3 = P.LINEAR_PRESETS["mocov3-vit"]
    assert P.lr_schedule(v3).lr(0.4, 0) == pytest.approx(0.4) and P.lr_schedule(v3).lr(0.4, 45) == pytest.approx(0.2)


def test_fc_init_is_normal_001_zero_bias():
    torch.manual_seed(0)
    fc = init_fc(2048, 1000)
    assert fc.weight.std().item() == pytest.approx(0.01, rel=0.01) and (fc.bias == 0).all()


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.num_features = 8

    def forward(self, x):
        return self.bn(self.conv(x)).relu().mean((2, 3))


def test_changed_backbone_tensor_fails_loudly():
    net = TinyNet()
    before = snapshot(net)
    check_unchanged(before, net)
    net.train()
    net(torch.randn(4, 3, 8, 8))  # a train-mode forward moves the BN running statistics
    with pytest.raises(BackboneChangedError, match="bn.running_mean"):
        check_unchanged(before, net)


def test_paper_loop_trains_fc_only_and_keeps_bn_frozen():
    torch.manual_seed(0)
    net = TinyNet()
    net.train()  # the loop must switch it to eval mode
    x = torch.randn(64, 3, 8, 8)
    y = torch.arange(64) % 2
    x[:, 0] += 3 * y.view(-1, 1, 1).float()  # class 1 is brighter in the red channel
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, collate_fn=collate_skip)
    val = DataLoader(TensorDataset(x, y), batch_size=16, collate_fn=collate_skip)
    cfg = P.apply_overrides(P.LINEAR_PRESETS["paper"], {"epochs": "5", "lr": "1"})
    before = snapshot(net)
    metrics, info = train_linear_paper(net, loader, val, 2, cfg, torch.device("cpu"), log=lambda *a: None)
    check_unchanged(before, net)
    assert metrics["top1"] > 90 and metrics["top5"] == 100.0
    assert info["unreadable"] == {"train": 0, "val": 0}
