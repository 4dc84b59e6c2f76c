#!/usr/bin/env bash
# Set up a fresh machine: a virtual environment in .venv with mrirecon and its test tools, and
# (where apt-get works) Debian's mricron-data, whose Colin27 head is the simulator's second
# anatomy source. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f /usr/share/mricron/templates/ch2.nii.gz ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "== installing Debian's mricron-data (Colin27 template)"
  apt-get install -y -q mricron-data >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q mricron-data >/dev/null 2>&1; } \
    || echo "   (mricron-data not installed: the simulator will use the MNI152 template alone)"
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import mrirecon, sigpy, deepinv, pytest, onnxruntime, onnxscript" >/dev/null 2>&1; then
  echo "== installing mrirecon into .venv (first time: a few minutes)"
  # No torch/torchvision pins: pip resolves the pair together (see README, Installation).
  # A pip.conf naming package indexes that do not exist on this machine makes pip warn once per
  # package; only those lines are dropped.
  .venv/bin/pip install -q -e ".[test]" 2> >(grep -v "^WARNING: Location '.*' is ignored" >&2)
fi
