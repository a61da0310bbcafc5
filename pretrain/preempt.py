"""Preemption: SIGTERM, SIGUSR1 or SIGUSR2 (what SLURM sends on preemption and before the time limit;
USR2 is submitit's choice, USR1 the usual ``--signal``) ask the loop to stop.

The loop finishes the step it is in, saves a checkpoint at that exact position, writes a
``preempted`` event to ``log.jsonl`` and raises :class:`Preempted`; ``mocobench pretrain`` then
exits with :data:`EXIT_PREEMPTED` (75, EX_TEMPFAIL: "try again"). Running the same command with
``--resume auto`` continues from that step. Under torchrun every process gets the signal (from
torchrun or from SLURM), but not necessarily before the same step: the processes agree on the
step to stop after with one ``all_reduce`` (max) of the flag per step.
"""

from __future__ import annotations

import signal
import threading

import torch
import torch.distributed as dist

EXIT_PREEMPTED = 75
SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class Preempted(Exception):
    def __init__(self, step: int, signum: int, checkpoint: str):
        self.step, self.signum, self.checkpoint = step, signum, checkpoint
        super().__init__(f"preempted by {signal.Signals(signum).name} at step {step}; checkpoint saved at "
                         f"{checkpoint}; run again with --resume auto to continue")


class StopRequest:
    """Context manager: while inside, these signals set a flag instead of killing the process."""

    def __init__(self):
        self.signum = 0
        self._previous: dict[int, object] = {}

    def _handler(self, signum, frame) -> None:
        self.signum = signum

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous.clear()

    def requested(self, device) -> int:
        """The signal that asks to stop (0: none), the same on every process."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self.signum
        flag = torch.tensor([self.signum], dtype=torch.int64, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())
