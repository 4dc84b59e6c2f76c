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

from mrirecon.core.operator import SamplingMask, center_crop, readout_cropped_kspace
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
        size_problem = getattr(self.net, "size_problem", None)
        problem = size_problem(*image.shape[-2:]) if size_problem else None
        if problem:
            # Pooling would reach too few pixels and fail deep inside torch; say what to change.
            raise UserError(f"model.net.init_args.num_pool_layers: {problem} ({batch.fname[0]}): use fewer pools or "
                            "a larger reconstruction size")
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
        mask = batch.sampling_mask().values[..., None]  # (B, 1, 1, W, 1) columns, (B, 1, H, W, 1) 2-D
        image = self.net(kspace, mask, batch.num_low_frequencies)
        return center_crop(image, batch.crop_size)


class DataConsistentNetworkMethod:
    """A network that takes the measurement and its sampling mask (``input_domain =
    "measurements"``: :class:`~mrirecon.models.DataConsistentUnet`) as a method.

    The network receives complex k-space ``(B, 1, h, W)`` of the image cropped to the
    reconstruction's ``h`` rows along the fully sampled readout
    (:func:`~mrirecon.core.operator.readout_cropped_kspace`: data consistency stays exact and
    costs ``h / H`` of the full grid's) and the :class:`~mrirecon.core.operator.SamplingMask`
    with its calibration band; its ``(B, h, W)`` magnitude images are cropped to ``(h, w)`` here.
    """

    needs_kspace = True

    def __init__(self, net: nn.Module) -> None:
        self.net = net

    def __call__(self, batch: KSpaceBatch) -> torch.Tensor:
        kspace, mask = self.measurement(batch)
        return center_crop(self.net(kspace, mask), batch.crop_size)

    def measurement(self, batch: KSpaceBatch) -> tuple[torch.Tensor, SamplingMask]:
        """The measured k-space ``(B, 1, h, W)`` on the network's grid and its mask: what the
        network reconstructs from, and what a self-supervised loss splits."""
        if batch.kspace.shape[1] != 1:
            raise UserError(
                f"model.net: {type(self.net).__name__} reconstructs single-coil data, {batch.fname[0]} has "
                f"{batch.kspace.shape[1]} coils: use mrirecon.models.VarNet, which estimates coil sensitivities")
        if not batch.is_columns:
            # A 2-D mask samples the readout too: no smaller grid keeps data consistency exact.
            return batch.kspace, batch.sampling_mask()
        kspace = readout_cropped_kspace(batch.kspace, batch.crop_size[0])
        return kspace, batch.sampling_mask()


def as_method(net: nn.Module, channels_last: bool = False) -> ReconMethod:
    """The method behind a network or method module.

    Modules that take batches (``ZeroFilled``, ``CSTV``) are methods already; a module with
    ``input_domain = "kspace"`` (``VarNet``) is wrapped as a k-space network, one with
    ``input_domain = "measurements"`` (``DataConsistentUnet``) as a data-consistent one; any other module
    as an image network (``channels_last``: its input in channels-last layout).
    """
    if hasattr(net, "needs_kspace"):
        return net  # type: ignore[return-value]
    domain = getattr(net, "input_domain", "image")
    if domain == "kspace":
        return KSpaceNetworkMethod(net)
    if domain == "measurements":
        return DataConsistentNetworkMethod(net)
    return ImageNetworkMethod(net, channels_last)
