"""Scan-specific adaptation on a few volumes, against no adaptation (docs/self_supervised.md).

For each volume and each of the demo's fixed 4x/8x masks, the volume's SSIM (fastmri.evaluate.ssim
against its reference) without adaptation and with each STEPS:LR setting, and the time taken:

    python scripts/adapt_pilot.py --ckpt runs/demo/version_0/checkpoints/last.ckpt \\
        --files data/demo-mixed/singlecoil_ood/sim_ood_000[01].h5 --settings 20:1e-4 20:1e-3

A pilot, one seed and a few volumes: `mrirecon predict --adapt.steps N` into a folder and
`mrirecon report` on it score a whole split.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from fastmri.evaluate import ssim

from mrirecon.core.masks import ColumnMaskSampler
from mrirecon.data.volumes import read_volume_info
from mrirecon.methods.adaptation import AdaptSettings
from mrirecon.methods.trained import TrainedModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", type=Path, required=True)
    parser.add_argument("--files", type=Path, nargs="+", required=True)
    parser.add_argument("--settings", nargs="+", default=["20:1e-4"], help="STEPS:LR of each adaptation tried")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = TrainedModel.from_checkpoint(args.ckpt, "cpu")
    masks = ColumnMaskSampler("random", [0.08, 0.04], [4, 8])  # the demo's
    tried = [None] + [AdaptSettings(steps=int(s), lr=float(lr)) for s, lr in (x.split(":") for x in args.settings)]
    print("volume acquisition acceleration | none | " + " | ".join(args.settings))
    for path in args.files:
        info = read_volume_info(path, "singlecoil", check_finite=False)
        with h5py.File(path) as hf:
            kspace, target = hf["kspace"][()], hf[info.target_key][()]
        for pair, acceleration in enumerate((4, 8)):
            mask, low = masks.fixed(info.path.name, info.num_cols, pair, info.padding)
            cells = []
            for settings in tried:
                start = time.perf_counter()
                images = model.reconstruct(kspace, mask, target.shape[-2:], low, 8, settings)
                kept = f", {model.last_adaptation.steps_taken[0]} steps kept" if settings else ""
                score = float(np.mean(ssim(target, images, target.max())))
                cells.append(f"{score:.4f} ({time.perf_counter() - start:.0f} s{kept})")
            print(path.name, info.acquisition, f"{acceleration}x |", " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
