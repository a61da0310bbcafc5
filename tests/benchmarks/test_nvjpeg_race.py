"""``benchmarks/nvjpeg_race.py`` runs (on CPU: the code path only) and ``decode`` refuses an
unknown ordering; every ordering decodes the same images."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import nvjpeg_race   # the repository root is on pytest's pythonpath
from mocobench.pretrain import gpu_augment


def test_race_script_runs_every_ordering_on_cpu(tmp_path):
    out = tmp_path / "race.json"
    assert nvjpeg_race.main(["--device", "cpu", "--trials", "2", "--images", "3", "--size", "24", "32",
                             "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert set(gpu_augment.ORDERINGS) <= set(doc)
    assert all(doc[o]["corrupted"] == 0 for o in gpu_augment.ORDERINGS)  # the CPU decoder has no race


def test_decode_orderings_agree_and_unknown_is_refused():
    jpegs = nvjpeg_race.jpeg_batch(3, 24, 32)
    paths = [f"img{i}.jpg" for i in range(3)]
    ref, bad = gpu_augment.decode(jpegs, paths, "cpu", "none")
    assert not bad and [tuple(x.shape) for x in ref] == [(3, 24, 32)] * 3
    for ordering in gpu_augment.ORDERINGS:
        got, _ = gpu_augment.decode(jpegs, paths, "cpu", ordering)
        assert all(torch.equal(a, b) for a, b in zip(got, ref))
    with pytest.raises(ValueError, match="decode ordering 'later'"):
        gpu_augment.decode(jpegs, paths, "cpu", "later")
