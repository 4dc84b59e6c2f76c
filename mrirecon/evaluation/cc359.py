"""The Calgary-Campinas (MC-MRRec) challenge's metrics: the slices and normalisation its
evaluation used (the organisers' ``extract_challenge_metrics_pre_submisison.ipynb``, as DIRECT's
``calgary_campinas_ssim``/``_psnr`` reproduce it).

- the outer slices of each volume are dropped, 50 of its 256 at each end (they hold little
  brain); a smaller volume (a simulated one) drops the same fraction, ``round(slices * 50 / 256)``;
- each kept slice, reference and reconstruction, is divided by the reference slice's maximum;
- SSIM (scikit-image's default 7 x 7 uniform window) and PSNR per slice, with the data range
  of the two normalised slices together (``max - min`` over both), then the mean over the
  volume's slices;
- NMSE per slice beside them (not a challenge metric; scale-free, so the normalisation leaves
  it as fastMRI's per-slice NMSE).

The challenge's third metric, VIF, needs ``sewar`` (which DIRECT imports on demand); no kept
library of ours provides it, so it is not reported. These scores are not fastMRI's
(:func:`mrirecon.core.metrics.volume_metrics`, over every slice against the volume's maximum)
and the two must not be compared with each other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from mrirecon.errors import UserError

OUTER_SLICES, OF_SLICES = 50, 256


def scored_slices(slices: int) -> range:
    """The slices the challenge scores: all but ``round(slices * 50 / 256)`` at each end (50
    of a real volume's 256)."""
    outer = int(round(slices * OUTER_SLICES / OF_SLICES))
    return range(outer, slices - outer)


def challenge_metrics(target: np.ndarray, recon: np.ndarray, path: Path | str = "") -> dict[str, float]:
    """SSIM, PSNR and NMSE of one volume as the Calgary-Campinas challenge scored it.

    Args:
        target: the reference ``(slices, rows, cols)``, the whole plane.
        recon: its reconstruction, the same shape (magnitudes, taken as they are, as the
            challenge took them).
        path: the reconstruction, named in errors.

    Raises:
        UserError: a kept reference slice that is zero everywhere (no maximum to divide by).
    """
    ssim, psnr, nmse = [], [], []
    for index in scored_slices(target.shape[0]):  # never empty: at most 20 % go at each end
        gt = target[index].astype(np.float64)
        peak = gt.max()
        if peak <= 0:
            raise UserError(f"{path}: the reference of slice {index} is zero; the challenge divides each slice by its maximum")
        gt, pred = gt / peak, recon[index].astype(np.float64) / peak
        data_range = max(gt.max(), pred.max()) - min(gt.min(), pred.min())
        ssim.append(structural_similarity(gt, pred, data_range=data_range))
        psnr.append(peak_signal_noise_ratio(gt, pred, data_range=data_range))
        nmse.append(float(((gt - pred) ** 2).sum() / (gt**2).sum()))
    return {"ssim": float(np.mean(ssim)), "psnr": float(np.mean(psnr)), "nmse": float(np.mean(nmse))}
