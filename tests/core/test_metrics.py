"""Parity of mrirecon.evaluation.metrics with fastmri.evaluate (numpy + scikit-image)."""

import math
import warnings

import numpy as np
import pytest
import torch
from fastmri import evaluate as fastmri_eval
from skimage.metrics import structural_similarity

from mrirecon.core.metrics import (
    VolumeMetricAccumulator,
    ssim_per_slice,
    summarize,
    summarize_by,
    volume_metrics,
)

SHAPES = [(5, 37, 53), (3, 64, 64), (2, 17, 20), (1, 7, 7)]
# fastmri.evaluate computes in float32 for float32 inputs; we agree to far less than these.
SSIM_TOL = 1e-6
NMSE_TOL = 1e-6
PSNR_TOL_DB = 1e-5
# How far the wrong SSIM variants land from fastMRI's at least (they must be told apart).
VARIANT_GAP = 3e-4


def image_like(shape, seed, scale=1.0, noise=0.02):
    """Smooth Gaussian blobs plus noise, non-negative like magnitude images, float64."""
    rng = np.random.default_rng(seed)
    slices, height, width = shape
    yy, xx = np.mgrid[:height, :width]
    volume = np.zeros(shape)
    for i in range(slices):
        for _ in range(6):
            cy, cx = rng.uniform(0, height), rng.uniform(0, width)
            radius = rng.uniform(2, max(height, width) / 3)
            volume[i] += rng.uniform(0.3, 1.0) * np.exp(
                -((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2)
            )
    volume += noise * rng.standard_normal(shape)
    return np.abs(volume) * scale


def degrade(target, seed, noise):
    """A plausible reconstruction: blurred target plus noise relative to its spread."""
    rng = np.random.default_rng(seed)
    blurred = (target + np.roll(target, 1, axis=-1) + np.roll(target, 1, axis=-2)) / 3
    return blurred + noise * target.std() * rng.standard_normal(target.shape)


def make_pair(kind, shape, seed):
    """(target, pred) float64 arrays: independent uniform noise, or image-like at some quality."""
    if kind == "random":
        rng = np.random.default_rng(seed)
        return rng.uniform(size=shape), rng.uniform(size=shape)
    scale, noise = {"image_fastmri_scale": (1e-4, 0.3), "image_good": (1.0, 0.1),
                    "image_poor": (50.0, 1.0)}[kind]
    target = image_like(shape, seed, scale)
    return target, degrade(target, seed + 1, noise)


def reference(target, pred):
    """fastmri.evaluate's numbers for numpy volumes."""
    return {
        "ssim": fastmri_eval.ssim(target, pred).item(),
        "psnr": float(fastmri_eval.psnr(target, pred)),
        "nmse": float(fastmri_eval.nmse(target, pred)),
    }


def assert_matches(ours, ref):
    assert ours["ssim"] == pytest.approx(ref["ssim"], abs=SSIM_TOL)
    assert ours["nmse"] == pytest.approx(ref["nmse"], abs=NMSE_TOL, rel=1e-6)
    assert ours["psnr"] == pytest.approx(ref["psnr"], abs=PSNR_TOL_DB)


KINDS = ["random", "image_fastmri_scale", "image_good", "image_poor"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_volume_metrics_match_fastmri(kind, shape, dtype):
    target, pred = make_pair(kind, shape, seed=sum(shape))
    target_t = torch.from_numpy(target).to(dtype)
    pred_t = torch.from_numpy(pred).to(dtype)
    # The reference gets the same dtype, as fastmri.evaluate gets float32 from the files.
    ref = reference(target_t.numpy(), pred_t.numpy())
    assert_matches(volume_metrics(target_t, pred_t), ref)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_match_fastmri_on_the_same_values(dtype):
    target, pred = make_pair("image_good", (3, 37, 53), seed=3)
    target_t = torch.from_numpy(target).to(dtype)
    pred_t = torch.from_numpy(pred).to(dtype)
    ref = reference(target_t.double().numpy(), pred_t.double().numpy())
    assert_matches(volume_metrics(target_t, pred_t), ref)


@pytest.mark.parametrize("kind", ["image_fastmri_scale", "image_good", "image_poor"])
def test_test_data_separates_wrong_ssim_variants(kind):
    """The parity tolerance is tight enough to catch plausible SSIM mistakes on this data.

    (Independent noise is left out: with SSIM near 0 the covariance factor barely matters.)
    """
    target, pred = make_pair(kind, (5, 37, 53), seed=11)
    ref = fastmri_eval.ssim(target, pred).item()
    volume_max = target.max()
    variants = {
        "population covariance": [
            structural_similarity(t, p, data_range=volume_max, use_sample_covariance=False)
            for t, p in zip(target, pred)
        ],
        "slice max as data range": [
            structural_similarity(t, p, data_range=t.max()) for t, p in zip(target, pred)
        ],
        "border kept": [
            structural_similarity(t, p, data_range=volume_max, full=True)[1].mean()
            for t, p in zip(target, pred)
        ],
    }
    ours = volume_metrics(torch.from_numpy(target), torch.from_numpy(pred))["ssim"]
    assert ours == pytest.approx(ref, abs=SSIM_TOL)
    for name, per_slice in variants.items():
        assert abs(np.mean(per_slice) - ref) > VARIANT_GAP, name


def test_ssim_per_slice_matches_skimage_with_given_data_range():
    target, pred = make_pair("image_good", (4, 37, 53), seed=5)
    ranges = np.array([1.0, 2.0, 0.5, target.max()])
    ours = ssim_per_slice(
        torch.from_numpy(target), torch.from_numpy(pred), torch.from_numpy(ranges)
    )
    expected = [
        structural_similarity(t, p, data_range=r) for t, p, r in zip(target, pred, ranges)
    ]
    assert ours.shape == (4,) and ours.dtype == torch.float64
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-10)


def test_ssim_per_slice_accepts_channel_dim_and_scalar_range():
    target, pred = make_pair("random", (3, 20, 17), seed=6)
    target_t, pred_t = torch.from_numpy(target), torch.from_numpy(pred)
    flat = ssim_per_slice(target_t, pred_t, 0.7)
    # float64 ranges: 0.7 rounded to float32 would be a slightly different data range.
    with_channel = ssim_per_slice(
        target_t[:, None], pred_t[:, None], torch.tensor(0.7, dtype=torch.float64)
    )
    per_sample = ssim_per_slice(target_t, pred_t, torch.full((3,), 0.7, dtype=torch.float64))
    torch.testing.assert_close(flat, with_channel, rtol=0, atol=0)
    torch.testing.assert_close(flat, per_sample, rtol=0, atol=0)


def test_bad_inputs_raise():
    x = torch.rand(2, 16, 16)
    with pytest.raises(ValueError, match="shapes differ"):
        volume_metrics(x, torch.rand(2, 16, 15))
    with pytest.raises(ValueError, match="at least 7x7"):
        volume_metrics(torch.rand(2, 6, 16), torch.rand(2, 6, 16))
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        volume_metrics(torch.rand(2, 2, 16, 16), torch.rand(2, 2, 16, 16))
    with pytest.raises(ValueError, match="data_range"):
        ssim_per_slice(x, x, torch.ones(3))


def test_perfect_reconstruction():
    target, _ = make_pair("image_good", (3, 37, 53), seed=7)
    target_t = torch.from_numpy(target).float()
    metrics = volume_metrics(target_t, target_t.clone())
    assert metrics["ssim"] == pytest.approx(1.0, abs=1e-12)
    assert metrics["nmse"] == 0.0
    assert metrics["psnr"] == math.inf

    acc = VolumeMetricAccumulator()
    acc.update(target_t, target_t.clone(), target_t.max().expand(3), ["v"] * 3, torch.arange(3))
    assert acc.compute()["v"] == {"ssim": pytest.approx(1.0, abs=1e-12), "psnr": math.inf,
                                  "nmse": 0.0, "num_slices": 3.0}


def make_volumes(seed):
    """Volumes keyed like (fname, acceleration): three 37x53 and two 64x64, float32."""
    volumes = {}
    for i, (shape, kind) in enumerate(
        [((4, 37, 53), "image_fastmri_scale"), ((5, 37, 53), "image_good"),
         ((6, 37, 53), "random"), ((3, 64, 64), "image_poor"), ((2, 64, 64), "image_good")]
    ):
        target, pred = make_pair(kind, shape, seed=seed + 10 * i)
        volumes[(f"file{i}.h5", 4 if i % 2 else 8)] = (
            target.astype(np.float32), pred.astype(np.float32)
        )
    return volumes


def shuffled_batches(volumes, rng, device="cpu"):
    """Slices of all volumes, shuffled, in uneven batches of equal image size, interleaved."""
    by_size = {}
    for key, (target, _) in volumes.items():
        for s in range(target.shape[0]):
            by_size.setdefault(target.shape[1:], []).append((key, s))
    batches = []
    for items in by_size.values():
        order = rng.permutation(len(items))
        start = 0
        while start < len(order):
            size = int(rng.integers(1, 5))
            batches.append([items[j] for j in order[start:start + size]])
            start += size
    rng.shuffle(batches)
    for batch in batches:
        target = torch.stack([torch.from_numpy(volumes[k][0][s]) for k, s in batch]).to(device)
        pred = torch.stack([torch.from_numpy(volumes[k][1][s]) for k, s in batch]).to(device)
        # The file attribute `max` is a float64 of the float32 target volume's maximum.
        max_value = torch.tensor([float(volumes[k][0].max()) for k, _ in batch],
                                 dtype=torch.float64)
        if len(batch) % 2:
            target, pred = target[:, None], pred[:, None]
        yield target, pred, max_value, [k for k, _ in batch], torch.tensor([s for _, s in batch])


def check_accumulator_against_fastmri(volumes, device):
    acc = VolumeMetricAccumulator()
    for batch in shuffled_batches(volumes, np.random.default_rng(0), device):
        acc.update(*batch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        results = acc.compute()
    assert set(results) == set(volumes)
    for key, (target, pred) in volumes.items():
        assert results[key]["num_slices"] == target.shape[0]
        assert_matches(results[key], reference(target, pred))
        assert_matches(volume_metrics(torch.from_numpy(target).to(device),
                                      torch.from_numpy(pred).to(device)),
                       reference(target, pred))


def test_accumulator_with_shuffled_uneven_batches_matches_fastmri():
    check_accumulator_against_fastmri(make_volumes(seed=100), "cpu")


def test_accumulator_duplicate_updates_keep_the_last():
    volumes = make_volumes(seed=200)
    acc = VolumeMetricAccumulator()
    rng = np.random.default_rng(1)
    batches = list(shuffled_batches(volumes, rng))
    for batch in batches:
        acc.update(*batch)
    first = acc.compute()
    for batch in batches[:3]:  # repeats as a padding distributed sampler produces them
        acc.update(*batch)
    assert acc.compute() == first

    key = next(iter(volumes))
    target, pred = volumes[key]
    new_pred = pred.copy()
    new_pred[1] = target[1]
    acc.update(torch.from_numpy(target[1:2]), torch.from_numpy(new_pred[1:2]),
               torch.tensor([float(target.max())]), [key], torch.tensor([1]))
    assert_matches(acc.compute()[key], reference(target, new_pred))
    assert acc.compute()[key]["ssim"] != pytest.approx(first[key]["ssim"], abs=1e-6)


def test_accumulator_warns_when_max_value_is_not_the_targets_max():
    target, pred = make_pair("image_good", (3, 37, 53), seed=9)
    target_t, pred_t = torch.from_numpy(target), torch.from_numpy(pred)
    file_max = torch.full((3,), float(target.max()))

    normalised = VolumeMetricAccumulator()
    normalised.update(target_t / 2, pred_t / 2, file_max, ["v"] * 3, [0, 1, 2])
    with pytest.warns(RuntimeWarning, match="max_value"):
        normalised.compute()

    partial = VolumeMetricAccumulator()
    lowest = int(np.argmin(target.reshape(3, -1).max(axis=1)))
    partial.update(target_t[lowest:lowest + 1], pred_t[lowest:lowest + 1], file_max[:1],
                   ["v"], [lowest])
    with pytest.warns(RuntimeWarning, match="'v'"):
        partial.compute()
    # A limited validation scores some slices of a volume: below its maximum is expected there
    # (fourth battery: the warning came with every limit_val_batches run), above it never.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        partial.compute(whole_volumes=False)
    too_low = VolumeMetricAccumulator()
    too_low.update(target_t, pred_t, file_max / 2, ["v"] * 3, [0, 1, 2])
    with pytest.warns(RuntimeWarning, match="max_value"):
        too_low.compute(whole_volumes=False)


def test_accumulator_reset_and_bad_lengths():
    acc = VolumeMetricAccumulator()
    x = torch.rand(2, 16, 16)
    acc.update(x, x, x.amax(dim=(1, 2)), ["a", "b"], [0, 0])
    assert set(acc.compute()) == {"a", "b"}
    acc.reset()
    assert acc.compute() == {}
    with pytest.raises(ValueError, match="keys"):
        acc.update(x, x, x.amax(dim=(1, 2)), ["a"], [0, 1])
    with pytest.raises(ValueError, match="max_value"):
        acc.update(x, x, torch.ones(3), ["a", "b"], [0, 1])


def test_summarize_uses_population_std():
    per_volume = {
        ("a", 4): {"ssim": 0.9, "psnr": 30.0, "nmse": 0.01},
        ("b", 4): {"ssim": 0.8, "psnr": 32.0, "nmse": 0.03},
        ("c", 8): {"ssim": 0.5, "psnr": 25.0, "nmse": 0.1},
    }
    summary = summarize(per_volume)
    assert summary["num_volumes"] == 3
    for name in ("ssim", "psnr", "nmse"):
        values = [v[name] for v in per_volume.values()]
        assert summary[f"{name}_mean"] == pytest.approx(np.mean(values))
        assert summary[f"{name}_std"] == pytest.approx(np.std(values, ddof=0))

    groups = summarize_by(per_volume, lambda key: key[1])
    assert list(groups) == [4, 8]
    assert groups[4]["ssim_mean"] == pytest.approx(0.85)
    assert groups[4]["psnr_std"] == pytest.approx(1.0)
    assert groups[8] == {"num_volumes": 1.0, "ssim_mean": 0.5, "ssim_std": 0.0,
                         "psnr_mean": 25.0, "psnr_std": 0.0,
                         "nmse_mean": pytest.approx(0.1), "nmse_std": 0.0}
    assert math.isnan(summarize({})["ssim_mean"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_parity():
    volumes = make_volumes(seed=300)
    check_accumulator_against_fastmri(volumes, "cuda")
    target, pred = next(iter(volumes.values()))
    per_slice = ssim_per_slice(torch.from_numpy(target).cuda(), torch.from_numpy(pred).cuda(),
                               torch.tensor(float(target.max())))
    assert per_slice.device.type == "cuda"
