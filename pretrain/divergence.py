"""The divergence guard: a non-finite loss is noticed at the step it happens, and nothing after it
is ever saved.

:meth:`DivergenceGuard.update` runs at every step and only launches two tiny tensor ops (no host
sync, so a GPU loop does not stall); :meth:`DivergenceGuard.check` reads the flag (one sync) and is
called on every process before each checkpoint, at each log line and before the export.
"""

from __future__ import annotations

import torch
import torch.distributed
from torch import nn

from mocobench.core import dist

NEVER = 2**62  # "no non-finite step yet" (the minimum over processes is the first bad step)


class DivergenceGuard:
    def __init__(self, device: str | torch.device):
        self.first_bad = torch.full((), NEVER, dtype=torch.long, device=device)

    @torch.no_grad()
    def update(self, loss: torch.Tensor, step: int) -> None:
        """Remember ``step`` if ``loss`` is not finite and no earlier step was."""
        bad = ~torch.isfinite(loss.detach()).all()
        self.first_bad = torch.where(bad, torch.clamp(self.first_bad, max=step), self.first_bad)

    @torch.no_grad()
    def check(self, model: nn.Module | None = None) -> None:
        """Raise ``FloatingPointError`` if any process saw a non-finite loss, or if ``model``'s
        floating-point state (parameters, buffers, queues) holds a non-finite value.

        Every process must call it at the same points (the flags are reduced across processes).
        """
        state_bad = torch.zeros((), dtype=torch.long, device=self.first_bad.device)
        if model is not None:
            finite = [torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point()]
            if finite:
                state_bad = (~torch.stack(finite).all()).long().to(state_bad.device)
        flags = torch.stack([self.first_bad, -state_bad])  # min over processes of both
        if dist.is_distributed():
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MIN)
        first_bad, state_bad = int(flags[0]), -int(flags[1])
        if first_bad != NEVER:
            raise FloatingPointError(f"the loss is not finite from step {first_bad} on; stopping without "
                                     "saving anything after it (lower the lr or use fp32)")
        if state_bad:
            raise FloatingPointError("the model state holds non-finite values although every loss was "
                                     "finite (non-finite gradients?); stopping without saving it")
