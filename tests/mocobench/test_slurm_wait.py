"""How the SLURM runner reads a job's outcome when submitit left a failed result while SLURM
requeued the job (seen on the test cluster: submitit's ``scontrol requeue`` killed along with the
run it requeued). The job's states come from a scripted ``squeue``; the result files are real."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

from mocobench import slurm
from mocobench.launch import Launcher


class Job:
    """submitit's Job as the runner uses it: done() once a result file exists, results() reads it."""

    def __init__(self, folder: Path):
        self.job_id, self.paths, self.result = "5", SimpleNamespace(folder=folder), folder / "5_0_result.pkl"

    def write(self, outcome: str, age_s: float = 0.0) -> None:
        self.result.write_text(outcome)
        t = self.result.stat().st_mtime - age_s
        os.utime(self.result, (t, t))

    def done(self) -> bool:
        return self.result.exists()

    def results(self) -> list[int]:
        if self.result.read_text() == "error":
            raise RuntimeError("Command '['scontrol', 'requeue', '5']' died with <Signals.SIGTERM: 15>.")
        return [0]


def runner() -> slurm.SlurmRunner:
    return slurm.SlurmRunner(slurm.SlurmOptions(partition="debug", gpus_per_node=0), Launcher(), poll_s=0)


def scripted(monkeypatch, states: list[str], on_call: dict | None = None, started: float | None = None) -> list[str]:
    """``started``: the start time squeue gives for the job's current run (None: not started)."""
    seen: list[str] = []
    monkeypatch.setattr(slurm, "job_start", lambda job_id: started)

    def job_state(job_id: str) -> str:
        (on_call or {}).get(len(seen), lambda: None)()
        seen.append(states[min(len(seen), len(states) - 1)])
        return seen[-1]

    monkeypatch.setattr(slurm, "job_state", job_state)
    return seen


def test_a_failure_written_while_slurm_requeues_the_job_gives_way_to_the_requeued_runs_result(
        tmp_path, monkeypatch, capsys):
    job = Job(tmp_path)
    job.write("error", age_s=5)
    seen = scripted(monkeypatch, ["REQUEUED", "PENDING", "PENDING", "RUNNING", "COMPLETED"],
                    on_call={4: lambda: job.write("success")})   # the requeued run ends and writes its result
    assert runner().wait(job) == (0, "exited with code 0")
    assert seen[:2] == ["REQUEUED", "PENDING"]
    assert "written while SLURM requeued the job; the requeued run's result counts" in capsys.readouterr().out


def test_a_failure_of_a_job_slurm_does_not_requeue_is_reported_at_once(tmp_path, monkeypatch):
    job = Job(tmp_path)
    job.write("error")
    seen = scripted(monkeypatch, ["COMPLETING", "FAILED"])
    rc, why = runner().wait(job)
    assert rc == 1 and why.startswith("failed: Command '['scontrol', 'requeue', '5']' died")
    assert seen == ["COMPLETING", "FAILED"]


def test_a_requeued_run_that_started_between_two_looks_is_recognised_by_its_start_time(
        tmp_path, monkeypatch, capsys):
    """The pending state can pass unseen (a loaded login node, SLURM releasing the job at once):
    a run that started after the failed result was written is the requeued run."""
    job = Job(tmp_path)
    job.write("error", age_s=5)
    failed_at = job.result.stat().st_mtime
    seen = scripted(monkeypatch, ["RUNNING", "RUNNING", "COMPLETED"], started=failed_at + 3,
                    on_call={2: lambda: job.write("success")})
    assert runner().wait(job) == (0, "exited with code 0")
    assert "REQUEUED" not in seen and "PENDING" not in seen
    assert "written while SLURM requeued the job" in capsys.readouterr().out


def test_a_run_that_started_before_its_failed_result_is_not_taken_for_a_requeued_one(tmp_path, monkeypatch):
    job = Job(tmp_path)
    job.write("error")
    scripted(monkeypatch, ["RUNNING", "COMPLETING", "FAILED"], started=job.result.stat().st_mtime - 60)
    rc, why = runner().wait(job)
    assert rc == 1 and why.startswith("failed: Command")
