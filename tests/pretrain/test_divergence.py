"""A non-finite loss stops pretraining at once and nothing after it is ever saved."""

from __future__ import annotations

import math
import signal

import pytest
import torch

from mocobench.pretrain import train as train_module
from mocobench.pretrain.config import TINY
from mocobench.pretrain.divergence import DivergenceGuard
from mocobench.pretrain.methods import METHODS
from pretrain_helpers import write_image_folder


def test_guard_remembers_the_first_bad_step_and_checks_the_state():
    guard = DivergenceGuard("cpu")
    guard.update(torch.tensor(1.0), 1)
    guard.check(torch.nn.Linear(2, 2))  # finite loss and state: nothing raised
    guard.update(torch.tensor(float("inf")), 2)
    guard.update(torch.tensor(float("nan")), 3)
    with pytest.raises(FloatingPointError, match="from step 2 on"):
        guard.check()
    bad = torch.nn.Linear(2, 2)
    with torch.no_grad():
        bad.bias[0] = float("nan")
    with pytest.raises(FloatingPointError, match="model state holds non-finite"):
        DivergenceGuard("cpu").check(bad)


@pytest.mark.filterwarnings("ignore:skipping unreadable image")
def test_no_checkpoint_is_saved_after_the_loss_diverges(tmp_path, monkeypatch):
    """Before the fix the loss was only looked at every ``log_every`` steps: the checkpoint of step 4
    was written with NaN weights after the loss of step 3 was NaN (and the NaN noticed at step 5)."""
    data = write_image_folder(tmp_path / "data", n_classes=2, per_class=10, size=16)  # 5 batches of 4
    import dataclasses

    cfg = dataclasses.replace(TINY["moco_v2"], img_size=16, batch_size=4, K=8, epochs=1, ckpt_every=2,
                              log_every=100, workers=0)
    method, calls = METHODS["moco_v2"], []

    def poisoned(model, views, labels):
        calls.append(1)
        loss, pending = method.train_step(model, views, labels)
        return (loss * math.nan if len(calls) == 3 else loss), pending

    monkeypatch.setitem(METHODS, "moco_v2", method._replace(train_step=poisoned))
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)}
    with pytest.raises(FloatingPointError) as raised:
        train_module.train(cfg, data, tmp_path / "run")
    # issue 24: the preemption handlers are put back when train() raises (they leaked before)
    assert {s: signal.getsignal(s) for s in handlers} == handlers
    saved = sorted((tmp_path / "run" / "checkpoints").glob("step_*.pth"))
    assert [p.name for p in saved] == ["step_00000002.pth"]  # step 2 (ckpt_every), nothing later
    state = torch.load(saved[0], weights_only=True)["model"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert not (tmp_path / "run" / "backbone.pth").exists()
    assert "from step 3 on" in str(raised.value)
