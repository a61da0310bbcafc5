"""Build the wheelhouse that installs mocobench and its two engines on a GPU machine with no registry:

    .venv/bin/python tools/engines/wheelhouse.py OUT [--python-version 3.12] [--limit-mib 60]

then, on the GPU machine (its Python already holds torch, torchvision, timm, numpy, pandas, opencv,
matplotlib, tensorboard, ...; the machine's package list is in the device tool's KINDS.md):

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site OUT/*.whl
    export PYTHONPATH=/tmp/site

What goes in: mocobench itself; detectron2 v0.6's Python package exactly as ``detectron2.sh`` installed
it into this environment (packed as a wheel here: upstream publishes none); the engines' pure-Python
dependencies that such a machine lacks, at the versions installed here; pycocotools as a binary wheel
for the target Python (the only compiled one). Every wheel's sha256 goes into ``OUT/SHA256SUMS``. The
whole must stay under ``--limit-mib`` (the device tool carries 64 MiB with the working tree); over it,
nothing is left half-written: the build fails and says what is large.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# pure Python; the GPU image lacks them (detectron2's, then MMSegmentation's needs, and their needs)
PURE = ("fvcore", "iopath", "yacs", "omegaconf", "hydra-core", "antlr4-python3-runtime", "termcolor",
        "mmengine", "mmcv-lite", "mmsegmentation", "ftfy", "wcwidth", "addict", "yapf", "prettytable",
        "platformdirs", "cityscapesscripts", "pyquaternion", "coloredlogs", "humanfriendly", "appdirs")
BINARY = ("pycocotools",)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")


def _pip(*args: str, cwd: Path | None = None) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args], check=True, cwd=cwd)


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def pack_installed(package: str, dist_name: str, version: str, out: Path) -> Path:
    """A wheel of the installed package folder ``package`` (every file in it), tagged py3-none-any."""
    import importlib

    folder = Path(importlib.import_module(package).__path__[0])
    info = f"{dist_name}-{version}.dist-info"
    files = {f"{package}/{p.relative_to(folder).as_posix()}": p.read_bytes()
             for p in sorted(folder.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: {version}\n".encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: mocobench wheelhouse\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = [_record_line(n, d) for n, d in files.items()] + [f"{info}/RECORD,,"]
    path = out / f"{dist_name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return path


def build(out: Path, python_version: str, limit_mib: float) -> list[Path]:
    missing = [n for n in PURE + BINARY if not _installed(n)]
    if missing:
        raise SystemExit(f"wheelhouse: not installed here: {', '.join(missing)} (run ./run_all.sh engines first)")
    tmp = Path(tempfile.mkdtemp(prefix="wheelhouse-"))
    try:
        _pip("wheel", "--no-deps", "-w", str(tmp), *(f"{n}=={metadata.version(n)}" for n in PURE))
        _pip("download", "--no-deps", "--only-binary=:all:", "--implementation", "cp", "--python-version", python_version,
             *(x for p in PLATFORMS for x in ("--platform", p)), "-d", str(tmp),
             *(f"{n}=={metadata.version(n)}" for n in BINARY))
        # from a copy: setuptools builds in the source folder (build/, *.egg-info)
        src = tmp / "src"
        shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", ".whl", "outputs", "build", "*.egg-info",
                                                                  "__pycache__", ".pytest_cache"))
        _pip("wheel", "--no-deps", "-w", str(tmp), str(src))
        import detectron2   # installed as a package folder (tools/engines/detectron2.sh), without metadata

        pack_installed("detectron2", "detectron2", detectron2.__version__, tmp)
        wheels = sorted(tmp.glob("*.whl"))
        size = sum(w.stat().st_size for w in wheels) / 2 ** 20
        if size > limit_mib:
            big = ", ".join(f"{w.name} {w.stat().st_size / 2 ** 20:.1f} MiB" for w in
                            sorted(wheels, key=lambda w: -w.stat().st_size)[:5])
            raise SystemExit(f"wheelhouse: {size:.1f} MiB is over the {limit_mib:g} MiB limit; the largest: {big}")
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob("*.whl"):
            old.unlink()
        for w in wheels:
            shutil.move(str(w), out / w.name)
        sums = "".join(f"{hashlib.sha256((out / w.name).read_bytes()).hexdigest()}  {w.name}\n" for w in wheels)
        (out / "SHA256SUMS").write_text(sums)
        return [out / w.name for w in wheels]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--python-version", default="3.12", help="the GPU machine's Python, for the binary wheels")
    ap.add_argument("--limit-mib", type=float, default=60.0)
    args = ap.parse_args(argv)
    wheels = build(Path(args.out), args.python_version, args.limit_mib)
    total = sum(w.stat().st_size for w in wheels) / 2 ** 20
    for w in wheels:
        print(f"{w.stat().st_size / 2 ** 20:7.2f} MiB  {w.name}")
    print(f"{len(wheels)} wheels, {total:.1f} MiB in {args.out} (SHA256SUMS beside them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
