"""``--slurm PARTITION``: each stage as a SLURM job, submitted through submitit, with an explicit request.

The request of a stage (printed before it is submitted):

- nodes: ``--nnodes`` for a stage that runs under torchrun, else 1; one task per node, which runs
  ``torchrun`` with that node's rank and the job's first node as master (or the plain command);
- GPUs per node: ``--slurm-gpus-per-node`` (default ``--nproc``) for torchrun stages and for a
  detectron2 stage (one process that starts its own per GPU, on one node), at most 1 for other
  single-process evaluations, none for stages that need no GPU (the embedded dataset); 0 asks for
  no GPU gres at all. The leaderboard is not a job: it runs in the pipeline's own process;
- CPUs per task: ``--slurm-cpus-per-task`` (default: one per process of the task);
- memory: ``--slurm-mem`` (e.g. ``64G``; default: the partition's default);
- time: ``--slurm-timeout-min``; anything else: ``--slurm-arg KEY=VALUE`` (account, qos,
  constraint, ...), passed to submitit's ``additional_parameters`` (an ``#SBATCH --KEY=VALUE`` line).

Preemption and time limits follow submitit's checkpointing interface: the job function
(:class:`StageJob`) has a ``checkpoint`` method. When SLURM preempts the job or its time limit is
near, the command gets SIGTERM (and submitit's signal, SIGUSR2): pretraining saves a checkpoint at
the exact step and exits (code 75); ``checkpoint`` waits for that and hands submitit the same stage
again, which requeues the job; the requeued job continues from the checkpoint (``--resume auto``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from mocobench.launch import Launcher, run_logged

ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
         "DEADLINE", "PREEMPTED", "SPECIAL_EXIT"}
# the states of a job SLURM has requeued, before its next run starts
REQUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"}


@dataclass(frozen=True)
class SlurmOptions:
    partition: str
    gpus_per_node: int
    cpus_per_task: int | None = None
    mem: str | None = None
    timeout_min: int = 72 * 60
    extra: dict[str, str] = field(default_factory=dict)


def parse_extra(values: list[str]) -> dict[str, str]:
    """``["account=abc", "qos=high"]`` -> ``{"account": "abc", "qos": "high"}``."""
    extra = {}
    for v in values:
        key, sep, value = v.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--slurm-arg {v!r}: expected KEY=VALUE (e.g. --slurm-arg account=abc)")
        extra[key.strip().lstrip("-")] = value
    return extra


def request(opts: SlurmOptions, stage, launcher: Launcher) -> dict:
    """submitit ``SlurmExecutor`` parameters for one stage."""
    torchrun = launcher.torchrun(stage.distributed)
    node_wide = torchrun or stage.all_gpus   # one node's GPUs: nproc processes, or one that starts its own
    gpus = 0
    if stage.gpu:
        gpus = opts.gpus_per_node if node_wide else min(1, opts.gpus_per_node)
    params = {"partition": opts.partition, "nodes": launcher.nnodes if torchrun else 1, "ntasks_per_node": 1,
              "cpus_per_task": opts.cpus_per_task or (launcher.nproc if node_wide else 1),
              "time": opts.timeout_min, "job_name": f"mocobench-{stage.name.replace(' ', '-')}"}
    if gpus:
        params["gpus_per_node"] = gpus
    if opts.mem:
        params["mem"] = opts.mem
    if opts.extra:
        params["additional_parameters"] = dict(opts.extra)
    return params


def describe(params: dict) -> str:
    shown = {k: v for k, v in params.items() if k not in ("job_name", "additional_parameters")}
    shown.setdefault("gpus_per_node", 0)
    shown["time"] = f"{params['time']}min"
    text = " ".join(f"{k.replace('_', '-')}={v}" for k, v in shown.items())
    extra = params.get("additional_parameters") or {}
    return text + "".join(f" {k}={v}" for k, v in extra.items())


def import_submitit():
    try:
        import submitit
    except ImportError:
        raise SystemExit("--slurm needs submitit, the optional 'slurm' extra: "
                         "pip install -e '.[slurm]' (or pip install submitit)") from None
    return submitit


def _alive(pid: int) -> bool:
    """Whether ``pid`` is still running (a zombie is not), without reaping it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class StageJob:
    """What runs inside the SLURM job, once per node: the stage's command, with this node's rank."""

    def __init__(self, launcher: Launcher):
        self.launcher = launcher
        self.pid: int | None = None

    def __call__(self, argv: list[str], distributed: bool, log: str, env: dict) -> int:
        import submitit

        job = submitit.JobEnvironment()
        cmd = self.launcher.command(argv, distributed, node_rank=job.node, master_addr=job.hostnames[0])
        path = Path(log) if job.node == 0 else Path(log).with_suffix(f".node{job.node}.log")
        # the job's own variables win (SLURM_*, the GPUs SLURM gave it in CUDA_VISIBLE_DEVICES)
        return run_logged(cmd, path, {**env, **os.environ}, started=self._started)

    def _started(self, proc: subprocess.Popen) -> None:
        self.pid = proc.pid

    def checkpoint(self, argv: list[str], distributed: bool, log: str, env: dict):
        """submitit's preemption hook: let the command save and exit, then requeue this stage."""
        import submitit

        if self.pid is not None and _alive(self.pid):
            try:
                os.kill(self.pid, signal.SIGTERM)   # it may have had it from SLURM already: harmless
            except ProcessLookupError:
                pass
            deadline = time.time() + 120
            while _alive(self.pid) and time.time() < deadline:
                time.sleep(0.2)
        with open(log, "a", encoding="utf-8") as f:
            f.write("\nSLURM: preempted or at the time limit; the command stopped (pretraining saves its step "
                    "first), job requeued\n")
        return submitit.helpers.DelayedSubmission(StageJob(self.launcher), argv, distributed, log, env)


def job_state(job_id: str) -> str:
    """The job's state from ``squeue`` (all states; empty once SLURM has forgotten it)."""
    try:
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-t", "all", "-o", "%T"], capture_output=True,
                             text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return "UNKNOWN"
    return out.strip().splitlines()[0] if out.strip() else ""


def job_start(job_id: str) -> float | None:
    """When the job's current run started (``squeue``'s start time, whole seconds; None while it
    has not started or once SLURM has forgotten it)."""
    try:
        # the ISO form parsed below, whatever SLURM_TIME_FORMAT the user's environment sets
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-t", "all", "-o", "%S"], capture_output=True,
                             text=True, timeout=60, env={**os.environ, "SLURM_TIME_FORMAT": "standard"}).stdout.strip()
        return time.mktime(time.strptime(out.splitlines()[0], "%Y-%m-%dT%H:%M:%S")) if out else None
    except (OSError, subprocess.SubprocessError, ValueError):   # N/A, Unknown: not started
        return None


class SlurmRunner:
    """Submits a stage, waits for it, and returns its exit code; says which job and log failed."""

    def __init__(self, opts: SlurmOptions, launcher: Launcher, poll_s: float = 1.0):
        self.opts, self.launcher, self.poll_s = opts, launcher, poll_s
        self.last_failure = ""

    def defaults(self) -> str:
        o = self.opts
        return (f"SLURM partition {o.partition}: gpus-per-node {o.gpus_per_node} (stages that need no GPU ask "
                f"for none), cpus-per-task {o.cpus_per_task or 'one per process'}, mem {o.mem or 'partition default'}, "
                f"time {o.timeout_min} min" + "".join(f", {k}={v}" for k, v in o.extra.items()))

    def run(self, stage, env: dict) -> int:
        submitit = import_submitit()
        params = request(self.opts, stage, self.launcher)
        print(f"      slurm request for {stage.name}: {describe(params)}", flush=True)
        folder = stage.log.parent / "slurm" / "%j"
        executor = submitit.SlurmExecutor(folder=str(folder), max_num_timeout=3)
        executor.update_parameters(**params)
        try:
            job = executor.submit(StageJob(self.launcher), stage.argv, stage.distributed, str(stage.log), env)
        except Exception as e:  # noqa: BLE001 - submitit's FailedJobError carries sbatch's message
            lines = [ln for ln in str(e).splitlines() if ln.strip()]
            self.last_failure = f"sbatch refused the job: {' / '.join(lines[-2:])[:300]}"
            stage.log.parent.mkdir(parents=True, exist_ok=True)
            with open(stage.log, "a", encoding="utf-8") as f:
                f.write(f"{self.last_failure}\n")
            return 1
        job_log = Path(str(job.paths.stderr))
        print(f"      submitted {stage.name} as SLURM job {job.job_id} (log {stage.log}, job log {job_log})",
              flush=True)
        rc, why = self.wait(job)
        self.last_failure = "" if rc == 0 else f"SLURM job {job.job_id} {why}; job log {job_log}"
        if rc:
            with open(stage.log, "a", encoding="utf-8") as f:
                f.write(f"\n{self.last_failure}\n")
        return rc

    def wait(self, job) -> tuple[int, str]:
        """``(exit code, what happened)``; a job that ended without a result (cancelled, killed,
        node failure) is a failure, found with ``squeue`` (needs no accounting database). A failure
        written while SLURM requeues the job is not the job's outcome: the requeued run's is."""
        while True:
            rc, why = self._outcome(job)
            if rc == 0 or not self._requeued_after_failure(job):
                return rc, why
            print(f"      SLURM job {job.job_id}: {why}, written while SLURM requeued the job; the requeued "
                  "run's result counts", flush=True)

    def _requeued_after_failure(self, job, grace_s: float = 20.0) -> bool:
        """Whether SLURM requeued the job after its run left a failed result, and the requeued run
        has written its own result since (True), or the job has ended without one (False).

        submitit requeues a preempted job from inside it (``scontrol requeue``), and SLURM stops
        the run it requeues: when that stop kills ``scontrol`` before it returns, submitit records
        the run as failed although the job goes on (seen on the test cluster, 2026-12-07).

        A requeue shows as a pending state, or, when the requeued run started between two looks,
        as a run that started after the failed result was written (a start time truncated to the
        second that is later than the result cannot be the failed run's)."""
        folder = Path(job.paths.folder)
        results = list(folder.glob("*_result.pkl"))
        failed_at = max((p.stat().st_mtime for p in results), default=0.0)
        deadline, requeued, ended_since = time.time() + grace_s, False, None
        while True:
            state = job_state(job.job_id)
            if not requeued and state not in REQUEUED and state:
                started = job_start(job.job_id)
                requeued = started is not None and started > failed_at
            requeued = requeued or state in REQUEUED
            if requeued and results and all(p.exists() and p.stat().st_mtime > failed_at for p in results):
                return True
            if state in ENDED or state == "":
                if not requeued:
                    return False
                ended_since = ended_since or time.time()
                if time.time() - ended_since > 15:   # requeued, ended, and no new result came
                    return False
            elif not requeued and time.time() > deadline:
                return False
            time.sleep(self.poll_s)

    def _outcome(self, job) -> tuple[int, str]:
        gone_since = None
        while not job.done():
            state = job_state(job.job_id)
            if state in ENDED or state == "":
                gone_since = gone_since or time.time()
                if time.time() - gone_since > 15:   # the result file never came
                    return 1, f"ended {state or 'and was purged'} without a result"
            else:
                gone_since = None
            time.sleep(self.poll_s)
        try:
            codes = [int(r) for r in job.results()]   # one per node (task)
            rc = next((c for c in codes if c), 0)
            return rc, f"exited with code {rc}"
        except Exception as e:  # noqa: BLE001 - submitit raises its own failure types
            last = [ln for ln in str(e).splitlines() if ln.strip()][-1:] or [type(e).__name__]
            return 1, f"failed: {last[0][:200]}"


def check_available() -> None:
    """Fail now, not after an hour of stages: submitit importable, ``sbatch`` on the PATH."""
    import_submitit()
    import shutil

    if not shutil.which("sbatch"):
        raise SystemExit("--slurm: sbatch is not on the PATH (run the pipeline on a SLURM login node)")
