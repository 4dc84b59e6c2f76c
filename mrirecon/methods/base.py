"""The one interface of reconstruction methods, and adapters that give networks that interface.

A *method* is an ``nn.Module`` whose ``forward`` takes a prepared
:class:`~mrirecon.data.batch.KSpaceBatch` and returns the reconstructed magnitude images,
``(B, h, w)`` in image units at the batch's reconstruction size. Zero-filled, CS-TV and the
trained networks all answer to it, so training, evaluation, ``mrirecon baseline`` and
``mrirecon report`` treat them alike. ``needs_kspace`` tells the data pipeline whether the
method reads the k-space (the largest part of a batch) or only the zero-filled image.

Networks keep their own conventions (fastMRI's U-Net maps a normalised image to a normalised
image; fastMRI's VarNet maps masked k-space to a full-size RSS image) so that their state dicts
stay interchangeable with fastMRI's; :func:`as_method` wraps them. The wrappers are plain
objects, not modules, so a network's parameters keep their names (``net.*``) in checkpoints.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from mrirecon.core.operator import center_crop
from mrirecon.core.transforms import unnormalize
from mrirecon.data.batch import KSpaceBatch, network_input
from mrirecon.errors import UserError


class ReconMethod(Protocol):
    """A prepared k-space batch in, ``(B, h, w)`` images in image units out."""

    needs_kspace: bool

    def __call__(self, batch: KSpaceBatch) -> torch.Tensor: ...


class ImageNetworkMethod:
    """An image-to-image network (fastMRI's U-Net convention) as a method.

    The input is the zero-filled image standardised by its own mean and std and clamped to ±6;
    the output is mapped back to image units with the same statistics.

    Args:
        net: the network.
        channels_last: hand the input over in channels-last layout.
    """

    needs_kspace = False

    def __init__(self, net: nn.Module, channels_last: bool = False) -> None:
        self.net = net
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, batch: KSpaceBatch) -> torch.Tensor:
        image = network_input(batch).contiguous(memory_format=self.memory_format)
        smallest = getattr(self.net, "min_input_size", 1)
        if min(image.shape[-2:]) < smallest:
            # Pooling would reach zero pixels and fail deep inside torch; say what to change.
            raise UserError(
                f"model.net.init_args.num_pool_layers: {self.net.num_pool_layers} pools need images of at least "
                f"{smallest}x{smallest} pixels, got {image.shape[-2]}x{image.shape[-1]} ({batch.fname[0]}): use fewer "
                "pools or a larger reconstruction size")
        output = self.net(image).squeeze(1)
        return unnormalize(output, batch.mean, batch.std)


class KSpaceNetworkMethod:
    """A k-space network (fastMRI's VarNet convention) as a method.

    The network receives the masked k-space as a real view ``(B, C, H, W, 2)``, the mask as
    ``(B, 1, 1, W, 1)`` and the auto-calibration width, and returns ``(B, H, W)`` images on the
    full k-space grid, which are cropped here.
    """

    needs_kspace = True

    def __init__(self, net: nn.Module) -> None:
        self.net = net

    def __call__(self, batch: KSpaceBatch) -> torch.Tensor:
        kspace = torch.view_as_real(batch.kspace)
        mask = batch.mask[:, None, None, :, None]
        image = self.net(kspace, mask, batch.num_low_frequencies)
        return center_crop(image, batch.crop_size)


def as_method(net: nn.Module, channels_last: bool = False) -> ReconMethod:
    """The method behind a network or method module.

    Modules that take batches (``ZeroFilled``, ``CSTV``) are methods already; a module with
    ``input_domain = "kspace"`` (``VarNet``) is wrapped as a k-space network; any other module
    as an image network (``channels_last``: its input in channels-last layout).
    """
    if hasattr(net, "needs_kspace"):
        return net  # type: ignore[return-value]
    if getattr(net, "input_domain", "image") == "kspace":
        return KSpaceNetworkMethod(net)
    return ImageNetworkMethod(net, channels_last)
