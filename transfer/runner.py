"""One way to evaluate: what every ``mocobench eval TASK`` does around the task itself.

A task (linear, kNN, semi, detection, segmentation) or an engine (torchvision, detectron2,
mmseg) is one function, ``run(SeedRun) -> Outcome``: it trains and scores one seed. This module
does everything else, the same way for all of them:

- the process group and device (:func:`mocobench.core.dist.setup`);
- seeding, ``random``, ``numpy`` and ``torch`` (every device) with the seed, then the checkpoint,
  loaded once per seed (the seed's own copy to fine-tune);
- the work folder of each seed, ``<work root>/<checkpoint>-<sha8>-<protocol>-<dataset>-<key>-s<seed>``
  where ``key`` is a digest of the settings that make the run this run (protocol after
  overrides, data folder, engine and its options, world size): two configurations never share a
  folder, so a resumed state is always this configuration's;
- the resume policy, ``--resume auto|no|PATH``: ``auto`` skips a seed whose record exists (its
  folder's ``record.done`` names it; a record in another results folder is copied into this one,
  :func:`record_here`) and lets the task resume its own saved state; ``no`` starts
  the seed over; ``PATH`` resumes from that state file (tasks that keep no state refuse it). A
  seed has one record: ``no`` or ``PATH`` for a seed whose record exists is refused, naming it;
- the record (rank 0), with the precision our engine ran at in its config
  (:func:`evaluation_precision`) and the departures from the official recipes that apply in its run
  (``core/deviations.toml``), the files written beside it, the one line printed per record, and the
  seed's log (``eval.log``);
- exit codes: 2 for a command line that cannot run (:class:`UsageError`: bad options, overrides
  out of range, contradicting options), checked before any work; anything that goes wrong while
  running (bad data, a checkpoint that cannot be used, a diverged run: ``FloatingPointError``)
  is raised to the command's handler, which prints one line and exits 1 (``--debug``: the
  traceback). A failed seed writes no record.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from mocobench.core.errors import EXIT_USAGE, UsageError
from mocobench.core.seeds import seed_everything
from mocobench.datasets.identity import data_identity


@dataclass
class SeedRun:
    """What a task's ``run`` gets for one seed."""
    seed: int
    backbone: Any                 # this seed's own copy of the loaded backbone
    report: Any                   # the checkpoint's load report
    work: Path                    # this seed's work folder (exists)
    resume: str | Path            # "auto", "no" or a state file
    dist: Any                     # mocobench.core.dist.Dist
    device: torch.device
    lines: list[str] = field(default_factory=list)

    def log(self, msg: str) -> None:
        """Print (rank 0) and keep the line for the seed's ``eval.log``."""
        if self.dist.main:
            print(msg, flush=True)
            self.lines.append(msg)


@dataclass
class Outcome:
    """What a task's ``run`` returns for one seed (rank 0; other ranks return None)."""
    metrics: dict[str, float]
    dataset: dict                 # the record's dataset fields (name, path, splits, ...)
    config: dict                  # the protocol that ran (the record's config)
    run: dict = field(default_factory=dict)  # run settings and what the run measured about itself
    task: str | None = None       # the record's task when it is not the command's (semi-10pct)
    engine: str = "torchvision"
    device: str | None = None     # when the engine ran elsewhere than the runner's device
    # files written beside the record: run key -> (suffix, text); the record's run names the file
    beside: dict[str, tuple[str, str]] = field(default_factory=dict)


@dataclass
class Evaluation:
    """One ``mocobench eval`` command, parsed and checked."""
    task: str
    protocol: str                 # the protocol's name (records, folders)
    dataset: str                  # the dataset's key in folder names (voc, cityscapes, synth-small)
    settings: dict                # everything that makes a run this run (the folder's key)
    run: Callable[[SeedRun], Outcome | None]
    checkpoint: str
    seeds: list[int]
    results: Path
    work_root: Path
    device: str | None = None
    resume: str = "auto"
    arch: str | None = None
    folder_tag: str | None = None  # the protocol part of folder names, when an engine needs its own
    resumes_from_file: bool = False
    load: Callable[..., tuple] | None = None  # (checkpoint, arch) -> (backbone, report); default load_backbone
    preflight: str | None = None  # a pre-flight report (transfer/preflight.py) of the checkpoint, for the records
    check_only: bool = False      # --check: parsed and checked; nothing is loaded or run
    branch: str | None = None     # --branch raw|ema, --input-convention rgb|bgr255, --stride-in-1x1: to the loader
    input_convention: str | None = None
    stride_in_1x1: bool | None = None
    prog: str = ""
    written: list[Path] = field(default_factory=list)  # the records of the seeds (rank 0), found or new

    def __post_init__(self):
        if not self.prog:
            self.prog = f"mocobench eval {self.task}"


def settings_key(settings: dict) -> str:
    """The folder key of ``settings``: 8 hex digits of a digest of their JSON form."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def evaluate(ev: Evaluation) -> int:
    """Run ``ev`` once per seed; returns the exit code (0, or 2 for usage). Failures while running
    are raised (the command's handler prints them as one line and exits 1)."""
    from mocobench.checkpoints.load import describe, load_backbone
    from mocobench.core import dist
    from mocobench.core.deviations import of_evaluation
    from mocobench.core.io import atomic_write_json, atomic_write_text
    from mocobench.core.records import new_record, record_filename, write_record
    from mocobench.transfer.run_options import run_dir

    if ev.resume not in ("auto", "no"):
        if not ev.resumes_from_file:
            raise UsageError(f"--resume {ev.resume}: {ev.prog} keeps no training state to resume from a "
                             "file (use --resume auto or no)")
        if len(ev.seeds) > 1:
            raise UsageError(f"--resume {ev.resume}: a state file resumes one seed; give --seed")
        if not Path(ev.resume).is_file():   # a missing path is a failure (exit 1), as in every command
            raise FileNotFoundError(f"--resume {ev.resume}: no such file")
    info, device = dist.setup(ev.device)
    # the branch and input convention pick other weights out of the same file (same sha256), the
    # stride's place another network around them
    picked = {k: v for k, v in (("branch", ev.branch), ("input_convention", ev.input_convention)) if v}
    build = {} if ev.stride_in_1x1 is None else {"stride_in_1x1": ev.stride_in_1x1}
    picked |= build
    # the data's listing too (names, sizes, times; no file read): data changed under the same path
    # (an image added, repaired or removed) is another evaluation, never "evaluated already"
    # (listed on rank 0 only: every rank would walk the same 1.3M entries)
    listing = ({"data_listing": dist.from_main(lambda: data_identity(Path(ev.settings["data"])))}
               if ev.settings.get("data") else {})
    key = settings_key({**ev.settings, "task": ev.task, "world_size": info.world, **picked, **listing})
    carded = None
    # the checkpoint named (file read and checked, nothing built): a finished seed is skipped
    # without loading it
    fields = checkpoint_fields(describe(ev.checkpoint, arch=ev.arch, branch=ev.branch,
                                        input_convention=ev.input_convention, **build), **build)
    for seed in ev.seeds:
        work = run_dir(ev.work_root, fields, ev.folder_tag or ev.protocol, ev.dataset, seed, key=key)
        done = work / "record.done"  # JSON naming the record; not *.json, so no record reader takes it for one
        if done.is_file():
            previous = Path(json.loads(done.read_text())["record"])
            if previous.is_file() and ev.resume != "auto":
                raise UsageError(f"--resume {ev.resume}: {work} holds the finished run whose record is {previous}; "
                                 "running it again would give the seed a second record: remove that record "
                                 "(or use other --results and --work-dir) to run it again")
            if previous.is_file():
                if info.main:
                    here, copied = record_here(previous, ev.results)
                    print(f"{ev.prog} [{ev.protocol}] {fields.get('name')} seed {seed}: evaluated already "
                          f"-> {here}" + (f" (copied from {previous})" if copied else ""), flush=True)
                    ev.written.append(here)
                continue
        # seeded before the load: building an architecture draws from the generator (as it did
        # when each task loaded for itself), so a seed's run does not depend on the seeds before it
        seed_everything(seed)
        backbone, report = (ev.load or load_backbone)(ev.checkpoint, arch=ev.arch, branch=ev.branch,
                                                      input_convention=ev.input_convention, **build)
        if checkpoint_fields(report, **build) != fields:   # the file changed between the two reads
            raise RuntimeError(f"{ev.checkpoint}: changed while it was being read ({fields.get('sha256')} "
                               f"-> {report.sha256}); run the evaluation again")
        # checked before the run, not after its hours: a report of another file is refused now
        preflight = preflight_fields(ev.preflight, fields) if ev.preflight else None
        work.mkdir(parents=True, exist_ok=True)
        done.unlink(missing_ok=True)
        resume: str | Path = ev.resume if ev.resume in ("auto", "no") else Path(ev.resume).resolve()
        run = SeedRun(seed=seed, backbone=backbone, report=report, work=work,
                      resume=resume, dist=info, device=device)
        t0 = time.perf_counter()
        out = ev.run(run)
        wall = time.perf_counter() - t0
        if out is None or not info.main:
            continue
        ran = {**out.run, "work_dir": str(work)}
        precision = evaluation_precision(out, device)
        config = out.config if precision is None else {**out.config, "precision": precision}
        ran["deviations"] = of_evaluation(out.task or ev.task, ev.protocol, out.engine or "torchvision",
                                          report.metadata.get("config"), precision=precision)
        if preflight is not None:
            ran["preflight"] = preflight
        rec = new_record(checkpoint=fields, task=out.task or ev.task, protocol=ev.protocol, dataset=out.dataset,
                         metrics=out.metrics, config=config, run=ran, seed=seed, wall_time_s=wall,
                         device=out.device or dist.device_name(device), engine=out.engine)
        stem = record_filename(rec)[:-len(".json")]
        for run_key, (suffix, text) in out.beside.items():
            rec["run"][run_key] = f"{stem}.{suffix}"
            atomic_write_text(Path(ev.results) / f"{stem}.{suffix}", text)
        path = write_record(ev.results, rec)
        ev.written.append(Path(path))
        if not carded:   # one card per command's checkpoint, not one per seed
            carded = write_card(ev.results, report)
        atomic_write_text(work / "eval.log", "".join(f"{line}\n" for line in run.lines + [f"record: {path}"]))
        atomic_write_json(done, {"record": str(Path(path).resolve()), "settings_key": key})
        shown = "  ".join(f"{k} {v:.2f}" for k, v in list(out.metrics.items())[:3])
        print(f"{ev.prog} [{ev.protocol}] {fields.get('name')} seed {seed}: {shown}  ({wall:.1f} s) "
              f"-> {path}", flush=True)
    return 0


def checkpoint_fields(report, stride_in_1x1: bool | None = None) -> dict:
    """The record's checkpoint fields of a load report. A random initialisation seeded otherwise than
    by default (``random:ARCH:SEED``, SEED not 0) is other weights under the same name and without
    a sha256: its ``init_seed`` is stated, so that its work folder (``run_options.run_dir``) and its
    record tell it from ``random:ARCH``'s. ``random:ARCH`` (seed 0) keeps the fields it always had;
    the name stays ``random-ARCH``, as the pipeline's runs with ``--seed S`` are matched by it.

    A Bottleneck ResNet read from a file states ``stride_in_1x1`` (the card's value: stated by the
    file, decided from it, or ``--stride-in-1x1``): the same weights with the stride in the 1x1 conv
    compute other features. A random initialisation has no file to say it; it states
    ``stride_in_1x1: true`` where it was built so (``stride_in_1x1``, the option given)."""
    fields = report.record_fields()
    stride = (report.metadata.get("stride_in_1x1") or {}).get("value")
    if stride is None and report.format == "random" and stride_in_1x1:
        stride = True
    if stride is not None:
        fields["stride_in_1x1"] = bool(stride)
    seed = report.metadata.get("seed") if report.format == "random" else None
    return fields | {"init_seed": int(seed)} if seed else fields


def evaluation_precision(out: Outcome, device: torch.device) -> str | None:
    """The precision a seed's evaluation ran at, for its record's config: on our engine, what
    core/precision.py decides (bf16 autocast on CUDA, unless the task's config says it turned it
    off, as detection's ``bf16`` does); on a third-party engine what it states from the config that
    ran (detectron2 and mmseg: fp32, fp16 where their options turn AMP on)."""
    from mocobench.core import precision

    if (out.engine or "torchvision") != "torchvision":
        return out.config.get("precision")   # the engine states it (fp16 with its AMP option)
    return precision.evaluation(device, bool(out.config.get("bf16", True)))


def record_here(previous: Path, results: Path) -> tuple[Path, bool]:
    """The record of a finished seed in ``results``, and whether it was copied now: ``previous``
    (or its copy) where it is there already, else a copy of it written now (the files beside it and
    the checkpoint card first, the record last, each atomically), so that every ``--results`` given
    holds its records.

    Two results folders with the same parent share a work root (``run_options.work_root``), and with
    it the seeds' ``record.done``. The seed's folder name holds the checkpoint's sha256, the settings
    digest and the seed, so the record found is this very evaluation: it is copied, keeping its id
    (the leaderboard counts a cell's seed once), rather than run again for the same numbers."""
    from mocobench.core.io import atomic_write_text
    from mocobench.core.records import write_record

    target = Path(results) / previous.name
    if target.is_file():   # there already (or copied by an earlier run)
        return target, False
    rec = json.loads(previous.read_text(encoding="utf-8"))
    stem = previous.name[:-len(".json")]
    for name in (rec.get("run") or {}).values():   # the files an engine keeps beside the record
        if isinstance(name, str) and name.startswith(f"{stem}.") and (previous.parent / name).is_file():
            atomic_write_text(Path(results) / name, (previous.parent / name).read_text(encoding="utf-8"))
    ckpt = rec.get("checkpoint") or {}
    card, dest = (card_path(folder, ckpt.get("name"), ckpt.get("sha256")) for folder in (previous.parent, results))
    if card.is_file() and not dest.is_file():
        atomic_write_text(dest, card.read_text(encoding="utf-8"))
    return Path(write_record(results, rec)), True


def card_path(results: Path, name, sha256) -> Path:
    """``RESULTS/cards/<name>-<sha256[:8]>.json``: the card of the checkpoint ``name`` (``write_card``)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))
    return Path(results) / "cards" / f"{safe}-{(sha256 or 'nosha')[:8]}.json"


def write_card(results: Path, report) -> Path:
    """The checkpoint card (``LoadReport.card``) beside the records: ``RESULTS/cards/<name>-<sha256[:8]>.json``;
    the records name its identity (``checkpoint.sha256``, ``branch``, ``input_convention``, ``stride_in_1x1``)."""
    from mocobench.core.io import atomic_write_json
    from mocobench.core.records import CARD_FORMAT

    path = card_path(results, report.name, report.sha256)
    atomic_write_json(path, {"file_type": CARD_FORMAT, **report.card()})
    return path


def preflight_fields(path: str, checkpoint: dict) -> dict:
    """What a record keeps of the pre-flight report at ``path``: its verdict (and whether the run was
    forced past it) and the figures of the checkpoint and of its random initialisation. A report of
    another file is refused: its figures would describe weights this record did not evaluate."""
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
        verdict, figures = report["verdict"], report["figures"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"--preflight {path}: not a pre-flight report ({type(e).__name__}: {e})") from None
    if report.get("sha256") != checkpoint.get("sha256"):
        raise UsageError(f"--preflight {path}: a report of {report.get('checkpoint')} (sha256 "
                         f"{str(report.get('sha256'))[:12]}), not of this checkpoint ({str(checkpoint.get('sha256'))[:12]})")
    return {"verdict": verdict, "forced": bool(report.get("forced")), "file": str(path),
            "checkpoint": figures.get("checkpoint"),
            "random_init": {k: v for k, v in figures.items() if k != "checkpoint"}}


def main(parse: Callable[[], Evaluation], prog: str) -> int:
    """Parse with ``parse`` (any ``ValueError`` there is a usage error) and evaluate; 2 for usage."""
    import sys

    try:
        ev = parse()
    except ValueError as e:  # UsageError, ProtocolError, a range or an override that does not parse
        print(f"{prog}: {e}", file=sys.stderr)
        return EXIT_USAGE
    if ev.check_only:
        return 0
    try:
        return evaluate(ev)
    except UsageError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return EXIT_USAGE
