"""The comparison figure of ``mrirecon report``."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from mrirecon.core import atomic
from mrirecon.core.metrics import ssim_per_slice
from mrirecon.data.volumes import VolumeInfo
from mrirecon.evaluation.results import acceleration_label
from mrirecon.evaluation.scoring import load_array, target_volume

ERROR_GAIN = 4.0


def comparison_figure(
    files: Mapping[str, Mapping[tuple[str, float], Path]],
    volumes: Mapping[str, VolumeInfo],
    crop_size: tuple[int, int] | None,
    acceleration: float,
    picks: list[tuple[str, int]],
    path: Path,
) -> None:
    """Target and each method (with |error| x4 below) for chosen slices, SSIM/PSNR in the labels.

    All panels of a slice share one grey scale, [0, the target volume's data range].
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(files)
    cols = 1 + len(names)
    fig, axes = plt.subplots(2 * len(picks), cols, figsize=(2.6 * cols, 5.4 * len(picks)), squeeze=False)
    for p, (fname, slice_num) in enumerate(picks):
        info = volumes[fname]
        vmax = info.data_range(crop_size)
        target = target_volume(info, crop_size)[slice_num]
        axes[2 * p, 0].imshow(target, cmap="gray", vmin=0, vmax=vmax)
        axes[2 * p, 0].set_title(f"target\n{fname} [{slice_num}]", fontsize=9)
        axes[2 * p + 1, 0].text(0.5, 0.5, f"|error| x{ERROR_GAIN:g}\n(one scale\nfor all panels)", ha="center", va="center", fontsize=9)
        for c, name in enumerate(names, start=1):
            image = load_array(files[name][(fname, acceleration)], "reconstruction")[slice_num]
            t, r = torch.from_numpy(target)[None], torch.from_numpy(image)[None]
            ssim = float(ssim_per_slice(t, r, vmax)[0])
            mse = float(((t.double() - r.double()) ** 2).mean())
            psnr = 10 * np.log10(vmax**2 / mse) if mse > 0 else float("inf")  # identical images
            axes[2 * p, c].imshow(image, cmap="gray", vmin=0, vmax=vmax)
            axes[2 * p, c].set_title(f"{name} ({acceleration_label(acceleration)})\nSSIM {ssim:.3f}  PSNR {psnr:.2f} dB", fontsize=9)
            axes[2 * p + 1, c].imshow(np.abs(image - target) * ERROR_GAIN, cmap="gray", vmin=0, vmax=vmax)
            axes[2 * p + 1, c].set_title(f"|{name} - target| x{ERROR_GAIN:g}", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
