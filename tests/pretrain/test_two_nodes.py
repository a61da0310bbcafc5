"""Two nodes with torchrun, on this machine: node 0 and node 1 (``--nnodes 2 --node-rank 0/1``, one
process each, rendezvous on 127.0.0.1, gloo) train exactly what one node with two processes trains,
and the run's files are written once (by global rank 0), not once per node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pretrain_helpers import write_image_folder
from test_ddp import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
# 24 images, global batch 8 (4 per process): 3 steps per epoch, 2 epochs; a checkpoint every 2 steps
ARGS = ["--method", "moco_v2", "--preset", "tiny", "--img_size=16", "--batch_size=8", "--K=16", "--epochs=2",
        "--ckpt_every=2", "--keep_checkpoints=10", "--log_every=1", "--lr=0.05", "--workers=0"]


def torchrun(data: Path, out: Path, nproc: int, nnodes: int, node_rank: int, port: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "MOCOBENCH_PROGRESS": "0"}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", f"--nnodes={nnodes}",
           f"--node-rank={node_rank}", "--master-addr=127.0.0.1", f"--master-port={port}",
           "-m", "mocobench.pretrain", "--data", str(data), "--out", str(out), *ARGS]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(*procs: subprocess.Popen) -> None:
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out[-4000:]


@pytest.mark.slow
def test_two_nodes_equal_one_node_with_two_processes(tmp_path):
    data = write_image_folder(tmp_path / "data", n_classes=3, per_class=8, size=20)
    two_nodes, one_node = tmp_path / "two_nodes", tmp_path / "one_node"
    port = free_port()
    finish(torchrun(data, two_nodes, 1, 2, 0, port), torchrun(data, two_nodes, 1, 2, 1, port))
    finish(torchrun(data, one_node, 2, 1, 0, free_port()))

    ckpts = {run: sorted(p.name for p in (run / "checkpoints").glob("step_*.pth")) for run in (two_nodes, one_node)}
    assert ckpts[two_nodes] == ckpts[one_node] == [f"step_{s:08d}.pth" for s in (2, 3, 4, 6)]
    a = torch.load(two_nodes / "checkpoints" / "step_00000006.pth", weights_only=True)
    b = torch.load(one_node / "checkpoints" / "step_00000006.pth", weights_only=True)
    assert a["world_size"] == b["world_size"] == 2
    assert a["model"].keys() == b["model"].keys()
    queue = [k for k in a["model"] if k.startswith("queue") and a["model"][k].is_floating_point()]
    assert queue and not torch.equal(a["model"][queue[0]], torch.zeros_like(a["model"][queue[0]]))
    torch.testing.assert_close(a["model"][queue[0]], b["model"][queue[0]], rtol=1e-5, atol=1e-6)   # same queue
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-5, atol=1e-6, msg=f"{k} differs")
    ea = torch.load(two_nodes / "backbone.pth", weights_only=True)["state_dict"]
    eb = torch.load(one_node / "backbone.pth", weights_only=True)["state_dict"]
    for k in ea:
        torch.testing.assert_close(ea[k], eb[k], rtol=1e-5, atol=1e-6, msg=f"backbone {k} differs")

    # written once, by global rank 0: one start, one line per logged step, one line per checkpoint, one done
    events = [json.loads(line) for line in (two_nodes / "log.jsonl").read_text().splitlines()]
    kinds = [e.get("event", "step") for e in events]
    assert kinds.count("start") == 1 and kinds.count("done") == 1 and kinds.count("checkpoint") == 4
    assert [e["step"] for e in events if "loss" in e] == [1, 2, 3, 4, 5, 6]
    assert events[0]["world_size"] == 2
