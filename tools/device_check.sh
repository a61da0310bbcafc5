#!/usr/bin/env bash
# The prepared GPU check (issue 29), for a GPU machine without a package registry. Here, once:
#   .venv/bin/python tools/engines/wheelhouse.py .whl       # ~7 MiB: mocobench, detectron2, mmseg and their needs
# There, from the repository root (the device tool: carry .whl; its $OUT comes back):
#   bash tools/device_check.sh [device_check options, e.g. --only engines,linear]
# It installs the wheels into /tmp/site and runs benchmarks/device_check.py from outside the
# repository, so that `mocobench` is the installed wheel (the repository's folders are not a package
# until installed) and `benchmarks` comes from the repository.
set -euo pipefail
repo="$(pwd)"
wheels="${WHEELS:-$repo/.whl}"
out="${OUT:-$repo/outputs/device_check}"
mkdir -p "$out"
ls "$wheels"/*.whl >/dev/null 2>&1 || { echo "device_check.sh: no wheels in $wheels (build them with tools/engines/wheelhouse.py)" >&2; exit 2; }
(cd "$wheels" && sha256sum -c --quiet SHA256SUMS)
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$wheels"/*.whl
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.txt" 2>&1 || true
cd /tmp
PYTHONPATH="/tmp/site:$repo" PYTHONUNBUFFERED=1 MOCOBENCH_PROGRESS=0 \
  python3 -m benchmarks.device_check --out "$out/device_check.json" "$@" 2>&1 | tee "$out/log.txt"
