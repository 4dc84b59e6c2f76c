"""ReconModule without a Trainer: hyperparameters, the fallback optimiser, test-time checks."""

import pytest
import torch

from mrirecon.data.batch import KSpaceBatch, prepare_batch
from mrirecon.errors import UserError
from mrirecon.models import Unet
from mrirecon.lightning.module import MODEL_KEY, ZERO_FILLED_KEY, ReconModule, describe_network


def _batch(has_target, size=16, padding=None):
    b = len(has_target)
    gen = torch.Generator().manual_seed(0)
    kspace = torch.randn(b, 1, size, size, dtype=torch.complex64, generator=gen)
    target = torch.where(torch.tensor(has_target)[:, None, None], torch.rand(b, size, size, generator=gen), torch.zeros(()))
    batch = KSpaceBatch(
        kspace=kspace,
        mask=torch.ones(b, size, dtype=torch.bool),
        num_low_frequencies=torch.full((b,), 4),
        crop_size=(size, size),
        target=target,
        max_value=target.flatten(1).amax(1).double().clamp_min(1e-3),
        fname=[f"vol{i}.h5" for i in range(b)],
        slice_num=list(range(b)),
        acceleration=[4.0] * b,
        has_target=list(has_target),
        padding=padding or [False] * b,
    )
    return prepare_batch(batch)


def test_network_description_is_in_the_initial_hparams():
    # Loggers write hparams_initial to hparams.yaml; checkpoints store hparams. Both need the net.
    module = ReconModule(net=Unet(chans=4, num_pool_layers=2, norm="instance"), loss="ssim")
    for hparams in (module.hparams, module.hparams_initial):
        assert hparams["net"]["class_path"] == "mrirecon.models.unet.Unet"
        assert hparams["net"]["init_args"]["chans"] == 4
        assert hparams["net"]["init_args"]["num_pool_layers"] == 2
        assert hparams["net"]["init_args"]["norm"] == "instance"
        assert hparams["loss"] == "ssim"


def test_describe_network_round_trips():
    net = Unet(chans=8, num_pool_layers=3, drop_prob=0.1, norm="group", norm_groups=4)
    desc = describe_network(net)
    rebuilt = Unet(**desc["init_args"])
    assert describe_network(rebuilt) == desc
    assert rebuilt.state_dict().keys() == net.state_dict().keys()


def test_fallback_optimizer_is_adam():
    module = ReconModule(net=Unet(chans=4, num_pool_layers=2))
    opt = module.configure_optimizers()
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_test_step_without_targets_is_a_user_error():
    module = ReconModule(net=Unet(chans=4, num_pool_layers=2))
    with pytest.raises(UserError, match=r"vol1\.h5: no target"):
        module.test_step(_batch([True, False]), 0)


def test_evaluation_scores_model_and_zero_filled_per_volume():
    torch.manual_seed(0)
    module = ReconModule(net=Unet(chans=4, num_pool_layers=2)).eval()
    module._reset_metrics()
    with torch.no_grad():
        module._evaluate_batch(_batch([True, True]))
    for name in (MODEL_KEY, ZERO_FILLED_KEY):
        volumes = module._metrics[name].compute()
        assert set(volumes) == {("vol0.h5", 4.0), ("vol1.h5", 4.0)}
        assert all(-1 <= v["ssim"] <= 1 and v["nmse"] > 0 for v in volumes.values())


def test_padding_slices_are_not_scored():
    module = ReconModule(net=Unet(chans=4, num_pool_layers=2)).eval()
    module._reset_metrics()
    with torch.no_grad():
        loss, recon = module._evaluate_batch(_batch([True, True, True], padding=[False, True, False]))
    assert recon.shape[0] == 3 and loss is not None
    assert set(module._metrics[MODEL_KEY].compute()) == {("vol0.h5", 4.0), ("vol2.h5", 4.0)}
    with torch.no_grad():
        loss, _ = module._evaluate_batch(_batch([True], padding=[True]))
    assert loss is None


def test_image_network_sees_fastmri_normalised_input_and_l1_loss_in_those_units():
    from mrirecon.data.batch import network_input, normalized_target

    batch = _batch([True, True])
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(x)
            return x * 0.5

    module = ReconModule(net=Probe())
    recon = module(batch)
    assert torch.equal(seen[0], network_input(batch))
    expected = torch.nn.functional.l1_loss(network_input(batch) * 0.5, normalized_target(batch))
    torch.testing.assert_close(module._loss(recon, batch), expected, rtol=1e-5, atol=1e-6)
