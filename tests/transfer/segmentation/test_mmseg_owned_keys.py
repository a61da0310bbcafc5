"""``--cfg-options`` reaches only what no option of ours sets.

A key the mmseg engine sets from an option (seed, work dir, resume, checkpoint, data, device, a
protocol field) or one mmseg would never read (the val loop, the config's template variables) is
refused with exit 2 before any work, naming the key as typed and the option to use. The tables are
checked against the engine itself: every config value a protocol field moves, every key
``run_seed`` assigns and every template variable is refused. No training here (a few seconds);
that an allowed key is recorded and takes effect is checked in ``test_mmseg_engine.py``.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect

import pytest

from mocobench.transfer.segmentation.mmseg_engine import CFG_OWNED, CFG_UNREAD, refuse_owned_keys

RULES = {**CFG_OWNED, **CFG_UNREAD}


def _refusal(item: str) -> str | None:
    try:
        refuse_owned_keys([item])
    except ValueError as e:
        return str(e)
    return None


def test_an_item_that_is_not_key_value_is_refused():
    assert "'lr' is not key=value" in _refusal("lr") and "is not key=value" in _refusal("=3")


@pytest.mark.parametrize("key", sorted(RULES))
def test_an_owned_key_is_refused_before_any_work(mmseg_ready, key, synth_tiny, tmp_path, capsys):
    from mocobench.transfer.segmentation.cli import eval_main

    code = eval_main("segmentation", [
        "--checkpoint", "random:resnet18", "--dataset", "voc2012", "--data", str(synth_tiny),
        "--protocol", "mmseg-fcn-20k", "--engine", "mmseg", "--results", str(tmp_path / "r"),
        "--work-dir", str(tmp_path / "w"), "--train-split=train", "--device", "cpu",
        "--cfg-options", "model.decode_head.dropout_ratio=0.2", f"{key}=1"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"--cfg-options {key}=1: " in err and RULES[key] in err
    # nothing written: no record, no converted checkpoint, no masks or config in the seed's folder
    assert not (tmp_path / "r").exists()
    assert not [p for p in (tmp_path / "w").rglob("*") if p.is_file()]


@pytest.mark.parametrize("item,says", [
    ("randomness.seed=5", "mocobench sets randomness.seed from --seed/--seeds"),
    ("model.backbone.init_cfg.checkpoint=x.pth", "sets model.backbone.init_cfg.checkpoint from --checkpoint"),
    # under two rules: the more specific one answers
    ("train_dataloader.dataset.pipeline.3.crop_size=(64,64)", "from the protocol's --crop="),
    ("train_dataloader.dataset.ann_file=x.txt", "from --data and the split options"),
    ("param_scheduler.0.type=MultiStepLR", "from the protocol's --schedule="),
    ("val_dataloader.batch_size=2", "no val loop"),
    # mmseg's tools/test.py --tta reads these; this engine never does
    ("tta_model.type=SegTTAModel", "tta_model.type would not be read: test-time augmentation is not run"),
    ("tta_pipeline=[]", "tta_pipeline would not be read: test-time augmentation is not run"),
    ("tta_pipeline.1.transforms=[]", "the papers' numbers are single-scale"),
    # a parent: every owned key under it is named
    ("train_cfg=dict(max_iters=4)", "train_cfg.max_iters from the protocol's --iters=; train_cfg.val_interval"),
    ("optim_wrapper.optimizer=dict(lr=0.1)", "optim_wrapper.optimizer.lr from the protocol's --lr="),
    ("model.backbone=dict(depth=18)", "model.backbone.depth from --checkpoint"),
])
def test_parents_and_children_of_owned_keys_are_refused(item, says):
    message = _refusal(item)
    assert message is not None and message.startswith(f"--cfg-options {item}: ") and says in message


@pytest.mark.parametrize("item", [
    "model.decode_head.dropout_ratio=0.2", "model.auxiliary_head.loss_decode.loss_weight=0.2",
    "env_cfg.cudnn_benchmark=False", "optim_wrapper.clip_grad=dict(max_norm=1.0)",
    # whole path segments, not characters: these share a prefix with owned keys only as text
    "checkpoint_config=1", "randomness_extra=1", "default_hooks.checkpoint.by_epoch=False",
])
def test_keys_no_option_sets_are_allowed(item):
    assert _refusal(item) is None


# -- the tables against the engine ---------------------------------------------------------------

def _generated(protocol, dataset: str = "cityscapes", world: int = 1, device: str = "cpu", folders=None) -> str:
    from mocobench.transfer.adapters.mmseg import mmseg_config_text
    from mocobench.transfer.segmentation.mmseg_engine import fcn_config

    fcn = fcn_config(protocol, dataset, "resnet18", world, device)
    return mmseg_config_text(fcn, "/w/backbone_mmseg.pth", data_root="/data", folders=folders)


def _paths(node, prefix: str = "") -> dict[str, object]:
    """Every leaf of a config as ``dotted.path -> value`` (list items by index, as mmengine's keys)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, (list, tuple)) else None
    if items is None or not node:
        return {prefix: node}
    out = {}
    for k, v in items:
        out.update(_paths(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _leaves(text: str) -> dict[str, object]:
    namespace: dict = {}
    exec(compile(text, "<mmseg config>", "exec"), namespace)
    return _paths({k: v for k, v in namespace.items() if not k.startswith("__")})


CHANGES = [("crop", (64, 96)), ("batch_size", 4), ("iters", 123), ("lr", 0.05), ("momentum", 0.8),
           ("weight_decay", 1e-3), ("poly_power", 1.0), ("min_lr", 0.0), ("scale_range", (0.75, 1.5)),
           ("flip", False), ("num_workers", 0), ("checkpoint_every", 7), ("log_every", 3),
           ("inference", "slide"), ("schedule", "step")]


# the fields CHANGES leaves out, and where each is covered: a new SegProtocol field must be added to
# one or the other (test_every_protocol_field_is_covered)
ELSEWHERE = {"name": "not a setting", "head": "one head per mmseg protocol (check_protocol)",
             "train_split": "the data folders: test_the_values_sync_bn_data_and_arch_set_are_refused",
             "val_split": "the data folders: test_the_values_sync_bn_data_and_arch_set_are_refused",
             "sync_bn": "test_the_values_sync_bn_data_and_arch_set_are_refused",
             "lr_steps": "with schedule=step in CHANGES", "frozen_backbone": "refused on --engine mmseg",
             "slide_crop": "with inference=slide in CHANGES", "slide_stride": "with inference=slide in CHANGES"}


def test_every_protocol_field_is_covered():
    from mocobench.transfer.segmentation.protocols import SegProtocol

    fields = {f.name for f in dataclasses.fields(SegProtocol)}
    assert fields == {c[0] for c in CHANGES} | set(ELSEWHERE), "a SegProtocol field no test moves"


@pytest.mark.parametrize("field,value", CHANGES, ids=[c[0] for c in CHANGES])
def test_every_value_a_protocol_field_moves_is_refused(field, value):
    """A field changed in the protocol moves some config values; setting any of them directly
    would leave the record's field false, so each is refused."""
    from mocobench.transfer.segmentation.protocols import get_protocol

    base = get_protocol("mmseg-fcn-40k", "cityscapes")
    change = {field: value, **({"lr_steps": (0.5,)} if field == "schedule" else {})}
    before, after = _leaves(_generated(base)), _leaves(_generated(dataclasses.replace(base, **change)))
    moved = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert moved
    assert not [k for k in moved if _refusal(f"{k}=1") is None]


def test_the_values_sync_bn_data_and_arch_set_are_refused():
    from mocobench.transfer.segmentation.protocols import get_protocol

    base = get_protocol("mmseg-fcn-40k", "cityscapes")
    folders = {kind: {"img_path": f"/x/{kind}", "seg_map_path": f"/y/{kind}", "ann_file": f"/z/{kind}.txt"}
               for kind in ("train", "val")}
    ran = _leaves(_generated(base))
    for other in (_generated(dataclasses.replace(base, sync_bn=True), world=2, device="cuda"),
                  _generated(base, folders=folders),
                  _generated(get_protocol("mmseg-fcn-20k", "voc2012"), "voc2012")):
        moved = {k for k, v in _leaves(other).items() if ran.get(k) != v}
        assert moved and not [k for k in moved if _refusal(f"{k}=1") is None]
    # the backbone's depth and head widths follow the checkpoint's arch
    assert _refusal("model.backbone.depth=50") and _refusal("model.decode_head.num_classes=3")


def test_every_key_run_seed_assigns_is_refused():
    """``cfg.X = ...`` in run_seed: the engine's own settings (seed, folders, resume, launcher, the
    val loop it removes) would overwrite a user's value, or the user's would overwrite them."""
    from mocobench.transfer.segmentation import mmseg_engine

    tree = ast.parse(inspect.getsource(mmseg_engine.run_seed))
    assigned = {t.attr for node in ast.walk(tree) if isinstance(node, ast.Assign) for t in node.targets
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "cfg"}
    assert {"randomness", "work_dir", "resume", "load_from", "val_dataloader"} <= assigned
    assert not [k for k in assigned if _refusal(f"{k}=1") is None]


def test_every_template_variable_is_refused():
    """A top-level name that another key of the generated config reads (``crop_size``,
    ``train_pipeline``, ...) is expanded when the file loads; setting it afterwards changes nothing."""
    from mocobench.transfer.segmentation.protocols import get_protocol

    tree = ast.parse(_generated(get_protocol("mmseg-fcn-40k", "cityscapes")))
    assigned = {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
                if isinstance(t, ast.Name)}
    read = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    variables = assigned & read
    assert {"crop_size", "train_pipeline", "norm_cfg", "checkpoint", "vis_backends"} <= variables
    assert not [k for k in variables if _refusal(f"{k}=1") is None]
