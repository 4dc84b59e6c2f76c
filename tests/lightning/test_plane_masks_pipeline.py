"""2-D (ky-kz plane) masks through the whole pipeline: drawn per volume by the DataModule, applied
by the batch chain, read by image, k-space and compressed-sensing methods, and trained and
scored from the CLI as column masks are."""

import numpy as np
import pytest
import torch
import yaml

from cli_helpers import assert_ok, metrics_csv, run_cli, write_config
from mrirecon.core.operator import center_crop, centred_sampled_square, ifft2c, rss
from mrirecon.data.batch import collate_slices, prepare_batch
from mrirecon.lightning.datamodule import ReconDataModule
from mrirecon.methods.cs_tv import CSTV, CSTVSettings

pytestmark = pytest.mark.usefixtures("one_thread")


def _dm(root, challenge="singlecoil", mask_type="poisson2d", **kw):
    dm = ReconDataModule(str(root), challenge=challenge, mask_type=mask_type, accelerations=[4, 8],
                         calibration_radius=4, num_workers=0, **kw)
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("mask_type", ["poisson2d", "gaussian2d"])
def test_validation_masks_are_2d_fixed_per_volume_and_keep_their_calibration(tiny_singlecoil, mask_type):
    dm = _dm(tiny_singlecoil, mask_type=mask_type)
    val = dm.dataset("val")
    first, again = val[0], val[0]
    rows, cols = dm.volumes("val")[0].kspace_shape[-2:]
    assert first.mask.shape == (rows, cols) and torch.equal(first.mask, again.mask)
    side = first.num_low_frequencies
    assert side == centred_sampled_square(first.mask) and side >= 5  # the disc of radius 4 holds a 5x5 square
    for sample in (val[i] for i in range(len(val))):
        measured = sample.mask.numel() / sample.mask.sum().item()
        assert abs(measured - sample.acceleration) / sample.acceleration < 0.05, (measured, sample.acceleration)
    train = dm.dataset("train", train=True)
    from mrirecon.data.dataset import SliceRequest

    masks = {train[SliceRequest(0, seed)].mask.numpy().tobytes() for seed in range(6)}
    assert len(masks) > 1  # training draws differ by seed


def test_the_batch_chain_applies_a_2d_mask_pointwise(tiny_multicoil):
    dm = _dm(tiny_multicoil, challenge="multicoil")
    val = dm.dataset("val")
    batch = collate_slices([val[0], val[1]])
    assert batch.mask.shape[1:] == batch.kspace.shape[-2:] and not batch.is_columns
    prepared = prepare_batch(batch)
    mask = batch.mask[:, None]
    assert torch.equal(prepared.kspace, torch.where(mask, batch.kspace, 0))
    expected = rss(center_crop(ifft2c(batch.kspace * mask), batch.crop_size))
    torch.testing.assert_close(prepared.zero_filled, expected, rtol=1e-5, atol=1e-6)
    dropped = prepare_batch(batch, keep_kspace=False)
    assert dropped.kspace is None and torch.allclose(dropped.zero_filled, prepared.zero_filled, atol=1e-6)
    calibration = batch.sampling_mask().calibration
    assert calibration.sum().item() == 2 * int(batch.num_low_frequencies[0]) ** 2


@pytest.mark.parametrize("fixture", ["tiny_singlecoil", "tiny_multicoil"])
def test_cs_tv_with_a_2d_mask_beats_zero_filled(fixture, request):
    from mrirecon.core.metrics import ssim_per_slice

    root = request.getfixturevalue(fixture)
    dm = _dm(root, challenge=fixture.split("_")[1])
    val = dm.dataset("val")
    batch = prepare_batch(collate_slices([val[i] for i in range(2)]))
    image = CSTV(CSTVSettings(iterations=100, lam={4: 0.005, 8: 0.01}))(batch)
    assert image.shape == batch.target.shape and torch.isfinite(image).all()
    ssim = lambda x: float(ssim_per_slice(x, batch.target, batch.max_value).mean())  # noqa: E731
    assert ssim(image) > ssim(batch.zero_filled)


def test_fit_and_test_train_and_score_with_poisson_masks(tiny_singlecoil, tmp_path):
    config = write_config(tmp_path / "c.yaml", tiny_singlecoil, tmp_path / "runs")
    settings = yaml.safe_load(config.read_text())
    settings["data"].update(mask_type="poisson2d", calibration_radius=4)
    config.write_text(yaml.safe_dump(settings))
    fit = run_cli("fit", "--config", str(config), "--trainer.max_steps", "2")
    assert_ok(fit)
    assert "poisson2d masks 4x (calibration radius 4), 8x (calibration radius 4)" in fit.out
    ckpt = sorted((tmp_path / "runs").rglob("last.ckpt"))[0]
    out = tmp_path / "recons"
    result = run_cli("test", "--config", str(config), "--ckpt_path", str(ckpt), "--output_dir", str(out))
    assert_ok(result)
    rows = metrics_csv(out / "metrics.csv")
    assert {key[1] for key in rows} >= {"4x", "8x"}
    assert all(np.isfinite(v["ssim"]) for v in rows.values())

    # reconstruct draws the file's mask as test and predict do: fixed by the file name.
    test_file = sorted((tiny_singlecoil / "singlecoil_test").glob("*.h5"))[0]
    assert_ok(run_cli("predict", "--config", str(config), "--ckpt_path", str(ckpt), "--output_dir", str(tmp_path / "p")))
    result = run_cli("reconstruct", str(test_file), "--ckpt_path", str(ckpt), "--out", str(tmp_path / "r"),
                     "--acceleration", "4")
    assert_ok(result)
    import h5py

    with h5py.File(tmp_path / "r" / test_file.name, "r") as hf, \
            h5py.File(tmp_path / "p" / "4x" / test_file.name, "r") as tested:
        np.testing.assert_allclose(hf["reconstruction"][()], tested["reconstruction"][()], rtol=1e-4, atol=1e-6)

    # Zero-filled through `baseline` with the same masks: scored as fastmri.evaluate scores them.
    from cli_helpers import fastmri_scores, run_baseline

    baseline = run_baseline("zero-filled", config, tmp_path / "zf")
    scores = metrics_csv(baseline / "metrics.csv")
    assert {acc for _, acc, _ in scores} == {"4x", "8x"}
    for (_, acc, name), values in scores.items():
        with h5py.File(tiny_singlecoil / "singlecoil_test" / name, "r") as hf:
            target = hf["reconstruction_esc"][()]
        reference = fastmri_scores(target, baseline / "reconstructions" / acc / name)
        for metric in ("ssim", "psnr", "nmse"):
            assert values[metric] == pytest.approx(reference[metric], rel=1e-4), (acc, name, metric)


def test_a_varnet_reads_a_2d_mask_and_keeps_its_samples(tiny_multicoil):
    from mrirecon.methods.base import as_method
    from mrirecon.models import VarNet

    dm = _dm(tiny_multicoil, challenge="multicoil")
    batch = prepare_batch(collate_slices([dm.dataset("val")[0]]))
    torch.manual_seed(0)
    net = VarNet(num_cascades=2, sens_chans=2, sens_pools=2, chans=2, pools=2)
    image = as_method(net)(batch)
    assert image.shape == batch.target.shape and torch.isfinite(image).all()


def test_a_file_with_its_own_2d_mask_beside_one_without(tiny_singlecoil, tmp_path):
    """One split, one file with a 2-D `mask` and one drawn a column mask: batched apart, scored."""
    import shutil

    import h5py

    from mrirecon.core.plane_masks import poisson_disc_mask

    split = tmp_path / "data" / "singlecoil_test"
    split.mkdir(parents=True)
    first, second = sorted((tiny_singlecoil / "singlecoil_test").glob("*.h5"))[:2]
    shutil.copy(first, split / first.name)
    shutil.copy(second, split / second.name)
    with h5py.File(split / first.name, "r+") as hf:
        hf.create_dataset("mask", data=poisson_disc_mask(hf["kspace"].shape[-2:], 4, 3.0))
    config = write_config(tmp_path / "c.yaml", tmp_path / "data", tmp_path / "runs")
    result = run_cli("baseline", "--method", "zero-filled", "--config", str(config), "--output_dir",
                     str(tmp_path / "zf"), "--no_progress", "--data.batch_size", "4")
    assert_ok(result)


def test_partial_fourier_with_column_masks_is_refused(tiny_singlecoil):
    from mrirecon.errors import UserError

    with pytest.raises(UserError, match="data.partial_fourier 0.3: for the 2-D masks"):
        ReconDataModule(tiny_singlecoil, mask_type="random", center_fractions=[0.08], accelerations=[4],
                        partial_fourier=0.3)
