"""The k-space chain equals fastMRI's U-Net transform, wherever and in whatever precision it runs."""

import numpy as np
import pytest
import torch
from fastmri.data.subsample import create_mask_for_mask_type
from fastmri.data.transforms import UnetDataTransform

import fastmri
from fastmri.data.transforms import complex_center_crop

from mrirecon.core.masks import ColumnMaskSampler
from mrirecon.core.transforms import apply_column_mask, zero_filled_magnitude
from mrirecon.data.batch import SliceCollator, network_input, normalized_target, prepare_batch
from mrirecon.data.dataset import SliceSample


def _slice(challenge, rng):
    shape = (4, 64, 52) if challenge == "multicoil" else (64, 52)
    kspace = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64) * 1e-4
    target = np.abs(rng.standard_normal((24, 24))).astype(np.float32) * 1e-4
    return kspace, target


def _sample(kspace, target, fname, mask, num_low):
    coils = torch.from_numpy(kspace)
    return SliceSample(
        kspace=coils if coils.ndim == 3 else coils[None], mask=torch.from_numpy(mask), num_low_frequencies=num_low,
        target=torch.from_numpy(target), has_target=True, crop_size=target.shape, max_value=float(target.max()),
        fname=fname, slice_num=3, acceleration=4.0, padding=False,
    )


@pytest.mark.parametrize("challenge", ["singlecoil", "multicoil"])
@pytest.mark.parametrize("on_device", [False, True])
@pytest.mark.parametrize("keep_kspace", [True, False])
def test_zero_filled_chain_equals_fastmri_unet_transform(challenge, on_device, keep_kspace):
    rng = np.random.default_rng(0)
    kspace, target = _slice(challenge, rng)
    fname = "file_sim_0001.h5"
    reference = UnetDataTransform(challenge, create_mask_for_mask_type("random", [0.08], [4]), use_seed=True)(
        kspace, None, target, {"max": float(target.max())}, fname, 3
    )
    mask, num_low = ColumnMaskSampler("random", [0.08], [4]).fixed(fname, kspace.shape[-1], 0)
    sample = _sample(kspace, target, fname, mask, num_low)
    batch = SliceCollator(prepare=not on_device, keep_kspace=keep_kspace)([sample, sample])
    assert batch.prepared != on_device
    batch = prepare_batch(batch, keep_kspace)  # on the device: after transfer; a no-op when already done
    torch.testing.assert_close(network_input(batch)[0, 0], reference.image, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(normalized_target(batch)[0, 0], reference.target, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batch.mean[0], reference.mean, rtol=1e-6, atol=0)
    torch.testing.assert_close(batch.std[0], reference.std, rtol=1e-6, atol=0)
    # image-unit copies are the unclamped images, the k-space is masked
    torch.testing.assert_close(batch.target[0], torch.from_numpy(target))
    restored = (batch.zero_filled[0] - batch.mean[0]) / (batch.std[0] + 1e-11)
    torch.testing.assert_close(restored.clamp(-6, 6), reference.image, rtol=1e-5, atol=1e-5)
    if keep_kspace:
        assert torch.all(batch.kspace[0, ..., ~torch.from_numpy(mask)] == 0)
    else:
        assert batch.kspace is None
    assert batch.num_low_frequencies.tolist() == [num_low, num_low]


@pytest.mark.parametrize("shape", [(3, 64, 52), (2, 63, 51), (1, 64, 51), (1, 30, 24)])
def test_shift_free_inverse_fft_with_the_mask_on_the_way_equals_fastmri(shape):
    rng = np.random.default_rng(4)
    kspace = torch.from_numpy((rng.standard_normal((2, *shape)) + 1j * rng.standard_normal((2, *shape))).astype(np.complex64))
    mask = torch.from_numpy(rng.uniform(size=(2, shape[-1])) < 0.4)
    crop = (24, 24)
    masked = torch.view_as_real(kspace) * mask[:, None, None, :, None] + 0.0
    reference = fastmri.rss(fastmri.complex_abs(complex_center_crop(fastmri.ifft2c(masked), crop)), dim=1)
    scale = float(reference.max())
    for ours in (zero_filled_magnitude(apply_column_mask(kspace, mask), crop), zero_filled_magnitude(kspace, crop, mask)):
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6 * scale)
    # Unsampled columns hold +0.0, not -0.0 (which would leak the mask).
    zeros = apply_column_mask(-kspace.abs().to(torch.complex64), mask)[0][..., ~mask[0]]
    assert not torch.signbit(torch.view_as_real(zeros)).any()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_chain_runs_in_full_precision_under_autocast(dtype):
    rng = np.random.default_rng(1)
    kspace, target = _slice("multicoil", rng)
    mask, num_low = ColumnMaskSampler("random", [0.08], [4]).fixed("a.h5", kspace.shape[-1], 0)
    batch = SliceCollator(prepare=False)([_sample(kspace, target, "a.h5", mask, num_low)] * 2)
    reference = prepare_batch(batch)
    with torch.autocast("cpu", dtype=dtype):
        mixed = prepare_batch(batch)
    for name in ("kspace", "zero_filled", "mean", "std"):
        ours, ref = getattr(mixed, name), getattr(reference, name)
        assert ours.dtype == ref.dtype and ours.dtype in (torch.float32, torch.complex64), name
        assert torch.equal(ours, ref), name


def test_keep_kspace_false_drops_it_after_the_chain():
    rng = np.random.default_rng(2)
    kspace, target = _slice("singlecoil", rng)
    mask, num_low = ColumnMaskSampler("random", [0.08], [4]).fixed("a.h5", kspace.shape[-1], 0)
    batch = SliceCollator(prepare=True, keep_kspace=False)([_sample(kspace, target, "a.h5", mask, num_low)])
    assert batch.kspace is None and batch.zero_filled.shape == (1, 24, 24)


def test_mixed_shapes_in_one_batch_are_refused():
    rng = np.random.default_rng(3)
    a, target = _slice("singlecoil", rng)
    b = a[:, :50]
    mask_a = np.ones(52, bool)
    mask_b = np.ones(50, bool)
    with pytest.raises(ValueError, match="mixes k-space shapes"):
        SliceCollator()([_sample(a, target, "a.h5", mask_a, 4), _sample(b, target, "b.h5", mask_b, 4)])
