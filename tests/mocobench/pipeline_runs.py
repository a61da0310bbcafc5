"""Running ``python -m mocobench.pipeline`` for real in the orchestrator's tests: a reduced MoCo v2
pretraining stage (32 px, batches of 16, 40 steps), the embedded dataset linked in, the run's events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
PRETRAIN = ["--only", "pretrain moco_v2", *(f"--pretrain-arg=--{kv}" for kv in (
    "epochs=1", "max_steps_per_epoch=40", "ckpt_every=4", "img_size=32", "batch_size=16", "K=64", "log_every=1"))]


def pipeline(out: Path, *argv: str, background: bool = False, path_first: Path | None = None):
    """``path_first``: a folder put first on the PATH (of the pipeline and of the SLURM jobs it submits)."""
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, MOCOBENCH_PROGRESS="0", OMP_NUM_THREADS="1")
    if path_first is not None:
        env["PATH"] = f"{path_first}{os.pathsep}{env.get('PATH', '')}"
    cmd = [sys.executable, "-m", "mocobench.pipeline", "--quick", "--out", str(out), *argv]
    if background:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def with_data(out: Path, synth: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "data").symlink_to(synth, target_is_directory=True)
    return out


def records(out: Path) -> list[dict]:
    """The records under ``OUT/results``, with ``OUT`` itself written as ``OUT``."""
    return [json.loads(p.read_text().replace(str(out), "OUT")) for p in sorted((out / "results").glob("*.json"))]


def events(run: Path) -> list[dict]:
    """The run's ``log.jsonl`` events; a last line still being written is left out."""
    path = run / "log.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    out = []
    for i, line in enumerate(lines):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise
    return out


def wait_for_step(run: Path, proc, step: int, timeout_s: float = 240) -> None:
    deadline = time.time() + timeout_s
    while not any(e.get("step", 0) >= step and "loss" in e for e in events(run)):
        assert proc.poll() is None, proc.stdout.read()[-4000:]
        assert time.time() < deadline, f"pretraining never reached step {step}"
        time.sleep(0.2)
