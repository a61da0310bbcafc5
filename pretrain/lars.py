"""LARS (You et al. 2017), as used by BYOL/SimCLR-style large-batch training (and SMoG).

For every parameter w with gradient g: g ← g + wd·w, then the update is scaled by the trust ratio
η·‖w‖/‖g‖ (1 when either norm is 0), then SGD momentum. Biases and BN parameters (1-d tensors) get
neither weight decay nor adaptation, the usual convention.
"""

from __future__ import annotations

import torch


class LARS(torch.optim.Optimizer):
    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 eta: float = 0.001, exclude_1d: bool = True):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta,
                                      exclude_1d=exclude_1d))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if not (group["exclude_1d"] and p.ndim <= 1):
                    g = g.add(p, alpha=group["weight_decay"])
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
                    trust = torch.where((w_norm > 0) & (g_norm > 0),
                                        group["eta"] * w_norm / g_norm, torch.ones_like(w_norm))
                    g = g.mul(trust)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.clone(g).detach()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(g)
                lr = group["lr"]
                if isinstance(lr, torch.Tensor):   # compile=step: a tensor, so a new rate is no new graph
                    p.sub_(state["momentum_buffer"] * lr)
                else:
                    p.add_(state["momentum_buffer"], alpha=-lr)
        return loss
