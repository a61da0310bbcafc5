"""The quick pipeline, run once for the session (the CI gate's tests share it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gate_runs import quick


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory) -> Path:
    """``./run_all.sh --quick`` with a seed the committed baseline was not measured on; its
    output folder (``pipeline.stdout`` holds what it printed)."""
    out = tmp_path_factory.mktemp("quick") / "outputs"
    run = quick(out)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    (out / "pipeline.stdout").write_text(run.stdout)
    return out
