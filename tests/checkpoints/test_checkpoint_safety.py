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


# -- numpy arrays are bounded by the file's bytes (audit item 2) -----------------------------------
# N float32s: what the old guard let through, 200 MB (it counted a subarray dtype as 1 byte and
# skipped numpy-integer dimensions; the torch reader had no guard). Refused now, before allocating.
N = 50_000_000


class HugeArray:
    """Pickles as one of the calls that size an array from its arguments alone."""

    def __init__(self, how: str):
        self.how = how

    def __reduce__(self):
        from numpy._core import multiarray

        if self.how == "subarray-dtype":    # ('f4', (N,)) as the dtype of a shape-(1,) array
            return (multiarray._reconstruct, (np.ndarray, (1,), ("f4", (N,))))
        if self.how == "numpy-int-dim":     # a numpy integer as a dimension
            return (multiarray._reconstruct, (np.ndarray, (np.int64(N),), "f4"))
        return (np.ndarray, ((N,), "f4"))   # numpy.ndarray((N,), 'f4') called directly


HOWS = ["subarray-dtype", "numpy-int-dim", "ndarray-called"]


@pytest.mark.parametrize("how", HOWS)
def test_a_plain_pickle_cannot_ask_for_an_array_larger_than_itself(how, tmp_path):
    path = tmp_path / "huge.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"stem.conv1.weight": HugeArray(how)}, "__author__": "MOCO"}, f, protocol=2)
    assert path.stat().st_size < 400
    with pytest.raises(CheckpointError, match=r"huge\.pkl: refused to load: .*(would allocate|called directly)"):
        read_file(path)


@pytest.mark.parametrize("how", HOWS)
def test_a_torch_file_cannot_ask_for_an_array_larger_than_itself(how, tmp_path):
    """The torch reader admits numpy's _reconstruct too: a torch zip file whose pickle asks for it."""
    torch.save({"conv1.weight": HugeArray(how)}, tmp_path / "huge.pth")
    with pytest.raises(CheckpointError, match=r"huge\.pth: refused to load: .*(would allocate|called directly)"):
        read_file(tmp_path / "huge.pth")


def test_real_arrays_and_numpy_integer_shapes_still_load(tmp_path):
    arrays = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "s": np.float32(2.5), "i": np.int64(7),
              "sub": np.zeros(2, dtype=("f4", (3,))), "f": np.asfortranarray(np.ones((2, 3)))}
    for protocol in (2, 4, 5):
        with open(tmp_path / "ok.pkl", "wb") as f:
            pickle.dump(arrays, f, protocol=protocol)
        got, _ = read_file(tmp_path / "ok.pkl")
        for k, v in arrays.items():
            assert type(got[k]) is type(v) and np.array_equal(got[k], v), (protocol, k)
    torch.save(arrays, tmp_path / "ok.pth")
    got, _ = read_file(tmp_path / "ok.pth")
    assert all(type(got[k]) is type(v) and np.array_equal(got[k], v) for k, v in arrays.items())


@pytest.mark.parametrize("container", ["pkl", "pth"])
def test_an_object_array_with_a_short_state_is_refused_not_a_crash(container, tmp_path):
    """numpy's ndarray.__setstate__ reads an object array's list without checking its length against
    the shape: a pickle of ~100 bytes crashed the reading process (SIGSEGV) in both readers. Run in a
    subprocess, so that a regression fails this test rather than the test session."""
    import subprocess
    import sys

    script = f"""
import pickle, numpy as np, torch
from numpy._core import multiarray
from mocobench.checkpoints import CheckpointError
from mocobench.checkpoints.safe_pickle import read_file

class Short:
    def __reduce__(self):
        return (multiarray._reconstruct, (np.ndarray, (0,), b"b"), (1, (10,), np.dtype("O"), False, []))

path = {str(tmp_path / ("short." + container))!r}
if path.endswith(".pkl"):
    with open(path, "wb") as f:
        pickle.dump({{"model": {{"stem.conv1.weight": Short()}}}}, f, protocol=2)
else:
    torch.save({{"conv1.weight": Short()}}, path)
try:
    read_file(path)
    print("LOADED")
except CheckpointError as e:
    print("REFUSED", e)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"reader crashed: rc {done.returncode}\n{done.stderr[-2000:]}"
    assert done.stdout.startswith("REFUSED") and "object array" in done.stdout, done.stdout


def test_a_protocol_5_numpy_pickle_is_read(tmp_path):
    """Protocol 5 pickles an array as numpy.(_)core.numeric._frombuffer(buffer, dtype, shape, order):
    a buffer of the file's bytes, admitted (it was refused as code)."""
    import torchvision

    from mocobench.checkpoints.keymaps import TORCHVISION_TO_DETECTRON2, apply_rules

    net = torchvision.models.resnet18()
    model = {apply_rules(k, TORCHVISION_TO_DETECTRON2): v.numpy() for k, v in net.state_dict().items()
             if not k.startswith("fc.")}
    model["res2.0.conv1.weight"] = np.asfortranarray(model["res2.0.conv1.weight"])   # order="F" too
    with open(tmp_path / "p5.pkl", "wb") as f:
        pickle.dump({"model": model, "__author__": "MOCO", "matching_heuristics": True}, f, protocol=5)
    backbone, _ = load_backbone(tmp_path / "p5.pkl")
    got = backbone.net.state_dict()
    assert all(torch.equal(got[k], v) for k, v in net.state_dict().items() if not k.startswith("fc."))
