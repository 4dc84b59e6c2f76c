"""ESPIRiT coil maps against sigpy's EspiritCalib, the reference implementation."""

import numpy as np
import pytest
import torch

from fastmri_like import _smooth
from mrirecon.core.sensitivities import align_phase, espirit_sensitivities, estimate_sensitivities

sigpy_mri = pytest.importorskip("sigpy.mri")


def _multicoil(seed, height=64, width=56, coils=6):
    """Fully sampled centred k-space of an ellipse seen by smooth coils; the object's support."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    inside = ((yy - height / 2) / (0.35 * height)) ** 2 + ((xx - width / 2) / (0.4 * width)) ** 2 < 1
    image = inside * (1 + 0.5 * _smooth(rng, (height, width))) * np.exp(1j * _smooth(rng, (height, width)))
    centres = rng.random((coils, 2)) * [height, width]
    maps = np.stack([np.exp(0.5 * _smooth(rng, (height, width)) + 1j * _smooth(rng, (height, width)))
                     * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (0.5 * height) ** 2)) for cy, cx in centres])
    kspace = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(image * maps, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    kspace += 1e-4 * np.abs(kspace).max() * (rng.standard_normal(kspace.shape) + 1j * rng.standard_normal(kspace.shape))
    return kspace.astype(np.complex64), inside


def test_espirit_maps_agree_with_sigpy_inside_the_object():
    volumes = [_multicoil(seed) for seed in (0, 1)]
    ours = espirit_sensitivities(torch.from_numpy(np.stack([k for k, _ in volumes])), 24, kernel_width=6).numpy()
    for (kspace, inside), maps in zip(volumes, ours):
        reference = sigpy_mri.app.EspiritCalib(kspace, calib_width=24, kernel_width=6, show_pbar=False).run()
        kept_ours, kept_ref = np.abs(maps).sum(0) > 0, np.abs(reference).sum(0) > 0
        assert kept_ours[inside].all() and kept_ref[inside].all()
        assert (kept_ours == kept_ref).mean() > 0.99  # the same support, to a few edge pixels
        # Both remove the per-pixel phase ambiguity the same way (the first coil's phase).
        a, b = maps[:, inside], reference[:, inside]
        correlation = np.abs(np.vdot(a, b)) / (np.linalg.norm(a) * np.linalg.norm(b))
        assert correlation >= 0.999, correlation
        per_pixel = np.abs((a.conj() * b).sum(0)) / (np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0))
        assert per_pixel.min() >= 0.99, per_pixel.min()
        np.testing.assert_allclose(np.linalg.norm(a, axis=0), 1, atol=1e-4)  # unit norm: Σ|S|² = 1


def test_espirit_checks_its_region_and_keeps_dtype():
    kspace, _ = _multicoil(2, 32, 32, 3)
    y = torch.from_numpy(kspace)[None]
    with pytest.raises(ValueError, match="kernel_width 8x8 does not fit the calibration region 6x6"):
        espirit_sensitivities(y, 6, kernel_width=8)
    maps = espirit_sensitivities(y.to(torch.complex128), (40, 12), kernel_width=4)  # rows capped at 32
    assert maps.dtype == torch.complex128 and maps.shape == y.shape


def _per_pixel_agreement(maps, reference, inside):
    """Mean over the object of |<a, b>| / (|a| |b|) per pixel: blind to the per-pixel phase."""
    a, b = maps[:, inside], reference[:, inside]
    return float((np.abs((a.conj() * b).sum(0)) / (np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0))).mean())


def test_a_narrow_kernel_learns_better_maps_from_a_narrow_centre_band():
    # An 8x column mask keeps 6 centre columns: a 6 x 6 kernel fits once across them, a 6 x 3
    # one four times. Against sigpy's maps from a full 24 x 24 calibration square:
    for seed in (0, 1):
        kspace, inside = _multicoil(seed)
        reference = sigpy_mri.app.EspiritCalib(kspace, calib_width=24, kernel_width=6, show_pbar=False).run()
        y = torch.from_numpy(kspace)[None]
        square = espirit_sensitivities(y, (48, 6), kernel_width=6, crop=0.0)[0].numpy()
        narrow = espirit_sensitivities(y, (48, 6), kernel_width=(6, 3), crop=0.0)[0].numpy()
        square_agreement, narrow_agreement = (_per_pixel_agreement(m, reference, inside) for m in (square, narrow))
        assert narrow_agreement >= 0.975 and narrow_agreement > square_agreement + 0.02, (square_agreement, narrow_agreement)
    with pytest.raises(ValueError, match="kernel_width 6x7 does not fit the calibration region 48x6"):
        espirit_sensitivities(y, (48, 6), kernel_width=(6, 7))


def test_aligned_maps_take_the_reference_phase_and_keep_their_projection():
    kspace, inside = _multicoil(3)
    y = torch.from_numpy(kspace)[None]
    maps = espirit_sensitivities(y, 24, kernel_width=6, crop=0.0)
    reference = estimate_sensitivities(y, 24)
    aligned = align_phase(maps, reference)
    inner = (reference.conj() * aligned).sum(1)[0]
    assert float(inner.imag.abs().max()) <= 1e-5 * float(inner.abs().max()) and float(inner.real.min()) >= 0
    # One phase per pixel: the projection S S^H, what a SENSE reconstruction sees, is unchanged.
    projection = lambda s: s[0].permute(1, 2, 0)[..., :, None] * s[0].permute(1, 2, 0)[..., None, :].conj()
    torch.testing.assert_close(projection(aligned), projection(maps), rtol=0, atol=1e-5)
    # Where the reference is orthogonal (here: zero), the maps stay as they were.
    blank = reference.clone()
    blank[..., :8, :] = 0
    torch.testing.assert_close(align_phase(maps, blank)[..., :8, :], maps[..., :8, :], rtol=0, atol=0)
