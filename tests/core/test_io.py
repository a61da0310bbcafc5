import json
import os

import pytest

from mocobench.core.io import atomic_write, atomic_write_json, sha256_file


def test_atomic_write_replaces_whole_file(tmp_path):
    p = tmp_path / "sub" / "r.json"
    atomic_write_json(p, {"a": 1})
    atomic_write_json(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 2}
    assert os.listdir(p.parent) == ["r.json"]  # no temporary file left behind


def test_failed_write_keeps_old_content_and_leaves_no_temp(tmp_path):
    p = tmp_path / "ckpt.bin"
    p.write_bytes(b"old")

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(p, boom)
    assert p.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["ckpt.bin"]


def test_sha256_matches_hashlib(tmp_path):
    import hashlib

    p = tmp_path / "x"
    data = os.urandom(3 << 20)
    p.write_bytes(data)
    assert sha256_file(p, chunk=1 << 16) == hashlib.sha256(data).hexdigest()
