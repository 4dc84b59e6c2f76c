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
bfloat16. :func:`full_precision` is the guard, also used by the networks' FFTs.
"""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import fastmri
import torch
from fastmri.data.transforms import center_crop, complex_center_crop

# fastMRI's UnetDataTransform constants: instance-normalisation epsilon and clamp in std units.
NORM_EPS = 1e-11
CLAMP = 6.0

F = TypeVar("F", bound=Callable)


def _to_full_precision(x):
    if isinstance(x, torch.Tensor):
        if x.dtype in (torch.float16, torch.bfloat16):
            return x.float()
        if x.dtype == torch.complex32:
            return x.to(torch.complex64)
    return x


def full_precision(fn: F) -> F:
    """Runs ``fn`` with autocast off and half-precision tensor arguments cast to float32."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        args = [_to_full_precision(a) for a in args]
        kwargs = {k: _to_full_precision(v) for k, v in kwargs.items()}
        device = next((a.device.type for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), "cpu")
        with torch.autocast(device_type=device, enabled=False):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@full_precision
def apply_column_mask(kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero the unsampled columns of complex k-space.

    Args:
        kspace: complex ``(B, C, H, W)``.
        mask: ``(B, W)`` bool or 0/1 column mask.

    Returns:
        Masked k-space. ``+ 0.0`` turns -0.0 into 0.0 as fastMRI does: signed zeros once leaked
        which columns were sampled in a released test set.
    """
    shape = (mask.shape[0],) + (1,) * (kspace.ndim - 2) + (mask.shape[-1],)
    return kspace * mask.reshape(shape).to(kspace.real.dtype) + 0.0


@full_precision
def coil_images(kspace: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal inverse 2-D FFT of complex ``(..., H, W)`` k-space, complex out."""
    return torch.view_as_complex(fastmri.ifft2c(torch.view_as_real(kspace)))


@full_precision
def zero_filled_magnitude(masked_kspace: torch.Tensor, crop_size: tuple[int, int]) -> torch.Tensor:
    """Inverse FFT, centre crop, magnitude and root-sum-of-squares over coils.

    Args:
        masked_kspace: complex ``(B, C, H, W)``.
        crop_size: (rows, cols) of the reconstruction, fastMRI's target size.

    Returns:
        Real ``(B, rows, cols)`` float32 magnitude image.
    """
    image = fastmri.ifft2c(torch.view_as_real(masked_kspace))
    image = complex_center_crop(image, crop_size)
    return fastmri.rss(fastmri.complex_abs(image), dim=1)


def crop_target(target: torch.Tensor, crop_size: tuple[int, int]) -> torch.Tensor:
    """Centre-crop real ``(..., h, w)`` targets to ``crop_size`` (a no-op at their own size)."""
    return center_crop(target, crop_size)


@full_precision
def normalize_instance(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image standardisation, fastMRI's ``normalize_instance`` over a batch.

    Args:
        image: ``(B, h, w)``.

    Returns:
        (normalised image, mean ``(B,)``, std ``(B,)``); std is the unbiased estimate as in fastMRI.
    """
    flat = image.flatten(1)
    mean = flat.mean(dim=1)
    std = flat.std(dim=1)
    return normalize(image, mean, std), mean, std


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
