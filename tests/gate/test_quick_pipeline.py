"""CI's end-to-end gate: the `--quick` pipeline (what `./run_all.sh --quick` runs), then
`mocobench leaderboard check` against the committed baseline, then a re-run that must resume
(skip every finished stage)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "leaderboard" / "baselines" / "quick.json"


def _run(*argv: str, timeout: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, MOCOBENCH_PROGRESS="0")
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_quick_pipeline_passes_the_committed_baseline(tmp_path):
    out = tmp_path / "outputs"
    run = _run("mocobench.pipeline", "--quick", "--out", str(out), timeout=1200)
    log = run.stdout[-6000:] + run.stderr[-3000:]
    assert run.returncode == 0, log
    html = out / "leaderboard" / "leaderboard.html"
    assert f"HTML leaderboard: {html.resolve()}" in run.stdout, log
    assert html.stat().st_size > 10_000 and (out / "leaderboard" / "leaderboard.csv").exists()

    check = _run("mocobench", "leaderboard", "check", "--baseline", str(BASELINE), "--results",
                 str(out / "results"), timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr

    again = _run("mocobench.pipeline", "--quick", "--out", str(out), timeout=300)
    assert again.returncode == 0, again.stdout[-4000:]
    stage_lines = [ln for ln in again.stdout.splitlines() if ln.startswith("[")]
    assert stage_lines and all(" skip " in ln for ln in stage_lines), "\n".join(stage_lines)
