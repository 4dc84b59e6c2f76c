"""The MRI forward operator (mrirecon.core.operator) against fastMRI, plain torch and its own algebra."""

import numpy as np
import pytest
import torch

import fastmri
from fastmri.data.transforms import center_crop as fastmri_center_crop
from fastmri.data.transforms import batched_mask_center, complex_center_crop
from fastmri.models.varnet import SensitivityModel as FastmriSensitivityModel

from mrirecon.core import operator as op


def _complex(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(shape, generator=g), torch.randn(shape, generator=g))


def _columns(batch, width, seed, fraction=0.4):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(batch, width, generator=g) < fraction
    mask[:, width // 2 - 2:width // 2 + 2] = True
    return mask


def _inner(a, b):
    return torch.vdot(a.flatten().to(torch.complex128), b.flatten().to(torch.complex128))


SIZES = [(16, 12), (15, 13), (16, 13)]


@pytest.mark.parametrize("size", SIZES)
def test_centred_ffts_equal_fastmri(size):
    x = _complex((2, 3, *size), 0)
    ours_f, ours_i = op.fft2c(x), op.ifft2c(x)
    theirs_f = torch.view_as_complex(fastmri.fft2c(torch.view_as_real(x)).contiguous())
    theirs_i = torch.view_as_complex(fastmri.ifft2c(torch.view_as_real(x)).contiguous())
    torch.testing.assert_close(ours_f, theirs_f, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours_i, theirs_i, rtol=0, atol=1e-6)


@pytest.mark.parametrize("size", SIZES)
def test_uncentred_is_the_plain_fft_and_round_trips(size):
    x = _complex((2, *size), 1)
    assert torch.equal(op.fft2c(x, centered=False), torch.fft.fft2(x, norm="ortho"))
    assert torch.equal(op.ifft2c(x, centered=False), torch.fft.ifft2(x, norm="ortho"))
    for centered in (True, False):
        torch.testing.assert_close(op.ifft2c(op.fft2c(x, centered), centered), x, rtol=0, atol=1e-5)
        torch.testing.assert_close(op.fft2c(op.ifft2c(x, centered), centered), x, rtol=0, atol=1e-5)
        torch.testing.assert_close(op.ifft1c(op.fft1c(x, -2, centered), -2, centered), x, rtol=0, atol=1e-5)
    # The 1-D transforms along both axes compose to the 2-D one.
    torch.testing.assert_close(op.fft1c(op.fft1c(x, -1), -2), op.fft2c(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("size", SIZES)
def test_shifts_are_numpy_s(size):
    x = _complex((2, *size), 2)
    assert torch.equal(op.fftshift2(x), torch.from_numpy(np.fft.fftshift(x.numpy(), axes=(-2, -1))))
    assert torch.equal(op.ifftshift2(x), torch.from_numpy(np.fft.ifftshift(x.numpy(), axes=(-2, -1))))
    assert torch.equal(op.ifftshift2(op.fftshift2(x)), x)


def test_numpy_wrappers():
    x = _complex((3, 10, 9), 3).numpy()
    reference = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    np.testing.assert_allclose(op.fft2c_numpy(x), reference, atol=1e-6)
    np.testing.assert_allclose(op.ifft2c_numpy(op.fft2c_numpy(x)), x, atol=1e-5)


def _operators(size, centered):
    b, c = 2, 4
    columns = _columns(b, size[1], 4)
    g = torch.Generator().manual_seed(5)
    two_d = torch.rand(b, 1, *size, generator=g) < 0.3
    maps = _complex((b, c, *size), 6)
    for mask in (columns, op.SamplingMask(two_d)):
        yield op.MRIOperator(mask, None, centered), 1
        yield op.MRIOperator(mask, maps, centered), c


@pytest.mark.parametrize("centered", [True, False])
@pytest.mark.parametrize("size", [(16, 12), (15, 13)])
def test_adjointness_and_normal(size, centered):
    for i, (A, coils) in enumerate(_operators(size, centered)):
        x = _complex((2, *size), 10 + i)
        y = _complex((2, coils, *size), 20 + i)
        lhs, rhs = _inner(A.A(x), y), _inner(x, A.A_adjoint(y))
        assert abs(lhs - rhs) <= 1e-5 * abs(lhs), (i, lhs, rhs)
        torch.testing.assert_close(A.normal(x), A.A_adjoint(A.A(x)))
        # A^H A is self-adjoint and positive semi-definite.
        assert float(_inner(x, A.normal(x)).real) >= 0
        assert abs(_inner(A.normal(x), y[:, 0]) - _inner(x, A.normal(y[:, 0]))) <= 1e-4 * abs(_inner(x, A.normal(y[:, 0])))


def test_masked_samples_are_zero_and_measured_ones_kept():
    size = (16, 12)
    mask = _columns(2, size[1], 7)
    A = op.MRIOperator(mask)
    x = _complex((2, *size), 8)
    k = A.A(x)
    full = op.fft2c(x)[:, None]
    assert torch.equal(k[..., mask[:, None, None, :].expand_as(k)], full[..., mask[:, None, None, :].expand_as(k)])
    assert (torch.view_as_real(k)[(~mask)[:, None, None, :].expand_as(k)] == 0).all()


def test_hard_and_soft_data_consistency():
    size = (16, 12)
    A = op.MRIOperator(_columns(2, size[1], 9))
    measured_mask = A.mask.values.expand(2, 3, *size)
    k, y = _complex((2, 3, *size), 10), _complex((2, 3, *size), 11)
    hard = A.hard_data_consistency(k, y)
    assert torch.equal(hard[measured_mask], y[measured_mask])
    assert torch.equal(hard[~measured_mask], k[~measured_mask])
    soft = A.soft_data_consistency(k, y, 0.3)
    assert torch.equal(soft[~measured_mask], k[~measured_mask])
    before, after = (k - y)[measured_mask].abs(), (soft - y)[measured_mask].abs()
    assert (after < before).all()
    torch.testing.assert_close(after, 0.7 * before)
    torch.testing.assert_close(A.soft_data_consistency(k, y, 1.0), hard, rtol=0, atol=1e-6)


def test_results_stay_complex64_under_bf16_autocast():
    size = (16, 12)
    x, maps = _complex((2, *size), 12), _complex((2, 3, *size), 13)
    A = op.MRIOperator(_columns(2, size[1], 14), maps)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = [op.fft2c(x), op.ifft2c(x), op.fft2c(x, centered=False), op.ifft1c(x), A.A(x),
                   A.A_adjoint(A.A(x)), A.coil_images(A.A(x)), A.kspace_of(A.sensitivities * x[:, None])]
    assert all(o.dtype == torch.complex64 for o in outputs)
    torch.testing.assert_close(outputs[4], A.A(x))


def test_sampling_mask_calibration_is_fastmri_centre_band():
    width = 37
    mask = _columns(3, width, 15)
    num_low = torch.tensor([4, 5, 6])
    sampling = op.SamplingMask.from_columns(mask, num_low)
    # fastMRI's batched_mask_center keeps columns [(W - n + 1) // 2, that + n).
    ones = torch.ones(3, 1, 1, width, 2)
    band = batched_mask_center(ones, (width - num_low + 1) // 2, (width - num_low + 1) // 2 + num_low)
    assert torch.equal(op.centre_band(width, num_low), band[:, 0, 0, :, 0].bool())
    assert torch.equal(sampling.calibration[:, 0, 0], band[:, 0, 0, :, 0].bool() & mask)
    default = op.SamplingMask.from_columns(mask)
    widths = op.contiguous_centre_width(mask)
    assert torch.equal(default.calibration[:, 0, 0].sum(-1), widths)
    assert torch.equal(default.columns, mask)


def test_varnet_centre_width_is_fastmri_s():
    width = 40
    mask = _columns(3, width, 16)
    mask[1, width // 2 + 3:] = False  # asymmetric band
    model = FastmriSensitivityModel(chans=2, num_pools=1)
    for b in range(3):
        _, num_low = model.get_pad_and_num_low_freqs(mask[b:b + 1, None, None, :, None], None)
        assert int(op.varnet_centre_width(mask[b:b + 1])) == int(num_low)
    assert op.varnet_centre_width(mask, 7).tolist() == [7, 7, 7]


@pytest.mark.parametrize("size,crop", [((16, 12), (8, 6)), ((15, 13), (7, 8)), ((15, 13), (15, 13))])
def test_center_crop_equals_fastmri_s(size, crop):
    x = torch.randn(2, 3, *size)
    assert torch.equal(op.center_crop(x, crop), fastmri_center_crop(x, crop))
    assert np.array_equal(op.center_crop(x.numpy(), crop), fastmri_center_crop(x, crop).numpy())
    with pytest.raises(ValueError):
        op.center_crop(x, (size[0] + 1, size[1]))
    assert op.square_crop(x).shape[-2:] == (min(size),) * 2


@pytest.mark.parametrize("size,crop", [((16, 12), (8, 8)), ((15, 13), (7, 9)), ((16, 13), (6, 6))])
def test_zero_filled_magnitude_equals_fastmri_s(size, crop):
    kspace = _complex((2, 3, *size), 17)
    mask = _columns(2, size[1], 18)
    masked = op.apply_column_mask(kspace, mask)
    reference = fastmri.rss(fastmri.complex_abs(complex_center_crop(fastmri.ifft2c(torch.view_as_real(masked)), crop)), dim=1)
    for ours in (op.zero_filled_magnitude(masked, crop), op.zero_filled_magnitude(kspace, crop, mask)):
        torch.testing.assert_close(ours, reference, rtol=1e-6, atol=1e-6)


def test_combine_and_rss():
    size = (16, 12)
    k = _complex((2, 3, *size), 19)
    images = op.ifft2c(k)
    torch.testing.assert_close(op.rss(images), fastmri.rss_complex(torch.view_as_real(images), dim=1))
    torch.testing.assert_close(op.MRIOperator(torch.ones(2, 12, dtype=torch.bool)).combine(k), op.rss(images))
    maps = _complex((2, 3, *size), 20)
    torch.testing.assert_close(op.MRIOperator(torch.ones(2, 12, dtype=torch.bool), maps).combine(k),
                               (maps.conj() * images).sum(1))


def test_single_coil_operator_equals_deepinv_s():
    """Our single-coil A / A^H against ``deepinv.physics.MRI`` on the same mask.

    Layout mapping: DeepInverse's image and k-space are real ``(B, 2, H, W)`` (channel 0 real,
    1 imaginary), its mask ``(B, 1, H, W)`` (a ``(B, H, W)`` mask would be read as per-channel); ours are complex ``(B, H, W)`` images and
    ``(B, 1, H, W)`` k-space with a ``(B, W)`` column mask. So ``x_dinv = stack([x.real, x.imag], 1)``,
    ``A_dinv(x_dinv) = view_as_real(A(x)[:, 0]).permute(0, 3, 1, 2)``. Both use the centred
    orthonormal FFT.
    """
    deepinv = pytest.importorskip("deepinv")
    for size in [(16, 12), (15, 13)]:
        x = _complex((2, *size), 21)
        y = _complex((2, 1, *size), 22)
        mask = _columns(2, size[1], 23)
        ours = op.MRIOperator(mask)
        physics = deepinv.physics.MRI(mask=mask[:, None, None, :].expand(2, 1, *size).float(), img_size=(2, *size))

        def to_dinv(z):
            return torch.stack([z.real, z.imag], dim=1)

        torch.testing.assert_close(physics.A(to_dinv(x)), to_dinv(ours.A(x)[:, 0]), rtol=0, atol=1e-6)
        torch.testing.assert_close(physics.A_adjoint(to_dinv(y[:, 0])), to_dinv(ours.A_adjoint(y)), rtol=0, atol=1e-6)


def test_centred_sampled_width_is_the_widest_sampled_region_a_centred_crop_takes():
    from mrirecon.core.operator import centred_sampled_width

    generator = torch.Generator().manual_seed(0)
    for width in (15, 16):
        masks = torch.rand(500, width, generator=generator) < 0.7
        widest = []
        for mask in masks:
            fits = [n for n in range(1, width + 1) if bool(mask[width // 2 - n // 2:width // 2 - n // 2 + n].all())]
            widest.append(max(fits, default=0))
        assert centred_sampled_width(masks).tolist() == widest
