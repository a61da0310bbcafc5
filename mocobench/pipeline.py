"""What ``./run_all.sh`` runs: every stage of the suite, each as its own process, in order or side by side.

    python -m mocobench.pipeline                     embedded `small` dataset, CPU, ~3 min on 2 cores
    python -m mocobench.pipeline --quick             the CI gate: 3 short pretraining runs, < 3 min
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

Resume (``mocobench.resume``): a stage is skipped only when its resume key (mode, exact arguments,
protocol code, upstream keys) matches the one it finished with and its output is there; an
interrupted stage continues from its own checkpoints (``--resume auto`` for pretraining, the work
directories of detection and segmentation); a stage whose configuration changed is redone, its old
outputs moved under ``OUT/superseded/``.

The modules: ``modes`` (what runs), ``stages`` (the plan), ``resume`` (keys), ``launch`` (a stage on
this machine), ``slurm`` (a stage as a SLURM job); this one parses the options and runs the plan.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

from mocobench import resume
from mocobench.launch import Launcher, children_cpu, preload, tail
from mocobench.modes import MODES, Mode
from mocobench.stages import checkpoint_location, plan


# ---------------------------------------------------------------- main

def parse_args(argv: list[str] | None):
    p = argparse.ArgumentParser(
        prog="run_all.sh",
        description="Run the whole suite: embedded data, pretraining, evaluation, leaderboard. "
                    "Re-running continues where it stopped. './run_all.sh test' runs the tests.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  ./run_all.sh                      # embedded small dataset, CPU, ~3 min on 2 cores\n"
               "  ./run_all.sh --quick              # smoke scale, < 3 min\n"
               "  ./run_all.sh --data-root /data --preset paper --nproc 8\n"
               "  ./run_all.sh --data-root /data --preset paper --checkpoint moco_v2_800ep.pth.tar\n"
               "  ./run_all.sh --data-root /data --preset paper --slurm gpu --nproc 8 --nnodes 2")
    p.add_argument("--quick", action="store_true", help="smoke scale (tiny data, fewer checkpoints)")
    p.add_argument("--data-root", help="real datasets: imagenet/ (or ILSVRC2012/), VOCdevkit/, coco/, cityscapes/")
    p.add_argument("--preset", choices=("paper",), help="with --data-root: the papers' protocols")
    p.add_argument("--methods", default=None, metavar="NAME,...",
                   help="pretrain only these runs of the mode, by run name (moco_v2_800ep) or method (unimoco); "
                        "paper mode's Transformer presets only by name (smog_swin_t_300ep) or as 'transformers'")
    p.add_argument("--det-engine", choices=("detectron2", "torchvision"), default=None,
                   help="--preset paper: the detection engine (default detectron2, as the papers)")
    p.add_argument("--fast", action="store_true",
                   help="--preset paper: pretrain in bf16 with channels_last (default fp32, as the official "
                        "code; the record states the precision)")
    p.add_argument("--force", action="store_true",
                   help="with --checkpoint: evaluate a checkpoint whose pre-flight says collapsed or like random "
                        "init (the records say so)")
    p.add_argument("--checkpoint", action="append", default=[],
                   help="evaluate this checkpoint (file or zoo name) instead of pretraining; repeatable")
    p.add_argument("--no-random", action="store_true", help="leave out the random-init baseline")
    p.add_argument("--random-arch", metavar="ARCH",
                   help="the random-init baseline of the pretrained runs and given checkpoints is random:ARCH, in place "
                        "of the mode's (a reference checkpoint keeps its own architecture's)")
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
    p.add_argument("--slurm-gpus-per-node", type=int, default=None,
                   help="GPUs a torchrun stage asks for per node (default --nproc; 0: no GPU gres)")
    p.add_argument("--slurm-cpus-per-task", type=int, default=None,
                   help="CPUs per SLURM task (default: one per process of the task)")
    p.add_argument("--slurm-mem", help="memory per node, as sbatch --mem takes it (e.g. 64G; default: the partition's)")
    p.add_argument("--slurm-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sbatch option (account, qos, constraint, ...); repeatable")
    p.add_argument("--slurm-timeout-min", type=int, default=None, help="job time limit (default 72 h)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of every pretraining run, evaluation and random init (default 0); another seed "
                        "is an honest re-run of the same pipeline")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads per stage (default 1 on the embedded data, so the records do not depend on "
                        "the machine's core count; on real data: the libraries' default)")
    p.add_argument("--jobs", type=int, default=None,
                   help="stages run side by side on this machine (default on the embedded data: the CPU cores "
                        "divided by --threads; on real data, under torchrun or SLURM: 1)")
    p.add_argument("--dry-run", action="store_true", help="print the stages and their commands; run nothing")
    p.add_argument("--debug", action="store_true",
                   help="show the traceback of an error (also MOCOBENCH_DEBUG=1) instead of its one line")
    p.add_argument("--no-preload", action="store_true",
                   help="start every stage as a fresh Python process instead of forking a pre-imported one")
    args = p.parse_args(argv)
    if args.data_root and args.quick:
        p.error("--quick runs on the embedded dataset; it does not take --data-root")
    if args.preset == "paper" and not args.data_root:
        p.error("--preset paper needs --data-root DIR (the papers' protocols run on the real datasets)")
    if args.force and not args.checkpoint:
        p.error("--force lets a given --checkpoint past its pre-flight; without --checkpoint there is none")
    if (args.det_engine or args.fast) and args.preset != "paper":
        p.error(f"{'--det-engine' if args.det_engine else '--fast'} applies to --preset paper (the embedded modes run "
                "the torchvision engine's tiny protocols, and their own presets' precision)")
    if args.methods is not None:
        runs = choose_mode(args).runs
        args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        known = {r.name for r in runs} | {r.method for r in runs} | ({"transformers"} if any(r.optional for r in runs) else set())
        unknown = [m for m in args.methods if m not in known]
        if unknown or not args.methods:
            p.error(f"--methods {','.join(unknown) or '(none)'}: this mode's runs are {', '.join(r.name for r in runs)} "
                    f"(or a method: {', '.join(sorted({r.method for r in runs}))}"
                    + ("; the Transformer presets by name or as 'transformers'" if "transformers" in known else "") + ")")
        if args.checkpoint:
            p.error("--methods picks pretraining runs; with --checkpoint nothing is pretrained")
    if args.checkpoint and (args.fast or args.pretrain_arg):
        p.error(f"{'--fast' if args.fast else '--pretrain-arg'} applies to pretraining; with --checkpoint nothing "
                "is pretrained")
    seen: dict[str, str] = {}
    for c in args.checkpoint:   # one file given twice would share its stages (names, state, records)
        where = checkpoint_location(c)
        if where in seen:
            p.error(f"--checkpoint {c}: given twice ({seen[where]})")
        seen[where] = c
    if args.random_arch is not None:
        if args.no_random:
            p.error(f"--random-arch {args.random_arch} names the random-init baseline; --no-random leaves it out")
        from mocobench.checkpoints.backbones import spec_problem

        problem = spec_problem({"arch": args.random_arch})
        if problem:
            p.error(f"--random-arch {args.random_arch}: {problem}")
    for flag, value in (("--seed", args.seed), ("--threads", args.threads), ("--jobs", args.jobs),
                        ("--nproc", args.nproc), ("--nnodes", args.nnodes), ("--slurm-timeout-min", args.slurm_timeout_min)):
        if value is not None and value < (0 if flag == "--seed" else 1):
            p.error(f"{flag} {value}: must be at least {0 if flag == '--seed' else 1}")
    from mocobench.core.settings import range_of
    from mocobench.pretrain.config import PretrainConfig

    seeds = range_of(PretrainConfig, "seed")   # every pretraining stage takes it: refused now, not in each stage
    if not seeds.holds(args.seed):
        p.error(f"--seed {args.seed}: must be {seeds} (the pretraining runs' seed)")
    if (args.jobs or 1) > 1 and (args.slurm or args.data_root or (args.nproc or 1) > 1 or args.nnodes > 1):
        p.error(f"--jobs {args.jobs} runs stages side by side on this machine's CPUs, for the embedded data; "
                "with --data-root, --nproc/--nnodes > 1 or --slurm each stage takes the GPUs: leave --jobs out")
    if args.slurm and args.node_rank:
        p.error("with --slurm the pipeline runs once and SLURM places the nodes: give --nnodes, not --node-rank")
    if not 0 <= args.node_rank < args.nnodes:
        p.error(f"--node-rank {args.node_rank}: must be in [0, --nnodes={args.nnodes})")
    slurm_only = [flag for flag, value in (("--slurm-gpus-per-node", args.slurm_gpus_per_node),
                                           ("--slurm-cpus-per-task", args.slurm_cpus_per_task),
                                           ("--slurm-mem", args.slurm_mem), ("--slurm-arg", args.slurm_arg),
                                           ("--slurm-timeout-min", args.slurm_timeout_min))
                  if value not in (None, [])]
    if slurm_only and not args.slurm:
        p.error(f"{', '.join(slurm_only)} only apply with --slurm PARTITION")
    if args.slurm:
        from mocobench.slurm import parse_extra

        try:
            args.slurm_extra = parse_extra(args.slurm_arg)
        except ValueError as e:
            p.error(str(e))
        for flag, value in (("--slurm-gpus-per-node", args.slurm_gpus_per_node),
                            ("--slurm-cpus-per-task", args.slurm_cpus_per_task)):
            if value is not None and value < (1 if "cpus" in flag else 0):
                p.error(f"{flag} {value}: must be at least {1 if 'cpus' in flag else 0}")
    return args


def choose_mode(args) -> Mode:
    if args.data_root:
        return MODES["paper"]
    return MODES["quick" if args.quick else "default"]


def _interrupt(signum, frame):
    # SIGTERM (a job scheduler, `kill`) stops the running stage too: the launcher passes SIGTERM on
    # (pretraining saves its step) when an exception passes through its wait. The next run resumes.
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
    except Exception as e:  # noqa: BLE001 - one line (the failed stages have their own logs), as mocobench's commands
        from mocobench.cli import describe

        if args.debug or os.environ.get("MOCOBENCH_DEBUG", "") not in ("", "0"):
            raise
        print(f"mocobench pipeline: {describe(e)}", file=sys.stderr, flush=True)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(args) -> int:
    if args.data_root and not Path(args.data_root).is_dir():   # a missing path is a failure (exit 1), as in every command
        raise ValueError(f"--data-root {args.data_root}: no such folder")
    mode = choose_mode(args)
    out = Path(args.out)
    from mocobench.core.records import iter_record_files

    # planned before anything is written or started: a usage error found in the plan exits 2 with nothing done
    records = [(p, r) for p, r in iter_record_files(out / "results") if isinstance(r, dict)] \
        if (out / "results").exists() else []
    stages = plan(args, mode, out, records)
    unmatched = [o for o in args.only if not any(o in s.name for s in stages)]
    if unmatched:   # a typo would run nothing and exit 0
        print(f"run_all.sh: error: --only {', '.join(unmatched)}: no stage of this plan is named with it (the names are "
              f"those --dry-run prints, e.g. '{stages[-1].name if stages else 'eval knn-dino-knn moco_v2'}')",
              file=sys.stderr, flush=True)
        return 2
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
                        master_addr=args.master_addr, master_port=args.master_port,
                        preload=not (args.no_preload or args.slurm or args.dry_run))
    runner = launcher
    if args.slurm:
        from mocobench import slurm

        if not args.dry_run:
            slurm.check_available()   # fail now, not after an hour of stages
        runner = slurm.SlurmRunner(slurm.SlurmOptions(
            args.slurm, args.nproc if args.slurm_gpus_per_node is None else args.slurm_gpus_per_node,
            args.slurm_cpus_per_task, args.slurm_mem, args.slurm_timeout_min or slurm.SlurmOptions.timeout_min,
            args.slurm_extra), launcher)
        print(runner.defaults(), flush=True)
    if args.only:
        stages = [s for s in stages if any(o in s.name for o in args.only)]

    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    threads, jobs = args.threads, args.jobs
    if mode.synth_scale:
        # Float sums depend on how the work is split across threads, so the embedded runs pin the
        # thread count (the same records on any core count, here or on SLURM) and fill this
        # machine's cores with stages instead.
        threads = threads or 1
        if not (args.slurm or launcher.torchrun(True)):
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            jobs = jobs or max(1, cores // threads)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t_start = time.perf_counter()
    if launcher.preload and any(not (s.done or s.missing) for s in stages):
        preload()
    print(f"mocobench pipeline: {mode.name} mode, {len(stages)} stages, outputs in {out}/ "
          f"(logs in {out / 'logs'}/)" + (f", {jobs} at a time, {threads} thread(s) each"
                                          if jobs and jobs > 1 else ""), flush=True)
    node = 0 if args.slurm else args.node_rank   # on SLURM this process runs once and submits every node
    schedule = Schedule(stages, runner, launcher, env, out, args, node, jobs or 1)
    status = schedule.run()
    if args.dry_run and schedule.gpu_hours:
        known = [h for h in schedule.gpu_hours.values() if h is not None]
        unknown = [n for n, h in schedule.gpu_hours.items() if h is None]
        print(f"projected: {sum(known):,.0f} GPU-hours (H200, docs/gpu/) for {len(known)} stages"
              + (f"; {len(unknown)} stages have no measured throughput ({', '.join(unknown[:3])}"
                 f"{', ...' if len(unknown) > 3 else ''})" if unknown else ""), flush=True)
    rc_board = 0
    if not args.dry_run and node == 0:
        rc_board = leaderboard(out, mode)
    total = time.perf_counter() - t_start
    counts = {k: sum(1 for v in status.values() if v == k) for k in ("ok", "skip", "node 0", "FAIL", "missing", "blocked")}
    print(f"pipeline finished in {total:.1f} s: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v), flush=True)
    return 1 if counts["FAIL"] or counts["blocked"] or rc_board else 0


class Schedule:
    """Runs the plan: in order, one stage at a time, or with ``jobs > 1`` up to that many side by
    side (each waits for the stages it needs and those it comes ``after``); one status line per
    stage as it ends. Returns each stage's status.

    Side by side, a free slot goes to the ready stage with the longest chain of work still behind
    it (its ``cost`` plus the longest chain of the stages that wait for it), so the long stages do
    not end up running last, alone on one core. The order changes no result: every stage has its
    own process, seed and pinned thread count."""

    def __init__(self, stages, runner, launcher, env, out: Path, args, node: int, jobs: int):
        self.stages, self.runner, self.launcher, self.env = stages, runner, launcher, env
        self.out, self.args, self.node, self.jobs = out, args, node, jobs
        self.width = max((len(s.name) for s in stages), default=10)
        self.status: dict[str, str] = {}
        self.index = {st.name: i for i, st in enumerate(stages, 1)}
        self.chain = chains(stages)
        self.gpu_hours: dict[str, float | None] = {}   # --dry-run with --data-root: each stage's projection

    def say(self, st, word: str, text: str) -> None:
        print(f"[{self.index[st.name]:>2}/{len(self.stages)}] {word:<8} {st.name:<{self.width}}  {text}", flush=True)

    def settle(self, st) -> bool:
        """Decide a stage that does not run (done, missing, blocked, ...); True if it was."""
        blocked = [n for n in st.needs if self.status.get(n) in ("FAIL", "missing", "blocked")]
        word, why = None, ""
        if st.done:
            word, why = "skip", f"(done: {st.done})"
        elif self.node > 0 and not self.launcher.torchrun(st.distributed):
            word, why = "node 0", "(one process: node 0 runs it)"
        elif st.missing:
            word, why = "missing", f"({st.missing})"
        elif blocked:
            word, why = "blocked", f"(needs {', '.join(blocked)})"
        elif self.args.dry_run:
            from mocobench import plan_check

            # checked where the data are already there (real data, or an embedded set generated before):
            # the classification commands look for their folder when they parse
            data_present = self.args.data_root or (self.out / "data" / "synth_info.json").exists()
            problem = plan_check.check(st.argv) if data_present else None
            if problem:   # the command would fail when it ran: say so now
                self.status[st.name] = "FAIL"
                self.say(st, "invalid", f"({problem})")
                return True
            cmd = self.launcher.command(st.argv, st.distributed)
            redo = f"  (redo: {st.stale_why})" if st.stale else ""
            self.status[st.name] = "dry-run"
            projection = ""
            if self.args.data_root:
                hours, how = plan_check.gpu_hours(st.argv)
                self.gpu_hours[st.name] = hours
                projection = f"\n      ~{hours:,.1f} GPU-h: {how}" if hours is not None else f"\n      GPU-h: {how}"
            print(f"[{self.index[st.name]:>2}/{len(self.stages)}] would run {st.name:<{self.width}}  "
                  f"$ {shlex.join(cmd)}{redo}{projection}", flush=True)
            return True
        if word is None:
            return False
        self.status[st.name] = word
        self.say(st, word, why)
        return True

    def begin(self, st) -> None:
        if self.node > 0:   # OUT is shared: node 0 alone moves stale outputs and writes resume entries
            st.log = st.log.with_suffix(f".node{self.node}.log")
        else:
            if st.stale:
                resume.supersede(self.out, st.stale, st.stale_why)
            resume.write_entry(self.out, st.name, st.key, st.config, finished=False)
        st.log.unlink(missing_ok=True)

    def end(self, st, rc: int, dt: float, cpu: float) -> None:
        if rc == 0:
            if self.node == 0:
                resume.write_entry(self.out, st.name, st.key, st.config, finished=True)
            self.status[st.name] = "ok"
            self.say(st, "ok", f"{dt:7.1f} s  (cpu {cpu:.0f} s)  {st.output}")
            return
        self.status[st.name] = "FAIL"
        last = [ln for ln in tail(st.log).splitlines() if ln.strip() and not ln.startswith("SLURM job ")][-1:]
        where = getattr(self.runner, "last_failure", "")
        last = [ln for ln in last if ln not in where]
        self.say(st, "FAIL", f"{dt:7.1f} s  exit {rc}: {(last or [''])[0][:160]} "
                 f"(log {st.log}{'; ' + where if where else ''})")

    def run(self) -> dict[str, str]:
        if self.jobs <= 1:
            for st in self.stages:
                if self.settle(st):
                    continue
                self.begin(st)
                t0, cpu0 = time.perf_counter(), children_cpu()
                rc = self.runner.run(st, self.env)
                self.end(st, rc, time.perf_counter() - t0, children_cpu() - cpu0)
            return self.status
        pending, running = list(self.stages), {}
        try:
            while pending or running:
                ready = [st for st in pending
                         if not any(n in self.index and n not in self.status for n in st.needs + st.after)]
                for st in ready:
                    if self.settle(st):
                        pending.remove(st)
                ready = sorted((st for st in ready if st in pending), key=lambda st: -self.chain[st.name])
                for st in ready[:self.jobs - len(running)]:   # sorted is stable: plan order on ties
                    pending.remove(st)
                    self.begin(st)
                    running[st.name] = (st, self.launcher.start(st, self.env), time.perf_counter())
                for name, (st, proc, t0) in list(running.items()):
                    if proc.poll() is not None:
                        del running[name]
                        self.end(st, proc.rc, time.perf_counter() - t0, proc.cpu)
                time.sleep(0.1)
        except BaseException:   # KeyboardInterrupt, SIGTERM: stop every running stage (each saves its step)
            for _, proc, _ in running.values():
                proc.stop()
            raise
        return self.status


def chains(stages) -> dict[str, float]:
    """Each stage's cost plus the longest chain of costs among the stages that wait for it."""
    waiting: dict[str, list] = {st.name: [] for st in stages}
    for st in stages:
        for n in {*st.needs, *st.after}:
            if n in waiting:
                waiting[n].append(st)
    chain: dict[str, float] = {}

    def length(st) -> float:
        if st.name not in chain:
            chain[st.name] = st.cost + max((length(w) for w in waiting[st.name]), default=0.0)
        return chain[st.name]

    for st in stages:
        length(st)
    return chain


def leaderboard(out: Path, mode: Mode) -> int:
    """Print the measured table; write the full table (with the papers' rows) as md, csv and html."""
    from mocobench.leaderboard.cli import render
    from mocobench.leaderboard.table import TableError
    from mocobench.core.io import atomic_write_text

    results = out / "results"
    if not results.exists():
        print("leaderboard: no results yet", flush=True)
        return 0
    board = out / "leaderboard"
    spread = mode.spread_baseline()
    try:
        text, table = render(results, "md", rows="measured", spread=spread)
        for fmt in ("md", "csv", "html"):
            atomic_write_text(board / f"leaderboard.{fmt}", render(results, fmt, rows="all", spread=spread)[0])
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
