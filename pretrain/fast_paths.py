"""The training step and its fast paths: bf16 autocast (the policy is ``core/precision.py``),
channels_last and ``torch.compile``, on any device.

Each takes effect wherever the config asks for it: CPU autocast supports bf16, and inductor
compiles for the CPU with the system's C compiler, so ``tests/pretrain/test_fast_paths.py`` runs
all three on CPU against fp32 eager and the GPU runs code that has been executed before. (They
used to be silently skipped off the GPU.) The CPU presets (``TINY``) turn bf16 and channels_last off:
on most CPUs both are slower than fp32 NCHW.

:class:`TrainStep` is the one step the training loop, the device check and the tests run.
"""

from __future__ import annotations

import torch
from torch import nn

from mocobench.core import dist
from mocobench.core.precision import autocast

# compile=off: eager; modules: each top-level sub-module compiled, the state updates eager between
# them; step: the whole step (see TrainStep)
COMPILE = ("off", "modules", "step")


def memory_format(cfg) -> torch.memory_format:
    """The layout of the model's weights and of the input views."""
    return torch.channels_last if cfg.channels_last else torch.contiguous_format


def compile_in_place(model: nn.Module) -> None:
    """``torch.compile`` each top-level sub-module in place: parameter names (and so checkpoints)
    do not change, and the no-grad state updates between the sub-modules stay eager."""
    for child in model.children():
        child.compile()


def check_compile(value: str) -> str:
    if value not in COMPILE:
        raise ValueError(f"compile={value!r}: use off (eager), modules (each sub-module compiled) or step "
                         "(the whole training step compiled)")
    return value


class TrainStep:
    """One optimisation step of a pretraining method, in this order:

    1. ``prepare`` on the host (SMoG's reset when it is due: k-means over the bank, eager);
    2. the forward under autocast: momentum update, keys or groups, loss;
    3. backward;
    4. the optimizer step and ``commit``: the step's state writes (key and label queues, SMoG's
       groups, bank and step counter).

    ``compile``: ``off``; ``modules`` compiles each top-level sub-module (2 and 4 run eagerly between
    them); ``step`` compiles 2 as one graph (its backward is AOTAutograd's graph) and 4 as another, so
    nothing of the step but SMoG's rare reset runs eagerly. With ``step`` the learning rate is a
    tensor in the optimizer's groups, filled in place each step: a float would be a constant of the
    graph and recompile it at every change. Under DDP the graphs end at the collectives (shuffle BN's
    gather and broadcast, the enqueue's gather), which stay eager.

    NOTE: the state writes come after the backward, not inside the forward as in the official MoCo.
    In torch 2.14 inductor's min-cut partitioner may recompute in the backward a value the forward
    read from a buffer that the same graph then mutates, and the recomputation reads the mutated
    buffer (pytorch/pytorch PR 197039, open): with the enqueue inside the compiled forward, MoCo's
    gradients were computed against the new queue, silently (docs/performance.md has the figures).
    Now the forward graph mutates only what no backward reads: the momentum encoder's parameters and
    the BN running statistics (tests/pretrain/test_fast_paths.py holds both).
    """

    def __init__(self, method, net: nn.Module, optimizer: torch.optim.Optimizer, *, precision: str,
                 device: torch.device | str, compile: str = "off"):
        self.method, self.net, self.optimizer = method, net, optimizer
        self.model = dist.unwrap(net)
        self.compile = check_compile(compile)
        self.autocast = lambda: autocast(precision, device)
        self.autocast()   # an unknown precision is refused here, not at the first step
        if compile == "modules":
            compile_in_place(self.model)
        self._forward, self._update = self.forward, self.update
        for group in optimizer.param_groups:   # a resumed optimizer brings the lr its run had
            lr = float(group["lr"])
            # float64: the rate as the float it was (float32 would move 0.1 by 1.5e-8)
            group["lr"] = torch.tensor(lr, dtype=torch.float64) if compile == "step" else lr
        if compile == "step":
            self._forward, self._update = torch.compile(self.forward), torch.compile(self.update)

    def forward(self, views: list[torch.Tensor], labels: torch.Tensor, **prepared):
        with self.autocast():
            return self.method.train_step(self.net, views, labels, **prepared)

    def update(self, pending) -> None:
        self.optimizer.step()
        self.method.commit(self.model, pending)

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr

    def __call__(self, views: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """The step on one batch; returns the loss (still attached to the graph)."""
        prepared = self.method.prepare(self.model) if self.method.prepare else {}
        loss, pending = self._forward(views, labels, **prepared)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._update(pending)
        return loss
