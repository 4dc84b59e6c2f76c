#!/usr/bin/env bash
# The whole demo on a CPU: install, simulate the demo data (and, where Colin27 is installed, an
# out-of-distribution split of a head never trained on), train a cascade of U-Nets with data
# consistency, evaluate it, and compare it with zero-filled and CS-TV on both test splits in
# runs/demo/version_N/report/report.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
data=data/demo-mixed
runs=runs/demo

if [ ! -d "$data/singlecoil_train" ]; then
  mrirecon data simulate --preset demo-mixed --out "$data"
fi
splits=(test)
if [ -d "$data/singlecoil_ood" ]; then
  splits=(test ood)
elif mrirecon data simulate --preset ood --source colin27 --out "$data"; then
  splits=(test ood)
else
  echo "(no out-of-distribution split: Colin27 comes with Debian's mricron-data; the report shows the test split)"
fi
mrirecon data check "$data"

mrirecon fit --config configs/demo.yaml
mrirecon test --config configs/demo.yaml --ckpt_path last
run=$(ls -d "$runs"/version_* | sort -t_ -k2 -n | tail -1)

# Baselines on the same splits; CS-TV's lambda is chosen on the validation split.
baseline() {  # method, output folder, extra arguments
  local method=$1 out=$2
  shift 2
  mrirecon baseline --method "$method" --config configs/demo.yaml --split "${splits[@]}" --output_dir "$out" "$@"
}
baseline zero-filled "$runs/zero-filled"
# CS-TV's lambda is the config's, chosen on the validation split (configs/demo.yaml says how).
baseline cs-tv "$runs/cs-tv"
folder() { if [ ${#splits[@]} -gt 1 ]; then echo "$1/{split}"; else echo "$1"; fi; }
mrirecon report --config configs/demo.yaml --split "${splits[@]}" --out "$run/report" \
  --method "zero-filled=$(folder "$runs/zero-filled")" \
  --method "cs-tv=$(folder "$runs/cs-tv")" \
  --method "unet-dc=$run/checkpoints/last.ckpt"

echo
echo "Report (in- and out-of-distribution):  $run/report/report.md"
echo "Curves and validation images:          .venv/bin/tensorboard --logdir runs"
