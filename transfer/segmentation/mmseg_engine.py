"""``--engine mmseg``: MMSegmentation's own FCN training and testing on a converted backbone.

One seed, top to bottom (:func:`run_seed`, called by ``transfer/runner.py``, which loads the
checkpoint, seeds and writes the record): convert the checkpoint (``backbone.`` keys,
:mod:`mocobench.transfer.adapters.mmseg`); lay out the data as mmseg reads it; write the FCN config
from the protocol; merge ``--cfg-options`` last (as mmseg's ``tools/train.py``); train; test once;
return the metrics and the merged config (the runner writes it beside the record).

- Data. Cityscapes: mmseg reads ``*_gtFine_labelTrainIds.png``, which only mmseg's converter
  writes; the suite's data has ``labelIds``, so the train-id masks are written into the work dir
  (``labelTrainIds/<split>/<city>/``) with the official table (``mocobench.datasets.cityscapes``). VOC: the
  split's id list is rewritten one id per line (``train_aug`` lists also come with two columns).
- Protocol fields become mmseg settings (crop, scale range, flip, batch, workers, schedule,
  inference, intervals); mmseg's resize bound follows the crop (``FCNConfig.with_crop``), so
  small images are not blown up to 2048x1024. The record's config is read back from the merged
  mmseg config (``describe``), so ``--cfg-options`` changes show in the record.
- ``--cfg-options`` reaches only what no option of ours sets: a key the engine sets from an option
  (seed, work dir, resume, checkpoint, data, device, a protocol field) or one mmseg would never read
  (the val loop, test-time augmentation, the config's template variables) is refused, naming the
  option to use (:data:`CFG_OWNED`, :data:`CFG_UNREAD`), so the record states the configuration
  that ran.
- NOTE: mmseg's configs validate every ``val_interval`` iterations and at the end of training;
  we drop the validation loop and test once after training (the same weights and val set give
  the number mmseg reports at the end).
- Resume (``--resume``): ``auto`` continues from mmengine's last checkpoint in the work dir, ``no``
  starts at iteration 0, a path resumes from that mmengine checkpoint. A finished run is not run
  again (the runner's rule); another configuration gets a work folder of its own (the runner's
  settings key).
- The mmseg compatibility patches (``mocobench.transfer.adapters.mmseg_compat``) hold only inside
  :func:`run_seed`.
"""

from __future__ import annotations

import importlib
import uuid
from pathlib import Path

from mocobench.core.io import atomic_torch_save, atomic_write_bytes, atomic_write_text
from mocobench.core.settings import protocol_and_run, run_fields
from mocobench.transfer.adapters.mmseg import MMSEG_CONFIGS
from mocobench.transfer.segmentation.protocols import preset_changes

# (our protocol, dataset) -> the mmseg config it reproduces (transfer.adapters.mmseg.MMSEG_CONFIGS)
MMSEG_PROTOCOLS = {(protocol, dataset): name for name, (protocol, dataset, _) in MMSEG_CONFIGS.items()}


def why_unavailable() -> str | None:
    """None when mmseg can run here; else one line saying what is missing and how to fix it."""
    from mocobench.transfer.adapters.mmseg_compat import mmcv_ops_stub

    fix = "bash tools/engines/mmseg.sh PYTHON (or ./run_all.sh engines)"
    for mod in ("mmengine", "mmcv", "ftfy", "regex"):
        try:
            importlib.import_module(mod)
        except ImportError as e:
            return f"{mod} is not importable ({e}); install the engine: {fix}"
    import mmcv

    version = tuple(int(x) for x in mmcv.__version__.split(".")[:2] if x.isdigit())
    if version >= (2, 2):
        return f"mmcv {mmcv.__version__} is installed but mmsegmentation 1.2.x asserts mmcv<2.2.0; {fix}"
    with mmcv_ops_stub():
        try:
            importlib.import_module("mmseg")
        except (ImportError, AssertionError) as e:
            return f"mmsegmentation is not importable ({type(e).__name__}: {e}); {fix}"
    return None


def check_protocol(protocol, dataset: str) -> None:
    """Raise ValueError unless ``--engine mmseg`` can run ``protocol`` on ``dataset``."""
    if (protocol.name, dataset) not in MMSEG_PROTOCOLS:
        runs = ", ".join(f"{p} on {d}" for p, d in MMSEG_PROTOCOLS)
        raise ValueError(f"--engine mmseg runs {runs}; not {protocol.name!r} on {dataset}")
    if protocol.head != "fcn":
        raise ValueError(f"--engine mmseg builds mmseg's FCN head; head={protocol.head!r} runs on "
                         "--engine torchvision")
    if protocol.frozen_backbone:
        raise ValueError("--engine mmseg fine-tunes the whole network; frozen_backbone=true runs on "
                         "--engine torchvision")


def fcn_config(protocol, dataset: str, arch: str, world: int, device_type: str):
    """The ``FCNConfig`` that runs ``protocol`` (every field of it) in ``world`` processes."""
    from mocobench.transfer.adapters.mmseg import RESNET_DEPTHS, fcn_from_protocol

    check_protocol(protocol, dataset)
    if arch not in RESNET_DEPTHS:
        raise ValueError(f"--engine mmseg builds mmseg's ResNet ({', '.join(RESNET_DEPTHS)}); the checkpoint is {arch}")
    if protocol.batch_size % world:
        raise ValueError(f"batch_size={protocol.batch_size} does not split over {world} processes")
    sync = protocol.sync_bn and world > 1
    if sync and device_type != "cuda":
        raise ValueError("sync_bn=true with several processes needs CUDA (torch's SyncBatchNorm has no "
                         "CPU kernel); pass --sync-bn=false")
    return fcn_from_protocol(protocol, dataset, depth=RESNET_DEPTHS[arch], world=world,
                             norm="SyncBN" if sync else "BN")


# -- --cfg-options: the keys the engine owns ------------------------------------------------------
# Config keys that the engine sets from an option of ours -> that option. Given in --cfg-options, such
# a key would override the option while the record still stated the option (seed, splits, schedule),
# be overwritten by the engine, or break the run far from its cause; so it is refused, naming the
# option to use. A key is refused when it is one of these, lies under one, or holds one (dotted
# segments). The protocol's fields are those fcn_from_protocol maps (adapters/mmseg.py).
_DATA = "--data and the split options (--train_split=, --val_split=)"
CFG_OWNED = {
    "randomness": "--seed/--seeds",
    "work_dir": "--work-dir", "experiment_name": "--work-dir",
    "resume": "--resume", "load_from": "--resume",
    "checkpoint": "--checkpoint", "model.pretrained": "--checkpoint", "model.backbone.init_cfg": "--checkpoint",
    "model.backbone.depth": "--checkpoint (its architecture)",
    "data_root": _DATA, "dataset_type": "--dataset",
    "train_dataloader.dataset": _DATA, "test_dataloader.dataset": _DATA,
    "train_dataloader.sampler": "--seed/--seeds (the sampler's order is seeded from it)",
    "model.decode_head.num_classes": "--dataset (its classes)",
    "model.auxiliary_head.num_classes": "--dataset (its classes)",
    "launcher": "--device / torchrun", "env_cfg.dist_cfg": "--device / torchrun",
    "model_wrapper_cfg": "--device / torchrun",
    # the input convention the checkpoint was checked for (refuse_other_convention)
    **dict.fromkeys(("model.data_preprocessor.mean", "model.data_preprocessor.std",
                     "model.data_preprocessor.bgr_to_rgb"), "the checkpoint (torchvision's RGB ImageNet normalisation)"),
    # the protocol (SegProtocol's field names)
    "train_dataloader.dataset.pipeline": "the protocol's --crop=, --scale_range= and --flip=",
    "test_dataloader.dataset.pipeline": "the protocol's --crop= (the test resize bound follows it)",
    "model.data_preprocessor.size": "the protocol's --crop=",
    "train_dataloader.batch_size": "the protocol's --batch_size= (over all processes)",
    "train_dataloader.num_workers": "the protocol's --num_workers=",
    "train_dataloader.persistent_workers": "the protocol's --num_workers=",
    "test_dataloader.num_workers": "the protocol's --num_workers=",
    "test_dataloader.persistent_workers": "the protocol's --num_workers=",
    "train_cfg.max_iters": "the protocol's --iters=",
    "param_scheduler": "the protocol's --schedule=, --poly_power=, --min_lr=, --lr_steps= and --iters=",
    "optim_wrapper.optimizer.lr": "the protocol's --lr=",
    "optim_wrapper.optimizer.momentum": "the protocol's --momentum=",
    "optim_wrapper.optimizer.weight_decay": "the protocol's --weight_decay=",
    "model.backbone.norm_cfg": "the protocol's --sync_bn=",
    "model.decode_head.norm_cfg": "the protocol's --sync_bn=",
    "model.auxiliary_head.norm_cfg": "the protocol's --sync_bn=",
    "model.backbone.frozen_stages": "the protocol's --frozen_backbone= (on --engine torchvision)",
    "model.backbone.norm_eval": "the protocol's --frozen_backbone= (on --engine torchvision)",
    "model.test_cfg": "the protocol's --inference=, --slide_crop= and --slide_stride=",
    "default_hooks.checkpoint.interval": "the protocol's --checkpoint_every=",
    "default_hooks.logger.interval": "the protocol's --log_every=",
}
# Keys that mmseg would accept and never read -> why.
_NO_VAL = "the engine tests once after training (test_dataloader), it has no val loop"
_VARIABLE = "a variable of the generated config, already expanded where it is used; set the key that uses it"
# mmseg's tools/test.py --tta swaps them in (mmengine's Runner never reads them); run_seed has no such step
_NO_TTA = ("test-time augmentation is not run by this engine (mmseg runs it only in tools/test.py --tta); "
           "the papers' numbers are single-scale")
CFG_UNREAD = {
    "val_dataloader": _NO_VAL, "val_cfg": _NO_VAL, "val_evaluator": _NO_VAL, "train_cfg.val_interval": _NO_VAL,
    "tta_model": _NO_TTA, "tta_pipeline": _NO_TTA,
    **dict.fromkeys(("crop_size", "norm_cfg", "data_preprocessor", "train_pipeline", "test_pipeline",
                     "optimizer", "vis_backends"), _VARIABLE),
}


def _iteration_seed_hook(seed: int, rank: int):
    """An mmengine hook that seeds torch from (seed, rank, iteration) before each step, so that a
    resumed run's own draws (the decode head's dropout) are an uninterrupted run's. On resume
    mmengine replays the data stream by loading every batch before the resume iteration, so the
    data pipeline's numpy draws continue as they were; numpy is left alone here for that reason."""
    import torch
    from mmengine.hooks import Hook

    from mocobench.core.seeds import step_seed

    class IterationSeed(Hook):
        def before_train_iter(self, runner, batch_idx, data_batch=None):
            torch.manual_seed(step_seed(seed, rank, runner.iter))

    return IterationSeed()


def refuse_owned_keys(items: list[str]) -> None:
    """Raise UsageError for the first of ``items`` that is not ``key=value`` or whose key is owned
    (:data:`CFG_OWNED`) or unread (:data:`CFG_UNREAD`), naming the key as typed and the option to
    use. Pure Python: the command runs it before any work."""
    from mocobench.core.overrides import owned_keys_hit
    from mocobench.transfer.runner import UsageError

    def why(key: str, rule: str) -> str:
        return (f"mocobench sets {key} from {CFG_OWNED[rule]}" if rule in CFG_OWNED else
                f"{key} would not be read: {CFG_UNREAD[rule]}")

    for item in items:
        key, sep, _ = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--cfg-options {item!r} is not key=value")
        hits = owned_keys_hit(key, [*CFG_OWNED, *CFG_UNREAD])
        if hits:
            raise UsageError(f"--cfg-options {item}: " + "; ".join(why(key, rule) for key, rule in hits))


def parse_cfg_options(items: list[str]) -> dict:
    """``key=value`` strings (checked before any work: :func:`refuse_owned_keys`) -> dict, values
    parsed as mmseg's ``--cfg-options`` (mmengine's DictAction)."""
    from mmengine.config import DictAction

    return {key: DictAction._parse_iterable(value) for key, _, value in (i.partition("=") for i in items)}


def _check_keys(cfg, options: dict) -> None:
    """An option whose parent key is not in the config would be added and never read: refuse it."""
    from mocobench.transfer.runner import UsageError

    for key in options:
        parent, node = key.split(".")[:-1], cfg
        for i, part in enumerate(parent):
            node = node[int(part)] if isinstance(node, list) and part.isdigit() else (
                node.get(part) if hasattr(node, "get") else None)
            if node is None:
                raise UsageError(f"--cfg-options {key}: the mmseg config has no {'.'.join(parent[:i + 1])}")
        if not parent and key not in cfg:
            raise UsageError(f"--cfg-options {key}: the mmseg config has no top-level key {key!r}")


# -- data as mmseg reads it ----------------------------------------------------------------------
def _cityscapes_root(data_root: str) -> Path:
    root = Path(data_root)
    if not (root / "leftImg8bit").is_dir() and (root / "cityscapes" / "leftImg8bit").is_dir():
        root = root / "cityscapes"  # the embedded dataset's root
    return root.resolve()


def _write_train_ids(root: Path, split: str, out: Path, ann_file: Path, kind: str) -> tuple[int, int]:
    """``out/<city>/<stem>_gtFine_labelTrainIds.png`` for each readable image of ``split`` and the list
    of them mmseg reads (``ann_file``: ``<city>/<stem>`` lines, which its ``CityscapesDataset`` joins
    with the image and mask suffixes); ``(images listed, unreadable images left out)``. An unreadable
    training image is left out and counted, as our engine does; an unreadable val image is refused
    (mmseg's ``IoUMetric`` would score the val set without it). A mask already written
    (atomically, so complete) is kept."""
    import io

    from PIL import Image

    from mocobench.datasets.cityscapes import CityscapesError, CityscapesSegmentation, read_label_ids, to_train_ids

    ds = CityscapesSegmentation(root, split)   # the split checked as for our engine, before any training
    if kind == "val":
        _refuse_unreadable_val(ds, CityscapesError)
    for s in ds.samples:
        dst = out / s.image.parent.name / f"{s.stem}_gtFine_labelTrainIds.png"
        if not dst.is_file():
            buf = io.BytesIO()
            Image.fromarray(to_train_ids(read_label_ids(s.label))).save(buf, format="PNG")
            atomic_write_bytes(dst, buf.getvalue())
    atomic_write_text(ann_file, "".join(f"{s.image.parent.name}/{s.stem}\n" for s in ds.samples))
    return len(ds.samples), len(ds.skipped)


def _refuse_unreadable_val(ds, error: type[Exception]) -> None:
    if ds.skipped:
        raise error(f"{ds.skipped[0]}: unreadable val image; mmseg would score the val set without it (our "
                    f"engine counts its pixels as missed): repair it ({len(ds.skipped)} such)")


def data_folders(dataset: str, data_root: str, protocol, work: Path, main: bool) -> tuple[Path, dict, dict, dict]:
    """``(data_root, folders, split sizes, unreadable images skipped)`` for the mmseg config; rank 0
    (``main``) writes files. Both datasets' images are listed in an ``ann_file``, so an unreadable
    training image is left out of it and counted (``skipped_train``), as our engine does; an
    unreadable val image is refused, as mmseg's IoUMetric would score the val set without it, where
    our engine counts its pixels as missed."""
    folders, sizes, skipped = {}, {}, {"skipped_train": 0, "skipped_val": 0}
    if dataset == "cityscapes":
        root = _cityscapes_root(data_root)
        for kind, split in (("train", protocol.train_split), ("val", protocol.val_split)):
            out = work / "labelTrainIds" / split
            ann_file = work / "splits" / f"cityscapes_{split}.txt"
            if main:
                sizes[split], skipped[f"skipped_{kind}"] = _write_train_ids(root, split, out, ann_file, kind)
            folders[kind] = {"img_path": str(root / "leftImg8bit" / split), "seg_map_path": str(out),
                             "ann_file": str(ann_file)}
        return root, folders, sizes, skipped
    from mocobench.datasets.voc_seg import VOCSegError, VOCSegmentation

    for kind, split in (("train", protocol.train_split), ("val", protocol.val_split)):
        ds = VOCSegmentation(data_root, split)  # checks the list and that every mask exists
        if kind == "val":
            _refuse_unreadable_val(ds, VOCSegError)
        ids_file = work / "splits" / f"{split}.txt"
        if main:
            atomic_write_text(ids_file, "\n".join(ds.ids) + "\n")
        sizes[split] = len(ds)
        skipped[f"skipped_{kind}"] = len(ds.skipped)
        folders[kind] = {"img_path": str(ds.root / "JPEGImages"), "seg_map_path": str(ds.mask_dir),
                         "ann_file": str(ids_file)}
    return ds.root, folders, sizes, skipped


# -- one seed --------------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    """The installed engine packages (mmcv or mmcv-lite, whichever is there)."""
    from importlib import metadata

    out = {}
    for package in ("mmsegmentation", "mmengine", "mmcv", "mmcv-lite"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return out


def _backbone_check(expected: dict, source: str):
    """An mmengine hook: before training from iteration 0, every backbone tensor must equal the
    converted checkpoint's (same key set, same values); the result goes into mmseg's log."""
    import torch
    from mmengine.hooks import Hook

    from mocobench.core.dist import unwrap

    class BackboneCheck(Hook):
        start_iter = None

        def before_train(self, runner):
            self.start_iter = runner.iter
            if runner.iter != 0:
                return  # resumed: the weights are the checkpoint's, not the initial ones
            model = unwrap(runner.model)
            got = model.backbone.state_dict()
            missing, unexpected = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
            differ = [k for k in expected if k in got and not torch.equal(got[k].cpu(), expected[k])]
            if missing or unexpected or differ:
                raise RuntimeError(f"mmseg backbone does not match {source}: missing {missing[:5]}, "
                                   f"unexpected {unexpected[:5]}, different values {differ[:5]}")
            runner.logger.info(f"mocobench: all {len(expected)} backbone keys of {source} matched "
                               "the mmseg model (same names, equal values)")

    return BackboneCheck()


def run_seed(r, *, dataset: str, dataset_name: str, data_root: str, protocol, device: str | None = None,
             cfg_options: list[str] = ()):
    """Train and test one seed with mmseg (``transfer/runner.py`` calls it): the Outcome on rank 0,
    None on the others. The merged mmseg config goes beside the record."""
    from mocobench.core import dist
    from mocobench.transfer import runner
    from mocobench.transfer.adapters import mmseg as adapter
    from mocobench.transfer.adapters.mmseg_compat import mmcv_ops_stub, trusted_checkpoints

    options = parse_cfg_options(list(cfg_options))
    info, dev = r.dist, r.device
    work = r.work.resolve()
    backbone, report = r.backbone, r.report
    from mocobench.transfer.adapters.cli import refuse_other_convention

    refuse_other_convention(r.backbone, r.report, "this engine")
    fcn = fcn_config(protocol, dataset, backbone.arch, info.world, dev.type)
    with mmcv_ops_stub():
        from mmengine.config import Config
        from mmengine.device import get_device
        from mmengine.runner import Runner

        if get_device() != dev.type:
            raise ValueError(f"--device {device or dev}: mmengine places the model on {get_device()} (the "
                             "first available of cuda, npu, mlu, mps, cpu); for the CPU on a GPU "
                             "machine run with CUDA_VISIBLE_DEVICES=")
        if dev.type == "cuda":
            import torch

            torch.cuda.set_device(dev)
        resume_file = r.resume if isinstance(r.resume, Path) else None

        ckpt_path = work / "backbone_mmseg.pth"
        converted = adapter.to_mmseg(backbone.net.state_dict(), {"arch": backbone.arch, **report.record_fields()})
        root, folders, sizes, skipped = data_folders(dataset, data_root, protocol, work, info.main)
        if info.main:
            atomic_torch_save(converted, ckpt_path)
            atomic_write_text(work / "mmseg_config.py", adapter.mmseg_config_text(
                fcn, ckpt_path, data_root=root, folders=folders, name=MMSEG_PROTOCOLS[(protocol.name, dataset)]))
        dist.barrier()
        cfg = Config.fromfile(str(work / "mmseg_config.py"))
        cfg.work_dir = str(work)
        cfg.launcher = "pytorch" if info.world > 1 else "none"
        if info.world > 1 and dev.type == "cpu":  # mmengine's default DDP wrapper names a GPU (LOCAL_RANK)
            cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None,
                                         broadcast_buffers=False)
        cfg.randomness = dict(seed=r.seed, deterministic=False)
        cfg.experiment_name = f"{protocol.name}-s{r.seed}-{uuid.uuid4().hex[:6]}"
        cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None  # test once, after training
        cfg.resume = r.resume != "no"
        cfg.load_from = str(resume_file) if resume_file else None
        _check_keys(cfg, options)
        cfg.merge_from_dict(options)  # last, as mmseg's tools/train.py does
        prefix = adapter.MM_BACKBONE_PREFIX
        expected = {k[len(prefix):]: v for k, v in converted["state_dict"].items()}
        with trusted_checkpoints([work], [resume_file] if resume_file else []):
            mm_runner = Runner.from_cfg(cfg)
            check = _backbone_check(expected, str(ckpt_path))
            mm_runner.register_hook(check, priority="LOWEST")
            mm_runner.register_hook(_iteration_seed_hook(r.seed, info.rank))
            mm_runner.train()
            scores = mm_runner.test()
        ran_on = str(next(mm_runner.model.parameters()).device)
        log_file = str(Path(mm_runner.log_dir) / f"{mm_runner.timestamp}.log")
    metrics = {}
    for name in ("mIoU", "mAcc", "aAcc"):
        if name not in scores:
            raise RuntimeError(f"mmseg test results have no {name}: {sorted(scores)}")
        metrics[name] = round(float(scores[name]), 2)  # mmseg rounds to 0.01 (in float32)
    if not info.main:
        return None
    r.log(f"mmseg log: {log_file}")
    # the settings the merged mmseg config runs, under SegProtocol's field names: its run fields
    # (workers, intervals) are run settings there too
    protocol_fields, run_settings = protocol_and_run(protocol)
    settings = adapter.describe(cfg.to_dict(), info.world)
    run_names = run_fields(protocol)
    return runner.Outcome(
        metrics=metrics, engine="mmseg", device=ran_on,
        dataset={"name": dataset_name, "path": str(data_root), "splits": sizes},
        config={**protocol_fields, **{k: v for k, v in settings.items() if k not in run_names}, "dataset": dataset,
                "mmseg_protocol": MMSEG_PROTOCOLS[(protocol.name, dataset)], "cfg_options": options},
        run={**run_settings, **{k: v for k, v in settings.items() if k in run_names}, "world_size": info.world,
             "mmseg_versions": _versions(), "resumed_from_iteration": check.start_iter, **skipped,
             "preset_changes": preset_changes(protocol, dataset, {f"cfg_options.{k}": v for k, v in options.items()})},
        beside={"mmseg_config": ("mmseg.py", cfg.pretty_text)})
