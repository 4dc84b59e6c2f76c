"""CS-TV solver: convergence, exactness, agreement with sigpy, image quality, sensitivity maps."""

import json
from pathlib import Path

import fastmri
import nibabel as nib
import nilearn
import numpy as np
import pytest
import torch
from fastmri.data.subsample import RandomMaskFunc
from scipy.ndimage import zoom
from skimage.metrics import structural_similarity

from mrirecon.methods.cs_tv import (
    cs_tv_reconstruct,
    estimate_sensitivities,
    relative_lambda_to_absolute,
    tv_objective,
)

MNI_T1 = Path(nilearn.__file__).parent / "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"


def mni_images(size, axial=(75, 95), seed=0):
    """Axial MNI T1 slices, square-padded, resized to size², times a smooth random phase."""
    volume = np.asarray(nib.load(MNI_T1).dataobj, dtype=np.float64) / 255.0
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    images = []
    for z in axial:
        image = np.rot90(volume[:, :, z])
        pad = image.shape[0] - image.shape[1]
        image = np.pad(image, ((0, 0), (pad // 2, pad - pad // 2)))
        image = np.clip(zoom(image, size / image.shape[0], order=1), 0.0, None)
        phase = np.pi * (rng.uniform(-1, 1) * xx + rng.uniform(-1, 1) * yy + rng.uniform(-1, 1) * xx * yy)
        images.append(image * np.exp(1j * phase))
    return torch.from_numpy(np.stack(images)).to(torch.complex64)


def smooth_maps(size, coils=6):
    """Smooth synthetic coil maps on a ring around the object, normalised to Σ_c|S_c|² = 1."""
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    maps = []
    for c in range(coils):
        angle = 2 * np.pi * c / coils
        distance = (xx - 1.5 * np.cos(angle)) ** 2 + (yy - 1.5 * np.sin(angle)) ** 2
        maps.append(np.exp(-distance / 2.0) * np.exp(1j * (angle + 0.5 * xx)))
    maps = np.stack(maps)
    return torch.from_numpy(maps / np.sqrt((np.abs(maps) ** 2).sum(0))).to(torch.complex64)


DIMS = (-2, -1)


def fft2c(x):
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=DIMS), norm="ortho"), dim=DIMS)


def ifft2c(k):
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=DIMS), norm="ortho"), dim=DIMS)


def column_masks(batch, width, acceleration=4, center_fraction=0.08):
    mask_func = RandomMaskFunc([center_fraction], [acceleration])
    masks, low = zip(*(mask_func((1, width, 1), seed=100 + b) for b in range(batch)))
    return torch.stack([m.reshape(-1) for m in masks]).bool(), torch.tensor(low)


def noisy_kspace(images, level=0.002, seed=1):
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(images.shape, dtype=torch.complex64, generator=generator)
    return fft2c(images) + level * noise


def apply_mask(kspace, mask):
    shape = (mask.shape[0],) + (1,) * (kspace.ndim - 2) + (mask.shape[1],)
    return kspace * mask.view(shape)


@pytest.fixture(scope="module")
def single_coil_problem():
    images = mni_images(48)
    mask, _ = column_masks(2, 48)
    y = apply_mask(noisy_kspace(images), mask)
    return y, mask, relative_lambda_to_absolute(0.01, y, mask)


def test_fft_convention_is_fastmri():
    # The λ = 0 exactness tests below feed the solver k-space made with this fft2c, so they also
    # pin the solver's own transform to fastmri's convention.
    x = torch.randn(3, 2, 10, 7, dtype=torch.complex64)
    ours = fft2c(x)
    theirs = torch.view_as_complex(fastmri.fft2c(torch.view_as_real(x)).contiguous())
    torch.testing.assert_close(ours, theirs)


def test_objective_equals_sigpys(single_coil_problem):
    sigpy_mri = pytest.importorskip("sigpy.mri")
    y, mask, lam = single_coil_problem
    x = torch.randn(y.shape, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    ours = tv_objective(x, y, mask, lam)
    for b in range(y.shape[0]):
        app = _sigpy_app(sigpy_mri, y[b], mask[b], float(lam[b]), iterations=1)
        np.copyto(app.x, x[b].numpy())
        assert ours[b].item() == pytest.approx(app.objective(), rel=1e-5)


def _sigpy_app(sigpy_mri, y, mask, lam, iterations):
    height, width = y.shape
    weights = np.broadcast_to(mask.numpy().astype(np.complex64), (1, height, width)).copy()
    return sigpy_mri.app.TotalVariationRecon(
        y.numpy()[None],
        np.ones((1, height, width), np.complex64),
        lam,
        weights=weights,
        max_iter=iterations,
        show_pbar=False,
    )


def test_converges_to_sigpys_objective(single_coil_problem):
    sigpy_mri = pytest.importorskip("sigpy.mri")
    y, mask, lam = single_coil_problem
    ours = tv_objective(cs_tv_reconstruct(y, mask, lam, iterations=1000), y, mask, lam)
    for b in range(y.shape[0]):
        app = _sigpy_app(sigpy_mri, y[b], mask[b], float(lam[b]), iterations=3000)
        app.run()
        assert ours[b].item() == pytest.approx(app.objective(), rel=1e-2)
        # Ours is at least as converged: sigpy's plain PDHG is the slower of the two.
        assert ours[b].item() <= app.objective() * (1 + 1e-4)


@pytest.mark.parametrize("multicoil", [False, True], ids=["single-coil", "multi-coil"])
def test_objective_decreases_to_reference(multicoil):
    images = mni_images(32)
    mask, _ = column_masks(2, 32)
    sens = smooth_maps(32).expand(2, -1, -1, -1).contiguous() if multicoil else None
    kspace = noisy_kspace(images.unsqueeze(1) * sens) if multicoil else noisy_kspace(images)
    y = apply_mask(kspace, mask)
    lam = relative_lambda_to_absolute(0.01, y, mask, sens)
    _, history = cs_tv_reconstruct(y, mask, lam, iterations=2000, sens=sens, return_history=True)
    reference = history[-1]
    assert history.shape == (2001, 2)
    # After a burn-in the objective does not rise by more than rounding, and it ends within
    # 1e-3 of the long run after 500 iterations.
    assert bool((history[300:] <= history[300] * (1 + 1e-5)).all())
    assert torch.all((history[500] - reference) / reference < 1e-3)
    stopped, steps = cs_tv_reconstruct(
        y, mask, lam, iterations=2000, sens=sens, tol=1e-4, return_history=True
    )
    assert steps.shape[0] - 1 < 2000
    assert torch.all((tv_objective(stopped, y, mask, lam, sens) - reference) / reference < 1e-3)


def test_lambda_zero_fully_sampled_is_exact_single_coil():
    images = mni_images(32)
    y = fft2c(images)
    full = torch.ones(2, 32, dtype=torch.bool)
    x = cs_tv_reconstruct(y, full, 0.0, iterations=50)
    assert ((x - images).norm() / images.norm()).item() < 1e-5


def test_lambda_zero_fully_sampled_is_exact_multi_coil():
    images = mni_images(32)
    sens = smooth_maps(32).expand(2, -1, -1, -1).contiguous()
    y = fft2c(images.unsqueeze(1) * sens)
    full = torch.ones(2, 32)
    x = cs_tv_reconstruct(y, full, torch.zeros(2), iterations=50, sens=sens)
    assert ((x - images).norm() / images.norm()).item() < 1e-5


def test_beats_zero_filled_ssim_at_4x():
    images = mni_images(64, axial=(65, 80, 95))
    mask, _ = column_masks(3, 64)
    y = apply_mask(noisy_kspace(images), mask)
    x = cs_tv_reconstruct(y, mask, relative_lambda_to_absolute(0.01, y, mask), iterations=300)
    zero_filled = ifft2c(y)
    for target, recon, baseline in zip(images.abs().numpy(), x.abs().numpy(), zero_filled.abs().numpy()):
        ssim = structural_similarity(target, recon, data_range=target.max())
        ssim_zf = structural_similarity(target, baseline, data_range=target.max())
        assert ssim > ssim_zf + 0.05


def test_batched_per_slice_lambda_equals_separate_runs(single_coil_problem):
    y, mask, lam = single_coil_problem
    lam = lam * torch.tensor([0.5, 2.0])
    batched = cs_tv_reconstruct(y, mask, lam, iterations=40)
    for b in range(2):
        alone = cs_tv_reconstruct(y[b : b + 1], mask[b : b + 1], lam[b : b + 1], iterations=40)
        torch.testing.assert_close(batched[b : b + 1], alone, rtol=1e-5, atol=1e-6)


def test_relative_lambda_makes_reconstruction_scale_free(single_coil_problem):
    y, mask, _ = single_coil_problem
    scale = 1234.5
    x = cs_tv_reconstruct(y, mask, relative_lambda_to_absolute(0.01, y, mask), iterations=60)
    scaled_y = y * scale
    lam_scaled = relative_lambda_to_absolute(0.01, scaled_y, mask)
    x_scaled = cs_tv_reconstruct(scaled_y, mask, lam_scaled, iterations=60)
    torch.testing.assert_close(x_scaled / scale, x, rtol=1e-4, atol=1e-5)


def test_estimated_sensitivities_match_coil_image_directions():
    images = mni_images(64)
    true_maps = smooth_maps(64)
    coil_images = images.unsqueeze(1) * true_maps
    kspace = noisy_kspace(coil_images, level=0.001)
    low = torch.tensor([6, 10])
    sens = estimate_sensitivities(kspace, low)
    assert sens.shape == kspace.shape and sens.dtype == kspace.dtype
    obj = images.abs() > 0.1 * images.abs().amax()
    sum_sq = sens.abs().square().sum(1)
    assert bool((sum_sq <= 1 + 1e-5).all())
    assert torch.allclose(sum_sq[obj], torch.ones(()), atol=1e-4)
    full = ifft2c(kspace)
    cosine = (sens.conj() * full).sum(1).abs() / (sens.norm(dim=1) * full.norm(dim=1))
    assert cosine[obj].median() > 0.99
    assert torch.quantile(cosine[obj], 0.05) > 0.95
    # A per-slice count equals running each slice with its own integer count.
    torch.testing.assert_close(sens[1:], estimate_sensitivities(kspace[1:], 10))


def test_cs_tv_with_estimated_maps_beats_rss_zero_filled():
    images = mni_images(64, axial=(80,))
    coil_images = images.unsqueeze(1) * smooth_maps(64)
    mask, low = column_masks(1, 64)
    y = apply_mask(noisy_kspace(coil_images), mask)
    sens = estimate_sensitivities(y, low)
    lam = relative_lambda_to_absolute(0.01, y, mask, sens)
    x = cs_tv_reconstruct(y, mask, lam, iterations=300, sens=sens)
    target = images[0].abs().numpy()
    rss = ifft2c(y)[0].abs().square().sum(0).sqrt().numpy()
    ssim = structural_similarity(target, x[0].abs().numpy(), data_range=target.max())
    assert ssim > structural_similarity(target, rss, data_range=target.max()) + 0.05


def test_rejects_bad_shapes(single_coil_problem):
    y, mask, lam = single_coil_problem
    with pytest.raises(ValueError, match="mask"):
        cs_tv_reconstruct(y, mask[:, :-1], lam)
    with pytest.raises(ValueError, match="lam"):
        cs_tv_reconstruct(y, mask, torch.ones(3))
    with pytest.raises(ValueError, match="sens"):
        cs_tv_reconstruct(y.unsqueeze(1), mask, lam, sens=torch.ones(2, 2, 48, 48, dtype=torch.complex64))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda_like_on_cpu(single_coil_problem):
    y, mask, lam = single_coil_problem
    on_cpu = cs_tv_reconstruct(y, mask, lam, iterations=50)
    on_gpu = cs_tv_reconstruct(y.cuda(), mask.cuda(), lam.cuda(), iterations=50)
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-4, atol=1e-5)


def test_cs_tv_takes_espirit_maps_and_refuses_an_unknown_estimate(tiny_multicoil, tmp_path):
    import yaml

    from cli_helpers import run_baseline
    from mrirecon.errors import UserError
    from mrirecon.methods import CSTVSettings

    with pytest.raises(UserError, match="cs_tv.sensitivities: 'sense' is not one of direct, espirit"):
        CSTVSettings(sensitivities="sense")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"data_path": str(tiny_multicoil), "challenge": "multicoil", "center_fractions": [0.16],
                 "accelerations": [4], "batch_size": 4, "num_workers": 0},
        "cs_tv": {"iterations": 40, "lam_default": 0.003, "sensitivities": "espirit", "output": "coil_rss"}}))
    out = run_baseline("cs-tv", config, tmp_path / "cs", progress=False)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cs_tv"]["sensitivities"] == "espirit" and summary["cs_tv"]["output"] == "coil_rss"
    assert summary["methods"]["cs-tv"]["4x"]["ssim"]["mean"] > 0  # maps everywhere: a reconstruction, not zeros


@pytest.mark.parametrize("coils", [1, 4])
def test_the_coil_rss_output_puts_the_measured_samples_back(coils):
    from mrirecon.core.operator import SamplingMask, center_crop, ifft2c, rss
    from mrirecon.data.batch import KSpaceBatch
    from mrirecon.errors import UserError
    from mrirecon.methods import CSTV, CSTVSettings

    with pytest.raises(UserError, match="cs_tv.output: 'rss' is not one of magnitude, coil_rss"):
        CSTVSettings(output="rss")
    generator = torch.Generator().manual_seed(0)
    batch, height, width = 2, 24, 20
    kspace = torch.randn(batch, coils, height, width, dtype=torch.complex64, generator=generator)

    def run(columns, output):
        mask = SamplingMask.from_columns(columns, 6)
        data = KSpaceBatch(kspace=mask.apply(kspace), mask=columns, num_low_frequencies=torch.full((batch,), 6),
                           crop_size=(16, 16), target=torch.zeros(batch, 16, 16), max_value=torch.ones(batch, dtype=torch.float64),
                           fname=["f.h5"] * batch, slice_num=[0, 1], acceleration=[4.0] * batch,
                           has_target=[True] * batch, padding=[False] * batch)
        return CSTV(CSTVSettings(iterations=20, lam_default=0.05, output=output))(data)

    # Every sample measured: the output is the data's own root-sum-of-squares, whatever TV did.
    full = torch.ones(batch, width, dtype=torch.bool)
    expected = center_crop(rss(ifft2c(kspace)), (16, 16))
    torch.testing.assert_close(run(full, "coil_rss"), expected, rtol=1e-5, atol=1e-6)
    assert (run(full, "magnitude") - expected).abs().max() > 0.01  # TV does change |x|
    # Undersampled: the two outputs differ (the unmeasured samples come from the solution).
    columns = torch.zeros(batch, width, dtype=torch.bool)
    columns[:, ::3] = True
    columns[:, width // 2 - 3:width // 2 + 3] = True
    assert (run(columns, "coil_rss") - run(columns, "magnitude")).abs().max() > 0.01
