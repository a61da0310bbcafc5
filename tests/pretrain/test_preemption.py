"""SLURM's preemption signal: SIGUSR1 (or SIGTERM) mid-epoch saves a checkpoint at that exact step and
exits with 75; ``--resume auto`` continues from that step and ends with the uninterrupted run's weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mocobench.pretrain.cli import main as cli_main
from mocobench.pretrain.preempt import EXIT_PREEMPTED
from pretrain_helpers import write_image_folder

ROOT = Path(__file__).parent.parent.parent
# 24 images in batches of 4: 6 steps per epoch, 2 epochs; checkpoints only at epoch ends (and on a signal)
ARGS = ["--method", "moco_v2", "--preset", "tiny", "--img_size=16", "--batch_size=4", "--K=8", "--epochs=2",
        "--ckpt_every=1000", "--log_every=1", "--lr=0.05", "--workers=0"]


def _events(run: Path) -> list[dict]:
    """``log.jsonl``'s events, less a last line that is still being written."""
    lines = (run / "log.jsonl").read_text().splitlines()
    if lines and not lines[-1].endswith("}"):
        lines = lines[:-1]
    return [json.loads(line) for line in lines]


@pytest.mark.slow
def test_preemption_signal_saves_exact_step_and_resume_continues(tmp_path):
    data = write_image_folder(tmp_path / "data", n_classes=3, per_class=8, size=20)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "MOCOBENCH_PROGRESS": "0"}
    run = tmp_path / "preempted"
    cmd = [sys.executable, "-m", "mocobench.pretrain", "--data", str(data), "--out", str(run), *ARGS]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not ((run / "log.jsonl").exists() and any(e.get("step", 0) >= 2 and "loss" in e for e in _events(run))):
        assert p.poll() is None and time.time() < deadline, p.communicate()[1][-3000:]
        time.sleep(0.02)
    p.send_signal(signal.SIGUSR1)
    _, err = p.communicate(timeout=60)
    assert p.returncode == EXIT_PREEMPTED, err[-3000:]
    stopped = [e for e in _events(run) if e.get("event") == "preempted"]
    assert len(stopped) == 1 and stopped[0]["signal"] == "SIGUSR1", err[-2000:]
    step = stopped[0]["step"]
    assert 2 <= step < 12, f"stopped at step {step}: not mid-run"
    saved = torch.load(run / "checkpoints" / f"step_{step:08d}.pth", weights_only=True)
    # a stop after an epoch's last batch (the test's signal came late, under load) is saved as
    # (epoch, 6): the resumed run starts the next epoch
    assert (saved["epoch"], saved["batch_in_epoch"]) == ((step - 1) // 6, (step - 1) % 6 + 1)
    assert "preempted by SIGUSR1" in err and not (run / "backbone.pth").exists()

    resumed = subprocess.run(cmd + ["--resume", "auto"], env=env, capture_output=True, text=True, timeout=200)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    starts = [e for e in _events(run) if e.get("event") == "start"]
    assert starts[-1]["step"] == step    # continued from the preemption checkpoint, not from 0

    full = tmp_path / "full"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # as OMP_NUM_THREADS=1 in the subprocesses: same float reductions
    try:
        assert cli_main(["--data", str(data), "--out", str(full), *ARGS]) == 0
    finally:
        torch.set_num_threads(threads)
    a = torch.load(full / "backbone.pth", weights_only=True)["state_dict"]
    b = torch.load(run / "backbone.pth", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _stop_worker(rank, world, port, queue):
    import torch.distributed as dist

    from mocobench.pretrain.preempt import StopRequest

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    stop, seen = StopRequest(), []
    for step in range(1, 7):
        if rank == 1 and step == 3:
            stop.signum = int(signal.SIGUSR1)   # as the handler does: only rank 1 got the signal, at step 3
        seen.append(stop.requested(torch.device("cpu")))
    queue.put((rank, seen))
    dist.destroy_process_group()


def test_processes_agree_on_the_stop_one_step_after_the_signal():
    """Under torchrun the flag's all_reduce is read a step late (no host wait for the step just
    queued): both processes see the signal that only rank 1 got at step 3 after step 4, together."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    queue = mp.get_context("fork").SimpleQueue()
    mp.start_processes(_stop_worker, args=(2, port, queue), nprocs=2, join=True, start_method="fork")
    out = dict(queue.get() for _ in range(2))
    assert out[0] == out[1] == [0, 0, 0, int(signal.SIGUSR1), int(signal.SIGUSR1), int(signal.SIGUSR1)]


def test_the_first_signal_is_the_one_recorded():
    """SLURM's preemption sends SIGTERM and submitit's SIGUSR2 milliseconds apart, both often before
    the loop looks: the stop is recorded as the SIGTERM that began it."""
    import threading

    from mocobench.pretrain.preempt import StopRequest

    # the handlers are installed only in the main thread: a real SIGTERM elsewhere would end pytest
    assert threading.current_thread() is threading.main_thread()
    with StopRequest() as stop:
        # a handler that is not ours would let the SIGTERM end the test process, not fail the test
        assert signal.getsignal(signal.SIGTERM) == stop._handler
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGUSR2)
        assert stop.requested(torch.device("cpu")) == signal.SIGTERM
