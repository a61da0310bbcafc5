"""``--engine detectron2``: run MoCo's detection protocols with detectron2 itself.

The runner (``transfer/runner.py``) loads the checkpoint strictly, seeds, picks the seed's folder
and writes the record; per seed, :func:`run_seed` writes the backbone as a detectron2 ``.pkl`` and
a complete YAML config (``transfer/adapters/detectron2.py``), registers the user's datasets under
``mocobench_*`` names, then:

1. the config: the protocol's YAML, then every field of the resolved protocol
   (``protocol_settings``: solver, input sizes, anchors, RPN/ROI sampling, test thresholds,
   precise BN, checkpoint period, workers), the device (``MODEL.DEVICE``), ``NUM_CLASSES`` from
   the registered dataset's metadata, and last the user's ``--opts KEY VALUE ...`` (as
   detectron2's own tools merge them). It is dumped to ``<run>/config.yaml``, and that file is
   what the workers read;
2. ``detectron2.engine.launch`` runs :func:`worker` (module level, so spawned processes can
   unpickle it) on every GPU of ``--device cuda``, one process on CPU or ``cuda:N``;
   ``dist_url="auto"`` (a free local port) for several GPUs. Each worker applies the
   compatibility patches (``transfer/adapters/detectron2_compat.py``) for its own lifetime,
   trains with ``DefaultTrainer`` (resuming from ``<run>/last_checkpoint`` when present; the
   optimizer saved too and the training data from ``detectron2_data``, so a resume is exact), and
   takes the evaluation the trainer already ran after the last iteration (no second one);
3. hand-off: rank 0 writes ``<run>/results.json``; the parent reads it and returns the outcome;
   the runner writes exactly one record per seed, with the engine config dumped beside it
   (``<record>.detectron2.yaml``).

When detectron2 cannot be imported, :func:`check_protocol` refuses the command at once (a usage
error, before any work) with the message of :class:`Detectron2Unavailable`: how to install it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = (
    "detectron2 is not installed (import detectron2 failed). Install it into this environment with\n"
    "  ./run_all.sh engines        (or: bash tools/engines/detectron2.sh PYTHON)\n"
    "which installs detectron2 v0.6's Python package (no compiled ops, none are needed for these "
    "protocols); or build it from source with a C++/CUDA toolchain: "
    "pip install 'git+https://github.com/facebookresearch/detectron2.git'; "
    "or use the default --engine torchvision, which runs the same protocols without it."
)


class Detectron2Unavailable(RuntimeError):
    """detectron2 cannot be imported; the message says how to install it."""


def require_detectron2():
    try:
        import detectron2  # noqa: F401
    except ImportError as e:
        raise Detectron2Unavailable(f"{INSTALL_HINT}\n(import error: {e})") from None
    return detectron2


def register_datasets(dataset: str, data_root: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Register the user's VOC or COCO folders under ``mocobench_*`` names; (train, test) names.

    The names carry a hash of the folder, so two data roots in one process never collide.
    """
    from detectron2.data import DatasetCatalog
    from detectron2.data.datasets import register_coco_instances, register_pascal_voc

    import hashlib

    root = Path(data_root).resolve()
    tag = hashlib.sha256(str(root).encode()).hexdigest()[:8]  # the same in every spawned process
    if dataset == "voc":
        from mocobench.datasets.voc import year_dir

        specs = [(f"mocobench_{tag}_voc_2007_trainval", "2007", "trainval"),
                 (f"mocobench_{tag}_voc_2012_trainval", "2012", "trainval"),
                 (f"mocobench_{tag}_voc_2007_test", "2007", "test")]
        for name, year, split in specs:
            if name not in DatasetCatalog.list():
                register_pascal_voc(name, str(year_dir(root, year)), split, int(year))
        return [s[0] for s in specs[:2]], [specs[2][0]]
    from mocobench.datasets.coco import coco_split_paths

    if not (root / "annotations").is_dir() and (root / "coco").is_dir():
        root = root / "coco"
    names = []
    for split in ("train2017", "val2017"):
        name = f"mocobench_{tag}_coco_{split}"
        images, ann = coco_split_paths(root, split)
        if name not in DatasetCatalog.list():
            register_coco_instances(name, {}, str(ann), str(images))
        names.append(name)
    return [names[0]], [names[1]]


def dataset_classes(train_names, test_names) -> list[str]:
    """The class names of the registered datasets (COCO's are known once its JSON is read);
    train and test must agree."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    classes = []
    for name in [*train_names, *test_names]:
        meta = MetadataCatalog.get(name)
        if not hasattr(meta, "thing_classes"):
            DatasetCatalog.get(name)  # load_coco_json sets thing_classes
        classes.append(list(meta.thing_classes))
    if any(c != classes[0] for c in classes):
        raise ValueError(f"the datasets {', '.join([*train_names, *test_names])} have different classes: {classes}")
    return classes[0]


def _metrics(results: dict, dataset: str) -> dict[str, float]:
    """detectron2's evaluator output (already in percent) -> record metric names."""
    if dataset == "voc":
        bbox = results["bbox"]
        return {"AP": bbox["AP"], "AP50": bbox["AP50"], "AP75": bbox["AP75"]}
    out = {}
    for iou_type in ("bbox", "segm"):
        for k, v in results.get(iou_type, {}).items():
            if k in ("AP", "AP50", "AP75", "APs", "APm", "APl") and v == v:
                out[f"{iou_type}_{k}"] = float(v)
    return out


@dataclass(frozen=True)
class Job:
    """Everything a worker needs: plain values, so spawned processes can unpickle it."""

    config: str          # the dumped config (OUTPUT_DIR, SEED, datasets, weights inside)
    dataset: str         # voc | coco
    data_root: str
    resume: bool = True


def _trainer_class(dataset: str):
    from detectron2.engine import DefaultTrainer
    from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator

    from mocobench.transfer.adapters.detectron2_compat import coco_evaluator_kwargs

    from mocobench.transfer.detection.detectron2_data import ResumableTrainLoader, iteration_seed_hook

    class Trainer(DefaultTrainer):
        """detectron2's trainer with training data and random draws that a resume continues exactly
        (``detectron2_data``), and the task's evaluator."""

        @classmethod
        def build_train_loader(cls, cfg):
            return ResumableTrainLoader(cfg)

        def build_hooks(self):
            hooks = super().build_hooks()
            # PreciseBN's loader (built by build_train_loader too; absent without BN layers)
            self._precise_bn = next((h for h in hooks if isinstance(getattr(h, "_data_loader", None),
                                                                    ResumableTrainLoader)), None)
            if self._precise_bn is not None:
                self._precise_bn._data_loader.stream = "precise_bn"
            return [iteration_seed_hook(self.cfg.SEED), *hooks]

        def resume_or_load(self, resume=True):
            super().resume_or_load(resume=resume)
            self._trainer.data_loader.start_iter = self.start_iter
            bn = self._precise_bn   # it drew NUM_ITER batches each time it ran before start_iter
            if bn is not None and bn._period > 0:
                bn._data_loader.start_iter = self.start_iter // bn._period * bn._num_iter

        # detectron2 0.6's DefaultTrainer saves only the iteration and the hooks' states: a resume
        # restarted SGD's momentum and took the first step at the warmup's starting LR. Later
        # detectron2 saves its inner trainer (the optimizer, AMP's scaler) under "_trainer", as here.
        def state_dict(self):
            return {**super().state_dict(), "_trainer": self._trainer.state_dict()}

        def load_state_dict(self, state_dict):
            if "_trainer" not in state_dict:
                raise ValueError(f"{self.checkpointer.get_checkpoint_file()}: a work checkpoint without the "
                                 "optimizer's state (written before mocobench saved it), so the run cannot "
                                 "continue exactly; rerun with --resume no")
            super().load_state_dict(state_dict)
            self._trainer.load_state_dict(state_dict["_trainer"])

        @classmethod
        def build_evaluator(cls, cfg, dataset_name, output_folder=None):
            if dataset == "voc":
                return PascalVOCDetectionEvaluator(dataset_name)
            return COCOEvaluator(dataset_name, output_dir=output_folder or os.path.join(cfg.OUTPUT_DIR, "inference"),
                                 **coco_evaluator_kwargs())

    return Trainer


def worker(job: Job) -> None:
    """One detectron2 process (inside ``launch``): train, then the trainer's own final evaluation;
    rank 0 hands the results over in ``<OUTPUT_DIR>/results.json``."""
    from mocobench.transfer.adapters.detectron2_compat import patched

    with patched():
        from detectron2.config import get_cfg
        from detectron2.engine import default_setup
        from detectron2.utils import comm

        from mocobench.core.io import atomic_write_json
        from mocobench.transfer.adapters.detectron2 import register_roi_heads

        register_roi_heads()
        register_datasets(job.dataset, job.data_root)  # again in each spawned process
        cfg = get_cfg()
        cfg.merge_from_file(job.config)
        cfg.freeze()
        default_setup(cfg, None)
        trainer = _trainer_class(job.dataset)(cfg)
        trainer.resume_or_load(resume=job.resume)
        start = trainer.start_iter
        trainer.train()
        # DefaultTrainer's EvalHook evaluated once after the last iteration (train() returns that
        # only with TEST.EXPECTED_RESULTS set); a second evaluation here only if it did not run.
        results = getattr(trainer, "_last_eval_results", None)
        if results is None:
            results = trainer.test(cfg, trainer.model)
        if comm.is_main_process():
            atomic_write_json(Path(cfg.OUTPUT_DIR) / "results.json",
                              {"results": results, "start_iter": start, "max_iter": cfg.SOLVER.MAX_ITER})


# Protocol fields this engine sets when the command does not give them (cli.py): the preset as this
# engine runs it. NOTE: the protocols default to bf16 for our engine; detectron2 0.6 has no bf16 and
# the official MoCo runs are fp32, so fp32 is this engine's preset (its records state no change).
ENGINE_DEFAULTS = {"bf16": False}


def opts_changes(opts: list[str], cfg: dict) -> dict:
    """``{"opts.KEY": value}`` for each ``--opts KEY VALUE`` pair, the value as detectron2 merged it
    into ``cfg`` (its config as a dict): settings beyond the protocol, so the run is not the paper's
    recipe (``run.preset_changes``)."""
    out = {}
    for key in opts[0::2]:
        node = cfg
        for part in key.split("."):
            node = node[part]
        out[f"opts.{key}"] = node
    return out


# --opts keys the engine sets from an option of ours -> that option. Given in --opts, such a key would
# override the option while the record still stated it (the seed, the weights, the data), or move
# the hand-off (OUTPUT_DIR); so it is refused, naming the option. The detectron2 keys of the protocol's
# fields (PROTOCOL_KEYS) are owned the same way, by their --field= overrides (:func:`owned_opts`).
OPTS_OWNED = {
    "SEED": "--seed/--seeds",
    "OUTPUT_DIR": "--work-dir",
    "MODEL.WEIGHTS": "--checkpoint",
    "DATASETS": "--dataset and --data",
    "MODEL.DEVICE": "--device",
    "MODEL.ROI_HEADS.NUM_CLASSES": "--dataset and --data (the registered dataset's classes)",
    **dict.fromkeys(("MODEL.BACKBONE.NAME", "MODEL.RESNETS.DEPTH", "MODEL.RESNETS.STRIDE_IN_1X1",
                     "MODEL.RESNETS.NUM_GROUPS", "MODEL.RESNETS.WIDTH_PER_GROUP"),
                    "--checkpoint (its architecture: weights of another would not all load)"),
    # detectron2's auto-scaling would rescale the batch, LR and schedule after config.yaml is written
    "SOLVER.REFERENCE_WORLD_SIZE": "the protocol's --ims_per_batch= and --base_lr=",
    # the input convention the checkpoint was checked for (refuse_other_convention)
    **dict.fromkeys(("MODEL.PIXEL_MEAN", "MODEL.PIXEL_STD", "INPUT.FORMAT"),
                    "the checkpoint (torchvision's RGB ImageNet normalisation)"),
}


# --opts keys detectron2 0.6 accepts and this engine never reads -> why (checked in its source):
# TEST.AUG.* only by DatasetMapperTTA, which tools/train_net.py's test_with_TTA builds, not
# DefaultTrainer; TEST.KEYPOINT_OKS_SIGMAS only by a COCOEvaluator given the config; GLOBAL only through
# global_cfg, filled by set_global_cfg, which neither detectron2 nor this engine calls.
OPTS_UNREAD = {
    "TEST.AUG": "test-time augmentation is not run by this engine (only detectron2's tools/train_net.py "
                "runs it); the papers' numbers are single-scale",
    "TEST.KEYPOINT_OKS_SIGMAS": "detectron2 reads it only in a COCOEvaluator built from the config; this "
                                "engine builds its evaluator without it (and no protocol has keypoints)",
    "GLOBAL": "detectron2's global_cfg for quick hacks, which nothing in this engine sets or reads",
}


def owned_opts() -> dict[str, str]:
    """:data:`OPTS_OWNED` and, for each detectron2 key a protocol field sets, the protocol's
    ``--field=`` override(s), read from ``PROTOCOL_KEYS`` (its first word; ``A.{B,C}`` is two keys;
    ``-`` names no key)."""
    import re

    from mocobench.transfer.adapters.detectron2 import PROTOCOL_KEYS

    fields: dict[str, list[str]] = {}
    for field, target in PROTOCOL_KEYS.items():
        key = target.split()[0]
        if key == "-":
            continue
        m = re.fullmatch(r"(.*)\{(.*)\}", key)
        for k in ([m.group(1) + leaf for leaf in m.group(2).split(",")] if m else [key]):
            fields.setdefault(k, []).append(f"--{field}=")
    return {**OPTS_OWNED, **{k: "the protocol's " + " and ".join(f) for k, f in fields.items()}}


def refuse_owned_opts(opts: list[str]) -> None:
    """Raise UsageError for the first KEY of ``opts`` (KEY VALUE pairs) that is an owned key
    (:func:`owned_opts`) or an unread one (:data:`OPTS_UNREAD`), lies under one or holds one (dotted
    segments), naming the key as typed and the option to use or why it would not be read. Needs no
    detectron2: it can run before any work."""
    from mocobench.core.overrides import owned_keys_hit
    from mocobench.transfer.runner import UsageError

    from mocobench.transfer.detection.detectron2_data import SAMPLER

    owned = owned_opts()

    def why(key: str, rule: str) -> str:
        return (f"mocobench sets {key} from {owned[rule]}" if rule in owned else
                f"{key} would not be read: {OPTS_UNREAD[rule]}")

    for key, value in zip(opts[0::2], opts[1::2]):
        hits = owned_keys_hit(key, [*owned, *OPTS_UNREAD])
        if hits:
            raise UsageError(f"--opts {key} {value}: " + "; ".join(why(k, rule) for k, rule in hits))
        if key == "DATALOADER.SAMPLER_TRAIN" and value != SAMPLER:
            raise UsageError(f"--opts {key} {value}: this engine draws training images as {SAMPLER} does "
                             "(so that a resume is exact); other samplers are not supported")


def engine_settings(settings: dict, train_names, test_names, seed: int, out_dir: Path) -> dict:
    """The protocol's detectron2 ``settings`` and what the engine sets beside them (all owned by
    options of ours: :func:`owned_opts`)."""
    return {**settings, "DATASETS.TRAIN": list(train_names), "DATASETS.TEST": list(test_names),
            "SEED": seed, "OUTPUT_DIR": str(out_dir)}


def build_config(base_yaml: Path, settings: dict, opts: list[str], out_path: Path):
    """The protocol YAML, then ``settings``, then ``opts`` (last); dumped to ``out_path``. (An option
    that sets what the engine sets was refused before any work: :func:`refuse_owned_opts`.)"""
    from detectron2.config import get_cfg

    from mocobench.core.io import atomic_write_text
    from mocobench.transfer.runner import UsageError

    if len(opts) % 2:
        raise UsageError(f"--opts takes KEY VALUE pairs; got an odd number of items: {opts}")
    cfg = get_cfg()
    cfg.merge_from_file(str(base_yaml))
    flat = [x for k, v in settings.items() for x in (k, v)]
    cfg.merge_from_list(flat)
    try:
        cfg.merge_from_list(list(opts))
    except (KeyError, AssertionError, ValueError) as e:  # yacs: "Non-existent config key", type mismatch
        raise UsageError(f"--opts {' '.join(opts)}: {e}") from None
    atomic_write_text(out_path, cfg.dump())
    return cfg


def _device(device: str | None) -> tuple[str, int]:
    """(MODEL.DEVICE, processes): ``cuda`` uses every visible GPU, ``cuda:N`` and ``cpu`` one process."""
    import torch

    from mocobench.core.dist import pick_device
    from mocobench.transfer.runner import UsageError

    try:
        dev = pick_device(device, local_rank=0)
    except RuntimeError as e:  # cuda asked for, none here: a usage error, reported without a traceback
        raise UsageError(str(e)) from None
    if dev.type != "cuda":
        return "cpu", 1
    if device and ":" in device:
        torch.cuda.set_device(dev)
        return "cuda", 1
    return "cuda", torch.cuda.device_count()


def check_protocol(protocol) -> None:
    """Before any work: detectron2 importable, a config for ``protocol``, not under torchrun (usage errors)."""
    from mocobench.core.dist import env_dist
    from mocobench.transfer.runner import UsageError

    if env_dist().world > 1:  # each rank would launch a whole detectron2 run of its own, into one folder
        raise UsageError("--engine detectron2 starts one process per GPU itself (detectron2's launch, "
                         "--device cuda takes every visible GPU): run it as one process, not under torchrun")
    try:
        require_detectron2()
    except Detectron2Unavailable as e:
        raise UsageError(str(e)) from None
    from mocobench.transfer.adapters.detectron2 import PROTOCOLS as D2_PROTOCOLS

    if protocol.name not in D2_PROTOCOLS:
        raise UsageError(f"protocol {protocol.name} has no detectron2 config (known: {', '.join(D2_PROTOCOLS)}); "
                         "the tiny protocols run with --engine torchvision")


def run_seed(r, protocol, dataset: str, data_root, *, device: str | None = None, opts: list[str] = ()):
    """One seed with detectron2 on ``--device`` (``cuda``: every GPU, in processes of its own):
    the Outcome (the parent process is the runner's only rank)."""
    import torch
    import yaml

    from mocobench.core.settings import protocol_and_run
    from mocobench.transfer import runner
    from mocobench.transfer.adapters.detectron2 import (protocol_settings, register_roi_heads,
                                                        write_detectron2_config, write_detectron2_pkl)
    from mocobench.transfer.adapters.detectron2_compat import patched
    from mocobench.transfer.detection.data import build_datasets
    from mocobench.transfer.detection.protocols import preset_changes

    backbone, fields = r.backbone, r.report.record_fields()
    from mocobench.transfer.adapters.cli import refuse_other_convention

    refuse_other_convention(r.backbone, r.report, "this engine")
    model_device, num_procs = _device(device)
    if backbone.arch != "resnet50":
        raise ValueError(f"the detectron2 configs are for ResNet-50 (MoCo's protocols), not {backbone.arch}")
    if protocol.ims_per_batch % num_procs:
        raise ValueError(f"ims_per_batch={protocol.ims_per_batch} is not divisible by {num_procs} GPUs")
    # our readers check the files (ids, classes, sizes, boxes, non-empty test set) before detectron2's
    # own loaders read them, which check far less and only as training goes
    *checked, info = build_datasets(dataset, data_root, with_masks=protocol.uses_masks(dataset))
    from mocobench.datasets.images import find_unreadable

    # the readers open every image; a file cut short opens too, so its data is read here, not hours in
    unreadable = [path for ds in checked for path in ds.skipped] + find_unreadable(
        ds.image_path(i) for ds in checked for i in range(len(ds)))
    if unreadable:
        raise ValueError(f"{unreadable[0]}: unreadable image; detectron2's loaders read every listed image and "
                         f"cannot skip it: repair it or take it out of the split ({len(unreadable)} such)")
    if dataset == "voc":   # its evaluator reads the test XML with a stricter parser, after the schedule
        from mocobench.transfer.detection.devkit_xml import evaluator_problems

        test_set = checked[1]
        bad = evaluator_problems(d / "Annotations" / f"{i}.xml" for d, i, _ in test_set.items)
        if bad:
            raise ValueError(f"{bad[0]}: detectron2's VOC evaluator (parse_rec) would fail on it after training "
                             f"({len(bad)} such test annotations); write integers and every field, or use "
                             "--engine torchvision, whose reader takes them")
    out_dir = r.work
    weights = write_detectron2_pkl(out_dir / "backbone.pkl", backbone.net.state_dict(), fields)
    with patched():
        register_roi_heads()
        train_names, test_names = register_datasets(dataset, data_root)
        classes = dataset_classes(train_names, test_names)
        settings = protocol_settings(protocol, dataset, len(classes), model_device)
    (out_dir / "results.json").unlink(missing_ok=True)
    base = write_detectron2_config(protocol.name, weights, out_dir / "protocol.yaml", dataset_root=str(data_root),
                                   num_gpus=num_procs, ims_per_batch=protocol.ims_per_batch,
                                   output_dir=str(out_dir))
    run_settings = engine_settings(settings, train_names, test_names, r.seed, out_dir)
    with patched():
        cfg = build_config(base, run_settings, list(opts), out_dir / "config.yaml")
    job = Job(config=str(out_dir / "config.yaml"), dataset=dataset, data_root=str(data_root),
              resume=r.resume == "auto")
    with patched():  # for the parent's imports; each worker patches for itself
        from detectron2.engine import launch

        launch(worker, num_procs, dist_url="auto" if num_procs > 1 else None, args=(job,))
    handoff = out_dir / "results.json"
    if not handoff.is_file():
        raise RuntimeError(f"{out_dir}: detectron2 finished without results.json (see {out_dir / 'log.txt'})")
    got = json.loads(handoff.read_text())
    gpu = torch.cuda.get_device_name(0) if model_device == "cuda" else "cpu"
    protocol_fields, protocol_run = protocol_and_run(protocol)
    ran = yaml.safe_load(cfg.dump())
    changes = preset_changes(protocol, opts_changes(list(opts), ran), ENGINE_DEFAULTS)
    return runner.Outcome(
        metrics=_metrics(got["results"], dataset), engine="detectron2",
        dataset={"name": info["name"], "path": str(data_root),
                 "test": "VOC2007 test" if dataset == "voc" else "val2017",
                 "splits": {"train": list(train_names), "test": list(test_names)}},
        # the protocol and what changes the computation beyond it (--opts); detectron2's own
        # rendering of it names this run's seed, folders and datasets, so it belongs to the run
        config={"protocol": protocol_fields, "num_classes": len(classes), "opts": list(opts),
                "precision": "fp16" if cfg.SOLVER.AMP.ENABLED else "fp32",
                "lr": cfg.SOLVER.BASE_LR,
                "lr_scaling": f"linear: base_lr {protocol.base_lr} x ims_per_batch "
                              f"{protocol.ims_per_batch} / reference_batch {protocol.reference_batch}"},
        run={**protocol_run, "detectron2_settings": run_settings,
             "detectron2_config": ran, "num_processes": num_procs,
             "resumed_from_iteration": got["start_iter"], "preset_changes": changes},
        device=f"{num_procs}x{gpu}" if model_device == "cuda" else "cpu",
        beside={"detectron2_config_file": ("detectron2.yaml", cfg.dump())})
