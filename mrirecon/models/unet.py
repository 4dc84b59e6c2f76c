"""fastMRI's 2-D U-Net with a configurable normalisation layer.

The topology and submodule names follow ``fastmri.models.Unet`` exactly, so with
``norm="instance"`` a state dict loads into either implementation and the outputs agree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mrirecon.models.checks import check_positive, check_probability
from mrirecon.models.norms import NormKind, make_norm

__all__ = ["ConvBlock", "TransposeConvBlock", "Unet"]


class ConvBlock(nn.Module):
    """Two 3x3 convolutions, each followed by normalisation, LeakyReLU(0.2) and Dropout2d.

    The convolutions have no bias because the normalisation that follows removes it; with
    ``norm="none"`` the block is therefore bias-free as well.
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        drop_prob: float,
        norm: NormKind = "instance",
        norm_groups: int = 32,
    ) -> None:
        """Builds the block.

        Args:
            in_chans: Number of input channels.
            out_chans: Number of output channels.
            drop_prob: Dropout2d probability.
            norm: Normalisation layer, see :func:`mrirecon.models.norms.make_norm`.
            norm_groups: Maximum number of groups for ``norm="group"``.
        """
        super().__init__()
        self.in_chans = in_chans
        self.out_chans = out_chans
        self.drop_prob = drop_prob
        self.layers = nn.Sequential(
            nn.Conv2d(in_chans, out_chans, kernel_size=3, padding=1, bias=False),
            make_norm(norm, out_chans, norm_groups),
            nn.LeakyReLU(negative_slope=0.2, inplace=True),
            nn.Dropout2d(drop_prob),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            make_norm(norm, out_chans, norm_groups),
            nn.LeakyReLU(negative_slope=0.2, inplace=True),
            nn.Dropout2d(drop_prob),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Maps ``(N, in_chans, H, W)`` to ``(N, out_chans, H, W)``."""
        return self.layers(image)


class TransposeConvBlock(nn.Module):
    """A stride-2 2x2 transposed convolution, normalisation and LeakyReLU(0.2)."""

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        norm: NormKind = "instance",
        norm_groups: int = 32,
    ) -> None:
        """Builds the block.

        Args:
            in_chans: Number of input channels.
            out_chans: Number of output channels.
            norm: Normalisation layer, see :func:`mrirecon.models.norms.make_norm`.
            norm_groups: Maximum number of groups for ``norm="group"``.
        """
        super().__init__()
        self.in_chans = in_chans
        self.out_chans = out_chans
        self.layers = nn.Sequential(
            nn.ConvTranspose2d(in_chans, out_chans, kernel_size=2, stride=2, bias=False),
            make_norm(norm, out_chans, norm_groups),
            nn.LeakyReLU(negative_slope=0.2, inplace=True),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Maps ``(N, in_chans, H, W)`` to ``(N, out_chans, 2H, 2W)``."""
        return self.layers(image)


class Unet(nn.Module):
    """2-D U-Net (Ronneberger et al., 2015) as in fastMRI, with a choice of normalisation.

    Each level halves the resolution with 2x2 average pooling and doubles the channels;
    the decoder upsamples with transposed convolutions and concatenates the skip
    connection. Odd sizes are handled as fastMRI does, by reflect-padding the upsampled map
    by one pixel on the right/bottom, so any input of at least ``2**num_pool_layers``
    pixels per side works. At ``chans=32``, 4 pools and ``norm="instance"`` it has
    7,756,097 parameters, like fastMRI's baseline.
    """

    def __init__(
        self,
        in_chans: int = 1,
        out_chans: int = 1,
        chans: int = 32,
        num_pool_layers: int = 4,
        drop_prob: float = 0.0,
        norm: NormKind = "group",
        norm_groups: int = 32,
        residual: bool = False,
    ) -> None:
        """Builds the network.

        Args:
            in_chans: Number of input channels.
            out_chans: Number of output channels.
            chans: Number of channels after the first convolution; doubled at every level.
            num_pool_layers: Number of down-sampling (and up-sampling) levels.
            drop_prob: Dropout2d probability after every convolution of the conv blocks.
            norm: Normalisation after each convolution: ``group``, ``instance`` (fastMRI's
                choice, no affine parameters), ``batch``, ``layer`` (GroupNorm with one
                group) or ``none``.
            norm_groups: Maximum number of groups for ``norm="group"``; each layer uses the
                largest divisor of its channel count that does not exceed it.
            residual: add the input to the output, so that the layers learn the correction of
                the input (for a zero-filled input: its aliasing) and the measured detail,
                noise included, passes through as it is. fastMRI's U-Net is not residual
                (False, the default); docs/generalisation.md shows what it changes.
        """
        super().__init__()
        check_positive(in_chans=in_chans, out_chans=out_chans, chans=chans, num_pool_layers=num_pool_layers, norm_groups=norm_groups)
        check_probability(drop_prob=drop_prob)
        self.in_chans = in_chans
        self.out_chans = out_chans
        self.chans = chans
        self.num_pool_layers = num_pool_layers
        self.drop_prob = drop_prob
        self.norm = norm
        self.norm_groups = norm_groups
        if residual and in_chans != out_chans:
            raise ValueError(f"residual: needs as many input as output channels, got {in_chans} and {out_chans}")
        self.residual = residual

        def conv_block(cin: int, cout: int) -> ConvBlock:
            return ConvBlock(cin, cout, drop_prob, norm, norm_groups)

        def up_block(cin: int, cout: int) -> TransposeConvBlock:
            return TransposeConvBlock(cin, cout, norm, norm_groups)

        self.down_sample_layers = nn.ModuleList([conv_block(in_chans, chans)])
        ch = chans
        for _ in range(num_pool_layers - 1):
            self.down_sample_layers.append(conv_block(ch, ch * 2))
            ch *= 2
        self.conv = conv_block(ch, ch * 2)

        self.up_conv = nn.ModuleList()
        self.up_transpose_conv = nn.ModuleList()
        for _ in range(num_pool_layers - 1):
            self.up_transpose_conv.append(up_block(ch * 2, ch))
            self.up_conv.append(conv_block(ch * 2, ch))
            ch //= 2
        self.up_transpose_conv.append(up_block(ch * 2, ch))
        self.up_conv.append(
            nn.Sequential(
                conv_block(ch * 2, ch),
                nn.Conv2d(ch, out_chans, kernel_size=1, stride=1),
            )
        )

    def size_problem(self, height: int, width: int) -> str | None:
        """Why an ``height`` x ``width`` image cannot pass through this U-Net, or None if it can.

        Each pool halves the image, rounding down; the deepest block's normalisation (group,
        instance, or batch with a batch of one) needs at least two pixels to take a statistic.
        """
        scale = 2 ** self.num_pool_layers
        deepest = (height // scale) * (width // scale)
        if deepest >= 2:
            return None
        return (f"{self.num_pool_layers} pools need images of at least {2 * scale}x{scale} or {scale}x{2 * scale} "
                f"pixels, got {height}x{width}")

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Maps ``(N, in_chans, H, W)`` to ``(N, out_chans, H, W)``."""
        stack = []
        output = image
        for layer in self.down_sample_layers:
            output = layer(output)
            stack.append(output)
            output = F.avg_pool2d(output, kernel_size=2, stride=2, padding=0)

        output = self.conv(output)

        for transpose_conv, conv in zip(self.up_transpose_conv, self.up_conv):
            skip = stack.pop()
            output = transpose_conv(output)
            # Pooling floored odd sizes, so the upsampled map can be one pixel short.
            if torch.compiler.is_exporting():
                # The same padding as a function of the shapes, without a branch on them, so
                # that one exported graph (ONNX) serves every image size, odd ones included.
                output = F.pad(output, [0, skip.shape[-1] - output.shape[-1], 0, skip.shape[-2] - output.shape[-2]], "reflect")
            else:
                pad_right = int(output.shape[-1] != skip.shape[-1])
                pad_bottom = int(output.shape[-2] != skip.shape[-2])
                if pad_right or pad_bottom:
                    output = F.pad(output, [0, pad_right, 0, pad_bottom], "reflect")
            output = torch.cat([output, skip], dim=1)
            output = conv(output)
        return output + image if self.residual else output
