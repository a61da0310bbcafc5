"""Files the suite writes get the user's umask, and a record whose write fails is not lost."""

from __future__ import annotations

import json
import os
import stat

import pytest

from mocobench.core.io import atomic_write_text
from mocobench.core.records import RecordWriteError, new_record, write_record


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_atomic_write_follows_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        path = atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def _record():
    return new_record(checkpoint={"name": "random:resnet18"}, task="linear", protocol="fast",
                      dataset={"name": "synth"}, metrics={"top1": 12.5}, config={}, run={}, seed=0,
                      wall_time_s=1.0, device="cpu")


def test_failed_record_write_keeps_the_result(tmp_path, capsys):
    blocked = tmp_path / "results"
    blocked.write_text("a file where the results folder should be")
    work = tmp_path / "work"
    with pytest.raises(RecordWriteError) as err:
        write_record(blocked, _record(), fallback_dir=work)
    saved = err.value.saved
    assert saved is not None and saved.parent == work
    assert json.loads(saved.read_text())["metrics"] == {"top1": 12.5}
    assert str(blocked) in str(err.value) and str(saved) in str(err.value)
    assert '"top1": 12.5' in capsys.readouterr().err
