"""Hostile input that needs more than a command line (issue 27): deep images, files skipped once,
the pipeline's own folders in the way, a full disk and a read-only one (tmpfs mounts, as root)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mocobench.datasets.imagefolder import ImageFolder


def test_a_16_bit_png_reads_as_its_8_bit_image_not_white(tmp_path):
    """PIL's convert("RGB") clips I;16 at 255 (every pixel white); the reader scales by 255/65535."""
    rng = np.random.default_rng(0)
    grey8 = rng.integers(0, 256, size=(20, 30), dtype=np.uint8)
    (tmp_path / "a").mkdir()
    Image.fromarray(grey8.astype(np.uint16) * 257).save(tmp_path / "a" / "deep.png")   # 0..65535
    Image.fromarray(grey8).save(tmp_path / "a" / "flat.png")
    assert Image.open(tmp_path / "a" / "deep.png").mode.startswith("I")
    ds = ImageFolder(tmp_path)
    deep, flat = (np.asarray(ds[i][0]) for i in range(2))
    assert deep.shape == (20, 30, 3) and np.array_equal(deep, flat)
    assert (np.asarray(Image.open(tmp_path / "a" / "deep.png").convert("RGB")) == 255).mean() > 0.95  # PIL's clip


def test_a_float_image_is_skipped_and_named_not_guessed(tmp_path):
    (tmp_path / "a").mkdir()
    Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32)).save(tmp_path / "a" / "float.tif")
    ds = ImageFolder(tmp_path)
    with pytest.warns(UserWarning, match="float.tif.*scale of its values is unknown"):
        assert ds[0] is None
    assert ds.n_skipped == 1


def test_an_unreadable_cityscapes_image_is_skipped_once_as_a_file(tmp_path, synth_tiny):
    """Counted once when the split is opened, not once per draw of the training stream."""
    from mocobench.datasets.cityscapes import CityscapesSegmentation

    root = tmp_path / "cityscapes"
    shutil.copytree(synth_tiny / "cityscapes", root)
    full = CityscapesSegmentation(root, "train")
    broken = full.samples[0].image
    broken.write_bytes(broken.read_bytes()[:200])
    with pytest.warns(UserWarning, match="unreadable image skipped"):
        ds = CityscapesSegmentation(root, "train")
    assert ds.skipped == [str(broken)] and len(ds) == len(full) - 1
    assert broken not in [s.image for s in ds.samples]


# -- the pipeline's own folders ----------------------------------------------------------------------
def _pipeline(argv: list[str], capsys, monkeypatch) -> tuple[int, str]:
    from mocobench.pipeline import main

    monkeypatch.delenv("MOCOBENCH_DEBUG", raising=False)
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out + out.err


@pytest.mark.parametrize("blocked", ["out", "state", "logs"])
def test_the_pipeline_says_which_of_its_folders_is_a_file(blocked, tmp_path, capsys, monkeypatch, synth_tiny):
    out = tmp_path / "out"
    if blocked == "out":
        out.write_text("a file")
        target = out
    else:
        (out / "data").mkdir(parents=True)
        shutil.copytree(synth_tiny, out / "data", dirs_exist_ok=True)
        target = out / blocked
        target.write_text("a file")
    rc, text = _pipeline(["--quick", "--out", str(out), "--only", "knn-dino-knn random"], capsys, monkeypatch)
    assert rc == 1, text
    assert "Traceback" not in text
    last = text.strip().splitlines()[-1]
    assert str(target) in last, text


# -- a full disk and a read-only one -------------------------------------------------------------------
@pytest.fixture()
def mount(tmp_path):
    """``mount(options)``: a fresh tmpfs with those mount options; unmounted afterwards."""
    done = []

    def make(options: str) -> Path:
        where = tmp_path / f"mnt{len(done)}"
        where.mkdir()
        if os.geteuid() != 0 or shutil.which("mount") is None:
            message = "mounting a tmpfs needs root and mount(8)"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], check=True)
        done.append(where)
        return where

    yield make
    for where in done:
        subprocess.run(["umount", str(where)], check=False)


def test_a_full_disk_names_the_file_being_written(mount):
    from mocobench.cli import describe
    from mocobench.core.io import atomic_write_bytes

    full = mount("size=64k")
    with pytest.raises(OSError) as e:
        atomic_write_bytes(full / "record.json", b"0" * 1_000_000)
    assert e.value.errno == 28
    assert str(full / "record.json") in describe(e.value)
    assert list(full.iterdir()) == []   # no temporary file left behind


def test_a_feature_cache_that_cannot_be_written_warns_and_the_evaluation_goes_on(mount, tmp_path, capsys, synth_tiny):
    from mocobench.cli import main

    cache = mount("ro")
    with pytest.warns(UserWarning, match="feature cache .* could not be written"):
        rc = main(["eval", "knn", "--checkpoint", "random:resnet18", "--data", str(synth_tiny),
                   "--results", str(tmp_path / "res"), "--cache-dir", str(cache), "--img-size", "32"])
    assert rc == 0, capsys.readouterr().err
    assert len(list((tmp_path / "res").glob("*.json"))) == 1


def test_results_on_a_read_only_disk_are_one_line_naming_the_folder(mount, tmp_path, capsys, synth_tiny):
    from mocobench.cli import main

    results = mount("ro")
    rc = main(["eval", "knn", "--checkpoint", "random:resnet18", "--data", str(synth_tiny),
               "--results", str(results / "res"), "--no-cache", "--img-size", "32"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert str(results) in err.strip().splitlines()[-1] and "read-only" in err.lower()


def test_a_file_name_that_is_not_utf8_is_read_like_any_other(tmp_path, capsys, synth_tiny):
    """Pretraining reads such a folder; kNN used to fail hashing the file list for its cache."""
    from mocobench.cli import main

    data = tmp_path / "data"
    shutil.copytree(synth_tiny / "imagenet", data)
    cls = sorted((data / "train").iterdir())[0]
    first = sorted(cls.iterdir())[0]
    os.rename(os.fsencode(first), os.fsencode(cls) + b"/caf\xe9.JPEG")   # Latin-1 bytes: not UTF-8
    rc = main(["eval", "knn", "--checkpoint", "random:resnet18", "--data", str(data),
               "--results", str(tmp_path / "res"), "--cache-dir", str(tmp_path / "cache"), "--img-size", "32"])
    assert rc == 0, capsys.readouterr().err
    assert len(list((tmp_path / "res").glob("*.json"))) == 1
