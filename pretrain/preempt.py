"""Preemption: SIGTERM, SIGUSR1 or SIGUSR2 (what SLURM sends on preemption and before the time limit;
USR2 is submitit's choice, USR1 the usual ``--signal``) ask the loop to stop.

The loop finishes the step it is in, saves a checkpoint at that exact position, writes a
``preempted`` event to ``log.jsonl`` and raises :class:`Preempted`; ``mocobench pretrain`` then
exits with :data:`EXIT_PREEMPTED` (75, EX_TEMPFAIL: "try again"). Running the same command with
``--resume auto`` continues from that step. Under torchrun every process gets the signal (from
torchrun or from SLURM), but not necessarily before the same step: the processes agree on the
step to stop after with one ``all_reduce`` (max) of the flag per step, read one step later so that
the host never waits for the step it has just queued (:meth:`StopRequest.requested`).
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
        self._pending: torch.Tensor | None = None   # the last step's all_reduced flag (torchrun)

    def _handler(self, signum, frame) -> None:
        # the first signal is the one that asked: SLURM's preemption sends SIGTERM and submitit's
        # SIGUSR2 a few milliseconds apart, and the event names what began the stop
        self.signum = self.signum or signum

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
        """The signal that asks to stop (0: none), the same on every process.

        Under torchrun the processes take the max of their flags with one ``all_reduce`` per step,
        and each call returns the result of the call before. Reading this step's result at once
        would make the host wait for the GPU work it has just queued, every step; read one step
        later, it waits only for the step before, while the GPU runs the one just queued. The
        processes stop one step after the signal, all after the same step."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self.signum
        flag = torch.full((1,), self.signum, dtype=torch.int64, device=device)   # no copy from the host
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        pending, self._pending = self._pending, flag
        return 0 if pending is None else int(pending.item())
