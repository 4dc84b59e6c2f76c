"""The k-space → zero-filled image chain, batched torch code for any device and precision.

Every function takes a batch dimension first and k-space with a coil dimension, complex
``(B, C, H, W)`` (``C = 1`` for single-coil data), so the same code runs inside DataLoader
workers or on a whole batch after it reached the GPU, for single- and multi-coil data alike:
the root-sum-of-squares of one coil is its magnitude, which is fastMRI's single-coil (ESC)
target definition. The maths is fastMRI's (``ifft2c``, ``complex_center_crop``,
``complex_abs``, ``rss``), so our inputs equal those of ``UnetDataTransform`` for the same mask.

The chain always runs in float32/complex64 or better, whatever the autocast state: cuFFT
rejects half precision for sizes that are not powers of two (fastMRI's 368 and 640), and the
normalisation statistics of fastMRI-scale intensities (1e-4) lose most of their digits in
bfloat16. :func:`full_precision` is the guard, also used by the networks' FFTs. The FFTs, crops
and masks themselves live in :mod:`mrirecon.core.operator`.
"""

from __future__ import annotations

import torch

# The FFT-side steps live with the forward operator; re-exported here as the chain's steps.
from mrirecon.core.operator import apply_column_mask, full_precision, zero_filled_magnitude

__all__ = ["CLAMP", "NORM_EPS", "apply_column_mask", "full_precision", "instance_statistics", "normalize",
           "unnormalize", "zero_filled_magnitude"]

# fastMRI's UnetDataTransform constants: instance-normalisation epsilon and clamp in std units.
NORM_EPS = 1e-11
CLAMP = 6.0


@full_precision
def instance_statistics(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased std ``(B,)`` of each ``(B, h, w)`` image, in one pass (fastMRI's statistics)."""
    std, mean = torch.std_mean(image.flatten(1), dim=1)
    return mean, std


@full_precision
def normalize(image: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(image - mean) / (std + eps)`` with per-sample statistics, for ``(B, ...)`` images."""
    shape = (-1,) + (1,) * (image.ndim - 1)
    return (image - mean.reshape(shape)) / (std.reshape(shape) + NORM_EPS)


def unnormalize(image: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Back to image units: the inverse of :func:`normalize` for ``(B, ...)`` images.

    Deliberately not under :func:`full_precision`: gradients flow through it into a network
    that may run in bfloat16; the product is cast up by the float32 statistics anyway.
    """
    shape = (-1,) + (1,) * (image.ndim - 1)
    return image * (std.reshape(shape) + NORM_EPS) + mean.reshape(shape)
