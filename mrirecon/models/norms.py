"""Normalisation layers selectable by name, for networks configured from YAML/CLI."""

from __future__ import annotations

from typing import Literal, get_args

from torch import nn

__all__ = ["NORM_CHOICES", "NormKind", "make_norm"]

# A Literal rather than str so that LightningCLI (jsonargparse) rejects unknown names
# when it parses a config, before any model is built.
NormKind = Literal["group", "instance", "batch", "layer", "none"]
NORM_CHOICES: tuple[str, ...] = get_args(NormKind)


def _num_groups(num_channels: int, groups: int) -> int:
    """The largest divisor of ``num_channels`` that is at most ``groups``."""
    return next(g for g in range(min(groups, num_channels), 0, -1) if num_channels % g == 0)


def make_norm(kind: NormKind, num_channels: int, groups: int = 32) -> nn.Module:
    """Builds a normalisation layer for ``(N, C, H, W)`` feature maps.

    Args:
        kind: Which normalisation:

            * ``"group"``: ``nn.GroupNorm`` with affine parameters. The number of groups is
              the largest divisor of ``num_channels`` that is at most ``groups``; 32 groups
              is Wu & He's (2018) default, which at 32 channels means one channel per group.
            * ``"instance"``: ``nn.InstanceNorm2d`` without affine parameters or running
              statistics, as in fastMRI's U-Net.
            * ``"batch"``: ``nn.BatchNorm2d``; uses running statistics in ``eval()`` mode.
            * ``"layer"``: ``nn.GroupNorm(1, C)``, normalising each sample over (C, H, W)
              together, which is what "layer norm" means for ConvNets, with per-channel
              affine parameters.
            * ``"none"``: ``nn.Identity``.
        num_channels: Number of channels C.
        groups: Upper bound on the number of groups for ``"group"``; ignored otherwise.

    Returns:
        The normalisation module.

    Raises:
        ValueError: For an unknown ``kind`` or non-positive ``num_channels``/``groups``.
    """
    if num_channels < 1 or groups < 1:
        raise ValueError(f"num_channels and groups must be positive, got {num_channels}, {groups}")
    if kind == "group":
        return nn.GroupNorm(_num_groups(num_channels, groups), num_channels, affine=True)
    if kind == "instance":
        return nn.InstanceNorm2d(num_channels)
    if kind == "batch":
        return nn.BatchNorm2d(num_channels)
    if kind == "layer":
        return nn.GroupNorm(1, num_channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose one of {', '.join(NORM_CHOICES)}")
