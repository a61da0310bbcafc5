"""tools/engines/wheelhouse.py packs an installed package folder (detectron2 has no upstream wheel) into
a wheel that pip installs offline, every file of the folder included (detectron2's model-zoo YAMLs)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _wheelhouse():
    spec = importlib.util.spec_from_file_location("wheelhouse", ROOT / "tools" / "engines" / "wheelhouse.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_installed_folder_becomes_a_wheel_pip_installs_offline(tmp_path, monkeypatch):
    pkg = tmp_path / "src" / "tinypkg"
    (pkg / "configs").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .core import answer\n__version__ = '1.2'\n")
    (pkg / "core.py").write_text("def answer():\n    return 42\n")
    (pkg / "configs" / "base.yaml").write_text("MODEL: {}\n")
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "core.cpython-311.pyc").write_bytes(b"stale")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    wheel = _wheelhouse().pack_installed("tinypkg", "tinypkg", "1.2", tmp_path)
    assert wheel.name == "tinypkg-1.2-py3-none-any.whl"
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"tinypkg/__init__.py", "tinypkg/core.py", "tinypkg/configs/base.yaml",
            "tinypkg-1.2.dist-info/RECORD"} <= names and not any("__pycache__" in n for n in names)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(site),
                    str(wheel)], check=True)
    out = subprocess.run([sys.executable, "-c", "import tinypkg, pathlib; print(tinypkg.answer(), "
                          "(pathlib.Path(tinypkg.__file__).parent / 'configs' / 'base.yaml').is_file())"],
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["42", "True"]
