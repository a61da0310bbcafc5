"""detectron2 starts a process per GPU itself (its ``launch``): under torchrun each rank would start
a whole run of its own into one work folder, so the engine refuses to run there, before any work."""

from __future__ import annotations


def test_detectron2_under_torchrun_is_refused(synth_tiny, tmp_path, monkeypatch, capsys):
    from mocobench.transfer.detection.cli import eval_main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    code = eval_main("detection", ["--checkpoint", "random:resnet50", "--dataset", "voc",
                                   "--data", str(synth_tiny / "VOCdevkit"), "--protocol", "moco-voc-c4-24k",
                                   "--engine", "detectron2", "--results", str(tmp_path / "r"),
                                   "--work-dir", str(tmp_path / "w"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "not under torchrun" in err, err
    assert not (tmp_path / "w").exists() and not (tmp_path / "r").exists()
