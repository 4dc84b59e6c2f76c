"""SSDU: the measured samples split into two disjoint sets that together are the measurement, the
network sees only one, the loss compares its k-space with the measurement on the other, the
split repeats for a seed and step, and a self-supervised fit runs from the command line."""

from pathlib import Path

import pytest
import torch

from cli_helpers import assert_ok, assert_user_error, events, load_ckpt, run_cli, write_config
from mrirecon.core.operator import SamplingMask, fft2c, ifft2c
from mrirecon.core.splitting import split_measurements, split_seed
from mrirecon.data.batch import KSpaceBatch
from mrirecon.errors import UserError
from mrirecon.methods.base import DataConsistentNetworkMethod
from mrirecon.methods.self_supervised import VALIDATION_STEP, SSDUSettings, normalized_l1_l2, ssdu_loss
from mrirecon.models import DataConsistentUnet


def _column_mask(batch=3, width=40, seed=0) -> SamplingMask:
    generator = torch.Generator().manual_seed(seed)
    columns = torch.rand(batch, width, generator=generator) < 0.35
    columns[:, width // 2 - 3:width // 2 + 3] = True
    return SamplingMask.from_columns(columns, 6)


def _batch(batch=2, height=16, width=40, seed=0) -> KSpaceBatch:
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, height, width, dtype=torch.complex64, generator=generator)
    mask = _column_mask(batch, width, seed)
    kspace = mask.apply(fft2c(image)[:, None])
    return KSpaceBatch(kspace=kspace, mask=mask.columns, num_low_frequencies=torch.full((batch,), 6),
                       crop_size=(height, height), target=torch.zeros(batch, height, height),
                       max_value=torch.ones(batch, dtype=torch.float64), fname=[f"f{i}.h5" for i in range(batch)],
                       slice_num=list(range(batch)), acceleration=[4.0] * batch, has_target=[True] * batch,
                       padding=[False] * batch)


@pytest.mark.parametrize("two_d", [False, True])
def test_the_two_sets_are_disjoint_and_together_the_measured_set(two_d):
    mask = _column_mask()
    if two_d:  # a 2-D mask: points, not columns, are split
        generator = torch.Generator().manual_seed(1)
        values = torch.rand(3, 1, 12, 40, generator=generator) < 0.3
        calibration = torch.zeros_like(values)
        calibration[..., 4:8, 17:23] = True
        mask = SamplingMask(values | calibration, calibration)
    split = split_measurements(mask, 0.4, [11, 12, 13])
    assert not (split.input.values & split.loss.values).any()
    assert torch.equal(split.input.values | split.loss.values, mask.values)
    assert torch.equal(split.input.calibration, mask.calibration)  # the calibration stays in the input
    assert split.input.is_columns != two_d
    outside = (mask.values & ~mask.calibration).flatten(1).sum(1)
    held = split.loss.values.flatten(1).sum(1)
    assert torch.equal(held, torch.round(0.4 * outside.double()).long())


def test_a_split_repeats_for_a_seed_and_step_and_changes_with_either():
    mask = _column_mask()

    def loss_set(seed, step):
        return split_measurements(mask, 0.4, [split_seed(seed, step, "a.h5", s) for s in range(3)]).loss.values

    assert torch.equal(loss_set(0, 5), loss_set(0, 5))
    assert not torch.equal(loss_set(0, 5), loss_set(0, 6))
    assert not torch.equal(loss_set(0, 5), loss_set(1, 5))
    # Per slice, not per batch: a slice's split does not depend on its batch-mates.
    alone = split_measurements(SamplingMask(mask.values[1:2], mask.calibration[1:2]), 0.4, [split_seed(0, 5, "a.h5", 1)])
    assert torch.equal(alone.loss.values[0], loss_set(0, 5)[1])
    assert split_seed(0, 5, "a.h5", 1) == 441090487752245071  # crc32: the same on every machine and Python


def test_a_mask_of_its_centre_alone_splits_the_centre_and_one_column_cannot_be_split():
    columns = torch.zeros(1, 40, dtype=torch.bool)
    columns[:, 17:23] = True  # what a random 8x mask of a few columns may draw
    split = split_measurements(SamplingMask.from_columns(columns, 6), 0.4, [0])
    assert split.loss.values.sum() == 2 and torch.equal(split.input.values | split.loss.values, columns[:, None, None])
    assert not (split.input.calibration & split.loss.values).any()
    columns[:, 17:22] = False
    with pytest.raises(ValueError, match="nothing to hold back"):
        split_measurements(SamplingMask.from_columns(columns, 1), 0.4, [0])
    with pytest.raises(UserError, match="loss_fraction"):
        SSDUSettings(loss_fraction=1.0)


def test_the_network_never_receives_the_loss_set():
    torch.manual_seed(0)
    net = DataConsistentUnet(chans=4, num_pool_layers=2)
    seen = []
    original = net.reconstruct

    def spy(kspace, mask):
        seen.append((kspace.clone(), mask))
        return original(kspace, mask)

    net.reconstruct = spy
    method = DataConsistentNetworkMethod(net)
    batch = _batch()
    settings = SSDUSettings(num_splits=2)
    loss = ssdu_loss(method, batch, settings, step=3)
    assert loss.isfinite() and len(seen) == 2
    kspace, measured = method.measurement(batch)
    for draw, (given, mask) in enumerate(seen):
        seeds = [split_seed(0, 3, f, s, draw) for f, s in zip(batch.fname, batch.slice_num)]
        split = split_measurements(measured, 0.4, seeds)
        assert torch.equal(mask.values, split.input.values)
        held = split.loss.values.expand_as(given)
        assert (given[held] == 0).all() and (kspace[held] != 0).all()  # measured, but not shown
    assert not torch.equal(seen[0][1].values, seen[1][1].values)  # multi-mask: two different splits


def test_the_loss_compares_the_network_kspace_with_the_measurement_on_the_held_back_set():
    batch = _batch()
    full_image = ifft2c(batch.kspace[:, 0])

    class Oracle(torch.nn.Module):  # "reconstructs" the whole measurement, whatever it is shown
        def reconstruct(self, kspace, mask):
            return full_image

    class Nothing(torch.nn.Module):
        def reconstruct(self, kspace, mask):
            return torch.zeros_like(full_image)

    settings = SSDUSettings()
    assert ssdu_loss(DataConsistentNetworkMethod(Oracle()), batch, settings, 0).item() == pytest.approx(0.0, abs=1e-6)
    # Predicting nothing: each normalised norm of the error is 1.
    assert ssdu_loss(DataConsistentNetworkMethod(Nothing()), batch, settings, 0).item() == pytest.approx(2.0, abs=1e-6)
    measured = torch.tensor([[3.0 + 4.0j, 0.0]])
    assert normalized_l1_l2(torch.zeros_like(measured), measured).item() == pytest.approx(2.0)
    # A validation split is fixed: the same loss every epoch for the same weights.
    oracle_half = DataConsistentNetworkMethod(Nothing())
    assert ssdu_loss(oracle_half, batch, settings, VALIDATION_STEP) == ssdu_loss(oracle_half, batch, settings, VALIDATION_STEP)


def test_the_ssdu_loss_trains_the_network():
    torch.manual_seed(0)
    method = DataConsistentNetworkMethod(DataConsistentUnet(chans=4, num_pool_layers=2))
    loss = ssdu_loss(method, _batch(), SSDUSettings(), step=0)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.net.parameters())


def _ssdu_config(tmp_path, data, net_class="mrirecon.models.DataConsistentUnet"):
    return write_config(tmp_path / "ssdu.yaml", data, tmp_path / "runs", training="ssdu",
                        ssdu={"loss_fraction": 0.4, "num_splits": 1, "seed": 0},
                        net={"class_path": net_class, "init_args": {"chans": 4, "num_pool_layers": 2}})


def test_a_self_supervised_fit_runs_and_logs_its_held_out_loss(tiny_singlecoil, tmp_path):
    config = _ssdu_config(tmp_path, tiny_singlecoil)
    assert_ok(run_cli("fit", "--config", config, "--checkpoint.monitor", "val/loss", "--checkpoint.mode", "min"))
    run = tmp_path / "runs" / "tiny" / "version_0"
    acc = events(run)
    assert {"train/loss", "val/loss", "val/ssim"} <= set(acc.Tags()["scalars"])
    (val_loss,) = [e.value for e in acc.Scalars("val/loss")]
    assert 0.0 < val_loss < 2.5  # the normalised L1-L2 of the held-back k-space, not an image loss
    last = load_ckpt(run / "checkpoints" / "last.ckpt")
    saved = last["hyper_parameters"]
    assert saved["training"] == "ssdu" and saved["ssdu"] == {"loss_fraction": 0.4, "num_splits": 1, "seed": 0}
    (best,) = [state for key, state in last["callbacks"].items() if key.startswith("ModelCheckpoint")
               and state.get("monitor") == "val/loss"]
    assert float(best["best_model_score"]) == pytest.approx(val_loss) and Path(best["best_model_path"]).is_file()


def test_ssdu_with_a_network_that_cannot_take_a_split_is_one_line(tiny_singlecoil, tmp_path):
    config = _ssdu_config(tmp_path, tiny_singlecoil, net_class="mrirecon.models.Unet")
    assert_user_error(run_cli("fit", "--config", config), "model.training", "ssdu", "DataConsistentUnet")


@pytest.fixture(scope="module")
def undersampled(tmp_path_factory):
    """The tiny demo with train and val as a site without references has them (4x, one mask per
    volume, no targets), test fully sampled."""
    from mrirecon.data.simulate import Preset, simulate_dataset

    root = tmp_path_factory.mktemp("undersampled") / "data"
    tiny = Preset(recon_size=32, volumes=(3, 1, 1), slices=4, coils=(1, 1), snr=(20.0, 40.0))
    simulate_dataset(root, preset=tiny, seed=1, undersampled=4, progress=False)
    return root


def test_undersampled_simulation_stores_one_mask_per_volume_and_no_target(undersampled):
    import h5py

    for path in sorted((undersampled / "singlecoil_train").glob("*.h5")):
        with h5py.File(path) as hf:
            assert "reconstruction_esc" not in hf and hf.attrs["acceleration"] == 4
            mask = hf["mask"][()]
            kspace = hf["kspace"][()]
            assert 0.15 < mask.mean() < 0.45  # 4x with its centre band
            assert (kspace[:, :, ~mask] == 0).all() and (abs(kspace[:, :, mask]).sum(axis=1) > 0).all()
    with h5py.File(sorted((undersampled / "singlecoil_test").glob("*.h5"))[0]) as hf:
        assert "reconstruction_esc" in hf and "mask" not in hf


def test_a_self_supervised_fit_on_files_without_targets_checkpoints_on_its_held_out_loss(undersampled, tmp_path):
    config = _ssdu_config(tmp_path, undersampled)
    # The default monitor, val/ssim, needs targets: one line naming what fit logs instead.
    assert_user_error(run_cli("fit", "--config", config), "checkpoint.monitor", "val/ssim", "val/loss")
    assert_ok(run_cli("fit", "--config", config, "--checkpoint.monitor", "val/loss", "--checkpoint.mode", "min",
                      "--trainer.max_epochs", 2))
    run = tmp_path / "runs" / "tiny" / "version_0"  # the refused fit left no run folder
    acc = events(run)
    scalars = set(acc.Tags()["scalars"])
    assert {"train/loss", "val/loss"} <= scalars and not any(t.startswith("val/ssim") for t in scalars)
    assert len(acc.Scalars("val/loss")) == 2
    last = load_ckpt(run / "checkpoints" / "last.ckpt")
    (best,) = [s for k, s in last["callbacks"].items() if k.startswith("ModelCheckpoint") and s.get("monitor") == "val/loss"]
    assert float(best["best_model_score"]) == pytest.approx(min(e.value for e in acc.Scalars("val/loss")))
    # The trained model is scored on the fully sampled test split as any other.
    assert_ok(run_cli("test", "--config", config, "--ckpt_path", run / "checkpoints" / "last.ckpt",
                      "--output_dir", tmp_path / "results"))
    assert (tmp_path / "results" / "summary.json").is_file()


def test_supervised_training_on_files_without_targets_names_ssdu(undersampled, tmp_path):
    config = write_config(tmp_path / "sup.yaml", undersampled, tmp_path / "runs")
    assert_user_error(run_cli("fit", "--config", config), "no singlecoil target", "model.training ssdu")


def test_a_val_split_with_targets_in_some_files_only_is_one_line(tiny_singlecoil, tmp_path):
    import shutil

    import h5py

    root = tmp_path / "data"
    shutil.copytree(tiny_singlecoil, root)
    first = sorted((root / "singlecoil_val").glob("*.h5"))[0]
    with h5py.File(first, "r+") as hf:
        del hf["reconstruction_esc"]
    config = _ssdu_config(tmp_path, root)
    assert_user_error(run_cli("fit", "--config", config), first.name, "has no target while other files")


def test_a_slice_that_cannot_be_split_is_named_by_its_file_and_slice():
    batch = _batch()
    one_column = torch.zeros_like(batch.mask)
    one_column[:, 20] = True
    mask = torch.stack([batch.mask[0], one_column[1]])
    batch = batch._replace(mask=mask, kspace=SamplingMask.from_columns(mask).apply(batch.kspace),
                           num_low_frequencies=torch.tensor([6, 1]))
    method = DataConsistentNetworkMethod(DataConsistentUnet(chans=4, num_pool_layers=2))
    with pytest.raises(UserError, match=r"^f1\.h5 slice 1: cannot split its measurement .*nothing to hold back"):
        ssdu_loss(method, batch, SSDUSettings(), step=0)
