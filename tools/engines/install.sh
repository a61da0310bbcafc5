#!/usr/bin/env bash
# Install the real third-party engines into the given Python environment:
#   tools/engines/install.sh PYTHON [detectron2] [mmseg]      (default: both)
# Each engine has its own script beside this one; the default install of mocobench stays lean.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
PY="${1:?usage: install.sh PYTHON [detectron2] [mmseg]}"
shift
engines=("$@")
[ ${#engines[@]} -gt 0 ] || engines=(detectron2 mmseg)
for e in "${engines[@]}"; do
  [ -f "$here/$e.sh" ] || { echo "install.sh: unknown engine '$e' (known: detectron2, mmseg)" >&2; exit 2; }
  echo "[engines] installing $e"
  bash "$here/$e.sh" "$PY"
done
