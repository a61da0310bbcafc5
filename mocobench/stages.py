"""The plan: the stages of one pipeline run, in order, each with its command, its resume key and
whether it is done, cannot run (dataset absent), or must first move stale outputs aside."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mocobench import resume
from mocobench.checkpoints.backbones import TORCHVISION_RESNETS
from mocobench.datasets.identity import data_identity
from mocobench.modes import Mode, find_datasets


@dataclass
class Stage:
    name: str
    argv: list[str]                    # ``mocobench`` arguments
    log: Path
    distributed: bool = False
    gpu: bool = True                   # asks for GPUs when submitted to SLURM
    all_gpus: bool = False             # one process that uses every GPU of its node (detectron2's launch)
    done: str | None = None            # why it can be skipped (resume), if it can
    missing: str | None = None         # why it cannot run (dataset absent)
    needs: list[str] = field(default_factory=list)
    output: str = ""
    key: str = ""                      # resume key (see mocobench.resume)
    config: dict = field(default_factory=dict)
    stale: list[Path] = field(default_factory=list)   # moved aside before it runs
    stale_why: str = ""
    resumes: bool = False              # its resume entry matches: it continues from its own state
    after: list[str] = field(default_factory=list)    # waits for these (they fill a cache it reads)
    cost: float = 1.0                  # estimated CPU seconds (modes' Run.cost, Eval.cost)


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


def matching_records(records: list[tuple[Path, dict]], ckpt: str, task: str, protocol: str,
                     seed: int) -> list[tuple[Path, dict]]:
    """The records (file, record) of this (checkpoint, task, protocol, seed)."""
    return [(p, rec) for p, rec in records
            if rec["task"] == task and rec["protocol"] == protocol and rec["seed"] == seed
            and _same_checkpoint(rec["checkpoint"], ckpt)]


def _option_key(tok: str) -> str:
    return tok[2:].split("=", 1)[0].replace("-", "_").lower()


def with_extra(argv: list[str], extra: list[str]) -> list[str]:
    """``argv`` and then ``extra`` (``--pretrain-arg``/``--eval-arg``), where an option ``extra`` names
    replaces the stage's own (``--pretrain-arg=--epochs=1`` shortens a run whose mode says
    ``--epochs=16``): the commands refuse an option given twice."""
    named = {_option_key(t) for t in extra if t.startswith("--")}
    kept, i = [], 0
    while i < len(argv):
        tok = argv[i]
        if tok.startswith("--") and _option_key(tok) in named:
            takes_value = "=" not in tok and i + 1 < len(argv) and not argv[i + 1].startswith("--")
            i += 2 if takes_value else 1
            continue
        kept.append(tok)
        i += 1
    return kept + list(extra)


def _resolve(st: Stage, out: Path, mode: Mode, inputs: dict[str, str], output_present: bool,
             outputs: list[Path], done_why: str) -> None:
    """Fill in the stage's key and what resuming means for it."""
    st.config = resume.configuration(mode.name, st.argv, inputs)
    st.key = resume.key_of(st.config)
    verdict, why = resume.decide(resume.read_entry(out, st.name), st.key, st.config, output_present,
                                 any(p.exists() for p in outputs))
    if verdict == "done":
        st.done = done_why
    elif verdict == "continue":
        st.resumes = True
    elif verdict == "redo":
        st.stale, st.stale_why = [p for p in outputs if p.exists()], why


def plan(args, mode: Mode, out: Path, records: list[tuple[Path, dict]]) -> list[Stage]:
    logs = out / "logs"
    stages: list[Stage] = []
    datasets: dict[str, Path] = {}
    missing: dict[str, str] = {}
    data = out / "data"
    upstream: dict[str, str] = {}      # inputs every stage shares (the embedded dataset's key)
    if mode.synth_scale:
        st = Stage("data synth", ["data", "synth", "--out", str(data), "--scale", mode.synth_scale],
                   logs / "data-synth.log", gpu=False, output=str(data))
        info = data / "synth_info.json"
        present = info.exists() and json.loads(info.read_text()).get("scale") == mode.synth_scale
        _resolve(st, out, mode, {}, present, [data], f"{data} exists")
        stages.append(st)
        upstream = {"data": st.key}
        datasets = {"imagenet": data, "voc": data / "VOCdevkit", "coco": data / "coco",
                    "cityscapes": data, "voc2012": data}
    else:
        datasets, missing = find_datasets(Path(args.data_root))

    seed = getattr(args, "seed", 0) or 0
    # the papers' pretraining ran fp32 (their official code); --fast opts into bf16 + channels_last.
    # The embedded modes keep their presets' own settings.
    precision = ("--precision=fp32", "--channels_last=false") if mode.name == "paper" and not args.fast else ()
    # (argument, stages it needs, inputs, its groups (a pretraining run's also its name): the
    # evaluations whose Eval.on names one take it; None: every evaluation)
    checkpoints: list[tuple[str, list[str], dict[str, str], tuple[str, ...] | None]] = []
    archs: dict[str, str] = {}    # checkpoint -> its architecture, where the plan knows it
    baseline_archs = [args.random_arch or mode.arch]   # the random inits the pretrained runs are compared with
    preflights: dict[str, str] = {}
    identities: dict[Path, str] = {}

    def data_in(keys: list[str]) -> dict[str, str]:
        # the real datasets' identities; the embedded data's is the data stage's key (upstream)
        return _data_inputs(datasets, keys, identities) if not mode.synth_scale else {}

    if args.checkpoint:   # given checkpoints take every evaluation of the mode, after their pre-flight (below)
        checkpoints += [(c, [], {"checkpoint": resume.file_identity(c)}, None) for c in args.checkpoint]
    else:
        for run in mode.runs:
            if not selected(run, args.methods):
                continue
            run_dir = out / "runs" / run.name
            backbone = run_dir / "backbone.pth"
            argv = ["pretrain", "--method", run.method, "--data", str(datasets.get("imagenet", "")),
                    "--out", str(run_dir), "--resume", "auto", *(("--preset", run.preset) if run.preset else ()),
                    *(("--arch", mode.arch) if mode.synth_scale else ()), *run.args,
                    *((f"--seed={seed}",) if seed else ())]
            argv = with_extra(argv + list(precision), args.pretrain_arg)
            st = Stage(f"pretrain {run.name}", argv, logs / f"pretrain-{run.name}.log", distributed=True,
                       needs=["data synth"] if mode.synth_scale else [], output=str(backbone), cost=run.cost)
            _resolve(st, out, mode, {**upstream, **data_in(["imagenet/train"])}, backbone.exists(), [run_dir],
                     f"{backbone} exists")
            if "imagenet" not in datasets:
                st.missing = missing.get("imagenet", "ImageNet not found")
            stages.append(st)
            checkpoints.append((str(backbone), [st.name], {**upstream, "checkpoint": st.key}, ("pretrained", run.name)))
            archs[str(backbone)] = run.arch(mode)
            if run.arch(mode) not in baseline_archs and not args.random_arch:   # a Transformer preset's own random init
                baseline_archs.append(run.arch(mode))
        # a published checkpoint and a random init of its architecture; first in the plan, as their
        # evaluations need no pretraining and are the longest (stages run side by side start them early)
        refs = []
        for ref in mode.references:
            path = ref.find()
            if path is None:
                missing[ref.name] = ref.missing
            refs.append((str(path) if path else ref.name, [],
                         {**upstream, "checkpoint": resume.file_identity(str(path)) if path else ref.name},
                         ("reference",)))
            archs[refs[-1][0]] = ref.arch
            if not args.no_random:
                refs.append(_random(ref.arch, seed, upstream, ("reference-random",)))
                archs[refs[-1][0]] = ref.arch
        checkpoints[:0] = refs
    for arch in baseline_archs if not args.no_random else ():
        baseline = _random(arch, seed, upstream, ("pretrained",))
        same = next((i for i, c in enumerate(checkpoints) if c[0] == baseline[0]), None)
        if same is not None:   # a reference's random init (or a given checkpoint) may be the same: planned once
            ckpt, needs, inputs, groups = checkpoints[same]
            checkpoints[same] = (ckpt, needs, inputs, None if groups is None else (*groups, "pretrained"))
        else:
            checkpoints.append(baseline)
            archs[baseline[0]] = arch
    names = short_names([c[0] for c in checkpoints])

    for i, (c, _, inputs, groups) in enumerate(checkpoints):
        if c not in args.checkpoint:
            continue
        report = out / "preflight" / f"{names[c]}.json"
        argv = ["preflight", c, "--data", str(datasets.get("imagenet", "")), "--json", str(report),
                *(("--img-size", "64") if mode.synth_scale else ()), *(("--force",) if args.force else ())]
        st = Stage(f"preflight {names[c]}", argv, logs / f"preflight-{names[c]}.log",
                   needs=["data synth"] if mode.synth_scale else [], output=str(report), cost=1)
        _resolve(st, out, mode, {**upstream, "checkpoint": resume.file_identity(c), "force": str(args.force),
                                 **data_in(["imagenet/train"])},
                 report.exists(), [report], f"{report} exists")
        if "imagenet" not in datasets:
            st.missing = missing.get("imagenet", "ImageNet not found")
        stages.append(st)
        preflights[c] = str(report)
        checkpoints[i] = (c, [st.name], inputs, groups)

    for ckpt, needs, inputs, groups in checkpoints:
        short = names[ckpt]
        for ev in mode.evals:
            if groups is not None and not set(groups) & set(ev.on):
                continue
            if ev.resnet_only and ckpt in archs and archs[ckpt] not in TORCHVISION_RESNETS:
                continue
            work = out / "work" / ev.label / short
            fill = {"work": str(work), "cache": str(out / "cache" / "features"),
                    "det_engine": args.det_engine or "detectron2",
                    **{k: str(v) for k, v in datasets.items()}}
            absent = [a[1:-1] for a in ev.argv if a.startswith("{") and a[1:-1] not in fill]
            # the data it reads: its dataset and the files its options name ({labels_1pct})
            reads = [k for k in (ev.needs, *(a[1:-1] for a in ev.argv if a.startswith("{"))) if k in datasets]
            ev_inputs = {**inputs, **data_in([part for k in dict.fromkeys(reads) for part in
                                              (("imagenet/train", "imagenet/val") if k == "imagenet" else (k,))])}
            # --seed S offsets the protocol's seeds (5 trials: S..S+4), so another seed re-runs the
            # same protocol rather than a one-seed version of it
            for ev_seed in (seed + s for s in ev.seeds):
                argv = with_extra(["eval", ev.argv[0], "--checkpoint", ckpt, "--results", str(out / "results"),
                                   *[a.format_map(fill) if "{" in a and a[1:-1] not in absent else a for a in ev.argv[1:]],
                                   *(("--preflight", preflights[ckpt]) if ckpt in preflights else ())], args.eval_arg)
                if ev_seed:
                    argv += ["--seed", str(ev_seed)]
                own = launches_its_own(argv)   # detectron2: one process over the node's GPUs, not torchrun
                st = Stage(f"eval {ev.label} {short}" + (f" seed {ev_seed}" if ev_seed else ""), argv,
                           logs / f"eval-{ev.label}-{short}{'-s%d' % ev_seed if ev_seed else ''}.log",
                           distributed=ev.distributed and not own, all_gpus=ev.distributed and own,
                           needs=needs + (["data synth"] if mode.synth_scale else []), cost=ev.cost)
                if "{cache}" in ev.argv:   # wait for the stage that fills this checkpoint's feature cache
                    st.after = [s.name for s in stages if s.argv[2:4] == ["--checkpoint", ckpt]
                                and "--cache-dir" in s.argv][:1]
                found = matching_records(records, ckpt, ev.task, ev.protocol, ev_seed)
                # its own outputs: the record and this seed's folders in the work root, which the
                # runner names ...-s<seed>; the other seeds' stages share the root and must not
                # move (supersede) one another's work
                own = sorted(work.glob(f"*-s{ev_seed}")) if work.is_dir() else []
                _resolve(st, out, mode, ev_inputs, bool(found), [p for p, _ in found] + own,
                         f"record {found[-1][1]['id']} exists" if found else "")
                for key in [ev.needs, *absent]:   # the dataset, and e.g. {labels_1pct}
                    if key not in datasets and st.missing is None:
                        st.missing = missing.get(key, f"{key} not found")
                if ckpt in missing and st.missing is None:   # a reference checkpoint not installed
                    st.missing = missing[ckpt]
                stages.append(st)
    clash = sorted(n for n, k in Counter(st.name for st in stages).items() if k > 1)
    if clash:   # they would share a state entry, a log and a status line, where one stage's FAIL hides
        raise ValueError(f"two stages are named {clash[0]!r}: the plan cannot tell them apart")
    return stages


def launches_its_own(argv: list[str]) -> bool:
    """Whether a command starts its own process per GPU (detectron2's ``launch``), so that under
    torchrun every rank would start a whole run."""
    return any(a == "--engine=detectron2" or (a == "--engine" and argv[i + 1:i + 2] == ["detectron2"])
               for i, a in enumerate(argv))


def selected(run, methods: list[str] | None) -> bool:
    """Whether ``--methods`` picks ``run``: by its name or its method; an optional run (a
    Transformer preset) only by its name, or by the word ``transformers``."""
    if run.optional:
        return bool(methods) and (run.name in methods or "transformers" in methods)
    return not methods or run.name in methods or run.method in methods


def _random(arch: str, seed: int, upstream: dict[str, str], groups: tuple[str, ...]):
    """The random-init baseline of ``arch``; with ``--seed S`` its initialisation is seeded with S
    too (its row keeps the name ``random-<arch>``)."""
    ckpt = f"random:{arch}" + (f":{seed}" if seed else "")
    return ckpt, [], {**upstream, "checkpoint": ckpt}, groups


def short_names(ckpts: list[str]) -> dict[str, str]:
    """Each checkpoint's name in stage names, logs, pre-flight reports and work folders: its
    ``short_name``, or, where checkpoints share one (``ca/r18.pth`` and ``cb/r18.pth``), that name and
    8 hex digits of the sha256 of its absolute path, so that no two share a stage or its state."""
    short = {c: short_name(c) for c in dict.fromkeys(ckpts)}
    count = Counter(short.values())
    return {c: f"{n}-{_where(c)}" if count[n] > 1 else n for c, n in short.items()}


def checkpoint_location(ckpt: str) -> str:
    """Where a ``--checkpoint`` is: a file's real path, else the name itself (a zoo or ``random:`` name)."""
    return os.path.realpath(ckpt) if os.sep in ckpt or Path(ckpt).exists() else ckpt


def _where(ckpt: str) -> str:
    return hashlib.sha256(checkpoint_location(ckpt).encode()).hexdigest()[:8]


def _data_inputs(datasets: dict[str, Path], keys, identities: dict[Path, str]) -> dict[str, str]:
    """``{"data KEY": identity}`` of each data folder (``imagenet/train``) or file (``labels_1pct``)
    a stage reads (``datasets.identity.data_identity``), each listed once per plan (``identities``)."""
    found = {}
    for key in keys:
        name, _, part = key.partition("/")
        if name not in datasets:
            continue
        path = datasets[name] / part if part else datasets[name]
        if path not in identities:
            identities[path] = data_identity(path)
        found[f"data {key}"] = identities[path]
    return found


def short_name(ckpt: str) -> str:
    if ckpt.startswith("random:"):
        parts = ckpt.split(":")[1:]
        if parts[-1].isdigit():   # random:ARCH:SEED is named like random:ARCH (the stage adds "seed S")
            parts = parts[:-1]
        return "random-" + "-".join(parts)
    p = Path(ckpt)
    name = p.parent.name if p.stem in ("backbone", "checkpoint", "model") and p.parent.name else p.stem
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
