"""A fixed number of slots written in arrival order, the oldest overwritten: MoCo's key queue,
UniMoCo's label queue (the same ring, a second field) and SMoG's feature bank.

Buffers (all persistent, so they are in every checkpoint and resume is exact): one tensor per
field with the slots along dim 0 (``size x ...``), ``ptr`` (the slot the next item goes to) and
``count`` (slots written so far, at most ``size``).

NOTE: the official MoCo stores its queue as ``queue`` (d x K) and ``queue_ptr`` and asserts
``K % batch == 0``; here the keys are ``queue.keys`` (K x d) and a push wraps around the end, so any
K and batch size work (a push larger than the ring keeps its last ``size`` items).
"""

from __future__ import annotations

import torch
from torch import nn


class RingBuffer(nn.Module):
    def __init__(self, **fields: torch.Tensor):
        """``fields``: the initial contents, ``name=tensor`` with the same length along dim 0."""
        super().__init__()
        self.fields: tuple[str, ...] = ()
        self.register_buffer("ptr", torch.zeros(1, dtype=torch.long))
        self.register_buffer("count", torch.zeros(1, dtype=torch.long))
        for name, init in fields.items():
            self.add(name, init)

    @property
    def size(self) -> int:
        return getattr(self, self.fields[0]).shape[0]

    def add(self, name: str, init: torch.Tensor) -> None:
        """Another field, written at the same slots as the others by every :meth:`push`."""
        if self.fields and init.shape[0] != self.size:
            raise ValueError(f"ring field {name!r} has {init.shape[0]} slots, the ring has {self.size}")
        self.register_buffer(name, init)
        self.fields += (name,)

    @torch.no_grad()
    def push(self, **items: torch.Tensor) -> None:
        """Write ``items`` (every field, each B x ...) over the oldest slots.

        On the device alone: the slots are computed from ``ptr`` there, so a push never reads a
        GPU value on the host (a wait for the step's queued work, every step)."""
        if set(items) != set(self.fields):
            raise ValueError(f"push needs exactly the fields {self.fields}, got {tuple(items)}")
        size = self.size
        B = next(iter(items.values())).shape[0]
        kept = min(B, size)  # of a push larger than the ring, the last `size` items survive
        slots = (self.ptr + (B - kept) + torch.arange(kept, device=self.ptr.device)) % size
        for name, x in items.items():
            store = getattr(self, name)
            store.index_copy_(0, slots, x[B - kept:].to(store.dtype))
        self.ptr.add_(B).remainder_(size)
        self.count.add_(B).clamp_(max=size)

    def filled(self, name: str) -> torch.Tensor:
        """The slots of ``name`` written so far (all of them once the ring went round); reads
        ``count`` on the host (SMoG's resets only, not every step)."""
        return getattr(self, name)[: int(self.count[0])]
