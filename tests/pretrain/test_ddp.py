"""MoCo under a real 2-process ``torchrun`` (gloo, CPU): shuffle BN, queue, gradient sync."""

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


@pytest.mark.slow
def test_two_process_moco(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(HERE / "ddp_worker.py"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for step, (q0, q1) in enumerate(zip(r0["queues"], r1["queues"])):
        # both processes hold the same queue: both shards' keys, rank 0's first
        assert torch.equal(q0, q1), f"queues differ after step {step}"
    torch.testing.assert_close(r0["keys"][0], r1["keys"][0])
    # the loss decreases (averaged over the two processes), once the queue holds real keys (step 3)
    losses = [(a + b) / 2 for a, b in zip(r0["losses"], r1["losses"])]
    assert sum(losses[-3:]) / 3 < sum(losses[3:6]) / 3 - 0.1, losses
