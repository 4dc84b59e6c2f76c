"""GPU-ready training, exercised on the CPU: bf16 autocast, channels-last layout, torch.compile."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cli_helpers import assert_ok, events, load_ckpt, run_cli, write_config
from mrirecon.data.batch import prepare_batch
from mrirecon.lightning.datamodule import ReconDataModule
from mrirecon.lightning.module import ReconModule
from mrirecon.models import Unet


def test_a_bf16_fit_step_keeps_the_chain_in_full_precision(tiny_multicoil, tmp_path):
    config = write_config(tmp_path / "c.yaml", tiny_multicoil, tmp_path / "runs")
    result = run_cli("fit", "--config", config, "--data.challenge", "multicoil", "--trainer.precision", "bf16-mixed",
                     "--data.transform_on_device", "true")
    assert_ok(result)
    losses = [e.value for e in events(tmp_path / "runs" / "tiny" / "version_0").Scalars("train/loss")]
    assert losses and all(np.isfinite(losses))

    # The same batch through the chain and the loss under bf16 autocast and in fp32.
    dm = ReconDataModule(str(tiny_multicoil), challenge="multicoil", num_workers=0, batch_size=2,
                         transform_on_device=True, accelerations=[4], center_fractions=[0.08])
    dm.setup("validate")
    raw = next(iter(dm.val_dataloader()))
    reference = prepare_batch(raw)
    module = ReconModule(net=Unet(chans=4, num_pool_layers=2)).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = prepare_batch(raw)
        loss_mixed = module._loss(module(mixed), mixed)
    for name in ("kspace", "zero_filled", "mean", "std"):
        assert torch.equal(getattr(mixed, name), getattr(reference, name)), name
    assert loss_mixed.dtype == torch.float32
    assert float(loss_mixed) == pytest.approx(float(module._loss(module(reference), reference)), rel=0.05)


def test_varnet_fits_under_bf16(tiny_multicoil, tmp_path):
    config = write_config(tmp_path / "c.yaml", tiny_multicoil, tmp_path / "runs")
    net = ["--model.net", "mrirecon.models.VarNet", "--model.net.init_args.num_cascades", 2,
           "--model.net.init_args.chans", 4, "--model.net.init_args.pools", 2,
           "--model.net.init_args.sens_chans", 2, "--model.net.init_args.sens_pools", 1, "--model.loss", "ssim"]
    assert_ok(run_cli("fit", "--config", config, "--data.challenge", "multicoil", *net, "--trainer.precision", "bf16-mixed"))
    ckpt = load_ckpt(tmp_path / "runs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt")
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_channels_last_trains_the_same_network(tiny_singlecoil, tmp_path):
    config = write_config(tmp_path / "c.yaml", tiny_singlecoil, tmp_path / "runs")
    assert_ok(run_cli("fit", "--config", config, "--model.channels_last", "true"))
    assert_ok(run_cli("fit", "--config", config, "--trainer.logger.init_args.save_dir", tmp_path / "plain"))
    a = load_ckpt(tmp_path / "runs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt")["state_dict"]
    b = load_ckpt(tmp_path / "plain" / "tiny" / "version_0" / "checkpoints" / "last.ckpt")["state_dict"]
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-3, atol=1e-5)


@pytest.mark.slow  # compiling takes 10-25 s on 2 cores
def test_compile_keeps_the_weights_names_and_outputs(tiny_singlecoil, tmp_path):
    torch.manual_seed(0)
    eager = ReconModule(net=Unet(chans=2, num_pool_layers=1))
    compiled = ReconModule(net=Unet(chans=2, num_pool_layers=1), compile=True)
    compiled.load_state_dict(eager.state_dict())
    compiled.setup("fit")
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    dm = ReconDataModule(str(tiny_singlecoil), num_workers=0, batch_size=2, accelerations=[4], center_fractions=[0.08])
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        torch.testing.assert_close(compiled(batch), eager(batch), rtol=1e-4, atol=1e-8)
