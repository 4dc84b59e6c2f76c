#!/usr/bin/env bash
# The multi-coil comparison of docs/demo_report/multicoil: E2E-VarNet vs the U-Net (same data,
# masks and number of steps, 3 seeds each), CS-TV (lambda chosen on the validation split) and
# zero-filled, on the multi-coil demo test split. Hours on 2 CPU cores (the VarNet fits and
# multi-coil CS-TV take most of it); a finished fit is resumed, not retrained.
#   bash scripts/demo_multicoil.sh [OUT]      (default OUT: runs/demo_multicoil/report)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
out=${1:-runs/demo_multicoil/report}
runs=runs/demo_multicoil
seeds=(0 1 2)

if [ ! -d data/demo/multicoil_train ]; then
  mrirecon data simulate --preset demo --challenge multicoil --out data/demo_multicoil_tmp
  mkdir -p data/demo && mv data/demo_multicoil_tmp/multicoil_* data/demo/ && rm -r data/demo_multicoil_tmp
fi

methods=()
for model in unet varnet; do
  config=configs/demo_multicoil_unet.yaml
  [ "$model" = varnet ] && config=configs/demo_varnet.yaml
  for seed in "${seeds[@]}"; do
    name="${model}_s${seed}"
    ckpt="$runs/$name/version_0/checkpoints/last.ckpt"
    if [ -f "$ckpt" ]; then
      mrirecon fit --config "$config" --seed_everything "$seed" --trainer.logger.init_args.save_dir "$runs" \
        --trainer.logger.init_args.name "$name" --ckpt_path "$ckpt"
    else
      mrirecon fit --config "$config" --seed_everything "$seed" --trainer.logger.init_args.save_dir "$runs" \
        --trainer.logger.init_args.name "$name"
    fi
    methods+=(--method "$model=$ckpt")
  done
done

mrirecon baseline --method zero-filled --config configs/demo_varnet.yaml --output_dir "$runs/zero-filled"
mrirecon baseline --method cs-tv --config configs/demo_varnet.yaml --output_dir "$runs/cs-tv" \
  --lam_grid 0.001 0.002 0.004 0.008

mrirecon report --config configs/demo_varnet.yaml --out "$out" \
  --method "zero-filled=$runs/zero-filled" --method "cs-tv=$runs/cs-tv" "${methods[@]}"
