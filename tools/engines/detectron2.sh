#!/usr/bin/env bash
# Install the real detectron2 (v0.6, Python package only) into the environment of PYTHON:
#   bash tools/engines/detectron2.sh PYTHON
# Called by tools/engines/install.sh (./run_all.sh engines, .ci/run). Idempotent: when the same
# source is already installed and its dependencies import, it returns in about a second.
#
# Where it comes from: detectron2 is not on the package registry under its own name, but the
# registry's source distribution pb1-detectron2==0.6 holds upstream detectron2 v0.6's Python
# package byte for byte, without layers/csrc. pip >= 25 refuses that sdist (an extra declares a
# URL dependency) and its setup.py cannot compile without csrc, so: download it with pip < 25
# (kept in a temporary folder, never installed into PYTHON's environment), check its sha256,
# and copy its detectron2/ package into PYTHON's site-packages. No compiled op is needed for the
# R50-C4/FPN Faster/Mask R-CNN (ROIAlign and NMS come from torchvision); the compatibility
# patches for today's numpy/Pillow and the missing detectron2._C live in
# transfer/adapters/detectron2_compat.py and are applied only while the engine runs.
set -euo pipefail
PY="${1:?usage: detectron2.sh PYTHON}"
SDIST=pb1-detectron2-0.6.tar.gz
SHA256=5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29
DEPS=('fvcore<0.1.6' 'iopath<0.1.10' 'yacs>=0.1.8' 'omegaconf>=2.1' 'hydra-core>=1.1' tabulate termcolor
      cloudpickle tensorboard pycocotools matplotlib)

site="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
marker="$site/detectron2/.mocobench-source"
if [ -f "$marker" ] && [ "$(cat "$marker")" = "$SDIST sha256=$SHA256" ] \
   && "$PY" -c 'import fvcore, iopath, yacs, omegaconf, hydra, tabulate, termcolor, pycocotools' 2>/dev/null; then
  echo "[detectron2] already installed in $site (from $SDIST)"
  exit 0
fi

echo "[detectron2] dependencies"
"$PY" -m pip install -q "${DEPS[@]}"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "[detectron2] fetching $SDIST with pip < 25 (temporary, in $tmp)"
"$PY" -m pip install -q --target "$tmp/oldpip" 'pip<25' wheel
# --no-build-isolation: setup.py imports torch to prepare the metadata; PYTHON's torch serves.
PYTHONPATH="$tmp/oldpip" "$PY" -m pip download -q --no-deps --no-build-isolation -d "$tmp/dl" 'pb1-detectron2==0.6'
got="$(sha256sum "$tmp/dl/$SDIST" | cut -d' ' -f1)"
if [ "$got" != "$SHA256" ]; then
  echo "[detectron2] $SDIST: sha256 $got, expected $SHA256; not installing" >&2
  exit 1
fi
tar -xzf "$tmp/dl/$SDIST" -C "$tmp"
src="$tmp/pb1-detectron2-0.6/detectron2"
[ -f "$src/__init__.py" ] || { echo "[detectron2] $SDIST holds no detectron2/ package" >&2; exit 1; }
# Copy beside the old one, then swap, so an interrupted install never leaves half a package.
rm -rf "$site/detectron2.new"
cp -r "$src" "$site/detectron2.new"
echo "$SDIST sha256=$SHA256" > "$site/detectron2.new/.mocobench-source"
rm -rf "$site/detectron2"
mv "$site/detectron2.new" "$site/detectron2"
"$PY" -c 'import detectron2; print("[detectron2] installed", detectron2.__version__, "at", detectron2.__path__[0])'
