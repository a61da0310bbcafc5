"""The mmseg compatibility patches hold only while the engine runs, and only where they must.

Needs mmengine/mmcv (``./run_all.sh engines``); elsewhere these skip and say so. The option
checks at the end need nothing installed.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch


class MessageHub:  # stands in for the objects mmengine pickles into its checkpoints
    def __init__(self, a):
        self.a = a


def test_importing_the_suite_patches_nothing():
    code = ("import sys, transfer.segmentation.cli, transfer.segmentation.mmseg_engine, "
            "transfer.adapters.mmseg_compat, transfer.adapters.mmseg\n"
            "assert not {'mmcv._ext', 'mmseg', 'mmengine'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_mmcv_ext_stub_only_inside_the_block():
    pytest.importorskip("mmcv", reason="mmcv-lite is not installed (bash tools/engines/mmseg.sh PYTHON)")
    from mocobench.transfer.adapters.mmseg_compat import EXT, _has_real_ops, mmcv_ops_stub

    if _has_real_ops():
        pytest.skip("the full mmcv with compiled ops is installed: nothing is stubbed")
    with mmcv_ops_stub():
        import mmcv._ext as ext

        assert ext.__spec__.name == EXT and callable(ext.nms)
        with pytest.raises(RuntimeError, match="mmcv._ext.nms is a compiled op, and mmcv-lite has none"):
            ext.nms(None)
    assert EXT not in sys.modules
    with pytest.raises(ImportError):
        import mmcv._ext  # noqa: F401


def test_trusted_checkpoints_are_confined_to_the_run(tmp_path):
    """mmengine's checkpoints need full unpickling under torch >= 2.6: only this run's files get it,
    through mmengine's own loader table, and ``torch.load`` itself is never replaced."""
    pytest.importorskip("mmengine", reason="mmengine is not installed (bash tools/engines/mmseg.sh PYTHON)")
    from mmengine.runner.checkpoint import CheckpointLoader

    from mocobench.transfer.adapters.mmseg_compat import trusted_checkpoints

    obj = {"message_hub": MessageHub(1)}  # not a weights_only-safe type
    work, other = tmp_path / "work", tmp_path / "other"
    work.mkdir(), other.mkdir()
    for path in (work / "iter_1.pth", other / "x.pth", other / "named.pth"):
        torch.save(obj, path)
    schemes, load = dict(CheckpointLoader._schemes), torch.load
    with trusted_checkpoints([work], [other / "named.pth"]):
        assert torch.load is load
        assert CheckpointLoader.load_checkpoint(str(work / "iter_1.pth"))["message_hub"].a == 1
        assert CheckpointLoader.load_checkpoint(str(other / "named.pth"))["message_hub"].a == 1
        with pytest.raises(Exception, match="[Ww]eights only"):
            CheckpointLoader.load_checkpoint(str(other / "x.pth"))
        with pytest.raises(Exception, match="[Ww]eights only"):
            torch.load(work / "iter_1.pth")  # a plain torch.load elsewhere in the process
        with pytest.raises(Exception, match="[Ww]eights only"):  # a sibling folder sharing the prefix
            (tmp_path / "work2").mkdir()
            torch.save(obj, tmp_path / "work2" / "a.pth")
            CheckpointLoader.load_checkpoint(str(tmp_path / "work2" / "a.pth"))
    assert dict(CheckpointLoader._schemes) == schemes
    with pytest.raises(Exception, match="[Ww]eights only"):
        CheckpointLoader.load_checkpoint(str(work / "iter_1.pth"))


def test_cfg_options_shown_and_refused_without_mmseg(tmp_path, capsys):
    from mocobench.transfer.segmentation.cli import _eval_parser, eval_main

    assert "--cfg-options KEY=VALUE" in _eval_parser().format_help()
    code = eval_main("segmentation", ["--checkpoint", "random:resnet18", "--dataset", "cityscapes",
                                      "--data", str(tmp_path), "--protocol", "tiny", "--results", str(tmp_path),
                                      "--cfg-options", "optim_wrapper.optimizer.lr=0.1"])
    assert code == 2 and "--cfg-options" in capsys.readouterr().err


def test_cfg_option_outside_the_config_is_refused(synth_tiny, tmp_path, capsys):
    """mmengine would add an unknown key and never read it; the engine refuses it, naming it."""
    pytest.importorskip("mmseg", reason="MMSegmentation is not installed (bash tools/engines/mmseg.sh PYTHON)")
    from mocobench.transfer.segmentation.cli import eval_main

    code = eval_main("segmentation", [
        "--checkpoint", "random:resnet18", "--dataset", "voc2012", "--data", str(synth_tiny),
        "--protocol", "mmseg-fcn-20k", "--engine", "mmseg", "--results", str(tmp_path / "r"),
        "--work-dir", str(tmp_path / "w"), "--train-split=train", "--device", "cpu",
        "--cfg-options", "optim_wraper.optimizer.lr=0.1"])
    assert code == 2 and "optim_wraper" in capsys.readouterr().err
    assert not (tmp_path / "r").exists() and not list((tmp_path / "w").rglob("iter_*.pth"))  # nothing trained
