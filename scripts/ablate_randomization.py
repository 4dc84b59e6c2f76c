"""Domain randomisation's factors switched on one at a time (docs/generalisation.md).

Each step adds factors to the one before, from the standard demo data (``none``) to full
randomisation (``shells``); ``mixed`` is full randomisation for half of the volumes and the
standard data for the other half. For each step the script simulates the demo's train and val
volumes, trains the demo U-Net (configs/demo_unet.yaml, one seed) and scores every step on the demo
test split (in distribution) and the out-of-distribution split with ``mrirecon report``.

    python scripts/ablate_randomization.py [--seed 0] [--out runs/ablation]

Needs data/demo with its ood split (``bash scripts/demo_generalisation.sh`` or ``scripts/demo.sh``
makes it); about 6 minutes per step on 2 CPU cores. A step whose run finished is not trained again.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from mrirecon.data.simulate import PRESETS, Randomization, simulate_dataset

MRIRECON = [sys.executable, "-m", "mrirecon"]
FULL = Randomization()
# The standard demo's settings, expressed as (degenerate) randomisation ranges.
NONE = Randomization(snr=PRESETS["demo"].snr, pe_oversampling=(1.15,), fov_margin=(1.2, 1.2), phase_std=(1.5, 1.5),
                     bias_std=(0.2, 0.2), blur_px=(0.0, 0.0), shells=0.0, contrast=False)
STEPS = {
    "none": NONE,
    "snr": replace(NONE, snr=FULL.snr),
    "geometry": replace(NONE, snr=FULL.snr, pe_oversampling=FULL.pe_oversampling, fov_margin=FULL.fov_margin,
                        phase_std=FULL.phase_std),
    "contrast": replace(FULL, bias_std=NONE.bias_std, blur_px=NONE.blur_px, shells=0.0),
    "bias-blur": replace(FULL, shells=0.0),
    "shells (full)": FULL,
    "mixed": replace(FULL, standard_fraction=0.5),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--out", type=Path, default=Path("runs/ablation"))
    parser.add_argument("--data", type=Path, default=Path("data/ablation"))
    parser.add_argument("--steps", nargs="+", default=list(STEPS), choices=list(STEPS))
    args = parser.parse_args()
    if not Path("data/demo/singlecoil_ood").is_dir():
        print("mrirecon: error: data/demo/singlecoil_ood: missing; run scripts/demo_generalisation.sh first",
              file=sys.stderr)
        return 2

    demo = PRESETS["demo"]
    methods = []
    for step in args.steps:
        slug = step.split()[0]
        data = args.data / slug
        if not (data / "singlecoil_train").is_dir():
            preset = replace(demo, splits=("train", "val"), volumes=demo.volumes[:2], randomized=("train", "val"),
                             randomization=STEPS[step])
            simulate_dataset(data, preset=preset, seed=0, overwrite=True)
        name = f"unet_{slug}_s{args.seed}"
        ckpt = args.out / name / "version_0" / "checkpoints" / "last.ckpt"
        fit = [*MRIRECON, "fit", "--config", "configs/demo_unet.yaml", "--seed_everything", str(args.seed),
               "--data.data_path", str(data), "--trainer.logger.init_args.save_dir", str(args.out),
               "--trainer.logger.init_args.name", name]
        subprocess.run(fit + (["--ckpt_path", str(ckpt)] if ckpt.is_file() else []), check=True)
        methods += ["--method", f"{slug}={ckpt}"]
    subprocess.run([*MRIRECON, "report", "--config", "configs/demo_unet.yaml", "--split", "test", "ood",
                    "--out", str(args.out / "report"), *methods], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
