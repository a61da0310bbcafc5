"""The real MMSegmentation runs our converted checkpoints end to end (Cityscapes and VOC 2012 FCN).

A few iterations of mmseg's own training and testing on the embedded data, from a MoCo-format
checkpoint written here; each test reads mmseg's own log, the record, the merged config kept beside
it, and reruns to check resume. Needs the engine (``./run_all.sh engines``): in CI its absence
fails, elsewhere the tests skip and say how to install it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from mocobench.core.records import load_records

SMALL = ["--iters=2", "--batch-size=2", "--num-workers=0", "--checkpoint-every=1", "--log-every=1",
         "--device", "cpu"]


@pytest.fixture(scope="module")
def moco_r18(tmp_path_factory) -> tuple[Path, dict]:
    """An official-MoCo-layout checkpoint (``module.encoder_q.*`` + its fc) of a seeded ResNet-18."""
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=128)
    for m in net.modules():  # trained-looking norms, so that no parameter equals mmseg's own init
        if isinstance(m, torch.nn.BatchNorm2d):
            for t in (m.weight.data, m.bias.data, m.running_mean, m.running_var):
                t.copy_(torch.rand_like(t) + 0.5)
    sd = {f"module.encoder_q.{k}": v for k, v in net.state_dict().items()}
    path = tmp_path_factory.mktemp("ckpt") / "moco_r18.pth.tar"
    torch.save({"epoch": 200, "arch": "resnet18", "state_dict": sd}, path)
    # the backbone as a statement independent of our converter: encoder_q minus its fc
    backbone = {k[len("module.encoder_q."):]: v for k, v in sd.items() if ".fc." not in k}
    return path, backbone


def _argv(ckpt: Path, dataset: str, data: Path, protocol: str, tmp_path: Path, seed: int, *extra) -> list[str]:
    """A short mmseg run's arguments; records go to TMP/results, work dirs under TMP/work."""
    return ["--checkpoint", str(ckpt), "--dataset", dataset, "--data", str(data), "--protocol", protocol,
            "--engine", "mmseg", "--results", str(tmp_path / "results"), "--work-dir", str(tmp_path / "work"),
            "--seed", str(seed), *SMALL, *extra]


def _eval(argv, capsys) -> tuple[int, str, str]:
    from mocobench.transfer.segmentation.cli import eval_main

    code = eval_main("segmentation", argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def _logs(work_root: Path) -> list[Path]:
    return sorted(work_root.rglob("20*/20*.log"))  # mmengine: WORK/<timestamp>/<timestamp>.log


def _initialised_from(log_text: str, ckpt: Path) -> set[str]:
    """Backbone parameters that mmengine's initialisation dump says were loaded from ``ckpt``
    (``<name> - torch.Size([...]): \nPretrainedInit: load from <ckpt> \n``)."""
    import re

    blocks = re.findall(r"^(backbone\.\S+) - torch\.Size\(.*\): \n(.*) $", log_text, re.M)
    return {name[len("backbone."):] for name, info in blocks if info == f"PretrainedInit: load from {ckpt}"}


def _check_record_and_log(results: Path, work_root: Path, backbone: dict, lr: float) -> dict:
    (rec,), problems = load_records(results)
    assert not problems
    from mmengine.config import Config
    from mmengine.device import get_device

    assert rec["engine"] == "mmseg" and rec["env"]["device"].split(":")[0] == get_device()
    cfg, ran = rec["config"], rec["run"]
    assert cfg["iters"] == 2 and cfg["batch_size"] == 2 and ran["num_workers"] == 0 and cfg["lr"] == lr
    assert cfg["precision"] == "fp32" and not any("fp16" in d for d in ran["deviations"])
    assert 0 <= rec["metrics"]["mIoU"] <= 100 and set(rec["metrics"]) == {"mIoU", "mAcc", "aAcc"}
    # the merged mmseg config is kept beside the record and says the same
    dumped = Config.fromfile(str(results / ran["mmseg_config"]))
    assert dumped.optim_wrapper.optimizer.lr == lr and dumped.train_cfg.max_iters == 2
    assert dumped.val_cfg is None  # evaluated once, by the test loop
    # mmseg's own log: the converted backbone loaded, every key matched, one evaluation
    (log,) = _logs(work_root)
    text = log.read_text()
    ckpt = next(work_root.rglob("backbone_mmseg.pth"))
    params = {k for k in backbone if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert _initialised_from(text, ckpt) == params
    assert f"all {len(backbone)} backbone keys of {ckpt} matched" in text
    assert "do not match exactly" not in text and "missing keys" not in text
    assert "Iter(val)" not in text and text.count("Iter(test) [") >= 1
    # our converter against the independent statement: backbone.<torchvision key>, same tensors
    sd = torch.load(ckpt, weights_only=True)["state_dict"]
    assert sd.keys() == {f"backbone.{k}" for k in backbone}
    assert all(torch.equal(sd[f"backbone.{k}"], v) for k, v in backbone.items())
    return rec


@pytest.mark.slow
def test_mmseg_cityscapes_fcn_end_to_end(mmseg_ready, synth_tiny, moco_r18, tmp_path, capsys):
    from cityscapesscripts.helpers.labels import labels
    from mmcv.image import rescale_size
    from PIL import Image

    ckpt, backbone = moco_r18
    results, work_root = tmp_path / "results", tmp_path / "work"
    # --cfg-options: a key no option of ours sets (the lr is --lr=; test_mmseg_owned_keys.py)
    argv = _argv(ckpt, "cityscapes", synth_tiny, "mmseg-fcn-40k", tmp_path, 0, "--crop=32,64",
                 "--cfg-options", "model.decode_head.dropout_ratio=0.2")
    code, out, err = _eval(argv, capsys)
    assert code == 0, err
    rec = _check_record_and_log(results, work_root, backbone, lr=0.01)
    # mmengine read our files through the loader confined to this run's work dir
    assert f"Loads checkpoint by this_run backend from path: {next(work_root.rglob('backbone_mmseg.pth'))}" in out
    assert rec["config"]["cfg_options"] == {"model.decode_head.dropout_ratio": 0.2}
    # not the paper's recipe: the overridden protocol fields (run settings are no change) and the
    # --cfg-options key, which no protocol field sets
    assert rec["run"]["preset_changes"] == {
        "iters": {"preset": 40_000, "ran": 2}, "batch_size": {"preset": 8, "ran": 2},
        "crop": {"preset": [512, 1024], "ran": [32, 64]},
        "cfg_options.model.decode_head.dropout_ratio": {"preset": None, "ran": 0.2}}
    # the config that ran, kept beside the record, builds a head that drops 20% of its features
    from mmengine.config import Config

    from mocobench.transfer.adapters.mmseg_compat import mmcv_ops_stub

    ran = Config.fromfile(str(results / rec["run"]["mmseg_config"]))
    assert ran.model.decode_head.dropout_ratio == 0.2 and ran.model.auxiliary_head.dropout_ratio == 0.1
    with mmcv_ops_stub():
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules

        register_all_modules()
        head = MODELS.build(ran.model.decode_head)
    assert isinstance(head.dropout, torch.nn.Dropout2d) and head.dropout.p == 0.2
    assert rec["config"]["crop"] == [32, 64] and rec["dataset"]["splits"] == {"train": 8, "val": 4}
    # the resize bound follows the crop: the 128x64 images are evaluated at their own size
    assert rescale_size((128, 64), tuple(rec["config"]["mmseg_scale"])) == (128, 64)
    # trainId masks written from labelIds by the official table
    lut = {l.id: l.trainId if 0 <= l.trainId < 255 else 255 for l in labels if l.id >= 0}
    gt = next((synth_tiny / "cityscapes" / "gtFine" / "val").rglob("*_gtFine_labelIds.png"))
    written = next(work_root.rglob(gt.name.replace("labelIds", "labelTrainIds")))
    ids = np.array(Image.open(gt))
    assert np.array_equal(np.array(Image.open(written)), np.vectorize(lut.get)(ids).astype(np.uint8))

    # a rerun of the finished run does nothing and writes no second record
    code, out, _ = _eval(argv, capsys)
    assert code == 0 and "evaluated already" in out
    assert len(load_records(results)[0]) == 1 and len(_logs(work_root)) == 1
    # and starting it over would write a second record for the seed: refused, naming the record
    code, _, err = _eval([*argv, "--resume", "no"], capsys)
    assert code == 2 and "finished run" in err and str(results) in err
    # --resume PATH means that checkpoint: after a crash before the record (marker and record gone),
    # resuming from iteration 1 trains iteration 2 only and writes one record
    (results / rec["run"]["mmseg_config"]).unlink()
    next(results.glob("*.json")).unlink()
    iter1 = next(work_root.rglob("iter_1.pth"))
    code, out, err = _eval([*argv, "--resume", str(iter1)], capsys)
    assert code == 0, err
    (log,) = [p for p in _logs(work_root)][1:]
    assert "resumed epoch: 0, iter: 1" in log.read_text() and "Iter(train) [2/2]" in log.read_text()
    assert len(load_records(results)[0]) == 1
    # a missing resume file is refused (a failure, exit 1, as every missing path), not taken for "no resume"
    from mocobench.cli import main

    assert main(["eval", "segmentation", *argv, "--resume", str(tmp_path / "nope.pth")]) == 1
    assert "--resume" in capsys.readouterr().err


@pytest.mark.slow
def test_mmseg_voc2012_fcn_end_to_end(mmseg_ready, synth_tiny, moco_r18, tmp_path, capsys):
    ckpt, backbone = moco_r18
    results, work_root = tmp_path / "results", tmp_path / "work"
    # the embedded VOC has no SBD masks: train on train instead of train_aug
    argv = _argv(ckpt, "voc2012", synth_tiny, "mmseg-fcn-20k", tmp_path, 1, "--crop=48,64", "--train-split=train")
    code, out, err = _eval(argv, capsys)
    assert code == 0, err
    rec = _check_record_and_log(results, work_root, backbone, lr=0.01)
    assert rec["seed"] == 1 and rec["dataset"]["splits"] == {"train": 8, "val": 4}
    assert rec["config"]["mmseg_protocol"] == "fcn-r50-d8-voc12aug-20k"
    # crash after the last checkpoint, before the record: the rerun resumes at iteration 2 and
    # writes exactly one record
    next(work_root.rglob("record.done")).unlink()
    next(results.glob("*.json")).unlink()
    code, out, err = _eval(argv, capsys)
    assert code == 0, err
    assert "resumed epoch: 0, iter: 2" in _logs(work_root)[-1].read_text()
    assert len(load_records(results)[0]) == 1


@pytest.mark.slow
def test_mmseg_under_torchrun_rank0_alone_writes(mmseg_ready, synth_tiny, moco_r18, tmp_path):
    """Two CPU processes (gloo, DDP without device ids): one record, stating both processes."""
    import subprocess
    import sys

    ckpt, _ = moco_r18
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "mocobench.transfer", "eval", "segmentation", *_argv(ckpt, "cityscapes", synth_tiny, "mmseg-fcn-40k", tmp_path, 0, "--crop=32,64",
                                  "--sync-bn=false")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MOCOBENCH_PROGRESS": "0"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (rec,), _ = load_records(results)
    assert rec["run"]["world_size"] == 2 and rec["config"]["batch_size"] == 2
    assert len(list(results.glob("*.mmseg.py"))) == 1


@pytest.mark.slow
def test_mmseg_killed_and_resumed_ends_as_an_uninterrupted_run(mmseg_ready, synth_tiny, moco_r18, tmp_path, capsys,
                                                               monkeypatch):
    """Killed after iteration 2, past the checkpoint of iteration 2 (mmengine counts from 1), and rerun:
    mmengine replays the data up to the resume point and the engine seeds each step's own draws (the
    decode head's dropout), so both runs end with bit-identical weights and the same metrics. Without
    the per-step seed the resumed run's dropout masks differed and so did its mIoU."""
    from mmengine.runner import loops

    ckpt, _ = moco_r18
    small = [a for a in SMALL if not a.startswith(("--iters=", "--checkpoint-every="))]

    def argv(name):
        return ["--checkpoint", str(ckpt), "--dataset", "cityscapes", "--data", str(synth_tiny),
                "--protocol", "mmseg-fcn-40k", "--engine", "mmseg", "--results", str(tmp_path / name / "results"),
                "--work-dir", str(tmp_path / name / "work"), *small, "--iters=4", "--checkpoint-every=2",
                "--crop=32,64"]

    code, _, err = _eval(argv("straight"), capsys)
    assert code == 0, err

    class Killed(Exception):
        pass

    run_iter = loops.IterBasedTrainLoop.run_iter

    def killed_at_3(self, data_batch):
        if self._iter == 3:
            raise Killed
        return run_iter(self, data_batch)

    monkeypatch.setattr(loops.IterBasedTrainLoop, "run_iter", killed_at_3)
    with pytest.raises(Killed):
        _eval(argv("killed"), capsys)
    monkeypatch.setattr(loops.IterBasedTrainLoop, "run_iter", run_iter)
    code, _, err = _eval(argv("killed"), capsys)
    assert code == 0, err

    (straight,), _ = load_records(tmp_path / "straight" / "results")
    (resumed,), _ = load_records(tmp_path / "killed" / "results")
    assert resumed["run"]["resumed_from_iteration"] == 2 and resumed["metrics"] == straight["metrics"]
    a = torch.load(next((tmp_path / "straight" / "work").rglob("iter_4.pth")), weights_only=False)["state_dict"]
    b = torch.load(next((tmp_path / "killed" / "work").rglob("iter_4.pth")), weights_only=False)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
