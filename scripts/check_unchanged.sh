#!/usr/bin/env bash
# check_unchanged.sh SRC OUT DATA [CKPT]: a tiny seeded fit, test, baselines (zero-filled, CS-TV with
# lambda tuned on val) and report with the mrirecon package of the source tree SRC (e.g. a git
# worktree of an older commit), on the dataset DATA; CKPT: score that checkpoint instead of the
# fresh one. Compare two OUT folders with scripts/compare_metrics.py.
set -euo pipefail
SRC=$1; OUT=$2; DATA=$3; CKPT=${4:-}
PYTHON=${PYTHON:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}
PY="env PYTHONPATH=$SRC OMP_NUM_THREADS=1 MRIRECON_CACHE_DIR=$OUT/cache $PYTHON -m mrirecon"
mkdir -p $OUT; cd $OUT
# The U-Net demo config (configs/demo.yaml before it trained the data-consistent cascade).
CFG=$SRC/configs/demo_unet.yaml; [ -f "$CFG" ] || CFG=$SRC/configs/demo.yaml
COMMON="--data.data_path $DATA --data.num_workers 0"
NET="--model.net.init_args.chans 4 --model.net.init_args.num_pool_layers 2"
$PY fit --config $CFG $COMMON $NET --seed_everything 0 --trainer.max_epochs 2 --trainer.enable_progress_bar false \
   --trainer.logger.init_args.save_dir $OUT/runs --trainer.accelerator cpu > fit.log 2>&1
FRESH=$(ls -d $OUT/runs/demo*/version_0)/checkpoints/last.ckpt
$PY test --config $CFG $COMMON $NET --ckpt_path $FRESH --output_dir $OUT/test_fresh --trainer.accelerator cpu > test_fresh.log 2>&1
[ -n "$CKPT" ] || CKPT=$FRESH
$PY test --config $CFG $COMMON $NET --ckpt_path $CKPT --output_dir $OUT/test --trainer.accelerator cpu > test.log 2>&1
$PY baseline --method zero-filled --config $CFG $COMMON --output_dir $OUT/zf --split test val --no_progress > zf.log 2>&1
$PY baseline --method cs-tv --config $CFG $COMMON --cs_tv.iterations 30 --output_dir $OUT/cs --split test val --lam_grid 0.002 0.004 --no_progress > cs.log 2>&1
$PY report --config $CFG $COMMON $NET --split test val --method zero-filled=$OUT/zf/{split} --method cs-tv=$OUT/cs/{split} \
   --method unet=$CKPT --out $OUT/report --no_progress > report.log 2>&1
echo "done $OUT"
