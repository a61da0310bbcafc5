#!/usr/bin/env bash
# Install the real MMSegmentation (1.2.2) into the environment of PYTHON:
#   bash tools/engines/mmseg.sh PYTHON
# Called by tools/engines/install.sh (./run_all.sh engines, .ci/run). Idempotent: when the pinned
# versions are installed and import, it returns in about a second.
#
# Pins: mmsegmentation 1.2.2 asserts mmcv < 2.2.0 when imported, so mmcv-lite 2.1.0 (pure Python
# wheel, brings opencv-python); mmseg imports ftfy and regex without declaring them. mmcv-lite has
# no compiled ops (mmcv._ext); FCN with ResNet never calls one, and the stub that satisfies mmseg's
# imports lives in transfer/adapters/mmseg_compat.py, installed only while the engine runs.
set -euo pipefail
PY="${1:?usage: mmseg.sh PYTHON}"
PINS=('mmengine==0.10.7' 'mmcv-lite==2.1.0' 'mmsegmentation==1.2.2' ftfy regex)

if "$PY" - <<'EOF' 2>/dev/null
from importlib import metadata
want = {"mmengine": "0.10.7", "mmcv-lite": "2.1.0", "mmsegmentation": "1.2.2"}
for name, version in want.items():
    assert metadata.version(name) == version, name
import ftfy, regex, cv2, mmengine  # noqa: F401  (the undeclared ones, and what mmcv-lite brings)
EOF
then
  echo "[mmseg] already installed (mmengine 0.10.7, mmcv-lite 2.1.0, mmsegmentation 1.2.2)"
  exit 0
fi
echo "[mmseg] installing ${PINS[*]}"
"$PY" -m pip install -q "${PINS[@]}"
"$PY" -c 'import mmengine, mmcv; print("[mmseg] installed mmengine", mmengine.__version__, "mmcv-lite", mmcv.__version__)'
