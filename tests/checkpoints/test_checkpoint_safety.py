"""Safe reading: pickled code never runs; corrupt files are clear errors naming the file."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from mocobench.checkpoints import CheckpointError, load_backbone
from mocobench.checkpoints.safe_pickle import read_file


class WritesAFile:
    """A pickle payload that would create ``target`` when unpickled."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


class RunsShell:
    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


@pytest.mark.parametrize("payload", [WritesAFile, RunsShell])
def test_pth_with_code_is_refused_and_never_runs(tmp_path, payload):
    target = tmp_path / "pwned"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "evil": payload(target)}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="refused to load") as e:
        load_backbone(tmp_path / "evil.pth")
    assert str(tmp_path / "evil.pth") in str(e.value)
    assert ("open" if payload is WritesAFile else "system") in str(e.value)
    assert not target.exists()


@pytest.mark.parametrize("payload", [WritesAFile, RunsShell])
def test_pkl_with_code_is_refused_and_never_runs(tmp_path, payload):
    target = tmp_path / "pwned"
    obj = {"model": {"stem.conv1.weight": np.zeros((64, 3, 7, 7), np.float32)}, "__author__": payload(target)}
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump(obj, f, protocol=2)
    with pytest.raises(CheckpointError, match="refused to load") as e:
        load_backbone(tmp_path / "evil.pkl")
    assert "evil.pkl" in str(e.value)
    assert not target.exists()


def test_legacy_torch_file_with_code_is_refused(tmp_path):
    target = tmp_path / "pwned"
    torch.save({"x": torch.zeros(2), "evil": WritesAFile(target)}, tmp_path / "legacy.pth",
               _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="refused to load"):
        read_file(tmp_path / "legacy.pth")
    assert not target.exists()
    torch.save({"x": torch.ones(2)}, tmp_path / "ok.pth", _use_new_zipfile_serialization=False)
    obj, container = read_file(tmp_path / "ok.pth")
    assert container == "torch-legacy" and torch.equal(obj["x"], torch.ones(2))


def test_pkl_admits_numpy_and_plain_containers(tmp_path):
    from collections import OrderedDict

    obj = {"model": OrderedDict(a=np.arange(6, dtype=np.float32).reshape(2, 3)), "n": np.float64(1.5),
           "t": (1, "x", None), "s": {1, 2}, "b": b"bytes"}
    with open(tmp_path / "ok.pkl", "wb") as f:
        pickle.dump(obj, f, protocol=2)
    got, container = read_file(tmp_path / "ok.pkl")
    assert container == "pickle"
    np.testing.assert_array_equal(got["model"]["a"], obj["model"]["a"])
    assert got["n"] == 1.5 and got["t"] == (1, "x", None) and got["s"] == {1, 2} and got["b"] == b"bytes"


@pytest.mark.parametrize("cut", [0.5, 0.99])
def test_truncated_files_are_clear_errors(tmp_path, cut):
    import torchvision

    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(CheckpointError, match="r18.pth") as e:
        load_backbone(path)
    assert "corrupt or truncated" in str(e.value)


def test_garbage_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "text.pth").write_text("not a checkpoint\n")
    (tmp_path / "trunc.pkl").write_bytes(pickle.dumps({"model": {"a": np.zeros(3)}}, protocol=2)[:20])
    for name, message in [("empty.pth", "empty"), ("text.pth", "not a checkpoint file"),
                          ("trunc.pkl", "corrupt or truncated"), ("missing.pth", "no such")]:
        with pytest.raises(CheckpointError, match=message) as e:
            load_backbone(tmp_path / name)
        assert name in str(e.value)
