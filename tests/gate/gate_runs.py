"""Running parts of the quick pipeline again beside an honest run's records, and the gate's verdict."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent.parent
BASELINE = ROOT / "leaderboard" / "baselines" / "quick.json"
QUICK_SEED = 7   # the committed baseline was measured on seeds 0-3: this is an honest re-run


def quick(out: Path, *argv: str, timeout: int = 1200):
    """``python -m mocobench.pipeline --quick --seed QUICK_SEED --out OUT ARGV`` (what ``./run_all.sh
    --quick`` runs, with the seed), as a fresh process."""
    import subprocess
    import sys

    env = dict(os.environ, MOCOBENCH_PROGRESS="0")
    return subprocess.run([sys.executable, "-m", "mocobench.pipeline", "--quick", "--seed", str(QUICK_SEED),
                           "--out", str(out), *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def check(results: Path) -> tuple[int, str]:
    """``mocobench leaderboard check --baseline quick.json --results RESULTS``: exit code and output."""
    from mocobench.leaderboard.check import run_check

    lines: list[str] = []
    rc = run_check(BASELINE, results, out=lines.append)
    return rc, "\n".join(lines)


def flagged(text: str, entry: str, task: str, metric: str | None = None, missing: bool = True) -> bool:
    """Whether the check's table has ``entry`` (``checkpoint`` or ``checkpoint - reference``) on
    ``task`` (and ``metric``) marked REGRESSED, or (``missing``) MISSING: the cell is no longer there
    at all."""
    marks = (" REGRESSED", " MISSING") if missing else (" REGRESSED",)
    return any(line.startswith(entry + " ") and f" {task} " in line and (metric is None or f" {metric} " in line)
               and any(m in line for m in marks) for line in text.splitlines())


def quick_plan(quick_run: Path, tmp_path: Path):
    """A new output folder beside ``quick_run`` (its embedded data linked in) and the quick
    pipeline's stages planned there, with the session's seed: ``(out, stages)``."""
    from mocobench.modes import MODES
    from mocobench.pipeline import parse_args
    from mocobench.stages import plan

    out = tmp_path / "outputs"
    out.mkdir()
    (out / "data").symlink_to(quick_run / "data", target_is_directory=True)
    return out, plan(parse_args(["--quick", "--seed", str(QUICK_SEED), "--out", str(out)]), MODES["quick"], out, [])


def run_stages(argvs: list[list[str]]) -> None:
    """Each ``mocobench`` command in this process, as the pipeline runs a stage: one thread, no
    progress bar (both restored afterwards, so monkeypatches of the test apply and nothing leaks)."""
    from mocobench.cli import main as mocobench

    threads, progress = torch.get_num_threads(), os.environ.get("MOCOBENCH_PROGRESS")
    torch.set_num_threads(1)
    os.environ["MOCOBENCH_PROGRESS"] = "0"
    try:
        for argv in argvs:
            assert mocobench(list(argv)) == 0, f"mocobench {' '.join(argv[:2])} failed"
    finally:
        torch.set_num_threads(threads)
        if progress is None:
            os.environ.pop("MOCOBENCH_PROGRESS")
        else:
            os.environ["MOCOBENCH_PROGRESS"] = progress


def rerun(quick_run: Path, tmp_path: Path, names: list[str]) -> tuple[int, str]:
    """Run the quick pipeline's stages named (by prefix) in ``names`` again, in this process, in a
    copy of ``quick_run`` without their outputs; then the gate on the copy.

    A pretraining stage named alone brings every evaluation of its checkpoint with it. Named with
    some of its evaluations (``["pretrain smog", "eval knn-dino-knn smog"]``), only those run again,
    and the checkpoint's other records are removed (records of the honest checkpoint would make a
    second row of that name): their cells are MISSING in the gate, so a test of such a rerun asserts
    that the cells it ran are REGRESSED (``flagged(..., missing=False)``)."""
    from mocobench.core.records import iter_record_files
    from mocobench.leaderboard.table import checkpoint_display_name

    out, stages = quick_plan(quick_run, tmp_path)
    shutil.copytree(quick_run / "runs", out / "runs")
    shutil.copytree(quick_run / "results", out / "results")
    pretrained = [n.split(" ", 1)[1] for n in names if n.startswith("pretrain ")]
    named = [st for st in stages if any(st.name.startswith(n) for n in names)]
    assert len(named) >= len(names), names
    alone = [p for p in pretrained if not any(st.name.startswith("eval ") and st.name.split()[2] == p for st in named)]
    chosen = [st for st in stages if st in named or (st.name.startswith("eval ") and st.name.split()[2] in alone)]
    for name in pretrained:
        shutil.rmtree(out / "runs" / name)
    redo = {(st.argv[1], st.name.split()[2]) for st in chosen if st.argv[0] == "eval"}
    dropped = 0
    for path, rec in iter_record_files(out / "results"):
        task = rec["task"].split("-")[0] if rec["task"].startswith("semi") else rec["task"]
        name = checkpoint_display_name(rec["checkpoint"])
        if (task, name) in redo or name in pretrained:
            path.unlink()
            dropped += (task, name) not in redo

    run_stages([st.argv for st in chosen])
    records = [json.loads(p.read_text()) for p in (out / "results").glob("*.json")]
    assert len(records) + dropped == len(list((quick_run / "results").glob("*.json"))), \
        "a record is missing or doubled"
    return check(out / "results")
