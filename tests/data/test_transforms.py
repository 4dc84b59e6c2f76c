import numpy as np
import pytest
import torch
from fastmri.data.subsample import create_mask_for_mask_type
from fastmri.data.transforms import UnetDataTransform

from mrirecon.data.dataset import SliceCollator, SliceSample
from mrirecon.data.masks import ColumnMaskSampler


def _slice(challenge, rng):
    shape = (4, 64, 52) if challenge == "multicoil" else (64, 52)
    kspace = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64) * 1e-4
    target = np.abs(rng.standard_normal((24, 24))).astype(np.float32) * 1e-4
    return kspace, target


@pytest.mark.parametrize("challenge", ["singlecoil", "multicoil"])
@pytest.mark.parametrize("on_device", [False, True])
def test_zero_filled_chain_equals_fastmri_unet_transform(challenge, on_device):
    rng = np.random.default_rng(0)
    kspace, target = _slice(challenge, rng)
    fname = "file_sim_0001.h5"
    reference = UnetDataTransform(challenge, create_mask_for_mask_type("random", [0.08], [4]), use_seed=True)(
        kspace, None, target, {"max": float(target.max())}, fname, 3
    )
    mask, _ = ColumnMaskSampler("random", [0.08], [4]).fixed(fname, kspace.shape[-1], 0)
    sample = SliceSample(
        kspace=torch.from_numpy(kspace), mask=torch.from_numpy(mask), target=torch.from_numpy(target),
        has_target=True, crop_size=target.shape, max_value=float(target.max()), fname=fname, slice_num=3,
        acceleration=4.0,
    )
    batch = SliceCollator(challenge == "multicoil", on_device)([sample, sample])
    if on_device:
        from mrirecon.data.dataset import kspace_to_recon_batch

        batch = kspace_to_recon_batch(batch)
    torch.testing.assert_close(batch.input[0, 0], reference.image, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batch.target[0, 0], reference.target, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batch.mean[0], reference.mean, rtol=1e-6, atol=0)
    torch.testing.assert_close(batch.std[0], reference.std, rtol=1e-6, atol=0)
    # image-unit copies are the unclamped images
    torch.testing.assert_close(batch.target_image[0], torch.from_numpy(target))
    restored = (batch.zero_filled[0] - batch.mean[0]) / (batch.std[0] + 1e-11)
    torch.testing.assert_close(restored.clamp(-6, 6), reference.image, rtol=1e-5, atol=1e-5)
