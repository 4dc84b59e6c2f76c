"""U-Net topology parity with fastMRI and behaviour of each normalisation choice."""

import pytest
import torch
from fastmri.models import Unet as FastmriUnet
from torch import nn

from mrirecon.models import NORM_CHOICES, Unet, make_norm


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    # Tiny tensors gain nothing from intra-op threads, and on a busy 2-core machine the
    # threads waiting for each other made the training test tens of times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def test_norm_choices():
    assert NORM_CHOICES == ("group", "instance", "batch", "layer", "none")


def test_instance_norm_unet_is_interchangeable_with_fastmri():
    ref = FastmriUnet(in_chans=1, out_chans=1, chans=32, num_pool_layers=4).eval()
    ours = Unet(chans=32, num_pool_layers=4, norm="instance").eval()
    assert sum(p.numel() for p in ours.parameters()) == 7_756_097
    assert ours.state_dict().keys() == ref.state_dict().keys()
    ours.load_state_dict(ref.state_dict(), strict=True)
    with torch.no_grad():
        for shape in [(2, 1, 64, 64), (1, 1, 37, 45)]:
            x = torch.randn(shape)
            assert torch.equal(ours(x), ref(x))

    # and back: our weights load into fastMRI's model
    ours = Unet(in_chans=2, out_chans=3, chans=8, num_pool_layers=3, norm="instance")
    ref = FastmriUnet(in_chans=2, out_chans=3, chans=8, num_pool_layers=3)
    ref.load_state_dict(ours.state_dict(), strict=True)
    with torch.no_grad():
        x = torch.randn(2, 2, 24, 40)
        assert torch.equal(ours(x), ref(x))


@pytest.mark.parametrize("norm", ["group", "instance"])
def test_size_problem_names_exactly_the_sizes_the_unet_cannot_take(norm):
    net = Unet(chans=4, num_pool_layers=2, norm=norm).train()
    for height in range(1, 13):
        for width in range(1, 13):
            problem = net.size_problem(height, width)
            try:
                net(torch.randn(1, 1, height, width))
                ran = True
            except (ValueError, RuntimeError):
                ran = False
            assert ran == (problem is None), (height, width, problem)
    assert net.size_problem(4, 4) == "2 pools need images of at least 8x4 or 4x8 pixels, got 4x4"


@pytest.mark.parametrize("norm", NORM_CHOICES)
def test_every_norm_forwards_odd_sizes(norm):
    net = Unet(chans=8, num_pool_layers=4, norm=norm)
    for mode in (net.train, net.eval):
        mode()
        with torch.no_grad():
            for shape in [(1, 1, 37, 45), (2, 1, 33, 16)]:
                out = net(torch.randn(shape))
                assert out.shape == shape
                assert torch.isfinite(out).all()
    two_channel = Unet(in_chans=2, out_chans=2, chans=8, num_pool_layers=2, norm=norm)
    assert two_channel(torch.randn(2, 2, 21, 19)).shape == (2, 2, 21, 19)


@pytest.mark.parametrize("norm", NORM_CHOICES)
def test_every_norm_trains(norm):
    x = torch.randn(4, 1, 16, 16)
    # A local, nonlinear target the network can fit: blurred absolute value of the input.
    y = nn.functional.avg_pool2d(x.abs(), 3, stride=1, padding=1)
    net = Unet(chans=8, num_pool_layers=2, norm=norm)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = nn.functional.l1_loss(net(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize(
    ("channels", "groups", "expected"),
    [(32, 32, 32), (48, 32, 24), (8, 32, 8), (64, 32, 32), (512, 32, 32), (12, 5, 4), (7, 32, 7)],
)
def test_group_count_is_largest_divisor_up_to_groups(channels, groups, expected):
    norm = make_norm("group", channels, groups)
    assert isinstance(norm, nn.GroupNorm)
    assert norm.num_groups == expected
    assert norm.affine


def test_unet_group_counts_per_level():
    net = Unet(chans=48, num_pool_layers=2, norm="group", norm_groups=32)
    counts = {m.num_channels: m.num_groups for m in net.modules() if isinstance(m, nn.GroupNorm)}
    assert counts == {48: 24, 96: 32, 192: 32}


def test_make_norm_kinds():
    instance = make_norm("instance", 4)
    assert isinstance(instance, nn.InstanceNorm2d)
    assert not instance.affine and not instance.track_running_stats
    assert isinstance(make_norm("batch", 4), nn.BatchNorm2d)
    layer = make_norm("layer", 6)
    assert isinstance(layer, nn.GroupNorm) and layer.num_groups == 1
    assert isinstance(make_norm("none", 4), nn.Identity)


def test_layer_norm_normalises_each_sample_over_channels_and_space():
    x = torch.randn(3, 6, 5, 7) * 4 + 2
    out = make_norm("layer", 6)(x)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    var = x.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
    torch.testing.assert_close(out, (x - mean) / torch.sqrt(var + 1e-5))


def test_make_norm_rejects_bad_arguments():
    with pytest.raises(ValueError, match="group, instance, batch, layer, none"):
        make_norm("weight", 8)
    with pytest.raises(ValueError, match="positive"):
        make_norm("group", 8, groups=0)
    with pytest.raises(ValueError):
        Unet(norm="bogus")


def test_batch_norm_eval_uses_running_statistics():
    norm = make_norm("batch", 3)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        norm.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    for _ in range(5):
        norm(torch.randn(4, 3, 8, 8) * 3 + 1)  # train mode: updates the running statistics
    x = torch.randn(2, 3, 8, 8)
    norm.eval()
    eval_out = norm(x)
    shape = (1, 3, 1, 1)
    manual = (x - norm.running_mean.view(shape)) / torch.sqrt(
        norm.running_var.view(shape) + norm.eps
    ) * norm.weight.view(shape) + norm.bias.view(shape)
    torch.testing.assert_close(eval_out, manual)
    norm.train()
    assert not torch.allclose(norm(x), eval_out, atol=1e-3)

    net = Unet(chans=8, num_pool_layers=2, norm="batch")
    net(torch.randn(4, 1, 16, 16))
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        train_out = net(x)
        net.eval()
        assert not torch.allclose(net(x), train_out, atol=1e-3)


@pytest.mark.parametrize("norm", NORM_CHOICES)
def test_per_sample_norms_ignore_the_rest_of_the_batch(norm):
    net = Unet(chans=8, num_pool_layers=2, norm=norm).train()
    a, b, c = torch.randn(3, 1, 1, 20, 24).unbind(0)
    with torch.no_grad():
        with_b = net(torch.cat([a, b]))[:1]
        with_c = net(torch.cat([a, c * 5 + 3]))[:1]
    if norm == "batch":
        assert not torch.allclose(with_b, with_c, atol=1e-3)
    else:
        torch.testing.assert_close(with_b, with_c, rtol=1e-5, atol=1e-6)


def test_jsonargparse_validates_norm():
    jsonargparse = pytest.importorskip("jsonargparse")
    parser = jsonargparse.ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(Unet, "model")
    config = parser.parse_args(["--model.norm=batch", "--model.norm_groups=16"])
    model = parser.instantiate(config).model
    assert model.norm == "batch" and model.norm_groups == 16
    with pytest.raises(jsonargparse.ArgumentError):
        parser.parse_args(["--model.norm=weight"])


def test_residual_unet_adds_its_input():
    torch.manual_seed(0)
    plain = Unet(chans=4, num_pool_layers=2)
    residual = Unet(chans=4, num_pool_layers=2, residual=True)
    residual.load_state_dict(plain.state_dict())  # the same weights: only the sum differs
    image = torch.randn(2, 1, 24, 20)
    torch.testing.assert_close(residual(image), plain(image) + image)
    with pytest.raises(ValueError, match="residual"):
        Unet(in_chans=2, out_chans=1, residual=True)
