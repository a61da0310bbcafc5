"""MoCo against an independent re-statement of Algorithm 1 (He et al. 2020) on the same tensors."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from mocobench.pretrain.moco import MoCo, commit, info_nce_logits, momentum_update
from pretrain_helpers import TinyEncoder


def algorithm1_step(f_q, f_k, queue, x_q, x_k, m, T):
    """The paper's pseudocode, written out with explicit loops where the code vectorises."""
    with torch.no_grad():
        for (name, p_k), p_q in zip(f_k.named_parameters(), f_q.parameters()):
            p_k.copy_(m * p_k + (1 - m) * p_q)  # f_k.params = m*f_k.params + (1-m)*f_q.params
    q = F.normalize(f_q(x_q), dim=1)
    with torch.no_grad():
        k = F.normalize(f_k(x_k), dim=1)
    N, C = q.shape
    l_pos = torch.stack([q[i] @ k[i] for i in range(N)]).view(N, 1)  # bmm(q.view(N,1,C), k.view(N,C,1))
    l_neg = torch.stack([torch.stack([q[i] @ queue[j] for j in range(queue.shape[0])]) for i in range(N)])
    logits = torch.cat([l_pos, l_neg], dim=1) / T
    loss = F.cross_entropy(logits, torch.zeros(N, dtype=torch.long))
    return q, k, logits, loss


@pytest.mark.parametrize("mlp", [False, True])
def test_forward_matches_algorithm_1(mlp):
    torch.manual_seed(0)
    model = MoCo(TinyEncoder, dim=8, K=12, m=0.9, T=0.2, mlp=mlp)
    # make the two encoders differ, so the momentum update matters
    with torch.no_grad():
        for p in model.encoder_q.parameters():
            p.add_(0.1 * torch.randn_like(p))
    f_q, f_k = copy.deepcopy(model.encoder_q), copy.deepcopy(model.encoder_k)
    queue0 = model.queue.keys.clone()  # K x d
    x_q, x_k = torch.randn(4, 3, 6, 6), torch.randn(4, 3, 6, 6)

    q_ref, k_ref, logits_ref, loss_ref = algorithm1_step(f_q, f_k, queue0, x_q, x_k, m=0.9, T=0.2)
    logits, targets, k = model(x_q, x_k)
    loss = F.cross_entropy(logits, targets)
    torch.testing.assert_close(model.queue.keys, queue0, rtol=0, atol=0)   # the enqueue waits for the backward

    assert logits.shape == (4, 13) and targets.tolist() == [0, 0, 0, 0]
    torch.testing.assert_close(logits, logits_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=1e-6)
    # key encoder parameters after the momentum update
    for p, p_ref in zip(model.encoder_k.parameters(), f_k.parameters()):
        torch.testing.assert_close(p, p_ref)
    # the gradient reaches the query encoder only
    loss.backward()
    assert all(p.grad is not None for p in model.encoder_q.parameters())
    assert all(p.grad is None for p in model.encoder_k.parameters())
    # enqueue (the step's commit): the 4 keys went into columns 0..3, the rest is untouched, the pointer moved
    commit(model, (k, None))
    torch.testing.assert_close(model.queue.keys[:4], k_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.queue.keys[4:], queue0[4:])
    assert int(model.queue.ptr) == 4


def test_momentum_update_is_the_per_parameter_formula_in_a_fixed_number_of_calls():
    """Issue 29: θk ← m·θk + (1−m)·θq, bit for bit the official loop's ``p_k.mul_(m).add_(p_q, alpha=1-m)``,
    in two top-level calls however many parameters the encoders have (the loop made two per parameter);
    buffers are left alone, and encoders that do not match are refused, not paired by zip."""
    from torch.profiler import ProfilerActivity, profile

    def calls(depth: int) -> int:
        torch.manual_seed(depth)
        q = torch.nn.Sequential(*[torch.nn.Sequential(torch.nn.Linear(5, 5), torch.nn.BatchNorm1d(5))
                                  for _ in range(depth)])
        k = copy.deepcopy(q)
        with torch.no_grad():
            for p in q.parameters():
                p.add_(torch.randn_like(p))
        expected = [p_k.detach().clone().mul_(0.99).add_(p_q.detach(), alpha=1 - 0.99)
                    for p_q, p_k in zip(q.parameters(), k.parameters())]
        buffers = [b.clone() for b in k.buffers()]
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            momentum_update(q, k, 0.99)
        assert all(torch.equal(p, e) for p, e in zip(k.parameters(), expected))
        assert all(torch.equal(b, b0) for b, b0 in zip(k.buffers(), buffers))
        return sum(1 for e in prof.events() if e.cpu_parent is None and e.name.startswith("aten::"))

    assert calls(2) == calls(20) == 2
    with pytest.raises(ValueError, match="do not match the online encoder's"):
        momentum_update(torch.nn.Linear(5, 5), torch.nn.Linear(5, 4), 0.99)


def test_info_nce_logits_formula():
    torch.manual_seed(1)
    q, k = F.normalize(torch.randn(3, 5), dim=1), F.normalize(torch.randn(3, 5), dim=1)
    queue = F.normalize(torch.randn(7, 5), dim=1)  # K x d
    logits = info_nce_logits(q, k, queue, 0.07)
    expected = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.t()], 1) / 0.07
    torch.testing.assert_close(logits, expected)


def test_state_dict_uses_the_official_encoder_names():
    import torchvision

    with torch.device("meta"):  # names and shapes only
        model = MoCo(torchvision.models.resnet50, dim=128, K=65536, mlp=True)
    keys = set(model.state_dict())
    assert {"queue.keys", "queue.ptr", "queue.count", "encoder_q.fc.0.weight", "encoder_q.fc.2.weight",
            "encoder_k.fc.0.bias", "encoder_k.conv1.weight", "encoder_q.layer4.2.bn3.running_var"} <= keys
    assert model.queue.keys.shape == (65536, 128) and model.encoder_q.fc[0].weight.shape == (2048, 2048)


def test_state_dict_round_trip_continues_training_identically():
    torch.manual_seed(4)
    a = MoCo(TinyEncoder, dim=8, K=6, m=0.9, T=0.2, mlp=True)
    x = torch.randn(4, 3, 6, 6)
    commit(a, (a(x, x)[2], None))  # move the queue pointer
    b = MoCo(TinyEncoder, dim=8, K=6, m=0.9, T=0.2, mlp=True)
    b.load_state_dict({k: v.clone() for k, v in a.state_dict().items()}, strict=True)
    assert int(b.queue.ptr) == 4
    torch.testing.assert_close(a(x, x)[0], b(x, x)[0])
