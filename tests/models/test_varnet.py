"""The E2E-VarNet equals fastMRI's, keeps its FFTs in complex64 under autocast, and trains."""

import fastmri
import fastmri.fftc
import pytest
import torch
from fastmri.data.subsample import create_mask_for_mask_type
from fastmri.models import VarNet as FastmriVarNet

from mrirecon.models import VarNet

SETTINGS = dict(num_cascades=2, sens_chans=4, sens_pools=2, chans=6, pools=2)


def _full(batch=1, coils=4, height=40, width=36, seed=0):
    return torch.randn(batch, coils, height, width, 2, generator=torch.Generator().manual_seed(seed))


def _inputs(batch=1, coils=4, height=40, width=36, seed=0):
    kspace = _full(batch, coils, height, width, seed)
    mask, num_low = create_mask_for_mask_type("random", [0.16], [4])((1, 1, width, 1), seed=seed)
    mask = mask.bool().expand(batch, 1, 1, width, 1)
    return kspace * mask, mask, num_low


@pytest.mark.parametrize("given_num_low", [True, False])
def test_state_dict_and_outputs_equal_fastmri_varnet(given_num_low):
    torch.manual_seed(0)
    theirs = FastmriVarNet(**SETTINGS).eval()
    ours = VarNet(**SETTINGS, norm="instance").eval()
    assert set(ours.state_dict()) == set(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    kspace, mask, num_low = _inputs()
    with torch.no_grad():
        expected = theirs(kspace, mask, num_low if given_num_low else None)
        got = ours(kspace, mask, torch.tensor([num_low]) if given_num_low else None)
    assert got.shape == expected.shape == (1, 40, 36)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
    theirs.load_state_dict(ours.state_dict())  # and the other way


def test_per_sample_centre_widths():
    torch.manual_seed(0)
    net = VarNet(**SETTINGS, norm="instance").eval()
    a, mask_a, low_a = _inputs(seed=1)
    b, mask_b, low_b = _inputs(seed=2)
    with torch.no_grad():
        batched = net(torch.cat([a, b]), torch.cat([mask_a, mask_b]), torch.tensor([low_a, low_b]))
        single = torch.cat([net(a, mask_a, torch.tensor([low_a])), net(b, mask_b, torch.tensor([low_b]))])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_ffts_stay_complex64_under_autocast(monkeypatch, dtype):
    seen = []
    for name in ("fftn", "ifftn", "fft2", "ifft2"):  # fastMRI's and mrirecon.core.operator's
        original = getattr(torch.fft, name)

        def recording(x, *args, _original=original, **kwargs):
            seen.append(x.dtype)
            return _original(x, *args, **kwargs)

        monkeypatch.setattr(fastmri.fftc.torch.fft, name, recording)
    torch.manual_seed(0)
    net = VarNet(**SETTINGS)
    kspace, mask, num_low = _inputs(batch=2)
    reference = net(kspace, mask, torch.tensor([num_low] * 2))
    seen.clear()
    with torch.autocast("cpu", dtype=dtype):
        mixed = net(kspace, mask, torch.tensor([num_low] * 2))
        mixed.mean().backward()
    assert seen and set(seen) == {torch.complex64}, set(seen)
    assert mixed.dtype == torch.float32
    assert (mixed - reference).abs().max() < 0.05 * reference.abs().max()


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="num_cascades"):
        VarNet(num_cascades=0)
    with pytest.raises(ValueError, match="drop_prob"):
        VarNet(drop_prob=1.0)


def test_group_norm_varnet_learns_a_batch():
    torch.manual_seed(0)
    net = VarNet(**SETTINGS, norm="group")
    kspace, mask, num_low = _inputs(batch=2, seed=3)
    target = fastmri.rss(fastmri.complex_abs(fastmri.ifft2c(_full(batch=2, seed=3))), dim=1)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        loss = (net(kspace, mask, torch.tensor([num_low] * 2)) - target).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[-1] < 0.9 * losses[0]
