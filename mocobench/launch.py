"""How a stage runs on this machine: the command (plain or under ``torchrun``), in a fresh process or
a forked child of the pre-imported pipeline process, its output appended to the stage's log."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Launcher:
    """Turns ``mocobench`` arguments into a command (plain or under torchrun) and runs it here."""

    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    preload: bool = False   # run plain stages in forked children of this (pre-imported) process

    def torchrun(self, distributed: bool) -> bool:
        return distributed and (self.nproc > 1 or self.nnodes > 1)

    def command(self, argv: list[str], distributed: bool, node_rank: int | None = None,
                master_addr: str | None = None) -> list[str]:
        if not self.torchrun(distributed):
            return [sys.executable, "-m", "mocobench", *argv]
        return [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={self.nproc}",
                f"--nnodes={self.nnodes}", f"--node-rank={self.node_rank if node_rank is None else node_rank}",
                f"--master-addr={master_addr or self.master_addr}", f"--master-port={self.master_port}",
                "-m", "mocobench", *argv]

    def run(self, stage, env: dict) -> int:
        """Run one stage here (a forked child or a fresh process); its exit code."""
        return self.start(stage, env).wait()

    def stage_env(self, stage, env: dict) -> dict:
        """``env`` for ``stage``: a stage that starts one process per visible GPU itself (detectron2's
        ``launch``) sees the first ``nproc`` GPUs, as a torchrun stage runs ``nproc`` processes."""
        if not stage.all_gpus:
            return env
        visible = env.get("CUDA_VISIBLE_DEVICES")
        ids = visible.split(",") if visible else [str(i) for i in range(self.nproc)]
        return {**env, "CUDA_VISIBLE_DEVICES": ",".join(ids[:self.nproc])}

    def start(self, stage, env: dict) -> "Running":
        """Start one stage here (a forked child or a fresh process) and return without waiting."""
        env = self.stage_env(stage, env)
        cmd = self.command(stage.argv, stage.distributed)
        if self.preload and not self.torchrun(stage.distributed) and hasattr(os, "fork"):
            return Running(start_forked(stage.argv, cmd, stage.log, env))
        return Running(start_logged(cmd, stage.log, env))


class Running:
    """A stage started on this machine: polled without blocking; its exit code and its own CPU
    seconds once it has ended (``os.wait4``, so stages that run side by side are told apart)."""

    def __init__(self, started: "int | subprocess.Popen"):
        self.proc = started if isinstance(started, subprocess.Popen) else None
        self.pid = started.pid if self.proc else started
        self.rc: int | None = None
        self.cpu = 0.0

    def poll(self) -> int | None:
        if self.rc is None:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid:
                self.rc = os.waitstatus_to_exitcode(status)
                self.cpu = usage.ru_utime + usage.ru_stime
                if self.proc is not None:   # reaped here: Popen must not wait for it again
                    self.proc.returncode = self.rc
        return self.rc

    def wait(self) -> int:
        try:
            while self.poll() is None:   # not a blocking wait: a signal handler may look at the child meanwhile
                time.sleep(0.2)
        except BaseException:   # KeyboardInterrupt, SIGTERM of the pipeline: stop the stage too
            self.stop()
            raise
        return self.rc

    def stop(self) -> None:
        if self.rc is None:
            stop(self.pid)


def run_logged(cmd: list[str], log: Path, env: dict, started=None) -> int:
    """``cmd`` in a fresh process, its output appended to ``log``; its exit code. ``started(proc)``
    is called once it runs (the SLURM job keeps its pid to forward preemption)."""
    proc = start_logged(cmd, log, env)
    if started is not None:
        started(proc)
    return Running(proc).wait()


def start_logged(cmd: list[str], log: Path, env: dict) -> subprocess.Popen:
    """Start ``cmd`` in a fresh process, its output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"$ {shlex.join(cmd)}\n")
        f.flush()
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)


def stop(pid: int, grace_s: float = 60) -> None:
    """SIGTERM a stage (pretraining saves its step and exits), SIGKILL it if it is not gone in time."""
    import signal

    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.time() + grace_s
        while time.time() < deadline:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
            time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


# what every stage imports first: ~5 s of a 2-core machine per stage when each is a fresh process
PRELOAD_MODULES = ("numpy", "PIL.Image", "torch", "torchvision", "timm")


def preload() -> None:
    """Import the heavy libraries once, in the pipeline process, so forked stages start warm.

    Importing creates no threads (torch starts its pools at the first parallel op), so forking
    afterwards is safe; this process itself never runs a tensor op.
    """
    import importlib

    for name in PRELOAD_MODULES:
        importlib.import_module(name)


def run_forked(argv: list[str], cmd: list[str], log: Path, env: dict) -> int:
    """``mocobench ARGV`` in a forked child: the same process isolation, exit code and log as
    :func:`run_logged` (``cmd`` is what the log shows), without the interpreter and import start-up."""
    return Running(start_forked(argv, cmd, log, env)).wait()


def start_forked(argv: list[str], cmd: list[str], log: Path, env: dict) -> int:
    """Fork the child of :func:`run_forked` and return its pid without waiting."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"$ {shlex.join(cmd)}\n")
        f.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 1
            try:
                os.dup2(f.fileno(), 1)
                os.dup2(f.fileno(), 2)
                # Python-level streams too (the parent's may be redirected objects, e.g. under pytest)
                sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
                sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
                os.environ.clear()
                os.environ.update(env)
                if env.get("OMP_NUM_THREADS", "").isdigit() and "torch" in sys.modules:
                    # the OpenMP runtime read the variable when the parent imported torch
                    sys.modules["torch"].set_num_threads(int(env["OMP_NUM_THREADS"]))
                from mocobench.cli import main as cli_main

                code = cli_main(list(argv))
            except SystemExit as e:
                if isinstance(e.code, int) or e.code is None:
                    code = e.code or 0
                else:
                    print(e.code, file=sys.stderr)
                    code = 1
            except BaseException:  # noqa: BLE001 - report like the interpreter would, then exit 1
                import traceback

                traceback.print_exc()
                code = 1
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code if isinstance(code, int) else 1)
    return pid


def children_cpu() -> float:
    """CPU seconds used so far by finished child processes (user + system)."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def tail(path: Path, n: int = 4000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-n:].decode("utf-8", "replace")
