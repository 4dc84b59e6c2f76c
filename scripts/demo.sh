#!/usr/bin/env bash
# The whole demo on a CPU: install, simulate the demo data, train, evaluate on the test split.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

if [ ! -d data/demo/singlecoil_train ]; then
  mrirecon data simulate --preset demo --out data/demo
fi
mrirecon data check data/demo

mrirecon fit --config configs/demo.yaml
mrirecon test --config configs/demo.yaml --ckpt_path last

echo
echo "Curves and validation images:  .venv/bin/tensorboard --logdir runs"
