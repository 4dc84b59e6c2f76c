"""CS-TV with the direct coil-map estimate and with ESPIRiT, on the multi-coil demo's val split:
where the SSIM difference comes from (the head, or the background), and what returning the
root-sum-of-squares of the data-consistent coil images instead of |x| changes (cs_tv.output:
coil_rss).

    .venv/bin/mrirecon data simulate --preset demo --challenge multicoil --out data/demo
    .venv/bin/python scripts/diagnose_cs_tv_sensitivities.py [--batches 4] [--iterations 150]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from mrirecon.core.metrics import volume_metrics
from mrirecon.core.operator import center_crop, contiguous_centre_width, fft2c, ifft2c, rss
from mrirecon.core.sensitivities import estimate_sensitivities
from mrirecon.data.batch import prepare_batch
from mrirecon.lightning.datamodule import ReconDataModule
from mrirecon.methods import cs_tv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="data/demo")
    parser.add_argument("--batches", type=int, default=4, help="batches of 8 val slices per acceleration")
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--lam", type=float, default=0.005)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print("| acceleration | maps | SSIM of |x| | SSIM of the RSS of the DC coil images | head: mean relative error | "
          "background: mean over the target's |")
    print("|---|---|---|---|---|---|")
    for acc, fraction in ((4, 0.08), (8, 0.04)):
        dm = ReconDataModule(args.data, challenge="multicoil", center_fractions=[fraction], accelerations=[acc],
                             num_workers=0, batch_size=8, test_split="val")
        dm.setup("test")
        rows: dict[str, dict[str, list[float]]] = {}
        for k, batch in enumerate(dm.test_dataloader()):
            if k >= args.batches:
                break
            batch = prepare_batch(batch, True)
            y, mask = batch.kspace, batch.mask.to(batch.kspace.real.dtype)
            acs = torch.maximum(contiguous_centre_width(batch.mask), batch.num_low_frequencies).clamp_min(1)
            for name, sens in (("direct", estimate_sensitivities(y, acs)), ("espirit", cs_tv.espirit_for_columns(y, batch.mask))):
                lam = cs_tv.relative_lambda_to_absolute(torch.full((y.shape[0],), args.lam), y, mask, sens)
                x = cs_tv.cs_tv_reconstruct(y, mask, lam, iterations=args.iterations, sens=sens)
                m = mask.view(mask.shape[0], 1, 1, -1)
                coils = ifft2c(m * y + (1 - m) * fft2c(sens * x[:, None]))
                image = center_crop(x.abs(), batch.crop_size)
                combined = center_crop(rss(coils, dim=1), batch.crop_size)
                row = rows.setdefault(name, {"image": [], "rss": [], "head": [], "background": []})
                for i in range(image.shape[0]):
                    target = batch.target[i]
                    row["image"].append(volume_metrics(target[None], image[i][None], crop_to_square=True)["ssim"])
                    row["rss"].append(volume_metrics(target[None], combined[i][None], crop_to_square=True)["ssim"])
                    head = target > 0.15 * target.max()
                    row["head"].append(float((image[i][head] - target[head]).abs().mean() / target[head].mean()))
                    row["background"].append(float(image[i][~head].mean() / target[~head].mean()))
        for name, row in rows.items():
            print(f"| {acc}x | {name} | {np.mean(row['image']):.3f} | {np.mean(row['rss']):.3f} | "
                  f"{np.mean(row['head']):.3f} | {np.mean(row['background']):.2f} |")


if __name__ == "__main__":
    main()
