"""The CMRxRecon 2023 cine ranking: the images and metrics the challenge's leaderboard used.

The organisers scored less than the whole scan (``CMRxReconDemo/run4Ranking.m``, then
``Evaluation/Evaluation.py``'s ``calmetric`` and ``Main_Score.py``):

- the central 2 slices, MATLAB's ``round(sz/2)-1 : round(sz/2)`` (every slice when a file has
  fewer than 3), and the first 3 frames;
- of each, the magnitude, centre-cropped to ``(round(kx/3), round(ky/2))`` by Lustig's
  ``crop.m``, in single precision;
- each image, reference and reconstruction, divided by its own maximum;
- SSIM (scikit-image's 7x7 uniform window, data range the reference's maximum, 1), PSNR (data
  range 1) and NMSE per image, the mean over a file's images, then the mean over files.

So a volume's scores here are not :func:`mrirecon.core.metrics.volume_metrics`' (fastMRI's,
over every image against the volume's maximum): they are the leaderboard's, and the two must
not be compared with each other.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from mrirecon.core.metrics import ssim_per_slice
from mrirecon.data.cmrxrecon import cine_grid
from mrirecon.errors import UserError

RANKING_FRAMES = 3


def matlab_round(value: float) -> int:
    """MATLAB's ``round`` of a non-negative number: halves away from zero (Python's rounds to
    even, which would move the crop and the slices by one for odd sizes)."""
    return math.floor(value + 0.5)


def ranking_slices(slices: int) -> list[int]:
    """The 0-based slices the ranking scores: the central two, or all of fewer than 3."""
    if slices < 3:
        return list(range(slices))
    centre = matlab_round(slices / 2)  # MATLAB's 1-based round(sz/2)-1 : round(sz/2)
    return [centre - 2, centre - 1]


def ranking_crop(rows: int, cols: int) -> tuple[slice, slice]:
    """The centre crop to ``(round(kx/3), round(ky/2))`` as Lustig's ``crop.m`` places it:
    0-based start ``floor(m/2) - floor(s/2)``. Not :func:`mrirecon.core.operator.center_crop`,
    whose start ``(m - s) // 2`` is one pixel lower when ``m`` and ``s`` differ in parity
    (171 rows of 512), which changes every score."""
    out = []
    for m, s in ((rows, matlab_round(rows / 3)), (cols, matlab_round(cols / 2))):
        start = m // 2 - s // 2
        out.append(slice(start, start + s))
    return out[0], out[1]


def ranking_images(volume: np.ndarray, slices: int, frames: int) -> np.ndarray:
    """``(images, rows, cols)`` of a converted volume (image ``z * frames + t``) to the ranked
    images, float32 magnitudes, in the organisers' order (slice, then frame)."""
    if frames < RANKING_FRAMES:
        raise ValueError(f"{frames} frames: the ranking scores the first {RANKING_FRAMES}")
    rows, cols = ranking_crop(*volume.shape[-2:])
    picked = [volume[z * frames + t] for z in ranking_slices(slices) for t in range(RANKING_FRAMES)]
    return np.abs(np.stack(picked)[:, rows, cols]).astype(np.float32)


def ranking_grid(path: Path, num_slices: int) -> tuple[int, int]:
    """The (slices, frames) grid of a converted volume, refused (naming the volume) when it has
    fewer frames than the ranking scores."""
    slices, frames = cine_grid(path, num_slices)
    if frames < RANKING_FRAMES:
        raise UserError(f"{path}: {frames} frame{'' if frames == 1 else 's'} per slice; the CMRxRecon ranking "
                        f"scores the first {RANKING_FRAMES}")
    return slices, frames


def ranking_metrics(target: np.ndarray, recon: np.ndarray, slices: int, frames: int,
                    path: Path | str = "") -> dict[str, float]:
    """SSIM, PSNR and NMSE of one volume as the CMRxRecon 2023 leaderboard scored it.

    Args:
        target: the volume's reference, ``(slices * frames, kx, ky)``, the whole image.
        recon: its reconstruction, same shape (its magnitude is taken, as ``run4Ranking.m``
            takes the submission's).
        slices, frames: the (slice, frame) grid (:func:`mrirecon.data.cmrxrecon.cine_grid`).
        path: the reconstruction, named in errors.

    Raises:
        UserError: fewer than 3 frames, or a ranked image that is zero everywhere (dividing by
            its maximum would give NaN scores).
    """
    if frames < RANKING_FRAMES:
        raise UserError(f"{path}: {frames} frames; the CMRxRecon ranking scores the first {RANKING_FRAMES}")
    gt, pred = ranking_images(target, slices, frames), ranking_images(recon, slices, frames)
    for name, images in (("reference", gt), ("reconstruction", pred)):
        flat = np.flatnonzero(images.reshape(len(images), -1).max(axis=1) <= 0)
        if flat.size:
            z, t = divmod(int(flat[0]), RANKING_FRAMES)
            raise UserError(f"{path}: the {name} of slice {ranking_slices(slices)[z]}, frame {t} is zero in the "
                            "ranked crop; the ranking divides each image by its maximum")
    # float32 division, as the organisers divide their single-precision images.
    gt = gt / gt.max(axis=(1, 2), keepdims=True)
    pred = pred / pred.max(axis=(1, 2), keepdims=True)
    ssim = ssim_per_slice(torch.from_numpy(gt), torch.from_numpy(pred), 1.0).numpy()
    diff = gt.astype(np.float64) - pred.astype(np.float64)
    sse = (diff**2).sum(axis=(1, 2))
    mse = sse / diff[0].size
    with np.errstate(divide="ignore"):
        psnr = np.where(mse == 0, np.inf, 10 * np.log10(1.0 / mse))
    nmse = sse / (gt.astype(np.float64) ** 2).sum(axis=(1, 2))
    return {"ssim": float(ssim.mean()), "psnr": float(psnr.mean()), "nmse": float(nmse.mean())}
