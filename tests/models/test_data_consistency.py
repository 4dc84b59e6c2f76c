"""Data consistency inside the networks: the U-Net with data consistency keeps what was measured
(hard) or moves toward it (soft), on the readout-cropped grid as on the full one; the VarNet
without a sensitivity network is the multi-coil one given one coil of unit sensitivity; and
activation checkpointing changes memory, not gradients."""

import pytest
import torch

from mrirecon.core.operator import (
    MRIOperator,
    SamplingMask,
    center_crop,
    fft2c,
    ifft2c,
    readout_cropped_kspace,
)
from mrirecon.models import DataConsistentUnet, VarNet
from mrirecon.models.varnet import unit_sensitivities

TINY = dict(chans=4, num_pool_layers=2)


def _problem(batch=2, height=32, width=24, seed=0):
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, height, width, dtype=torch.complex64, generator=generator)
    columns = torch.rand(batch, width, generator=generator) < 0.3
    columns[:, width // 2 - 2:width // 2 + 2] = True
    mask = SamplingMask.from_columns(columns)
    return mask.apply(fft2c(image)[:, None]), mask


def _perturbed(net: torch.nn.Module) -> torch.nn.Module:
    """A net whose regularisers change the image (a fresh U-Net's output is already non-zero,
    but random weights make the test independent of the initialisation)."""
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return net


def test_the_readout_cropped_kspace_is_the_cropped_image_s():
    kspace, _ = _problem(height=33, width=24)  # odd height: the crop's offset is fastMRI's
    for rows in (33, 16, 15):
        cropped = readout_cropped_kspace(kspace, rows)
        torch.testing.assert_close(ifft2c(cropped), center_crop(ifft2c(kspace), (rows, 24)), atol=1e-5, rtol=0)
    # Column-masked k-space stays column-masked on the smaller grid.
    unsampled = kspace.abs().sum(dim=(1, 2)) == 0
    assert (readout_cropped_kspace(kspace, 16).abs().sum(dim=(1, 2))[unsampled] == 0).all()


@pytest.mark.parametrize("cascades, demodulate", [(1, False), (3, False), (2, True)])
def test_hard_data_consistency_keeps_the_measured_kspace_exactly(cascades, demodulate):
    torch.manual_seed(0)
    net = _perturbed(DataConsistentUnet(**TINY, num_cascades=cascades, demodulate_phase=demodulate)).eval()
    measured, mask = _problem()
    captured = {}
    original = net._data_consistency

    def spy(index, image, measured_, operator):
        result = original(index, image, measured_, operator)
        captured[index] = (operator.kspace_of(image.unsqueeze(1)), operator.kspace_of(result.unsqueeze(1)))
        return result

    net._data_consistency = spy
    with torch.no_grad():
        magnitude = net(measured, mask)
    assert magnitude.shape == (2, 32, 24) and magnitude.dtype == torch.float32
    keep = mask.values.expand_as(measured)
    for before, after in captured.values():
        assert (before[keep] - measured[keep]).abs().max() > 1e-2  # the U-Net did change them
        torch.testing.assert_close(after[keep], measured[keep], atol=1e-5, rtol=0)
        torch.testing.assert_close(after[~keep], before[~keep], atol=1e-5, rtol=0)


def test_soft_data_consistency_moves_toward_the_measurement_by_its_learned_weight():
    torch.manual_seed(0)
    net = _perturbed(DataConsistentUnet(**TINY, data_consistency="soft")).eval()
    weights = net.dc_weights.detach()
    assert weights.shape == (1,) and 0 < float(weights[0]) < 1
    measured, mask = _problem()
    prediction = fft2c(torch.randn(2, 32, 24, dtype=torch.complex64))[:, None]
    operator = MRIOperator(mask)
    with torch.no_grad():
        image = net._data_consistency(0, ifft2c(prediction).squeeze(1), measured, operator)
    moved = operator.kspace_of(image.unsqueeze(1))
    keep = mask.values.expand_as(measured)
    weight = float(weights[0])
    before = (prediction - measured)[keep].abs()
    after = (moved - measured)[keep].abs()
    torch.testing.assert_close(after, (1 - weight) * before, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(moved[~keep], prediction[~keep], atol=1e-5, rtol=0)
    # The weight is learned: it receives a gradient.
    net.train()
    net(measured, mask).sum().backward()
    assert net.dc_logits.grad is not None and float(net.dc_logits.grad.abs()) > 0


def _smooth_phase_object(height=32, width=24):
    rows, cols = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    magnitude = ((rows / 0.8) ** 2 + (cols / 0.7) ** 2 < 1).float() * (1.2 + 0.3 * torch.cos(5 * rows))
    phase = 1.5 * rows - 1.0 * cols ** 2 + 0.7
    return torch.polar(magnitude, phase)[None]


def test_demodulation_removes_the_smooth_phase_the_calibration_band_measures():
    image = _smooth_phase_object()
    columns = torch.zeros(1, 24, dtype=torch.bool)
    columns[:, 8:16] = True  # the calibration band alone
    mask = SamplingMask.from_columns(columns)
    operator = MRIOperator(mask)
    measured = mask.apply(fft2c(image)[:, None])
    phase = DataConsistentUnet._calibration_phase(measured, operator)
    torch.testing.assert_close(phase.abs(), torch.ones_like(phase.abs()), atol=1e-5, rtol=0)
    demodulated = image * phase.conj()
    inside = image.abs() > 0
    # The object's own phase varies by 2.8 rad; what the demodulation leaves is small.
    assert float(image[inside].angle().std()) > 0.5
    assert float(demodulated[inside].angle().abs().mean()) < 0.15


def test_with_demodulation_a_global_phase_of_the_measurement_changes_nothing():
    """A scanner's constant phase offset is arbitrary; the demodulated network ignores it."""
    torch.manual_seed(0)
    measured, mask = _problem()
    rotated = measured * torch.polar(torch.tensor(1.0), torch.tensor(2.1))
    demodulated = _perturbed(DataConsistentUnet(**TINY, num_cascades=2, demodulate_phase=True)).eval()
    plain = DataConsistentUnet(**TINY, num_cascades=2).eval()
    plain.load_state_dict(demodulated.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(demodulated(rotated, mask), demodulated(measured, mask), atol=1e-4, rtol=1e-4)
        assert (plain(rotated, mask) - plain(measured, mask)).abs().max() > 1e-2


def test_the_network_takes_the_mask_it_is_given():
    """A subset of the measured samples (a self-supervised split) is just another mask."""
    torch.manual_seed(0)
    net = _perturbed(DataConsistentUnet(**TINY)).eval()
    measured, mask = _problem()
    subset = SamplingMask(mask.values & (torch.arange(24) % 2 == 0))
    with torch.no_grad():
        full, part = net(measured, mask), net(subset.apply(measured), subset)
    assert (full - part).abs().max() > 1e-3


def test_shared_weights_use_one_unet_and_multicoil_is_refused():
    net = DataConsistentUnet(**TINY, num_cascades=3, share_weights=True)
    assert net.regularisers[0] is net.regularisers[2]
    separate = DataConsistentUnet(**TINY, num_cascades=3)
    assert sum(p.numel() for p in separate.parameters()) == 3 * sum(p.numel() for p in net.parameters())
    measured, mask = _problem()
    with pytest.raises(ValueError, match="single-coil"):
        net(measured.expand(-1, 2, -1, -1), mask)
    with pytest.raises(ValueError, match="data_consistency"):
        DataConsistentUnet(data_consistency="sometimes")


def test_the_single_coil_varnet_is_the_multicoil_one_with_one_coil_of_unit_sensitivity():
    torch.manual_seed(0)
    settings = dict(num_cascades=2, sens_chans=4, sens_pools=2, chans=6, pools=2)
    single = VarNet(**settings, estimate_sensitivities=False).eval()
    multi = VarNet(**settings).eval()
    assert single.sens_net is None and not any(k.startswith("sens_net") for k in single.state_dict())
    multi.load_state_dict(single.state_dict(), strict=False)  # the cascades' weights
    multi.sens_net.forward = lambda kspace, mask, num_low=None: unit_sensitivities(kspace)
    measured, mask = _problem(width=24)
    kspace = torch.view_as_real(measured)
    columns = mask.columns[:, None, None, :, None]
    with torch.no_grad():
        torch.testing.assert_close(single(kspace, columns), multi(kspace, columns), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="single-coil"):
        single(kspace.expand(-1, 3, -1, -1, -1).contiguous(), columns)


def _gradients(net, loss_of):
    net.zero_grad()
    loss_of(net).backward()
    return {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", ["cascade", "varnet"])
def test_activation_checkpointing_gives_the_same_gradients(kind):
    torch.manual_seed(0)
    measured, mask = _problem(batch=2, height=32, width=32)
    if kind == "cascade":
        plain = DataConsistentUnet(**TINY, num_cascades=3, data_consistency="soft")
        checkpointed = DataConsistentUnet(**TINY, num_cascades=3, data_consistency="soft", activation_checkpointing=True)

        def loss_of(net):
            return net(measured, mask).square().mean()
    else:
        plain = VarNet(num_cascades=3, sens_chans=4, sens_pools=2, chans=4, pools=2)
        checkpointed = VarNet(num_cascades=3, sens_chans=4, sens_pools=2, chans=4, pools=2, activation_checkpointing=True)
        kspace = torch.view_as_real(measured.expand(-1, 2, -1, -1).contiguous())

        def loss_of(net):
            return net(kspace, mask.columns[:, None, None, :, None]).square().mean()
    checkpointed.load_state_dict(plain.state_dict())
    expected, got = _gradients(plain, loss_of), _gradients(checkpointed, loss_of)
    assert set(expected) == set(got) and len(expected) > 10
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-6, rtol=1e-5, msg=name)
