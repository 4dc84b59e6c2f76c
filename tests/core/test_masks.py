import numpy as np
import pytest
import torch
from fastmri.data.subsample import create_mask_for_mask_type

from mrirecon.core.masks import ColumnMaskSampler, fname_seed
from mrirecon.core.transforms import apply_column_mask

ALL_TYPES = ["random", "equispaced", "equispaced_fraction", "magic", "magic_fraction"]


@pytest.mark.parametrize("mask_type", ALL_TYPES)
@pytest.mark.parametrize("width", [148, 368, 371])
def test_masked_columns_are_zero_and_centre_is_kept(mask_type, width):
    sampler = ColumnMaskSampler(mask_type, [0.08, 0.04], [4, 8])
    gen = torch.Generator().manual_seed(0)
    kspace = torch.randn(3, 2, 10, width, dtype=torch.complex64, generator=gen)
    for seed in range(20):
        mask, num_low, pair = sampler.random(seed, width)
        masked = apply_column_mask(kspace[:1], torch.from_numpy(mask)[None])
        assert torch.all(masked[..., ~torch.from_numpy(mask)] == 0)
        assert torch.equal(masked[..., torch.from_numpy(mask)], kspace[:1][..., torch.from_numpy(mask)])
        # no negative zeros: they would reveal which columns were sampled
        assert not torch.signbit(masked.real[..., ~torch.from_numpy(mask)]).any()
        cf = sampler.pairs[pair][0]
        assert num_low == round(width * cf)
        start = (width - num_low + 1) // 2
        assert mask[start : start + num_low].all()


@pytest.mark.parametrize("mask_type", ["random", "equispaced_fraction", "magic_fraction"])
@pytest.mark.parametrize("acceleration,fraction", [(4, 0.08), (8, 0.04)])
def test_effective_acceleration_within_ten_percent(mask_type, acceleration, fraction):
    sampler = ColumnMaskSampler(mask_type, [fraction], [acceleration])
    for width in (148, 368):
        sampled = np.mean([sampler.random(seed, width)[0].sum() for seed in range(400)])
        assert abs(width / sampled - acceleration) / acceleration < 0.10


@pytest.mark.parametrize("mask_type", ["equispaced", "magic"])
def test_exact_equispaced_masks_sample_more_than_nominal(mask_type):
    # fastMRI's definition since their PR #167: centre band plus every acc-th column.
    sampler = ColumnMaskSampler(mask_type, [0.08], [4])
    assert 368 / sampler.random(0, 368)[0].sum() < 4


def test_fixed_masks_depend_only_on_file_name_and_match_fastmri():
    a = ColumnMaskSampler("random", [0.08, 0.04], [4, 8])
    b = ColumnMaskSampler("random", [0.08, 0.04], [4, 8])
    for pair in range(2):
        m1, _ = a.fixed("file1000001.h5", 368, pair)
        a.random(123, 368)  # other draws in between must not matter
        m2, _ = a.fixed("file1000001.h5", 368, pair)
        m3, _ = b.fixed("file1000001.h5", 368, pair)
        assert np.array_equal(m1, m2) and np.array_equal(m1, m3)
        cf, acc = a.pairs[pair]
        ref, _ = create_mask_for_mask_type("random", [cf], [acc])((1, 368, 1), seed=fname_seed("file1000001.h5"))
        assert np.array_equal(m1, ref.reshape(-1).numpy().astype(bool))
    assert not np.array_equal(a.fixed("file1000001.h5", 368, 0)[0], a.fixed("file1000002.h5", 368, 0)[0])


def test_padding_columns_are_never_sampled():
    sampler = ColumnMaskSampler("random", [0.08], [4])
    mask, _, _ = sampler.random(0, 368, padding=(10, 350))
    assert not mask[:10].any() and not mask[350:].any()


def test_mismatched_pairs_are_rejected():
    with pytest.raises(ValueError, match="same length"):
        ColumnMaskSampler("random", [0.08], [4, 8])


@pytest.mark.parametrize(
    "fractions,accelerations,message",
    [
        ([0.08, 0.04], [0, 8], "accelerations"),
        ([0.08, 0.04], [-4, 8], "accelerations"),
        ([0.08], [1], "accelerations"),
        ([1.5, 0.04], [4, 8], "center_fractions"),
        ([0.0], [4], "center_fractions"),
        ([0.5], [4], "sampling budget"),
        ([], [], "at least one acceleration"),
    ],
)
def test_bad_settings_name_the_argument(fractions, accelerations, message):
    with pytest.raises(ValueError, match=message):
        ColumnMaskSampler("random", fractions, accelerations)


def test_centre_band_width_of_file_masks():
    from mrirecon.core.operator import contiguous_centre_width as centre_band_width

    sampler = ColumnMaskSampler("equispaced_fraction", [0.08], [4])
    masks = []
    for width in (368, 372, 396):
        mask, num_low = sampler.fixed("file_brain_AXT2_200_2000019.h5", width, 0)
        assert int(centre_band_width(torch.from_numpy(mask))) >= num_low
        masks.append(mask[:368])
    rows = torch.from_numpy(np.stack(masks))
    assert centre_band_width(rows).tolist() == [int(centre_band_width(r)) for r in rows]
    assert int(centre_band_width(torch.tensor([1, 0, 1, 1, 1, 0, 1]))) == 3
    assert int(centre_band_width(torch.tensor([1, 1, 0, 0, 1]))) == 0
    assert int(centre_band_width(torch.ones(5))) == 5
    assert int(centre_band_width(torch.tensor([0, 1, 1, 1]))) == 3


@pytest.mark.parametrize("mask_type", ["random", "equispaced", "equispaced_fraction", "magic", "magic_fraction"])
def test_every_width_a_run_accepts_draws_masks_with_a_centre(mask_type):
    sampler = ColumnMaskSampler(mask_type, [0.08, 0.04], [4, 8])
    for num_cols in range(2, 80):
        try:
            sampler.check_width(num_cols)
        except ValueError as err:
            assert str(err).startswith(("center_fractions:", "mask_type:")), err
            continue
        for seed in range(20):  # accepted widths: every draw has its centre band
            mask, num_low, _ = sampler.random(seed, num_cols)
            assert num_low >= 1 and mask.any()


def test_magic_fraction_on_narrow_kspace_is_refused_not_crashed():
    # fastMRI's MagicMaskFractionFunc raises "high <= 0" from numpy here, inside a worker.
    with pytest.raises(ValueError, match="mask_type: magic_fraction cannot draw a 8x mask of 9 columns"):
        ColumnMaskSampler("magic_fraction", [0.08, 0.04], [4, 8]).check_width(9)


@pytest.mark.parametrize("mask_type", ["magic_fraction", "equispaced_fraction"])
def test_a_mask_too_narrow_for_fastmri_is_refused_with_the_settings_not_numpys_words(mask_type):
    # equispaced_fraction divides by zero at 8 columns, magic_fraction asks numpy for high <= 0.
    with pytest.raises(ValueError) as caught:
        ColumnMaskSampler(mask_type, [0.08], [8]).check_width(8)
    message = str(caught.value)
    assert "center_fractions 0.08 (1 centre column)" in message and "mask_type: random" in message
    assert "division" not in message and "high <=" not in message
