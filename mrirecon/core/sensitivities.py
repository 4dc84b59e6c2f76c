"""Coil sensitivity maps from the fully sampled centre of multi-coil k-space.

Two estimates, both batched in torch on the k-space's device:

* :func:`estimate_sensitivities`: the direct "low-resolution, RSS-normalised" one (window the
  centre columns, inverse FFT, divide by the root-sum-of-squares). Cheap; blurred to the
  calibration resolution, carries the low-resolution image phase, unreliable in dark tissue.
* :func:`espirit_sensitivities`: ESPIRiT (Uecker et al. 2014): the null space of the
  calibration matrix gives, at every pixel, a C x C operator whose eigenvector of eigenvalue 1
  is the map; pixels whose largest eigenvalue is below ``crop`` (outside the object) get none.
  It follows sigpy's ``EspiritCalib`` step for step (which the tests compare it with); it is
  written here because sigpy runs on numpy/cupy one slice at a time, and the training and
  evaluation batches are torch tensors on the GPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mrirecon.core.operator import ifft2c

def estimate_sensitivities(
    y: torch.Tensor, num_low_frequencies: int | torch.Tensor, rel_eps: float = 0.05
) -> torch.Tensor:
    r"""Estimate coil sensitivities from the fully sampled centre columns (ACS).

    The centre ``n`` columns (starting at ``(W - n + 1) // 2``, fastMRI's centre band) are weighted
    by a Hann window without its zero end points, inverse-FFT'd to low-resolution coil images
    ``m_c`` and normalised by their root-sum-of-squares:
    :math:`S_c = m_c / \max(\mathrm{rss}(m), \varepsilon \max \mathrm{rss}(m))`. So
    :math:`\sum_c |S_c|^2 = 1` wherever the low-resolution signal exceeds ``rel_eps`` times its
    maximum, and falls smoothly towards 0 in the background instead of amplifying noise; it never
    exceeds 1, which the solver's step sizes rely on. Limits (see the module docstring): maps are
    blurred across columns to the ACS resolution, carry the low-resolution image phase, and are
    unreliable in dark tissue.

    Args:
        y: Multi-coil k-space, complex (B, C, H, W), containing at least the centre columns.
        num_low_frequencies: Number of fully sampled centre columns, an int or a (B,) tensor.
        rel_eps: Floor of the RSS normaliser, relative to its per-slice maximum.

    Returns:
        Complex sensitivity maps, (B, C, H, W).
    """
    if not y.is_complex() or y.ndim != 4:
        raise ValueError(f"y must be complex (B, C, H, W), got {y.dtype} {tuple(y.shape)}")
    batch, width = y.shape[0], y.shape[-1]
    real_dtype = y.real.dtype
    n = torch.as_tensor(num_low_frequencies, device=y.device).expand(batch).to(real_dtype)
    if bool((n < 1).any()) or bool((n > width).any()):
        raise ValueError(f"num_low_frequencies must lie in [1, {width}], got {num_low_frequencies}")
    start = torch.div(width - n + 1, 2, rounding_mode="floor")
    # Position 1..n inside the band; a Hann window of length n + 2 minus its two zeros keeps every
    # ACS column while tapering the band edges, which suppresses Gibbs ringing in the maps.
    position = torch.arange(width, device=y.device, dtype=real_dtype) - start.unsqueeze(1) + 1
    inside = (position >= 1) & (position <= n.unsqueeze(1))
    window = torch.where(inside, torch.sin(torch.pi * position / (n.unsqueeze(1) + 1)).square(), 0.0)
    images = ifft2c(y * window.view(batch, 1, 1, width))
    rss = images.abs().square().sum(1, keepdim=True).sqrt()
    floor = rel_eps * rss.flatten(1).amax(1).view(batch, 1, 1, 1)
    return images / torch.maximum(rss, floor)


def _centre_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The centre ``size`` of the last two axes, around the centred FFT's zero frequency
    (index n // 2; sigpy's ``resize``)."""
    height, width = x.shape[-2:]
    top, left = height // 2 - size[0] // 2, width // 2 - size[1] // 2
    return x[..., top:top + size[0], left:left + size[1]]


def _centre_pad(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Zero-pads the last two axes to ``size``, keeping the zero frequency at index n // 2."""
    height, width = x.shape[-2:]
    top, left = size[0] // 2 - height // 2, size[1] // 2 - width // 2
    return F.pad(x, (left, size[1] - width - left, top, size[0] - height - top))


def espirit_sensitivities(kspace: torch.Tensor, calibration: tuple[int, int] | int = 24,
                          kernel_width: tuple[int, int] | int = 6, threshold: float = 0.02,
                          crop: float = 0.95) -> torch.Tensor:
    """ESPIRiT coil maps, one set per slice.

    Args:
        kspace: complex ``(B, C, H, W)``, centred (fastMRI's convention), fully sampled in its
            centre ``calibration`` region.
        calibration: (rows, columns) of the centre region the kernels are learnt from (an int:
            square); at most the k-space size.
        kernel_width: (rows, columns) of the k-space kernels (an int: square; sigpy's are
            square); at most the calibration size.
        threshold: singular values above ``threshold`` times the largest span the signal space.
        crop: pixels whose largest eigenvalue is at or below this get zero maps.

    Returns:
        Complex ``(B, C, H, W)`` maps of unit norm over coils where kept (so that
        ``Σ_c |S_c|² ≤ 1``, as CS-TV's step sizes need), with the phase of the first coil
        removed (the maps are defined up to one phase per pixel).
    """
    if not kspace.is_complex() or kspace.ndim != 4:
        raise ValueError(f"kspace must be complex (B, C, H, W), got {kspace.dtype} {tuple(kspace.shape)}")
    batch, coils, height, width = kspace.shape
    rows, cols = (calibration, calibration) if isinstance(calibration, int) else calibration
    rows, cols = min(rows, height), min(cols, width)
    kernel_rows, kernel_cols = (kernel_width, kernel_width) if isinstance(kernel_width, int) else kernel_width
    if kernel_rows > rows or kernel_cols > cols or min(kernel_rows, kernel_cols) < 1:
        raise ValueError(f"kernel_width {kernel_rows}x{kernel_cols} does not fit the calibration region {rows}x{cols}")
    kernel_size = kernel_rows * kernel_cols
    # Full precision: the SVD and eigen-decompositions have no half-precision kernels.
    calib = _centre_crop(kspace, (rows, cols)).to(torch.complex64 if kspace.dtype != torch.complex128 else kspace.dtype)
    maps = []
    for slice_calib in calib:  # the number of kernels differs per slice
        # Calibration matrix: one row per kernel position, (coil, row, column) along a row.
        blocks = slice_calib.unfold(1, kernel_rows, 1).unfold(2, kernel_cols, 1)  # C, nr, nc, kr, kc
        matrix = blocks.permute(1, 2, 0, 3, 4).reshape(-1, coils * kernel_size)
        _, singular, vh = torch.linalg.svd(matrix, full_matrices=False)
        kernels = vh[singular > threshold * singular.max()].reshape(-1, coils, kernel_rows, kernel_cols)
        # Every kernel in the image domain; at each pixel the C x C operator Σ_k a_k a_k^H.
        images = ifft2c(_centre_pad(kernels, (height, width)))  # K, C, H, W
        per_pixel = images.permute(2, 3, 1, 0)  # H, W, C, K
        gram = (per_pixel @ per_pixel.conj().transpose(-1, -2)) * (height * width / kernel_size)
        eigenvalues, eigenvectors = torch.linalg.eigh(gram)  # ascending
        top = eigenvectors[..., -1]  # H, W, C
        first = top[..., :1]
        top = top * (first.conj() / first.abs().clamp_min(torch.finfo(first.real.dtype).tiny))
        kept = eigenvalues[..., -1] > crop
        maps.append((top * kept.unsqueeze(-1)).permute(2, 0, 1))
    return torch.stack(maps).to(kspace.dtype)


def align_phase(maps: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``maps`` rotated, pixel by pixel, to the phase of ``reference`` (both ``(B, C, H, W)``).

    Coil maps are defined up to one phase per pixel, which the reconstructed image takes on.
    ESPIRiT's convention (the first coil's phase removed) jumps wherever that coil is weak, and
    total variation of the image then pays for the jumps; aligning the maps to a smooth estimate
    (the direct one's low-resolution phase) gives the image that smooth phase instead. Each pixel
    is multiplied by ``conj(p) / |p|`` with ``p = Σ_c conj(reference_c) maps_c``; where ``p`` is 0
    the maps stay as they are.
    """
    inner = (reference.conj() * maps).sum(1, keepdim=True)
    size = inner.abs()
    rotation = torch.where(size > 0, inner.conj() / size.clamp_min(torch.finfo(size.dtype).tiny),
                           torch.ones((), dtype=inner.dtype, device=inner.device))
    return maps * rotation
