"""The real detectron2 runs our converted checkpoints end to end (VOC R50-C4, COCO Mask R-CNN C4).

A few iterations of detectron2's own ``DefaultTrainer`` on small images of the embedded data, from
a MoCo-format ResNet-50 checkpoint written here. Each run reads the record, the config dumped
beside it, and detectron2's own log (every backbone key matched, one evaluation), then reruns to
check that a finished seed is not trained or recorded again. Needs the engine
(``./run_all.sh engines``): in CI its absence fails, elsewhere the tests skip and say how to
install it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from mocobench.core.records import load_records

# small images and few RoIs: R50 on CPU. Protocol overrides (ours), then detectron2 --opts.
SMALL = ["--max_iter=2", "--ims_per_batch=2", "--min_size_train=64", "--max_size_train=112",
         "--min_size_test=64", "--max_size_test=112", "--rpn_pre_nms_top_n_train=100",
         "--rpn_post_nms_top_n_train=20", "--rpn_pre_nms_top_n_test=50", "--rpn_post_nms_top_n_test=10",
         "--roi_batch_size_per_image=8", "--rpn_batch_size_per_image=32", "--precise_bn_iters=1",
         "--num_workers=0", "--warmup_iters=1", "--detections_per_img=10", "--device", "cpu"]
OPTS = ["--opts", "MODEL.ROI_HEADS.IOU_THRESHOLDS", "[0.6]"]   # a key no option of ours sets
# detectron2's parameters that no backbone checkpoint has: the RPN, the extra norm after res5
# (MoCo's Res5ROIHeadsExtraNorm) and the box/mask predictors
NEW_PARAMS = {"proposal_generator.rpn_head.anchor_deltas.{bias, weight}",
              "proposal_generator.rpn_head.conv.{bias, weight}",
              "proposal_generator.rpn_head.objectness_logits.{bias, weight}",
              "roi_heads.box_predictor.bbox_pred.{bias, weight}",
              "roi_heads.box_predictor.cls_score.{bias, weight}",
              "roi_heads.res5.norm.{bias, running_mean, running_var, weight}"}
MASK_PARAMS = {"roi_heads.mask_head.deconv.{bias, weight}", "roi_heads.mask_head.predictor.{bias, weight}"}


@pytest.fixture(scope="module")
def detectron2_ready():
    try:
        import detectron2  # noqa: F401
    except ImportError as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"detectron2 must run in CI (./run_all.sh engines installs it): {e}")
        pytest.skip(f"detectron2 is not installed ({e}): ./run_all.sh engines")


@pytest.fixture(scope="module")
def moco_r50(tmp_path_factory) -> Path:
    """An official-MoCo-layout checkpoint (``module.encoder_q.*`` + its fc) of a seeded ResNet-50."""
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet50(num_classes=128)
    sd = {f"module.encoder_q.{k}": v for k, v in net.state_dict().items()}
    path = tmp_path_factory.mktemp("ckpt") / "moco_r50.pth.tar"
    torch.save({"epoch": 200, "arch": "resnet50", "state_dict": sd}, path)
    return path


def _eval(argv, capsys) -> tuple[int, str, str]:
    from mocobench.transfer.detection.cli import eval_main

    code = eval_main("detection", argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def _missing_from_checkpoint(log: str) -> set[str]:
    """The lines fvcore logs under "Some model parameters or buffers are not found in the checkpoint"."""
    m = re.search(r"not found in the checkpoint:\n((?:(?!\[\d\d/\d\d ).*\n)*)", log)
    return {line.strip() for line in m.group(1).splitlines() if line.strip()} if m else set()


def _check_run(results: Path, work: Path, *, classes: int, mask: bool, steps: list, solver_steps: list) -> dict:
    (rec,), problems = load_records(results)
    assert not problems and rec["engine"] == "detectron2" and rec["env"]["device"] == "cpu"
    cfg = rec["run"]["detectron2_config"]
    # the configuration that ran: the dumped file beside the record, the same as in the record
    beside = yaml.safe_load((results / rec["run"]["detectron2_config_file"]).read_text())
    assert beside == cfg
    assert cfg["MODEL"]["DEVICE"] == "cpu" and cfg["MODEL"]["ROI_HEADS"]["NUM_CLASSES"] == classes
    assert rec["config"]["precision"] == "fp32" and not cfg["SOLVER"]["AMP"]["ENABLED"]
    assert cfg["MODEL"]["MASK_ON"] is mask
    assert cfg["TEST"]["DETECTIONS_PER_IMAGE"] == 10   # the protocol's --detections_per_img=
    assert cfg["MODEL"]["ROI_HEADS"]["IOU_THRESHOLDS"] == [0.6] and rec["config"]["opts"] == OPTS[1:]  # --opts, last
    proto = rec["config"]["protocol"]
    # not the paper's recipe: the overridden protocol fields and the --opts key (as detectron2 merged
    # it; no protocol field sets it); fp32 is this engine's preset, so bf16 is no change
    from mocobench.transfer.detection.protocols import PROTOCOLS

    changes, preset = rec["run"]["preset_changes"], PROTOCOLS[rec["protocol"]]
    assert changes["max_iter"] == {"preset": preset.max_iter, "ran": 2}
    assert changes["ims_per_batch"] == {"preset": 16, "ran": 2} and "bf16" not in changes
    assert changes["opts.MODEL.ROI_HEADS.IOU_THRESHOLDS"] == {"preset": None, "ran": [0.6]}
    assert not {"num_workers", "checkpoint_period"} & set(changes)   # run settings
    s = cfg["SOLVER"]
    assert (s["MAX_ITER"], s["IMS_PER_BATCH"], s["CHECKPOINT_PERIOD"]) == (2, 2, rec["run"]["checkpoint_period"])
    assert s["BASE_LR"] == pytest.approx(proto["base_lr"] * 2 / proto["reference_batch"])
    # the paper's steps kept at the same fraction of a 2-iteration run; detectron2 gets those inside it
    assert proto["steps"] == steps and s["STEPS"] == solver_steps
    assert cfg["INPUT"]["MIN_SIZE_TEST"] == 64 and cfg["MODEL"]["RPN"]["POST_NMS_TOPK_TEST"] == 10
    (run,) = [p for p in work.iterdir() if p.is_dir()]
    log = (run / "log.txt").read_text()
    # every backbone key matched: only the detector's new parameters are missing, none unused
    assert _missing_from_checkpoint(log) == NEW_PARAMS | (MASK_PARAMS if mask else set())
    assert "not used by the model" not in log
    assert log.count("Start inference on") == 1  # one evaluation
    assert sorted(p.name for p in run.glob("model_*.pth")) == ["model_final.pth"]  # CHECKPOINT_PERIOD 5000
    return rec


@pytest.mark.slow
def test_detectron2_voc_c4_end_to_end(detectron2_ready, synth_tiny, moco_r50, tmp_path, capsys):
    results, work = tmp_path / "results", tmp_path / "work"
    argv = ["--checkpoint", str(moco_r50), "--dataset", "voc", "--data", str(synth_tiny / "VOCdevkit"),
            "--protocol", "moco-voc-c4-24k", "--engine", "detectron2", "--results", str(results),
            "--work-dir", str(work), *SMALL, *OPTS]
    code, out, err = _eval(argv, capsys)
    assert code == 0, err
    rec = _check_run(results, work, classes=20, mask=False,
                     steps=[2, 2], solver_steps=[])  # 18k, 22k of 24k: 1.5 and 1.83 of 2 round to 2
    assert set(rec["metrics"]) == {"AP", "AP50", "AP75"}
    assert rec["run"]["resumed_from_iteration"] == 0
    # a rerun finds the finished seed: no training, no second record, the same record printed
    (run,) = [p for p in work.iterdir() if p.is_dir()]
    log_before = (run / "log.txt").read_text()
    code, out2, err = _eval(argv, capsys)
    assert code == 0, err
    assert out2.split()[-1] == out.split()[-1] and len(load_records(results)[0]) == 1
    assert (run / "log.txt").read_text() == log_before


@pytest.mark.slow
def test_detectron2_coco_mask_c4_end_to_end(detectron2_ready, synth_tiny, moco_r50, tmp_path, capsys):
    results, work = tmp_path / "results", tmp_path / "work"
    n_classes = len(json.loads((synth_tiny / "coco/annotations/instances_val2017.json").read_text())["categories"])
    argv = ["--checkpoint", str(moco_r50), "--dataset", "coco", "--data", str(synth_tiny),
            "--protocol", "coco-c4-1x", "--engine", "detectron2", "--results", str(results),
            "--work-dir", str(work), *SMALL, *OPTS]
    code, out, err = _eval(argv, capsys)
    assert code == 0, err
    rec = _check_run(results, work, classes=n_classes, mask=True,  # NUM_CLASSES from the dataset, not 80
                     steps=[1, 2], solver_steps=[1])  # 60k, 80k of 90k: 1.33 and 1.78 of 2
    assert {"bbox_AP", "bbox_AP50", "segm_AP", "segm_AP50"} <= set(rec["metrics"])
    code, _, err = _eval(argv, capsys)
    assert code == 0, err
    assert len(load_records(results)[0]) == 1


@pytest.mark.slow
def test_detectron2_multi_gpu_launch_hands_results_back(detectron2_ready, synth_tiny, moco_r50, tmp_path,
                                                        monkeypatch):
    """The ``launch`` path for several GPUs: the worker and its job cross a process boundary, the
    rank-0 results reach the parent, and exactly one record per seed is written.

    detectron2 0.6's ``launch`` asserts CUDA in every worker and wraps the model in a CUDA DDP, so
    a 2-process gloo run on CPU is impossible; ``launch`` is replaced by one that checks what it
    is given and runs rank 0 in a *spawned* process (as ``mp.spawn`` would).
    """
    import multiprocessing

    from mocobench.transfer.adapters.detectron2_compat import patched
    from mocobench.transfer.detection import detectron2_engine as engine

    with patched():   # detectron2 0.6 imports only under the compatibility patches (Pillow 10 names)
        import detectron2.engine
    from mocobench.transfer.detection.protocols import resolve_protocol

    calls = []

    def fake_launch(main_func, num_gpus_per_machine, num_machines=1, machine_rank=0, dist_url=None, args=()):
        calls.append((num_gpus_per_machine, dist_url))
        pickle.loads(pickle.dumps((main_func, args)))  # what mp.spawn does to them
        proc = multiprocessing.get_context("spawn").Process(target=main_func, args=args)
        proc.start()
        proc.join()
        assert proc.exitcode == 0

    monkeypatch.setattr(detectron2.engine, "launch", fake_launch)
    monkeypatch.setattr(engine, "_device", lambda device: ("cpu", 2))
    overrides = dict(a[2:].split("=", 1) for a in SMALL if a.startswith("--") and "=" in a)
    protocol = resolve_protocol("moco-voc-c4-24k", overrides | {"max_iter": "1"})
    results = tmp_path / "results"
    from mocobench.transfer.detection.run import run_eval

    paths = run_eval(str(moco_r50), protocol, "voc", synth_tiny / "VOCdevkit", [3], results, tmp_path / "work",
                     engine="detectron2")
    assert calls == [(2, "auto")]
    (rec,), _ = load_records(results)
    assert [Path(p).name for p in paths] == [next(results.glob("*.json")).name]
    assert rec["seed"] == 3 and rec["run"]["num_processes"] == 2 and set(rec["metrics"]) == {"AP", "AP50", "AP75"}


# -- the protocol in detectron2's config (no training) ------------------------------------------------

def test_every_protocol_field_reaches_detectron2_or_is_refused():
    from mocobench.transfer.adapters.detectron2 import PROTOCOL_KEYS, protocol_settings
    from mocobench.transfer.detection.protocols import PROTOCOLS, DetectionProtocol

    assert set(PROTOCOL_KEYS) == {f.name for f in dataclasses.fields(DetectionProtocol)}
    p = dataclasses.replace(PROTOCOLS["moco-voc-c4-24k"], base_lr=0.01, ims_per_batch=4, momentum=0.8,
                            min_size_test=300, hflip=False, roi_pool_size=10, checkpoint_period=7,
                            precise_bn_iters=0, anchor_sizes=(16, 32), aspect_ratios=(1.0,))
    s = protocol_settings(p, "voc", 20, "cpu")
    assert s["SOLVER.BASE_LR"] == pytest.approx(0.01 * 4 / 16) and s["SOLVER.MOMENTUM"] == 0.8
    assert (s["INPUT.MIN_SIZE_TEST"], s["INPUT.RANDOM_FLIP"], s["MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION"]) == (300, "none", 10)
    assert (s["SOLVER.CHECKPOINT_PERIOD"], s["TEST.PRECISE_BN.ENABLED"]) == (7, False)
    assert s["MODEL.ANCHOR_GENERATOR.SIZES"] == [[16, 32]] and s["MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS"] == [[1.0]]
    assert (s["MODEL.DEVICE"], s["MODEL.ROI_HEADS.NUM_CLASSES"], s["MODEL.MASK_ON"]) == ("cpu", 20, False)
    assert "MODEL.RESNETS.NORM" not in s   # the config's SyncBN-family norm stays
    assert protocol_settings(dataclasses.replace(p, frozen_bn=True), "voc", 20, "cpu")["MODEL.RESNETS.NORM"] == "FrozenBN"
    refusals = [(dict(bf16=True), "cuda", "voc", "bf16"), (dict(model="fpn"), "cpu", "voc", "model=fpn"),
                (dict(mask_on=True), "cpu", "voc", "mask_on"),
                (dict(name="coco-fpn-1x", model="fpn", roi_pool_size=10), "cpu", "coco", "roi_pool_size")]
    for change, device, dataset, word in refusals:
        with pytest.raises(ValueError, match=word):
            protocol_settings(dataclasses.replace(p, **change), dataset, 20, device)


@pytest.mark.parametrize("max_iter", [1, 2, 3, 4, 5, 6, 100])
def test_short_schedules_give_steps_detectron2_accepts(detectron2_ready, max_iter):
    from mocobench.transfer.adapters.detectron2 import protocol_settings
    from mocobench.transfer.adapters.detectron2_compat import patched
    from mocobench.transfer.detection.protocols import resolve_protocol

    p = resolve_protocol("moco-voc-c4-24k", {"max_iter": str(max_iter)})
    steps = protocol_settings(p, "voc", 20, "cpu")["SOLVER.STEPS"]
    assert steps == sorted(set(steps)) and all(0 < s < max_iter for s in steps)
    with patched():
        from detectron2.config import get_cfg
        from detectron2.solver import build_lr_scheduler

        cfg = get_cfg()
        cfg.merge_from_list(["SOLVER.MAX_ITER", max_iter, "SOLVER.STEPS", steps, "SOLVER.WARMUP_ITERS", 1])
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.02)
        sched = build_lr_scheduler(cfg, opt)  # fvcore refuses a step >= MAX_ITER or a repeated one
        lrs = []
        for _ in range(max_iter):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
    # independent statement: after the 1-iteration warmup, lr = 0.02 * 0.1 ** (steps <= iteration)
    if max_iter > 1:
        assert lrs[-1] == pytest.approx(0.02 * 0.1 ** sum(s <= max_iter - 1 for s in steps))


def test_bad_opts_are_refused_naming_the_key(detectron2_ready, synth_tiny, tmp_path, capsys):
    base = ["--checkpoint", "random:resnet50", "--dataset", "voc", "--data", str(synth_tiny / "VOCdevkit"),
            "--protocol", "moco-voc-c4-24k", "--engine", "detectron2", "--results", str(tmp_path / "r"),
            "--work-dir", str(tmp_path / "w"), "--device", "cpu"]
    # refused before any work (nothing read or written): another sampler, a key the engine sets
    # itself (test_opts_the_engine_sets_are_refused has every one)
    code, _, err = _eval(base + ["--opts", "DATALOADER.SAMPLER_TRAIN", "RepeatFactorTrainingSampler"], capsys)
    assert code == 2 and "DATALOADER.SAMPLER_TRAIN RepeatFactorTrainingSampler" in err
    code, _, err = _eval(base + ["--opts", "SOLVER.AMP.ENABLED", "True", "SEED", "5"], capsys)
    assert code == 2 and "--opts SEED 5: mocobench sets SEED from --seed/--seeds" in err
    code, _, err = _eval([a if a != "detectron2" else "torchvision" for a in base] + ["--opts", "A", "1"], capsys)
    assert code == 2 and "--engine detectron2" in err
    assert not (tmp_path / "w").exists() and not (tmp_path / "r").exists()
    code, _, err = _eval(base + ["--opts", "SOLVER.NOT_A_KEY", "1"], capsys)
    assert code == 2 and "SOLVER.NOT_A_KEY" in err
    code, _, err = _eval(base + ["--opts", "SOLVER.BASE_LR"], capsys)
    assert code == 2 and "KEY VALUE pairs" in err
    assert not (tmp_path / "r").exists()


def _d2_owned():
    from mocobench.transfer.detection.detectron2_engine import owned_opts

    return owned_opts()


@pytest.mark.parametrize("key", sorted(_d2_owned()))
def test_opts_the_engine_sets_are_refused(detectron2_ready, key):
    """Each key the engine sets (its own options, every protocol field's keys) is refused by name,
    with the option to use (before any work: test_bad_opts_are_refused_naming_the_key); it exists in
    detectron2's config."""
    from mocobench.transfer.adapters.detectron2_compat import patched
    from mocobench.transfer.detection.detectron2_engine import refuse_owned_opts
    from mocobench.transfer.runner import UsageError

    with patched():
        from detectron2.config import get_cfg

        node = get_cfg()
        for part in key.split("."):
            node = node[part]   # KeyError: the table names a key detectron2 does not have
    with pytest.raises(UsageError) as e:
        refuse_owned_opts(["SOLVER.AMP.ENABLED", "True", key, "1"])
    assert str(e.value).startswith(f"--opts {key} 1: mocobench sets {key} from {_d2_owned()[key]}")


@pytest.mark.parametrize("opts,says", [
    (["SOLVER", "x"], "mocobench sets SOLVER.BASE_LR from the protocol's"),   # a parent: each key under it
    (["TEST.PRECISE_BN", "x"], "TEST.PRECISE_BN.ENABLED from the protocol's --precise_bn_iters=; "),
    (["DATASETS.TRAIN", "('x',)"], "mocobench sets DATASETS.TRAIN from --dataset and --data"),  # a child
    (["MODEL.WEIGHTS", "x.pkl"], "mocobench sets MODEL.WEIGHTS from --checkpoint"),
    (["MODEL.ROI_HEADS.NUM_CLASSES", "3"], "from --dataset and --data"),
    (["SOLVER.BASE_LR", "0.1"], "--base_lr="),
    # accepted by detectron2 and never read by this engine's worker
    (["TEST.AUG.ENABLED", "True"], "--opts TEST.AUG.ENABLED True: TEST.AUG.ENABLED would not be read: test-time "
                                   "augmentation is not run by this engine"),
    (["TEST.AUG.MIN_SIZES", "(400,)"], "the papers' numbers are single-scale"),
    (["TEST.AUG", "x"], "TEST.AUG would not be read: test-time augmentation"),
    (["TEST", "x"], "TEST.AUG would not be read: test-time augmentation"),   # a parent: named with the owned keys
    (["TEST.KEYPOINT_OKS_SIGMAS", "[0.1]"], "TEST.KEYPOINT_OKS_SIGMAS would not be read: "),
    (["GLOBAL.HACK", "2.0"], "GLOBAL.HACK would not be read: "),
])
def test_parents_and_children_of_engine_opts_are_refused(opts, says):
    from mocobench.transfer.detection.detectron2_engine import refuse_owned_opts

    with pytest.raises(ValueError, match=re.escape(says)):
        refuse_owned_opts(opts)


def test_unread_opts_exist_in_detectron2_and_no_option_sets_them(detectron2_ready):
    """OPTS_UNREAD names keys of detectron2's config (else yacs would refuse them anyway) that no
    option of ours owns."""
    from mocobench.transfer.adapters.detectron2_compat import patched
    from mocobench.transfer.detection.detectron2_engine import OPTS_UNREAD

    with patched():
        from detectron2.config import get_cfg

        for key in OPTS_UNREAD:
            node = get_cfg()
            for part in key.split("."):
                node = node[part]
    assert not set(OPTS_UNREAD) & set(_d2_owned())


def test_every_key_the_engine_sets_is_owned_and_others_are_allowed(detectron2_ready, tmp_path):
    """Every key protocol_settings and run_seed set, for each protocol (C4 and FPN, frozen BN), is
    refused in --opts; keys no option sets (fp16 AMP, the eval period) are merged and dumped."""
    from mocobench.transfer.adapters.detectron2 import PROTOCOLS as D2, protocol_settings, write_detectron2_config
    from mocobench.transfer.adapters.detectron2_compat import patched
    from mocobench.transfer.detection.detectron2_engine import build_config, engine_settings, refuse_owned_opts
    from mocobench.transfer.detection.protocols import PROTOCOLS

    for name in D2:
        p = PROTOCOLS[name]
        for protocol in (p, dataclasses.replace(p, frozen_bn=True)):
            # what run_seed sets: engine_settings over the protocol's settings, and the weights
            # write_detectron2_config puts into the base YAML
            keys = {*engine_settings(protocol_settings(protocol, "coco", 80, "cpu"), ["a"], ["b"], 0, tmp_path),
                    "MODEL.WEIGHTS"}
            for key in keys:
                with pytest.raises(ValueError, match=re.escape(f"--opts {key} 1: mocobench sets {key} from ")):
                    refuse_owned_opts([key, "1"])
    allowed = ["SOLVER.AMP.ENABLED", "True", "TEST.EVAL_PERIOD", "0", "MODEL.ROI_HEADS.IOU_THRESHOLDS", "[0.6]",
               "DATALOADER.ASPECT_RATIO_GROUPING", "False"]
    base = write_detectron2_config("moco-voc-c4-24k", "w.pkl", tmp_path / "protocol.yaml")
    with patched():
        cfg = build_config(base, {"SEED": 3}, allowed, tmp_path / "config.yaml")
    dumped = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert dumped["SOLVER"]["AMP"]["ENABLED"] is True and dumped["MODEL"]["ROI_HEADS"]["IOU_THRESHOLDS"] == [0.6]
    assert dumped["DATALOADER"]["ASPECT_RATIO_GROUPING"] is False and cfg.SEED == 3


def test_compat_patches_apply_only_inside_the_block(detectron2_ready):
    import sys

    import numpy as np
    from PIL import Image

    from mocobench.transfer.adapters.detectron2_compat import MissingCompiledOp, patched

    before = (hasattr(Image, "LINEAR"), "str" in np.__dict__, "detectron2._C" in sys.modules)
    with patched():
        import detectron2._C as C

        assert Image.LINEAR == Image.BILINEAR and np.str is str and np.float is float
        assert C.has_cuda() is False and "stub" in C.get_compiler_version()
        with pytest.raises(MissingCompiledOp, match="nms_rotated"):
            C.nms_rotated()
    assert (hasattr(Image, "LINEAR"), "str" in np.__dict__, "detectron2._C" in sys.modules) == before


def test_c4_detector_converter_both_ways(detectron2_ready):
    """Our R50-C4 Faster R-CNN -> detectron2's state dict (loads strictly into detectron2's model)
    -> ours again: every tensor back, except our unused background box rows (zeros)."""
    from mocobench.checkpoints.load import load_backbone
    from mocobench.transfer.adapters.detectron2 import (c4_detector_from_detectron2, c4_detector_to_detectron2,
                                              detectron2_config, register_roi_heads)
    from mocobench.transfer.adapters.detectron2_compat import patched
    from mocobench.transfer.detection.models import build_c4
    from mocobench.transfer.detection.protocols import MOCO_VOC_C4_24K

    torch.manual_seed(0)
    ours = build_c4(load_backbone("random:resnet50")[0], 20, MOCO_VOC_C4_24K).state_dict()
    theirs = c4_detector_to_detectron2(ours, 5, 3)
    with patched():
        from detectron2.config import CfgNode, get_cfg
        from detectron2.modeling import build_model

        register_roi_heads()
        cfg = get_cfg()
        cfg.merge_from_other_cfg(CfgNode(detectron2_config("moco-voc-c4-24k", "unused.pkl")))
        cfg.MODEL.DEVICE = "cpu"
        model = build_model(cfg)
    missing, unexpected = model.load_state_dict(theirs, strict=True)
    assert not missing and not unexpected
    # independent statements of the class layouts: background first (ours) / last (detectron2)
    w = ours["roi_heads.box_predictor.cls_score.weight"]
    assert torch.equal(theirs["roi_heads.box_predictor.cls_score.weight"], torch.cat([w[1:], w[:1]]))
    assert torch.equal(theirs["roi_heads.box_predictor.bbox_pred.weight"], ours["roi_heads.box_predictor.bbox_pred.weight"][4:])
    # anchor (size 64, ratio 2.0): detectron2 index 1 * 3 + 2 = 5, torchvision's 2 * 5 + 1 = 11
    assert torch.equal(theirs["proposal_generator.rpn_head.objectness_logits.weight"][5],
                       ours["rpn.head.cls_logits.weight"][11])
    back = c4_detector_from_detectron2({k: v.numpy() for k, v in model.state_dict().items()}, 5, 3)
    assert set(back) == set(ours)
    for k, v in ours.items():
        expect = torch.cat([torch.zeros(4, *v.shape[1:]), v[4:]]) if k.startswith("roi_heads.box_predictor.bbox_pred") else v
        assert torch.equal(back[k], expect), k


def test_detectron2_engine_defaults_to_fp32_unless_bf16_is_asked(monkeypatch, tmp_path):
    """The protocols' bf16 default is our engine's; detectron2 0.6 runs fp32 unless --bf16 is given."""
    import mocobench.transfer.detection.run as run
    from mocobench.transfer.detection.cli import eval_main
    from mocobench.transfer.runner import UsageError

    seen = []

    def evaluation(ckpt, protocol, *a, **k):  # the protocol the command would run, then stop
        seen.append(protocol.bf16)
        raise UsageError("stop here")

    monkeypatch.setattr(run, "evaluation", evaluation)
    base = ["--checkpoint", "random:resnet18", "--dataset", "voc", "--data", str(tmp_path), "--protocol", "tiny",
            "--engine", "detectron2", "--results", str(tmp_path / "res")]
    eval_main("detection", base)
    eval_main("detection", base + ["--bf16=true"])
    assert seen == [False, True]


def _d2_protocols() -> list[str]:
    from mocobench.transfer.adapters.detectron2 import PROTOCOLS as D2_PROTOCOLS

    return sorted(D2_PROTOCOLS)


@pytest.mark.parametrize("name", _d2_protocols())
def test_a_detectron2_preset_run_states_no_change(monkeypatch, tmp_path, name):
    """The protocol the command runs with no overrides (fp32: this engine's preset) states
    run.preset_changes {}, which the leaderboard compares with the paper's number; --bf16=true, an
    override or an --opts key is stated."""
    import mocobench.transfer.detection.run as run
    from mocobench.transfer.detection.cli import eval_main
    from mocobench.transfer.detection.detectron2_engine import ENGINE_DEFAULTS, opts_changes
    from mocobench.transfer.detection.protocols import preset_changes
    from mocobench.transfer.runner import UsageError

    seen = []

    def evaluation(ckpt, protocol, *a, opts=(), **k):  # the protocol the command would run, then stop
        seen.append(preset_changes(protocol, opts_changes(list(opts), {"TEST": {"EVAL_PERIOD": 0}}), ENGINE_DEFAULTS))
        raise UsageError("stop here")

    monkeypatch.setattr(run, "evaluation", evaluation)
    base = ["--checkpoint", "random:resnet50", "--dataset", "coco" if "coco" in name else "voc", "--data",
            str(tmp_path), "--protocol", name, "--engine", "detectron2", "--results", str(tmp_path / "res")]
    eval_main("detection", base)
    eval_main("detection", base + ["--bf16=true", "--base_lr=0.01", "--opts", "TEST.EVAL_PERIOD", "0"])
    assert seen == [{}, {"bf16": {"preset": False, "ran": True},
                         "base_lr": {"preset": 0.02, "ran": 0.01},
                         "opts.TEST.EVAL_PERIOD": {"preset": None, "ran": 0}}]


def _spoiled_devkit(synth_tiny, tmp_path, victim_of, spoil) -> tuple[Path, Path]:
    """(a copy of the tiny VOCdevkit, the file ``victim_of(devkit)`` in it, spoiled by ``spoil``)."""
    devkit = tmp_path / "VOCdevkit"
    shutil.copytree(synth_tiny / "VOCdevkit", devkit)
    victim = victim_of(devkit)
    spoil(victim)
    return devkit, victim


def _refused_before_training(devkit: Path, moco_r50: Path, tmp_path: Path, capsys) -> str:
    """The command's stderr, once it has failed (exit 1) with detectron2 never started."""
    from mocobench.cli import main

    work = tmp_path / "work"
    code = main(["eval", "detection", "--checkpoint", str(moco_r50), "--dataset", "voc", "--data", str(devkit),
                 "--protocol", "moco-voc-c4-24k", "--engine", "detectron2", "--results", str(tmp_path / "results"),
                 "--work-dir", str(work), *SMALL])
    err = capsys.readouterr().err
    assert code == 1, err
    assert not list(work.rglob("log.txt")) and not list(work.rglob("backbone.pkl"))   # detectron2 never started
    return err


def test_a_truncated_image_is_refused_before_detectron2_trains(detectron2_ready, synth_tiny, moco_r50, tmp_path,
                                                               capsys):
    """detectron2's loaders read every listed image and cannot skip one. A JPEG cut short opens (its
    header is whole), so the readers' open-time check passed it and detectron2 failed on it while
    training, as many iterations in as the image took to be drawn: now its data is read first."""
    devkit, victim = _spoiled_devkit(synth_tiny, tmp_path,
                                     lambda d: sorted((d / "VOC2012" / "JPEGImages").glob("*.jpg"))[3],
                                     lambda f: f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2]))
    err = _refused_before_training(devkit, moco_r50, tmp_path, capsys)
    assert f"{victim}: unreadable image" in err and "1 such" in err, err


def _float_corner(xml: Path) -> None:
    text = xml.read_text()
    corner = text.index("<xmin>") + len("<xmin>")
    xml.write_text(text[:corner] + text[corner:].replace("</xmin>", ".5</xmin>", 1))


def test_test_annotations_detectron2s_evaluator_cannot_read_are_refused_before_it_trains(
        detectron2_ready, synth_tiny, moco_r50, tmp_path, capsys):
    """Our reader takes a float corner (annotation tools write them); detectron2's VOC evaluator
    (``parse_rec``) does not, and read the test XML only after the whole schedule."""
    def first_test_xml(devkit: Path) -> Path:
        ids = (devkit / "VOC2007" / "ImageSets" / "Main" / "test.txt").read_text().split()
        return devkit / "VOC2007" / "Annotations" / f"{ids[0]}.xml"

    devkit, victim = _spoiled_devkit(synth_tiny, tmp_path, first_test_xml, _float_corner)
    err = _refused_before_training(devkit, moco_r50, tmp_path, capsys)
    assert f"{victim}: object 1: <bndbox/xmin> is " in err and "parse_rec" in err, err


@pytest.mark.slow
def test_detectron2_killed_and_resumed_ends_as_an_uninterrupted_run(detectron2_ready, synth_tiny, moco_r50,
                                                                   tmp_path, capsys, monkeypatch):
    """Killed after iteration 2, past the checkpoint of iteration 1, and rerun: the resumed run has the
    optimizer's state and draws the same images, augmentations and RPN/ROI samples as the run that was
    never stopped, so both end with bit-identical weights and the same record. Two loader workers map
    the batches."""
    from mocobench.transfer.adapters.detectron2_compat import patched

    with patched():
        from detectron2.engine import train_loop

    small = [a for a in SMALL if not a.startswith(("--max_iter=", "--num_workers="))]
    # precise BN and an evaluation after iteration 2 too: precise BN's stream resumes where it was
    small += ["--max_iter=4", "--checkpoint_period=2", "--num_workers=2", "--opts", "TEST.EVAL_PERIOD", "2"]

    def argv(name):
        return ["--checkpoint", str(moco_r50), "--dataset", "voc", "--data", str(synth_tiny / "VOCdevkit"),
                "--protocol", "moco-voc-c4-24k", "--engine", "detectron2", "--results", str(tmp_path / name / "r"),
                "--work-dir", str(tmp_path / name / "w"), *small]

    code, _, err = _eval(argv("straight"), capsys)
    assert code == 0, err

    class Killed(Exception):
        pass

    run_step = train_loop.SimpleTrainer.run_step

    def killed_at_3(self):
        if self.iter == 3:
            raise Killed
        return run_step(self)

    monkeypatch.setattr(train_loop.SimpleTrainer, "run_step", killed_at_3)
    with pytest.raises(Killed):
        _eval(argv("killed"), capsys)
    monkeypatch.setattr(train_loop.SimpleTrainer, "run_step", run_step)
    (run,) = [p for p in (tmp_path / "killed" / "w").iterdir() if p.is_dir()]
    assert (run / "last_checkpoint").read_text() == "model_0000001.pth"
    # detectron2 0.6's own trainer saved no optimizer state: such a checkpoint is refused, not resumed
    saved = (run / "model_0000001.pth").read_bytes()
    ckpt = torch.load(run / "model_0000001.pth", map_location="cpu", weights_only=False)
    del ckpt["trainer"]["_trainer"]
    torch.save(ckpt, run / "model_0000001.pth")
    from mocobench.cli import main

    code = main(["eval", "detection", *argv("killed")])
    err = capsys.readouterr().err
    assert code == 1 and "model_0000001.pth: a work checkpoint without the optimizer's state" in err, err
    (run / "model_0000001.pth").write_bytes(saved)
    code, _, err = _eval(argv("killed"), capsys)
    assert code == 0, err

    (straight,), _ = load_records(tmp_path / "straight" / "r")
    (resumed,), _ = load_records(tmp_path / "killed" / "r")
    assert straight["run"]["resumed_from_iteration"] == 0 and resumed["run"]["resumed_from_iteration"] == 2
    assert resumed["metrics"] == straight["metrics"]
    (straight_run,) = [p for p in (tmp_path / "straight" / "w").iterdir() if p.is_dir()]
    a = torch.load(straight_run / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    b = torch.load(run / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
