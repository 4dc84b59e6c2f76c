#!/usr/bin/env bash
# Train on a SLURM cluster with Lightning's DDP: one task per GPU, Lightning reads the ranks
# from SLURM. Submit from the repository root (after `bash scripts/setup.sh`):
#
#   sbatch scripts/slurm_fit.sh configs/knee_multicoil_unet.yaml --data.data_path /data/fastmri/knee
#
# On preemption or at the time limit SLURM sends SIGTERM: the running step finishes, last.ckpt is
# saved, and the job ends (the configs also save it every 2000 steps). Resubmitting the same
# command resumes the newest run of the config's logger (--ckpt_path last) in the same run
# folder; MRIRECON_RESUME=0 starts a new run instead.
#SBATCH --job-name=mrirecon-fit
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --time=48:00:00
#SBATCH --output=slurm-%j.out
set -euo pipefail
config=${1:?usage: sbatch scripts/slurm_fit.sh CONFIG [overrides...]}
shift

resume=()
if [ "${MRIRECON_RESUME:-1}" = 1 ] && .venv/bin/python - "$config" <<'PY'
import sys
from pathlib import Path

import yaml

logger = yaml.safe_load(Path(sys.argv[1]).read_text()).get("trainer", {}).get("logger", {}) or {}
init = logger.get("init_args", {}) if isinstance(logger, dict) else {}
runs = Path(init.get("save_dir", "runs")) / str(init.get("name", "default"))
sys.exit(0 if any(runs.glob("version_*/checkpoints/last.ckpt")) else 1)
PY
then
  resume=(--ckpt_path last)
fi

# Every process reads its data loader settings from the config; devices and nodes from SLURM.
srun .venv/bin/python -m mrirecon fit --config "$config" "$@" "${resume[@]}" \
  --trainer.strategy ddp \
  --trainer.accelerator gpu \
  --trainer.devices "${SLURM_NTASKS_PER_NODE}" \
  --trainer.num_nodes "${SLURM_NNODES}"
