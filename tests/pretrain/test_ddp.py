"""MoCo under a real 2-process ``torchrun`` (gloo, CPU): shuffle BN, queue, gradient sync, eager and with
the whole step compiled."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_processes(out: Path, compile: str = "off") -> tuple[dict, dict]:
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(HERE / "ddp_worker.py"), str(out), compile]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return (torch.load(out / "rank0.pt", weights_only=True), torch.load(out / "rank1.pt", weights_only=True))


@pytest.mark.slow
def test_two_process_moco_eager_and_with_the_whole_step_compiled(tmp_path):
    r0, r1 = eager = two_processes(tmp_path / "eager")
    for step, (q0, q1) in enumerate(zip(r0["queues"], r1["queues"])):
        # both processes hold the same queue: both shards' keys, rank 0's first
        assert torch.equal(q0, q1), f"queues differ after step {step}"
    torch.testing.assert_close(r0["keys"][0], r1["keys"][0])
    # the loss decreases (averaged over the two processes), once the queue holds real keys (step 3)
    losses = [(a + b) / 2 for a, b in zip(r0["losses"], r1["losses"])]
    assert sum(losses[-3:]) / 3 < sum(losses[3:6]) / 3 - 0.1, losses

    # compile=step under DDP: the graphs end at the collectives (shuffle BN's gather and broadcast,
    # the enqueue's gather), which run eagerly, the same on both processes. Each process checks its
    # keys against the hand-computed ones at every step (ddp_worker.py), and the run is the eager
    # run: losses, queues and weights after 15 steps.
    compiled = two_processes(tmp_path / "step", "step")
    for rank, (e, c) in enumerate(zip(eager, compiled)):
        assert c["losses"] == pytest.approx(e["losses"], abs=1e-4), rank
        torch.testing.assert_close(c["queues"][-1], e["queues"][-1], rtol=0, atol=1e-5)
        torch.testing.assert_close(c["weights"], e["weights"], rtol=0, atol=1e-5)
    assert torch.equal(compiled[0]["queues"][-1], compiled[1]["queues"][-1])
    assert torch.equal(compiled[0]["weights"], compiled[1]["weights"])
