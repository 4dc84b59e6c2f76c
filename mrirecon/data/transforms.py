"""The k-space → zero-filled image chain, batched torch code for any device.

Each function takes a batch dimension first, so the same code runs per sample inside DataLoader
workers (batch of one) or on a whole batch after it reached the GPU. The maths is fastMRI's
(``ifft2c``, ``complex_center_crop``, ``complex_abs``, ``rss``) so our inputs equal those of
``fastmri.data.transforms.UnetDataTransform`` for the same mask.
"""

from __future__ import annotations

import fastmri
import torch
from fastmri.data.transforms import center_crop, complex_center_crop

# fastMRI's UnetDataTransform constants: instance-normalisation epsilon and clamp in std units.
NORM_EPS = 1e-11
CLAMP = 6.0


def apply_column_mask(kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero the unsampled columns of complex k-space.

    Args:
        kspace: complex (B, H, W) or (B, C, H, W).
        mask: (B, W) bool or 0/1 column mask.

    Returns:
        Masked k-space. ``+ 0.0`` turns -0.0 into 0.0 as fastMRI does: signed zeros once leaked
        which columns were sampled in a released test set.
    """
    shape = (mask.shape[0],) + (1,) * (kspace.ndim - 2) + (mask.shape[-1],)
    return kspace * mask.reshape(shape).to(kspace.real.dtype) + 0.0


def zero_filled_magnitude(
    masked_kspace: torch.Tensor, crop_size: tuple[int, int], multicoil: bool
) -> torch.Tensor:
    """Inverse FFT, centre crop, magnitude and (multi-coil) root-sum-of-squares.

    Args:
        masked_kspace: complex (B, H, W) single-coil or (B, C, H, W) multi-coil.
        crop_size: (rows, cols) of the reconstruction, fastMRI's target size.
        multicoil: combine coils by root-sum-of-squares.

    Returns:
        Real (B, rows, cols) magnitude image.
    """
    image = fastmri.ifft2c(torch.view_as_real(masked_kspace))
    image = complex_center_crop(image, crop_size)
    image = fastmri.complex_abs(image)
    if multicoil:
        image = fastmri.rss(image, dim=1)
    return image


def crop_target(target: torch.Tensor, crop_size: tuple[int, int]) -> torch.Tensor:
    """Centre-crop real (B, h, w) targets to ``crop_size`` (a no-op at the target's own size)."""
    return center_crop(target, crop_size)


def normalize_instance(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image standardisation, fastMRI's ``normalize_instance`` over a batch.

    Args:
        image: (B, h, w).

    Returns:
        (normalised image, mean (B,), std (B,)); std is the unbiased estimate as in fastMRI.
    """
    flat = image.flatten(1)
    mean = flat.mean(dim=1)
    std = flat.std(dim=1)
    return normalize(image, mean, std), mean, std


def normalize(image: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(image - mean) / (std + eps) with per-sample statistics."""
    return (image - mean[:, None, None]) / (std[:, None, None] + NORM_EPS)


def unnormalize(image: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Back to image units: the inverse of :func:`normalize` for (B, h, w) or (B, 1, h, w)."""
    shape = (-1,) + (1,) * (image.ndim - 1)
    return image * (std.reshape(shape) + NORM_EPS) + mean.reshape(shape)
