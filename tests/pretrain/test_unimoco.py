"""UniCon loss and UniMoCo targets against the paper's direct formulas."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mocobench.pretrain.moco import commit
from mocobench.pretrain.unimoco import UniMoCo, unicon_loss, unimoco_targets
from pretrain_helpers import TinyEncoder


def direct_unicon(s: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """L = mean_i log(1 + Σ_{n∉P(i)} exp(s_in) · Σ_{p∈P(i)} exp(−s_ip)), term by term."""
    losses = []
    for i in range(s.shape[0]):
        pos = [j for j in range(s.shape[1]) if targets[i, j] > 0]
        neg = [j for j in range(s.shape[1]) if targets[i, j] == 0]
        sum_neg = sum(torch.exp(s[i, j]) for j in neg) if neg else torch.zeros((), dtype=s.dtype)
        sum_pos = sum(torch.exp(-s[i, j]) for j in pos)
        losses.append(torch.log(1 + sum_neg * sum_pos))
    return torch.stack(losses).mean()


def test_targets():
    labels = torch.tensor([2, -1, 0])
    label_queue = torch.tensor([0, 2, -1, 2])
    t = unimoco_targets(labels, label_queue)
    assert t.tolist() == [[1, 0, 1, 0, 1],  # labeled 2: key + queue entries 1 and 3
                          [1, 0, 0, 0, 0],  # unlabeled: only its key; never matches -1 entries
                          [1, 1, 0, 0, 0]]


def test_unicon_equals_direct_formula_float64():
    torch.manual_seed(0)
    s = torch.randn(6, 9, dtype=torch.float64) * 3
    labels = torch.tensor([0, 1, -1, 2, 0, -1])
    label_queue = torch.tensor([0, 1, 1, -1, 2, 0, 0, 2])
    t = unimoco_targets(labels, label_queue)
    assert (t.sum(1) > 1).any() and (t.sum(1) == 1).any()  # rows with and without extra positives
    torch.testing.assert_close(unicon_loss(s, t), direct_unicon(s, t), rtol=1e-12, atol=1e-12)


def test_unicon_equals_info_nce_when_the_key_is_the_only_positive():
    torch.manual_seed(1)
    s = torch.randn(5, 11, dtype=torch.float64) * 4
    t = unimoco_targets(torch.full((5,), -1), torch.randint(0, 3, (10,)))
    expected = F.cross_entropy(s, torch.zeros(5, dtype=torch.long))
    torch.testing.assert_close(unicon_loss(s, t), expected, rtol=1e-12, atol=1e-12)


def test_unicon_is_finite_in_half_precision_where_the_direct_form_overflows():
    torch.manual_seed(2)
    s64 = torch.randn(4, 7, dtype=torch.float64) * 2 + 14  # logits/T around 14: exp(14) > fp16 max
    t = unimoco_targets(torch.tensor([0, 1, -1, 0]), torch.tensor([0, 1, 0, -1, 1, 0]))
    reference = direct_unicon(s64, t)
    for dtype in (torch.float16, torch.bfloat16):
        s = s64.to(dtype)
        assert not torch.isfinite(torch.exp(s.max())) or dtype == torch.bfloat16
        loss = unicon_loss(s, t)
        assert torch.isfinite(loss)
        torch.testing.assert_close(loss.double(), reference, rtol=0.05, atol=0.05)
    s16 = (torch.randn(4, 7) * 2 + 95).to(torch.bfloat16)  # exp(95) overflows bfloat16 too
    assert not torch.isfinite(torch.exp(s16).sum())
    assert torch.isfinite(unicon_loss(s16, t))


def test_label_queue_follows_the_key_queue():
    torch.manual_seed(3)
    model = UniMoCo(TinyEncoder, dim=8, K=5, m=0.9, T=0.2, mlp=False)
    x = torch.randn(3, 3, 6, 6)
    labels = torch.tensor([1, -1, 1])
    logits, targets, k = model(x, x, labels)
    commit(model, (k, labels))
    assert targets.shape == logits.shape == (3, 6)
    assert model.queue.labels.tolist() == [1, -1, 1, -1, -1] and int(model.queue.ptr) == 3
    # second batch wraps around (K=5 is not a multiple of 3): columns 3, 4, 0; query 0 (label 1)
    # matches queue columns 0 and 2 (logit columns 1 and 3)
    labels = torch.tensor([1, 2, -1])
    logits, targets, k = model(x, x, labels)
    assert targets[0].tolist() == [1, 1, 0, 1, 0, 0]
    commit(model, (k, labels))
    assert model.queue.labels.tolist() == [-1, -1, 1, 1, 2] and int(model.queue.ptr) == 1
