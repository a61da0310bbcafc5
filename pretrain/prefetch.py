"""Batches made ready on the training device one step ahead, on a stream of their own.

The loop's inputs (the PIL path's host-to-device copy, or the device path's decode and tensor-op
augmentations) are queued for batch b+1 before the training step of batch b is queued, on an input
stream: on a GPU they run while the step runs, instead of before it on the training stream. The
training stream waits only for its own batch's input (an event recorded after it), and each tensor
handed over is recorded on the training stream, so the caching allocator reuses none of them before
the step is done with them.

Off a GPU there are no streams: batch b+1 is made before batch b is returned, and every tensor is
what the plain loop would have made (the draws are seeded per batch, not from a shared generator).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import torch


class Prefetcher:
    """``(b, made)`` for ``b = start, start + 1, ...``: ``made = make(b, raw)`` of each raw batch,
    computed one batch ahead. ``make`` returns tensors, or lists / tuples of them and other values."""

    def __init__(self, batches: Iterable, make: Callable[[int, Any], Any], device: torch.device | str,
                 start: int = 0):
        self.batches, self.make, self.start = batches, make, start
        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    def _load(self, b: int, raw):
        if self.stream is None:
            return self.make(b, raw), None
        with torch.cuda.stream(self.stream):
            made = self.make(b, raw)
            ready = torch.cuda.Event()
            ready.record(self.stream)
        return made, ready

    def _hand_over(self, made, ready):
        if ready is None:
            return made
        main = torch.cuda.current_stream(self.device)
        main.wait_event(ready)
        for t in _tensors(made):
            if t.device.type == "cuda":
                t.record_stream(main)
        return made

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        raws = iter(self.batches)
        b = self.start
        try:
            pending = self._load(b, next(raws))
        except StopIteration:
            return
        for raw in raws:
            ahead = self._load(b + 1, raw)   # queued before batch b's step
            yield b, self._hand_over(*pending)
            pending, b = ahead, b + 1
        yield b, self._hand_over(*pending)


def _tensors(x) -> Iterator[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, (list, tuple)):
        for y in x:
            yield from _tensors(y)
