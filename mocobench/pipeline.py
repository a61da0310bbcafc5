"""What ``./run_all.sh`` runs: every stage of the suite, in order, each as its own process.

    python -m mocobench.pipeline                     embedded `small` dataset, CPU, ~10 min
    python -m mocobench.pipeline --quick             one short MoCo v2 run, short schedules, ~3 min
    python -m mocobench.pipeline --data-root DIR --preset paper [--nproc 8] [--nnodes 2 --node-rank 0
        --master-addr HOST] [--slurm PARTITION]      the papers' protocols on real datasets
    python -m mocobench.pipeline --checkpoint CKPT [--checkpoint CKPT2 ...]   skip pretraining

Stages: 1) the embedded dataset (``mocobench data synth``; not in real-data mode), 2) pretraining
(MoCo v2, UniMoCo at two label fractions, SMoG), 3) evaluation of every backbone and a random-init
baseline (linear, kNN, semi-supervised, detection, segmentation), 4) the leaderboard (markdown
printed; CSV and HTML written).

Each stage is one ``python -m mocobench ...`` process (under ``torchrun`` when several processes
are asked for, or a SLURM job through submitit), its output in ``OUT/logs/<stage>.log``, and one
status line per stage. A failing stage is logged and the pipeline goes on with the stages that do
not need it; the exit code is 1 if any stage failed.

Resume: a pretraining stage whose backbone is exported, and an evaluation for which a record of
that (checkpoint, task, protocol, seed) exists, are skipped; an interrupted stage continues from its
own checkpoints (``--resume auto`` for pretraining, the work directories of detection and
segmentation), so running the same command again continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

NOT_BUILT = "not built yet"


# ---------------------------------------------------------------- what runs, per mode

@dataclass(frozen=True)
class Run:
    """One pretraining run: ``OUT/runs/<name>/backbone.pth``."""

    name: str
    method: str
    preset: str | None                 # None: the method's paper preset
    args: tuple[str, ...] = ()         # extra ``mocobench pretrain`` arguments


@dataclass(frozen=True)
class Eval:
    """One evaluation of every checkpoint; ``task``/``protocol`` are what its record will hold."""

    label: str                         # stage name part, e.g. "linear-fast"
    task: str                          # record task (semi -> semi-1pct / semi-10pct)
    protocol: str
    argv: tuple[str, ...]              # ``mocobench eval ...`` arguments, {data} {work} filled in
    needs: str                         # dataset key (see find_datasets)
    distributed: bool = False          # may run under torchrun
    seeds: tuple[int, ...] = (0,)


@dataclass(frozen=True)
class Mode:
    name: str
    synth_scale: str | None            # None: real data under --data-root
    arch: str
    runs: tuple[Run, ...]
    evals: tuple[Eval, ...]


def _cls(task: str, protocol: str, img: int | None, *extra: str, label: str | None = None,
         record_task: str | None = None, distributed: bool = False) -> Eval:
    argv = (task, "--data", "{imagenet}", "--protocol", protocol, *(("--img-size", str(img)) if img else ()),
            *extra)
    return Eval(label or f"{task}-{protocol}", record_task or task, protocol, argv, "imagenet",
                distributed=distributed)


def _embedded_evals(img: int, semi_epochs: int, det_iters: int | None, seg_iters: int | None,
                    semi_img: int | None = None, semi_extra: tuple[str, ...] = ()) -> tuple[Eval, ...]:
    det = ("--max-iters", str(det_iters)) if det_iters else ()
    seg = ("--max-iters", str(seg_iters)) if seg_iters else ()
    return (
        _cls("linear", "fast", img, "--cache-dir", "{cache}", "--workers", "0"),
        _cls("knn", "dino-knn", img, "--cache-dir", "{cache}", "--workers", "0"),
        _cls("semi", "tiny", semi_img, "--labels", "10percent", "--epochs", str(semi_epochs), *semi_extra,
             label="semi10-tiny", record_task="semi-10pct"),
        Eval("det-voc-tiny-fpn", "detection", "tiny-fpn",
             ("detection", "--dataset", "voc", "--data", "{voc}", "--protocol", "tiny-fpn", "--work-dir", "{work}",
              *det),
             "voc"),
        Eval("seg-cityscapes-tiny", "segmentation", "tiny",
             ("segmentation", "--dataset", "cityscapes", "--data", "{cityscapes}", "--protocol", "tiny",
              "--work-dir", "{work}", *seg), "cityscapes"),
    )


TINY_RUNS = (
    Run("moco_v2", "moco_v2", "tiny"),
    Run("unimoco_10pct", "unimoco", "tiny", ("--label-fraction", "0.1")),
    Run("unimoco_100pct", "unimoco", "tiny", ("--label-fraction", "1.0")),
    Run("smog", "smog", "tiny"),
)

MODES = {
    # ./run_all.sh: the embedded `small` dataset (64 px classification images) on CPU
    "default": Mode("default", "small", "timm:test_resnet", TINY_RUNS,
                    _embedded_evals(img=64, semi_epochs=4, det_iters=None, seg_iters=None)),
    # ./run_all.sh --quick: the `small` data, one shorter pretraining run (MoCo v2, 4 of the tiny
    # preset's 8 epochs) and the random-init baseline, short evaluation schedules: every stage
    # runs, in about 3 minutes, and kNN still shows learning (the CI gate checks the margin)
    "quick": Mode("quick", "small", "timm:test_resnet",
                  (Run("moco_v2", "moco_v2", "tiny", ("--epochs=4",)),),
                  _embedded_evals(img=64, semi_epochs=2, det_iters=10, seg_iters=10,
                                  semi_extra=("--lr-grid=0.05",))),
    # --data-root DIR --preset paper: the papers' protocols on real data
    "paper": Mode("paper", None, "resnet50",
                  (Run("moco_v2_200ep", "moco_v2", "moco_v2_200ep"),
                   Run("unimoco_800ep_10pct", "unimoco", "unimoco_800ep_10pct"),
                   Run("unimoco_800ep_100pct", "unimoco", "unimoco_800ep_100pct"),
                   Run("smog_400ep", "smog", "smog_400ep")),
                  (_cls("linear", "paper", None, distributed=True),
                   _cls("linear", "fast", None),
                   _cls("knn", "dino-knn", None),
                   _cls("semi", "simclr", None, "--labels", "{labels_1pct}", "--label-pct", "1",
                        label="semi1-simclr", record_task="semi-1pct", distributed=True),
                   _cls("semi", "simclr", None, "--labels", "{labels_10pct}", "--label-pct", "10",
                        label="semi10-simclr", record_task="semi-10pct", distributed=True),
                   Eval("det-voc-c4-24k", "detection", "moco-voc-c4-24k",
                        ("detection", "--dataset", "voc", "--data", "{voc}", "--protocol", "moco-voc-c4-24k",
                         "--work-dir", "{work}"), "voc", distributed=True),
                   Eval("det-coco-c4-1x", "detection", "coco-c4-1x",
                        ("detection", "--dataset", "coco", "--data", "{coco}", "--protocol", "coco-c4-1x",
                         "--work-dir", "{work}"), "coco", distributed=True),
                   Eval("seg-cityscapes-fcn", "segmentation", "moco-fcn",
                        ("segmentation", "--dataset", "cityscapes", "--data", "{cityscapes}", "--protocol",
                         "moco-fcn", "--work-dir", "{work}"), "cityscapes", distributed=True),
                   Eval("seg-voc2012-fcn", "segmentation", "moco-fcn",
                        ("segmentation", "--dataset", "voc2012", "--data", "{voc2012}", "--protocol",
                         "moco-fcn", "--work-dir", "{work}"), "voc2012", distributed=True))),
}


# ---------------------------------------------------------------- datasets on disk

def find_datasets(root: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Which datasets are under ``root``: ``{key: path}`` and ``{key: why it is missing}``."""
    found, missing = {}, {}

    def first(key: str, candidates: list[Path], ok, what: str):
        for c in candidates:
            if ok(c):
                found[key] = c
                return
        missing[key] = f"{what} not found under {root} (looked for {', '.join(str(c.relative_to(root)) for c in candidates)})"

    tv = lambda p: (p / "train").is_dir() and (p / "val").is_dir()  # noqa: E731
    first("imagenet", [root / "imagenet", root / "ILSVRC2012", root / "imagenet" / "ILSVRC2012",
                       root / "ILSVRC" / "Data" / "CLS-LOC"], tv, "ImageNet (train/ and val/)")
    vocdev = [root / "VOCdevkit", root / "voc" / "VOCdevkit", root / "voc"]
    first("voc", vocdev, lambda p: (p / "VOC2007" / "Annotations").is_dir() and (p / "VOC2012" / "Annotations").is_dir(),
          "VOCdevkit with VOC2007 and VOC2012")
    first("voc2012", vocdev, lambda p: (p / "VOC2012" / "SegmentationClass").is_dir(),
          "VOCdevkit/VOC2012 with SegmentationClass")
    first("coco", [root / "coco", root / "COCO"], lambda p: (p / "annotations").is_dir() and (p / "val2017").is_dir(),
          "COCO (annotations/ and val2017/)")
    first("cityscapes", [root / "cityscapes", root / "Cityscapes"],
          lambda p: (p / "leftImg8bit").is_dir() and (p / "gtFine").is_dir(), "Cityscapes (leftImg8bit/ and gtFine/)")
    if "imagenet" in found:
        for pct in (1, 10):
            cands = [found["imagenet"] / f"{pct}percent.txt", root / f"{pct}percent.txt"]
            hit = next((c for c in cands if c.is_file()), None)
            if hit:
                found[f"labels_{pct}pct"] = hit
            else:
                missing[f"labels_{pct}pct"] = (f"SimCLR's {pct}% subset file not found "
                                               f"(looked for {', '.join(map(str, cands))})")
    return found, missing


# ---------------------------------------------------------------- stages and how to launch them

@dataclass
class Stage:
    name: str
    argv: list[str]                    # ``mocobench`` arguments
    log: Path
    distributed: bool = False
    done: str | None = None            # why it can be skipped (resume), if it can
    missing: str | None = None         # why it cannot run (dataset absent)
    needs: list[str] = field(default_factory=list)
    output: str = ""


@dataclass
class Launcher:
    """Turns ``mocobench`` arguments into a command: plain, torchrun, or a SLURM job."""

    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    slurm: str | None = None
    slurm_args: dict = field(default_factory=dict)
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

    def run(self, stage: Stage, env: dict) -> int:
        if self.slurm:
            return self._run_slurm(stage, env)
        cmd = self.command(stage.argv, stage.distributed)
        if self.preload and not self.torchrun(stage.distributed) and hasattr(os, "fork"):
            return run_forked(stage.argv, cmd, stage.log, env)
        return run_logged(cmd, stage.log, env)

    def _run_slurm(self, stage: Stage, env: dict) -> int:
        submitit = import_submitit()
        folder = stage.log.parent / "slurm"
        executor = submitit.AutoExecutor(folder=str(folder))
        nodes = self.nnodes if self.torchrun(stage.distributed) else 1
        executor.update_parameters(slurm_partition=self.slurm, nodes=nodes, tasks_per_node=1,
                                   gpus_per_node=self.nproc, cpus_per_task=max(1, 10 * self.nproc),
                                   timeout_min=int(self.slurm_args.get("timeout_min", 72 * 60)),
                                   name=f"mocobench-{stage.name}")
        job = executor.submit(slurm_stage, self, stage.argv, stage.distributed, str(stage.log), env)
        print(f"      submitted {stage.name} as SLURM job {job.job_id} (log {stage.log})", flush=True)
        try:
            return int(job.result())
        except Exception as e:  # noqa: BLE001 - submitit raises its own failure types
            with open(stage.log, "a", encoding="utf-8") as f:
                f.write(f"\nSLURM job {job.job_id} failed: {e}\n")
            return 1


def import_submitit():
    try:
        import submitit
    except ImportError:
        raise SystemExit("--slurm needs submitit, the optional 'slurm' extra: "
                         "pip install -e '.[slurm]' (or pip install submitit)") from None
    return submitit


def slurm_stage(launcher: Launcher, argv: list[str], distributed: bool, log: str, env: dict) -> int:
    """Runs inside a SLURM job, once per node: torchrun with this node's rank."""
    import submitit

    job = submitit.JobEnvironment()
    cmd = launcher.command(argv, distributed, node_rank=job.node, master_addr=job.hostnames[0])
    path = Path(log) if job.node == 0 else Path(log).with_suffix(f".node{job.node}.log")
    return run_logged(cmd, path, env)


def run_logged(cmd: list[str], log: Path, env: dict) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"$ {shlex.join(cmd)}\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    return proc.returncode


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
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _children_cpu() -> float:
    """CPU seconds used so far by finished child processes (user + system)."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _tail(path: Path, n: int = 4000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-n:].decode("utf-8", "replace")


# ---------------------------------------------------------------- resume

def _same_checkpoint(rec_ckpt: dict, ckpt: str) -> bool:
    path = str(rec_ckpt.get("path") or "")
    if path == ckpt:
        return True
    try:
        if Path(path).resolve() == Path(ckpt).resolve() and Path(ckpt).exists():
            return True
    except OSError:
        pass
    return not Path(ckpt).exists() and rec_ckpt.get("name") == ckpt   # a zoo name


def finished(records: list[dict], ckpt: str, task: str, protocol: str, seed: int) -> dict | None:
    for rec in records:
        if (rec["task"] == task and rec["protocol"] == protocol and rec["seed"] == seed
                and _same_checkpoint(rec["checkpoint"], ckpt)):
            return rec
    return None


# ---------------------------------------------------------------- the plan

def plan(args, mode: Mode, out: Path, records: list[dict]) -> list[Stage]:
    logs = out / "logs"
    stages: list[Stage] = []
    datasets: dict[str, Path] = {}
    missing: dict[str, str] = {}
    data = out / "data"
    if mode.synth_scale:
        stages.append(Stage("data synth", ["data", "synth", "--out", str(data), "--scale", mode.synth_scale],
                            logs / "data-synth.log", output=str(data)))
        if (data / "synth_info.json").exists():
            info = json.loads((data / "synth_info.json").read_text())
            if info.get("scale") == mode.synth_scale:
                stages[-1].done = f"{data} exists"
        datasets = {"imagenet": data, "voc": data / "VOCdevkit", "coco": data / "coco",
                    "cityscapes": data, "voc2012": data}
    else:
        datasets, missing = find_datasets(Path(args.data_root))

    checkpoints: list[tuple[str, list[str]]] = []   # (checkpoint argument, stages it needs)
    if args.checkpoint:
        checkpoints = [(c, []) for c in args.checkpoint]
    else:
        for run in mode.runs:
            run_dir = out / "runs" / run.name
            backbone = run_dir / "backbone.pth"
            argv = ["pretrain", "--method", run.method, "--data", str(datasets.get("imagenet", "")),
                    "--out", str(run_dir), "--resume", "auto", *(("--preset", run.preset) if run.preset else ()),
                    *(("--arch", mode.arch) if mode.synth_scale else ()), *run.args, *args.pretrain_arg]
            st = Stage(f"pretrain {run.name}", argv, logs / f"pretrain-{run.name}.log", distributed=True,
                       needs=["data synth"] if mode.synth_scale else [], output=str(backbone))
            if backbone.exists():
                st.done = f"{backbone} exists"
            if "imagenet" not in datasets:
                st.missing = missing.get("imagenet", "ImageNet not found")
            stages.append(st)
            checkpoints.append((str(backbone), [st.name]))
    if not args.no_random:
        checkpoints.append((f"random:{args.random_arch or mode.arch}", []))

    for ckpt, needs in checkpoints:
        short = _short_name(ckpt)
        for ev in mode.evals:
            work = out / "work" / ev.label / short
            fill = {"work": str(work), "cache": str(out / "cache" / "features"),
                    **{k: str(v) for k, v in datasets.items()}}
            absent = [a[1:-1] for a in ev.argv if a.startswith("{") and a[1:-1] not in fill]
            for seed in ev.seeds:
                argv = ["eval", ev.argv[0], "--checkpoint", ckpt, "--results", str(out / "results"),
                        *[a.format_map(fill) if "{" in a and a[1:-1] not in absent else a for a in ev.argv[1:]],
                        *args.eval_arg]
                if seed:
                    argv += ["--seed", str(seed)]
                st = Stage(f"eval {ev.label} {short}" + (f" seed {seed}" if seed else ""), argv,
                           logs / f"eval-{ev.label}-{short}{'-s%d' % seed if seed else ''}.log",
                           distributed=ev.distributed, needs=needs + (["data synth"] if mode.synth_scale else []))
                rec = finished(records, ckpt, ev.task, ev.protocol, seed)
                if rec:
                    st.done = f"record {rec['id']} exists"
                for key in [ev.needs, *absent]:   # the dataset, and e.g. {labels_1pct}
                    if key not in datasets and st.missing is None:
                        st.missing = missing.get(key, f"{key} not found")
                stages.append(st)
    return stages


def _short_name(ckpt: str) -> str:
    if ckpt.startswith("random:"):
        return "random-" + ckpt.split(":", 1)[1].replace(":", "-")
    p = Path(ckpt)
    name = p.parent.name if p.stem in ("backbone", "checkpoint", "model") and p.parent.name else p.stem
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


# ---------------------------------------------------------------- main

def parse_args(argv: list[str] | None):
    p = argparse.ArgumentParser(
        prog="run_all.sh",
        description="Run the whole suite: embedded data, pretraining, evaluation, leaderboard. "
                    "Re-running continues where it stopped. './run_all.sh test' runs the tests.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  ./run_all.sh                      # embedded small dataset, CPU, ~10 min\n"
               "  ./run_all.sh --quick              # smoke scale, ~3 min\n"
               "  ./run_all.sh --data-root /data --preset paper --nproc 8\n"
               "  ./run_all.sh --data-root /data --preset paper --checkpoint moco_v2_800ep.pth.tar\n"
               "  ./run_all.sh --data-root /data --preset paper --slurm gpu --nproc 8 --nnodes 2")
    p.add_argument("--quick", action="store_true", help="smoke scale (tiny data, fewer checkpoints)")
    p.add_argument("--data-root", help="real datasets: imagenet/ (or ILSVRC2012/), VOCdevkit/, coco/, cityscapes/")
    p.add_argument("--preset", choices=("paper",), help="with --data-root: the papers' protocols")
    p.add_argument("--checkpoint", action="append", default=[],
                   help="evaluate this checkpoint (file or zoo name) instead of pretraining; repeatable")
    p.add_argument("--no-random", action="store_true", help="leave out the random-init baseline")
    p.add_argument("--random-arch", help="architecture of the random-init baseline (default: the mode's arch)")
    p.add_argument("--out", default="outputs", help="output folder (default outputs/)")
    p.add_argument("--only", action="append", default=[],
                   help="run only stages whose name contains this text (repeatable), e.g. --only knn")
    p.add_argument("--pretrain-arg", action="append", default=[],
                   help="extra argument for every pretraining stage, e.g. --pretrain-arg=--epochs=2")
    p.add_argument("--eval-arg", action="append", default=[],
                   help="extra argument for every evaluation stage, e.g. --eval-arg=--device=cuda")
    p.add_argument("--nproc", type=int, default=None,
                   help="processes per node for torchrun (default: the GPUs of this machine in real-data mode, else 1)")
    p.add_argument("--nnodes", type=int, default=1)
    p.add_argument("--node-rank", type=int, default=0)
    p.add_argument("--master-addr", default="127.0.0.1")
    p.add_argument("--master-port", type=int, default=29500)
    p.add_argument("--slurm", metavar="PARTITION", help="submit each stage as a SLURM job (needs submitit)")
    p.add_argument("--slurm-timeout-min", type=int, default=72 * 60)
    p.add_argument("--dry-run", action="store_true", help="print the stages and their commands; run nothing")
    p.add_argument("--no-preload", action="store_true",
                   help="start every stage as a fresh Python process instead of forking a pre-imported one")
    args = p.parse_args(argv)
    if args.data_root and args.quick:
        p.error("--quick runs on the embedded dataset; it does not take --data-root")
    if args.preset == "paper" and not args.data_root:
        p.error("--preset paper needs --data-root DIR (the papers' protocols run on the real datasets)")
    if args.data_root and not Path(args.data_root).is_dir():
        p.error(f"--data-root {args.data_root}: no such folder")
    return args


def choose_mode(args) -> Mode:
    if args.data_root:
        return MODES["paper"]
    return MODES["quick" if args.quick else "default"]


def _interrupt(signum, frame):
    # SIGTERM (a job scheduler, `kill`) stops the running stage too: subprocess.run kills its child
    # when an exception passes through it. The next run resumes.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    import signal

    args = parse_args(argv)
    try:
        previous = signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:   # not the main thread
        previous = None
    try:
        return _main(args)
    except KeyboardInterrupt:
        print("pipeline interrupted; run the same command again to continue where it stopped", flush=True)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(args) -> int:
    mode = choose_mode(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.nproc is None:
        args.nproc = 1
        if mode.synth_scale is None:
            try:
                import torch

                args.nproc = max(1, torch.cuda.device_count())
            except ImportError:  # pragma: no cover
                pass
    launcher = Launcher(nproc=args.nproc, nnodes=args.nnodes, node_rank=args.node_rank,
                        master_addr=args.master_addr, master_port=args.master_port, slurm=args.slurm,
                        slurm_args={"timeout_min": args.slurm_timeout_min},
                        preload=not (args.no_preload or args.slurm or args.dry_run))
    if args.slurm and not args.dry_run:
        import_submitit()   # fail now, not after an hour of stages
    from core.records import load_records

    records, _ = load_records(out / "results") if (out / "results").exists() else ([], [])
    stages = plan(args, mode, out, records)
    if args.only:
        stages = [s for s in stages if any(o in s.name for o in args.only)]

    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    t_start = time.perf_counter()
    if launcher.preload and any(not (s.done or s.missing) for s in stages):
        preload()
    print(f"mocobench pipeline: {mode.name} mode, {len(stages)} stages, outputs in {out}/ "
          f"(logs in {out / 'logs'}/)", flush=True)
    width = max((len(s.name) for s in stages), default=10)
    status: dict[str, str] = {}
    for i, st in enumerate(stages, 1):
        prefix = f"[{i:>2}/{len(stages)}]"
        blocked = [n for n in st.needs if status.get(n) in ("FAIL", "n/a", "missing", "blocked")]
        if st.done:
            status[st.name] = "skip"
            print(f"{prefix} skip     {st.name:<{width}}  (done: {st.done})", flush=True)
            continue
        if st.missing:
            status[st.name] = "missing"
            print(f"{prefix} missing  {st.name:<{width}}  ({st.missing})", flush=True)
            continue
        if blocked:
            status[st.name] = "blocked"
            print(f"{prefix} blocked  {st.name:<{width}}  (needs {', '.join(blocked)})", flush=True)
            continue
        if args.dry_run:
            status[st.name] = "dry-run"
            cmd = launcher.command(st.argv, st.distributed)
            print(f"{prefix} would run {st.name:<{width}}  $ {shlex.join(cmd)}", flush=True)
            continue
        t0, cpu0 = time.perf_counter(), _children_cpu()
        st.log.unlink(missing_ok=True)
        rc = launcher.run(st, env)
        dt, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
        if rc == 0:
            status[st.name] = "ok"
            print(f"{prefix} ok       {st.name:<{width}}  {dt:7.1f} s  (cpu {cpu:.0f} s)  {st.output}", flush=True)
        elif rc == 2 and NOT_BUILT in _tail(st.log):
            status[st.name] = "n/a"
            print(f"{prefix} n/a      {st.name:<{width}}  {dt:7.1f} s  (command not built yet; see {st.log})",
                  flush=True)
        else:
            status[st.name] = "FAIL"
            last = [ln for ln in _tail(st.log).splitlines() if ln.strip()][-1:] or [""]
            print(f"{prefix} FAIL     {st.name:<{width}}  {dt:7.1f} s  exit {rc}: {last[0][:160]} "
                  f"(log {st.log})", flush=True)

    rc_board = 0
    if not args.dry_run:
        rc_board = leaderboard(out, mode)
    total = time.perf_counter() - t_start
    counts = {k: sum(1 for v in status.values() if v == k) for k in ("ok", "skip", "FAIL", "n/a", "missing", "blocked")}
    print(f"pipeline finished in {total:.1f} s: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v), flush=True)
    return 1 if counts["FAIL"] or counts["blocked"] or rc_board else 0


def leaderboard(out: Path, mode: Mode) -> int:
    """Print the measured table; write the full table (with the papers' rows) as md, csv and html."""
    from leaderboard.cli import render
    from leaderboard.table import TableError
    from core.io import atomic_write_text

    results = out / "results"
    if not results.exists():
        print("leaderboard: no results yet", flush=True)
        return 0
    board = out / "leaderboard"
    try:
        text, table = render(results, "md", rows="measured")
        for fmt in ("md", "csv", "html"):
            atomic_write_text(board / f"leaderboard.{fmt}", render(results, fmt, rows="all")[0])
    except TableError as e:
        print(f"leaderboard: {e}", flush=True)
        return 1
    for p in table.problems:
        print(f"leaderboard warning: {p}", flush=True)
    print("\n" + text, flush=True)
    print(f"leaderboard written: {board / 'leaderboard.md'}, {board / 'leaderboard.csv'}", flush=True)
    print(f"HTML leaderboard: {(board / 'leaderboard.html').resolve()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
