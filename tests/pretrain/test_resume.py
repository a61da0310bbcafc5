"""Kill a run with SIGKILL mid-epoch, resume it, and get exactly the uninterrupted run's weights."""

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
from pretrain_helpers import write_image_folder

ROOT = Path(__file__).parent.parent.parent
# UniMoCo covers the key queue, the label queue and the labeled subset; 25 images (one of them
# corrupt) in batches of 4: 6 steps per epoch, 2 epochs, a checkpoint after every step.
ARGS = ["--method", "unimoco", "--preset", "tiny", "--label-fraction", "0.5", "--img_size=16",
        "--batch_size=4", "--K=10", "--epochs=2", "--ckpt_every=1", "--log_every=1", "--lr=0.05"]


def command(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mocobench.pretrain", "--data", str(data), "--out", str(out), *ARGS, *extra]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "MOCOBENCH_PROGRESS": "0"}


def final_state(run: Path) -> dict:
    ckpt = torch.load(sorted((run / "checkpoints").glob("step_*.pth"))[-1], weights_only=True)
    assert ckpt["step"] == 12 and ckpt["epoch"] == 2
    return ckpt


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:skipping unreadable image")
def test_sigkill_mid_epoch_then_resume_is_exact(tmp_path):
    data = write_image_folder(tmp_path / "data", n_classes=3, per_class=8, size=20, corrupt=1)
    # uninterrupted, in this process (one process start less), loading in the main process
    full = tmp_path / "full"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as OMP_NUM_THREADS=1 in the subprocesses: same float reductions
    try:
        assert cli_main(["--data", str(data), "--out", str(full), *ARGS, "--workers=0"]) == 0
    finally:
        torch.set_num_threads(threads)

    # interrupted: SIGKILL as soon as the checkpoint after step 2 (of 6 in epoch 0) exists; loading
    # in a worker process this time (augmentations are seeded per image, so that must not matter)
    killed = tmp_path / "killed"
    p = subprocess.Popen(command(data, killed, "--workers=1"), env=env(), stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 200
    while not (killed / "checkpoints" / "step_00000002.pth").exists():
        assert p.poll() is None, p.stderr.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (killed / "backbone.pth").exists()
    saved = sorted((killed / "checkpoints").glob("step_*.pth"))
    mid = [p for p in saved if torch.load(p, weights_only=True)["batch_in_epoch"] > 0]
    assert mid, f"no mid-epoch checkpoint among {[p.name for p in saved]}"
    for later in saved[saved.index(mid[-1]) + 1:]:
        later.unlink()   # the kill came late, past the epoch's end: resume mid-epoch, as the test means to

    proc = subprocess.run(command(data, killed, "--workers=1", "--resume", "auto"), env=env(),
                          capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from" in proc.stdout

    a, b = final_state(full), final_state(killed)
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), f"{k} differs after resume"
    assert torch.equal(a["model"]["queue.labels"], b["model"]["queue.labels"])
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    # the exported backbones hold the same weights
    ea = torch.load(full / "backbone.pth", weights_only=True)["state_dict"]
    eb = torch.load(killed / "backbone.pth", weights_only=True)["state_dict"]
    assert all(torch.equal(ea[k], eb[k]) for k in ea)
    # the corrupt image was skipped, counted, and the count survived the kill
    done = [json.loads(line) for line in (full / "log.jsonl").read_text().splitlines()][-1]
    done_resumed = [json.loads(line) for line in (killed / "log.jsonl").read_text().splitlines()][-1]
    assert done["event"] == "done" and done["skipped_images"] > 0
    assert done_resumed["skipped_images"] == done["skipped_images"]
    # one history: each logged step once with the uninterrupted run's loss (the steps the kill
    # made the run repeat are cut from the log), the two starts and the checkpoints kept
    rows = {name: [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
            for name, run in (("full", full), ("killed", killed))}
    losses = {name: [(r["step"], r["loss"]) for r in got if "event" not in r] for name, got in rows.items()}
    assert losses["killed"] == losses["full"]
    assert [r["event"] for r in rows["killed"] if r.get("event") == "start"] == ["start", "start"]
    assert (killed / "supervised_list.txt").read_text() == (full / "supervised_list.txt").read_text()
