"""SMoG's assignment, group update and periodic reset against their formulas."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mocobench.pretrain.fast_paths import TrainStep
from mocobench.pretrain.methods import METHODS
from mocobench.pretrain.smog import SMoG, assign, update_groups
from pretrain_helpers import TinyEncoder


def step(model: SMoG, views, opt=None) -> torch.Tensor:
    """One step as the training loop runs it (prepare, forward, backward, optimizer step, commit);
    without ``opt`` the online weights stay as they are (lr 0)."""
    opt = opt or torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
    return TrainStep(METHODS["smog"], model, opt, precision="fp32", device="cpu")(views, torch.full((8,), -1))


def test_assign_is_argmax_cosine():
    torch.manual_seed(0)
    z, groups = torch.randn(20, 4), torch.randn(5, 4) * torch.rand(5, 1) * 10  # group norms differ
    expected = [max(range(5), key=lambda c: F.cosine_similarity(z[i], groups[c], dim=0).item()) for i in range(20)]
    assert assign(z, groups).tolist() == expected


def test_update_groups_formula():
    torch.manual_seed(1)
    groups, z = torch.randn(4, 3), torch.randn(7, 3)
    a = torch.tensor([0, 2, 2, 0, 2, 3, 0])  # group 1 gets no member
    beta = 0.9
    new = update_groups(groups, z, a, beta)
    for c in range(4):
        members = [z[i] for i in range(7) if a[i] == c]
        expected = groups[c] if not members else beta * groups[c] + (1 - beta) * torch.stack(members).mean(0)
        torch.testing.assert_close(new[c], expected)
    assert not torch.equal(new, groups)


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = TinyEncoder(num_classes=6)

    def forward(self, x):
        return self.enc(x)


def test_momentum_update_or_reset_every_step():
    torch.manual_seed(2)
    R, m = 3, 0.5
    model = SMoG(Net(), num_features=6, dim=4, hidden=8, n_groups=3, beta=0.9, tau=0.1, m=m,
                 reset_every=R, bank_size=64, kmeans_iters=3)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    views = [torch.randn(8, 3, 6, 6), torch.randn(8, 3, 6, 6)]
    for it in range(2 * R + 1):
        online = [p.detach().clone() for p in model.backbone.parameters()]
        momentum = [p.detach().clone() for p in model.backbone_k.parameters()]
        step(model, views, opt)
        for p_k, q, k in zip(model.backbone_k.parameters(), online, momentum):
            # reset steps (it = R, 2R): θk ← θq; other steps: θk ← m·θk + (1−m)·θq (θq before the step)
            expected = q if (it > 0 and it % R == 0) else m * k + (1 - m) * q
            torch.testing.assert_close(p_k, expected)
        assert int(model.iteration) == it + 1


def test_reset_step_copies_online_and_reclusters():
    torch.manual_seed(3)
    R = 2
    model = SMoG(Net(), num_features=6, dim=4, hidden=8, n_groups=3, beta=0.9, tau=0.1, m=0.5,
                 reset_every=R, bank_size=64, kmeans_iters=3)
    views = [torch.randn(8, 3, 6, 6), torch.randn(8, 3, 6, 6)]
    calls = []
    original_reset = model.reset

    def spy():
        calls.append(int(model.iteration))
        original_reset()
        # right after the reset the momentum branch equals the online branch
        for a, b in zip(model.backbone_k.state_dict().values(), model.backbone.state_dict().values()):
            assert torch.equal(a, b)
        # and the groups are unit-norm k-means centres of the bank
        torch.testing.assert_close(model.groups.norm(dim=1), torch.ones(3))
    model.reset = spy
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(7):
        step(model, views, opt)
    assert calls == [2, 4, 6]


def test_a_loaded_state_decides_the_next_reset():
    """The resets follow the host's copy of ``iteration`` (no GPU read per step); a loaded state
    replaces it, so a resumed run resets at the same steps as an uninterrupted one."""
    torch.manual_seed(4)
    kw = dict(num_features=6, dim=4, hidden=8, n_groups=3, beta=0.9, tau=0.1, m=0.5, reset_every=3, bank_size=64,
              kmeans_iters=3)
    views = [torch.randn(8, 3, 6, 6), torch.randn(8, 3, 6, 6)]
    ran = SMoG(Net(), **kw)
    for _ in range(2):
        step(ran, views)
    fresh = SMoG(Net(), **kw)
    step(fresh, views)                             # its host copy now says 1
    fresh.load_state_dict(ran.state_dict())        # the loaded state says 2
    resets = []
    fresh.reset = lambda: resets.append(int(fresh.iteration))
    step(fresh, views)                             # step 3 (iteration 2): a momentum update
    step(fresh, views)                             # iteration 3: a reset
    assert resets == [3] and int(fresh.iteration) == 4
