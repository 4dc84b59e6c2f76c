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
        Masked k-space, with +0.0 in the unsampled columns (as fastMRI's ``* mask + 0.0``:
        signed zeros once leaked which columns were sampled in a released test set), in one
        pass over the real view, with the mask repeated for real and imaginary parts (a
        broadcast over that last axis of 2 is much slower).
    """
    shape = (mask.shape[0],) + (1,) * (kspace.ndim - 2) + (2 * mask.shape[-1],)
    keep = mask.bool().repeat_interleave(2, dim=-1).reshape(shape)
    real = torch.view_as_real(kspace).flatten(-2)
    return torch.view_as_complex(torch.where(keep, real, 0.0).unflatten(-1, (-1, 2)))


@full_precision
def coil_images(kspace: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal inverse 2-D FFT of complex ``(..., H, W)`` k-space, complex out."""
    return torch.view_as_complex(fastmri.ifft2c(torch.view_as_real(kspace)))


def _checkerboard(height: int, width: int, device: torch.device) -> torch.Tensor:
    """``(-1) ** (row + col)`` as float32 ``(H, W)``."""
    rows = 1.0 - 2.0 * (torch.arange(height, device=device) % 2)
    cols = 1.0 - 2.0 * (torch.arange(width, device=device) % 2)
    return (rows[:, None] * cols[None, :]).float()


@full_precision
def zero_filled_magnitude(kspace: torch.Tensor, crop_size: tuple[int, int],
                          mask: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse FFT, centre crop, magnitude and root-sum-of-squares over coils.

    fastMRI's ``rss(complex_abs(complex_center_crop(ifft2c(kspace))))``, computed with one
    multiplication in place of the four shifts: for even sizes the centred inverse FFT is
    ``(-1)^(n+m) ifft2((-1)^(k+l) x)`` up to a constant sign, and the magnitude drops the output's
    signs, so the input's checkerboard (and the column mask, when given) is one product. Equal to
    fastMRI's to float32 rounding (about 1e-7 relative), twice as fast for 15-coil 640 x 368 data.

    Args:
        kspace: complex ``(B, C, H, W)``, masked already unless ``mask`` is given.
        crop_size: (rows, cols) of the reconstruction, fastMRI's target size.
        mask: ``(B, W)`` column mask to apply on the way (the masked k-space is not kept).

    Returns:
        Real ``(B, rows, cols)`` float32 magnitude image.
    """
    height, width = kspace.shape[-2:]
    if height % 2 or width % 2:  # odd sizes: fastMRI's shifts
        masked = kspace if mask is None else apply_column_mask(kspace, mask)
        image = complex_center_crop(fastmri.ifft2c(torch.view_as_real(masked)), crop_size)
        return fastmri.rss(fastmri.complex_abs(image), dim=1)
    pattern = _checkerboard(height, width, kspace.device)
    if mask is not None:
        pattern = pattern * mask.reshape(mask.shape[0], 1, 1, width).to(pattern.dtype)
    modulated = kspace * pattern
    image = complex_center_crop(torch.view_as_real(torch.fft.ifft2(modulated, norm="ortho")), crop_size)
    return image.square().sum(dim=(1, -1)).sqrt()


def crop_target(target: torch.Tensor, crop_size: tuple[int, int]) -> torch.Tensor:
    """Centre-crop real ``(..., h, w)`` targets to ``crop_size`` (a no-op at their own size)."""
    return center_crop(target, crop_size)


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
