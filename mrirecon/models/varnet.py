"""The end-to-end variational network (Sriram et al., 2020), as fastMRI defines it.

Cascades of soft data consistency in k-space plus a U-Net regulariser in the coil-combined
image, with coil sensitivities estimated from the auto-calibration (centre) lines by a small
U-Net. Module names and the maths follow ``fastmri.models.VarNet``, so with ``norm="instance"``
a state dict loads into either implementation and the outputs agree (a test checks 1e-5);
the inner U-Nets' normalisation is selectable as for :class:`mrirecon.models.Unet`.

Two differences, both kept out of the weights: the number of centre columns may differ per
sample (a ``(B,)`` tensor; fastMRI's takes one number for the batch), and every FFT, coil
product and normalisation runs in float32/complex64 even under bf16 or fp16 autocast (cuFFT
rejects half precision for the knee's 368 or 640 sizes); only the U-Nets run in low precision.

Shapes: k-space as a real view ``(B, C, H, W, 2)``, the mask ``(B, 1, 1, W, 1)`` (bool),
sensitivities ``(B, C, H, W, 2)``, the output a ``(B, H, W)`` root-sum-of-squares image on the
full k-space grid (crop it to the reconstruction size).
"""

from __future__ import annotations

import math

import fastmri
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from mrirecon.core.operator import centre_band, fft2c, full_precision, ifft2c, rss, varnet_centre_width
from mrirecon.models.checks import check_positive, check_probability
from mrirecon.models.norms import NormKind
from mrirecon.models.unet import Unet

__all__ = ["NormUnet", "SensitivityModel", "VarNet", "VarNetBlock", "unit_sensitivities"]


class NormUnet(nn.Module):
    """A U-Net on complex images, normalised per sample (real and imaginary parts separately)
    and zero-padded to a multiple of 16, as fastMRI's ``NormUnet``."""

    def __init__(
        self,
        chans: int,
        num_pools: int,
        in_chans: int = 2,
        out_chans: int = 2,
        drop_prob: float = 0.0,
        norm: NormKind = "instance",
        norm_groups: int = 32,
    ) -> None:
        super().__init__()
        self.unet = Unet(in_chans=in_chans, out_chans=out_chans, chans=chans, num_pool_layers=num_pools,
                         drop_prob=drop_prob, norm=norm, norm_groups=norm_groups)

    @staticmethod
    def _complex_to_channels(x: torch.Tensor) -> torch.Tensor:
        b, c, h, w, two = x.shape
        return x.permute(0, 4, 1, 2, 3).reshape(b, 2 * c, h, w)

    @staticmethod
    def _channels_to_complex(x: torch.Tensor) -> torch.Tensor:
        b, c2, h, w = x.shape
        return x.view(b, 2, c2 // 2, h, w).permute(0, 2, 3, 4, 1).contiguous()

    @staticmethod
    @full_precision
    def _normalise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, c, h, w = x.shape
        grouped = x.reshape(b, 2, c // 2 * h * w)
        mean = grouped.mean(dim=2).view(b, 2, 1, 1)
        std = grouped.std(dim=2).view(b, 2, 1, 1)
        shape = (b, 2, c // 2, h, w)
        normalised = (x.view(shape) - mean.unsqueeze(2)) / std.unsqueeze(2)
        return normalised.view(b, c, h, w), mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != 2:
            raise ValueError("the last dimension must be 2 (real, imaginary)")
        x = self._complex_to_channels(x)
        b, c, h, w = x.shape
        x, mean, std = self._normalise(x)
        h_mult, w_mult = ((h - 1) | 15) + 1, ((w - 1) | 15) + 1
        w_pad = [math.floor((w_mult - w) / 2), math.ceil((w_mult - w) / 2)]
        h_pad = [math.floor((h_mult - h) / 2), math.ceil((h_mult - h) / 2)]
        x = self.unet(F.pad(x, w_pad + h_pad))
        x = x[..., h_pad[0]:h_mult - h_pad[1], w_pad[0]:w_mult - w_pad[1]]
        # Back to full precision and units (the U-Net may have run in bfloat16).
        x = (x.float().view(b, 2, c // 2, h, w) * std.unsqueeze(2) + mean.unsqueeze(2)).view(b, c, h, w)
        return self._channels_to_complex(x)


# The network keeps fastMRI's real-view layout (..., 2) so its weights and U-Net inputs match
# fastMRI's; the transforms themselves are the operator's, on complex views of the same memory.
def _as_complex(x: torch.Tensor) -> torch.Tensor:
    return torch.view_as_complex(x.contiguous())


@full_precision
def _centre_only(kspace: torch.Tensor, num_low_frequencies: torch.Tensor) -> torch.Tensor:
    """Keeps each sample's centre band of columns (fastMRI's ``batched_mask_center``)."""
    keep = centre_band(kspace.shape[-2], num_low_frequencies)
    return kspace * keep[:, None, None, :, None]


@full_precision
def _ifft2c(x: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(ifft2c(_as_complex(x)))


@full_precision
def _divide_rss(x: torch.Tensor) -> torch.Tensor:
    return x / fastmri.rss_complex(x, dim=1).unsqueeze(-1).unsqueeze(1)


@full_precision
def _sens_expand(x: torch.Tensor, sens_maps: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(fft2c(_as_complex(fastmri.complex_mul(x, sens_maps))))


@full_precision
def _sens_reduce(x: torch.Tensor, sens_maps: torch.Tensor) -> torch.Tensor:
    return fastmri.complex_mul(_ifft2c(x), fastmri.complex_conj(sens_maps)).sum(dim=1, keepdim=True)


@full_precision
def _rss_image(kspace: torch.Tensor) -> torch.Tensor:
    return rss(ifft2c(_as_complex(kspace)))


def unit_sensitivities(kspace: torch.Tensor) -> torch.Tensor:
    """Coil maps of 1 (real view ``(B, C, H, W, 2)``): the sensitivities of single-coil data."""
    ones = torch.zeros_like(kspace)
    ones[..., 0] = 1.0
    return ones


class SensitivityModel(nn.Module):
    """Coil sensitivities from the centre of k-space: a NormUnet on each coil's low-resolution
    image, then division by the root-sum-of-squares over coils (fastMRI's ``SensitivityModel``)."""

    def __init__(
        self,
        chans: int,
        num_pools: int,
        in_chans: int = 2,
        out_chans: int = 2,
        drop_prob: float = 0.0,
        mask_center: bool = True,
        norm: NormKind = "instance",
        norm_groups: int = 32,
    ) -> None:
        super().__init__()
        self.mask_center = mask_center
        self.norm_unet = NormUnet(chans, num_pools, in_chans=in_chans, out_chans=out_chans, drop_prob=drop_prob,
                                  norm=norm, norm_groups=norm_groups)

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor,
                num_low_frequencies: torch.Tensor | int | None = None) -> torch.Tensor:
        if self.mask_center:
            masked_kspace = _centre_only(masked_kspace, varnet_centre_width(mask[:, 0, 0, :, 0], num_low_frequencies))
        images = _ifft2c(masked_kspace)
        b, c, h, w, two = images.shape
        maps = self.norm_unet(images.view(b * c, 1, h, w, two)).view(b, c, h, w, two)
        return _divide_rss(maps)


class VarNetBlock(nn.Module):
    """One cascade: ``k - dc_weight * M (k - k0) - F S R(S^H F^H k)`` with a regulariser ``R``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.dc_weight = nn.Parameter(torch.ones(1))

    def forward(self, current_kspace: torch.Tensor, ref_kspace: torch.Tensor, mask: torch.Tensor,
                sens_maps: torch.Tensor) -> torch.Tensor:
        soft_dc = torch.where(mask, current_kspace - ref_kspace, torch.zeros((), device=current_kspace.device))
        model_term = _sens_expand(self.model(_sens_reduce(current_kspace, sens_maps)), sens_maps)
        return current_kspace - soft_dc * self.dc_weight.float() - model_term


class VarNet(nn.Module):
    """The E2E-VarNet: masked multi-coil k-space in, a coil-combined magnitude image out.

    fastMRI's leaderboard model has 12 cascades, ``chans=18``, ``pools=4``, ``sens_chans=8``,
    ``sens_pools=4`` and instance norm (about 30 million parameters); train it with SSIM loss in
    image units and Adam at 3e-4, as ``configs/knee_multicoil_varnet.yaml`` does.

    Args:
        num_cascades: number of cascades (unrolled iterations).
        sens_chans: channels of the sensitivity U-Net's first layer.
        sens_pools: down-sampling levels of the sensitivity U-Net.
        chans: channels of each cascade U-Net's first layer.
        pools: down-sampling levels of each cascade U-Net.
        mask_center: estimate sensitivities from the centre columns only.
        drop_prob: Dropout2d probability inside the U-Nets.
        norm: normalisation inside the U-Nets (see :func:`mrirecon.models.norms.make_norm`);
            ``instance`` is fastMRI's.
        norm_groups: maximum number of groups for ``norm="group"``.
        estimate_sensitivities: estimate coil sensitivities (fastMRI's VarNet); False for
            single-coil data: every coil map is 1 (S = I) and no sensitivity network is built.
            fastMRI's network divides one coil's estimate by its own magnitude, which leaves a
            phase-only map that its cascades then have to undo.
        activation_checkpointing: recompute each cascade's activations in the backward pass
            instead of keeping them, the usual cure when a VarNet does not fit in GPU memory
            (fastMRI #44, #80, #137); training only, same gradients.
    """

    input_domain = "kspace"

    def __init__(
        self,
        num_cascades: int = 12,
        sens_chans: int = 8,
        sens_pools: int = 4,
        chans: int = 18,
        pools: int = 4,
        mask_center: bool = True,
        drop_prob: float = 0.0,
        norm: NormKind = "instance",
        norm_groups: int = 32,
        estimate_sensitivities: bool = True,
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        check_positive(num_cascades=num_cascades, sens_chans=sens_chans, sens_pools=sens_pools, chans=chans,
                       pools=pools, norm_groups=norm_groups)
        check_probability(drop_prob=drop_prob)
        self.num_cascades = num_cascades
        self.sens_chans = sens_chans
        self.sens_pools = sens_pools
        self.chans = chans
        self.pools = pools
        self.mask_center = mask_center
        self.drop_prob = drop_prob
        self.norm = norm
        self.norm_groups = norm_groups
        self.estimate_sensitivities = estimate_sensitivities
        self.activation_checkpointing = activation_checkpointing
        self.sens_net = SensitivityModel(sens_chans, sens_pools, mask_center=mask_center, drop_prob=drop_prob,
                                         norm=norm, norm_groups=norm_groups) if estimate_sensitivities else None
        self.cascades = nn.ModuleList(
            VarNetBlock(NormUnet(chans, pools, drop_prob=drop_prob, norm=norm, norm_groups=norm_groups))
            for _ in range(num_cascades)
        )

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor,
                num_low_frequencies: torch.Tensor | int | None = None) -> torch.Tensor:
        masked_kspace = masked_kspace.float()
        if self.sens_net is not None:
            sens_maps = self.sens_net(masked_kspace, mask, num_low_frequencies)
        elif masked_kspace.shape[1] != 1:
            raise ValueError(f"VarNet(estimate_sensitivities=False) is for single-coil k-space, got {masked_kspace.shape[1]} coils")
        else:
            sens_maps = unit_sensitivities(masked_kspace)
        kspace_pred = masked_kspace.clone()
        for cascade in self.cascades:
            if self.activation_checkpointing and torch.is_grad_enabled():
                kspace_pred = checkpoint(cascade, kspace_pred, masked_kspace, mask, sens_maps, use_reentrant=False)
            else:
                kspace_pred = cascade(kspace_pred, masked_kspace, mask, sens_maps)
        return _rss_image(kspace_pred)
