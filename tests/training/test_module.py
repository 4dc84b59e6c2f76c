"""ReconModule without a Trainer: hyperparameters, the fallback optimiser, test-time checks."""

import pytest
import torch

from mrirecon.data.dataset import recon_batch_from_images
from mrirecon.errors import UserError
from mrirecon.models import Unet
from mrirecon.training.module import ReconModule, describe_network


def _batch(has_target, size=16):
    b = len(has_target)
    zero_filled = torch.rand(b, size, size) + 0.1
    target = torch.where(torch.tensor(has_target)[:, None, None], torch.rand(b, size, size), torch.zeros(()))
    return recon_batch_from_images(
        zero_filled,
        target,
        torch.tensor(has_target),
        max_value=torch.ones(b),
        fname=[f"vol{i}.h5" for i in range(b)],
        slice_num=torch.arange(b),
        acceleration=torch.full((b,), 4.0),
        mask=torch.ones(b, size, dtype=torch.bool),
    )


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
    for name in ("unet", "zero-filled"):
        volumes = module._metrics[name].compute()
        assert set(volumes) == {("vol0.h5", 4.0), ("vol1.h5", 4.0)}
        assert all(-1 <= v["ssim"] <= 1 and v["nmse"] > 0 for v in volumes.values())
