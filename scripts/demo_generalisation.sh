#!/usr/bin/env bash
# The generalisation comparison of docs/generalisation.md: the demo U-Net trained on
# domain-randomised data (configs/demo_unet.yaml on data/demo-random) and on the standard demo data
# (the same config on data/demo), 3 seeds each, against zero-filled and CS-TV (lambda chosen on
# the validation split), on the demo test split (in distribution; the same volumes in both
# datasets) and on the out-of-distribution split (Colin27, T1 and PD-like, SNR 200-400, no
# phase-encode oversampling). About an hour on 2 CPU cores; needs Debian's mricron-data.
#   bash scripts/demo_generalisation.sh [OUT]      (default OUT: runs/generalisation/report)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
out=${1:-runs/generalisation/report}
runs=runs/generalisation
seeds=(0 1 2)

# Both datasets hold the same test split; the report reads data/demo's test and ood splits.
[ -d data/demo/singlecoil_train ] || mrirecon data simulate --preset demo --out data/demo
[ -d data/demo/singlecoil_ood ] || mrirecon data simulate --preset ood --source colin27 --out data/demo
[ -d data/demo-random/singlecoil_train ] || mrirecon data simulate --preset demo-random --out data/demo-random

methods=()
for training in random standard; do
  data=data/demo-random
  [ "$training" = standard ] && data=data/demo
  for seed in "${seeds[@]}"; do
    name="unet_${training}_s${seed}"
    ckpt="$runs/$name/version_0/checkpoints/last.ckpt"
    resume=()
    [ -f "$ckpt" ] && resume=(--ckpt_path "$ckpt")
    mrirecon fit --config configs/demo_unet.yaml --seed_everything "$seed" --data.data_path "$data" \
      --trainer.logger.init_args.save_dir "$runs" --trainer.logger.init_args.name "$name" "${resume[@]}"
    methods+=(--method "unet-$training=$ckpt")
  done
done

mrirecon baseline --method zero-filled --config configs/demo_unet.yaml --split test ood --output_dir "$runs/zero-filled"
mrirecon baseline --method cs-tv --config configs/demo_unet.yaml --split test ood --output_dir "$runs/cs-tv" \
  --lam_grid 0.001 0.002 0.004 0.008

mrirecon report --config configs/demo_unet.yaml --split test ood --out "$out" \
  --method "zero-filled=$runs/zero-filled/{split}" --method "cs-tv=$runs/cs-tv/{split}" "${methods[@]}"
