"""Our 2-D Poisson-disc and Gaussian masks beside sigpy's Poisson disc (sigpy.mri.poisson).

For Calgary-Campinas' plane sizes at 5x and 10x, with its calibration disc (radius 18) and
without and with its partial Fourier (15 % of kz): the achieved acceleration, whether the
calibration region is fully sampled, the sampling density by k-space radius, and the point
spread function's largest side lobe (relative to its peak), over several seeds. sigpy is given
a square calibration region of the disc's width (its only kind) and no partial Fourier.

    .venv/bin/python scripts/compare_plane_masks.py [--seeds 5] [--figure docs/plane_masks.png]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mrirecon.core.plane_masks import acceleration_of, calibration_disc, gaussian_mask, poisson_disc_mask

SHAPES = [(218, 170), (218, 174), (218, 180)]


def side_lobe(mask: np.ndarray) -> float:
    """The point spread function's largest side lobe over its peak (incoherence: lower is better)."""
    psf = np.abs(np.fft.fft2(mask.astype(np.float64)))
    peak = psf.flat[0]
    psf.flat[0] = 0
    return float(psf.max() / peak)


def density_profile(mask: np.ndarray, bins: int = 5) -> list[float]:
    rows, cols = np.mgrid[: mask.shape[0], : mask.shape[1]]
    r = np.sqrt(((rows - mask.shape[0] / 2) / (mask.shape[0] / 2)) ** 2 + ((cols - mask.shape[1] / 2) / (mask.shape[1] / 2)) ** 2)
    edges = np.linspace(0, 1, bins + 1)
    return [float(mask[(r >= a) & (r < b)].mean()) for a, b in zip(edges[:-1], edges[1:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--figure", default=None)
    args = parser.parse_args()
    import sigpy.mri

    makers = {
        "ours poisson2d": lambda s, a, pf, seed: poisson_disc_mask(s, a, 18, pf, seed),
        "ours gaussian2d": lambda s, a, pf, seed: gaussian_mask(s, a, 18, pf, seed),
        "sigpy poisson": lambda s, a, pf, seed: sigpy.mri.poisson(s, a, calib=(36, 36), seed=seed, dtype=float) > 0,
    }
    print("| mask | shape | partial Fourier | nominal | achieved (min-max) | calibration fully sampled | "
          "density by radius (0-0.2 ... 0.8-1) | PSF side lobe | time per mask |")
    print("|---|---|---|---|---|---|---|---|---|")
    examples = {}
    for name, make in makers.items():
        for shape in SHAPES:
            for pf in (0.0, 0.15):
                if name.startswith("sigpy") and pf:
                    continue
                for acc in (5, 10):
                    achieved, lobes, full, profiles, seconds = [], [], [], [], []
                    for seed in range(args.seeds):
                        start = time.perf_counter()
                        mask = make(shape, acc, pf, seed)
                        seconds.append(time.perf_counter() - start)
                        achieved.append(acceleration_of(mask))
                        lobes.append(side_lobe(mask))
                        calib = calibration_disc(shape, 18) if not name.startswith("sigpy") else np.zeros(shape, bool)
                        if name.startswith("sigpy"):
                            calib[shape[0] // 2 - 18: shape[0] // 2 + 18, shape[1] // 2 - 18: shape[1] // 2 + 18] = True
                        if pf:
                            calib[:, shape[1] - round(pf * shape[1]):] = False
                        full.append(bool(mask[calib].all()))
                        profiles.append(density_profile(mask))
                        examples.setdefault((name, acc), mask)
                    profile = " / ".join(f"{v:.2f}" for v in np.mean(profiles, axis=0))
                    print(f"| {name} | {shape[0]}x{shape[1]} | {pf:g} | {acc}x | {np.mean(achieved):.3f}x "
                          f"({min(achieved):.3f}-{max(achieved):.3f}) | {all(full)} | {profile} | "
                          f"{np.mean(lobes):.3f} | {np.mean(seconds):.2f} s |")
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(2, 3, figsize=(9, 6.5))
        for row, acc in enumerate((5, 10)):
            for col, name in enumerate(makers):
                ax = axes[row, col]
                ax.imshow(examples[(name, acc)], cmap="gray", interpolation="nearest")
                ax.set_title(f"{name}, {acc}x ({acceleration_of(examples[(name, acc)]):.2f}x)", fontsize=9)
                ax.axis("off")
        fig.tight_layout()
        fig.savefig(args.figure, dpi=80)


if __name__ == "__main__":
    main()
