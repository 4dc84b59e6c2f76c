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
ckpt=$(ls -t runs/demo/version_*/checkpoints/last.ckpt | head -n 1)
mrirecon test --config configs/demo.yaml --ckpt_path "$ckpt" --output_dir "$(dirname "$(dirname "$ckpt")")/test"

echo
echo "Curves and validation images:  .venv/bin/tensorboard --logdir runs"
