"""The U-Net with data consistency, and cascades of them (Schlemper et al., 2017).

A U-Net that may change only what was not measured: it maps the zero-filled *complex* image
(real and imaginary parts as two channels, normalised per sample) to a correction of that
image, and a data-consistency step in k-space then puts the measured samples back (``hard``)
or moves the prediction toward them by a learned weight (``soft``). ``num_cascades > 1``
repeats U-Net and data consistency, Schlemper et al.'s deep cascade (DC-CNN);
``share_weights`` uses one U-Net for every cascade, as MoDL does (MoDL's conjugate-gradient data
consistency reduces to this closed form for single-coil Cartesian sampling, where ``A^H A`` is
diagonal in k-space).

Where the measurement and its reconstruction live: k-space ``(B, 1, H, W)`` complex and a
:class:`~mrirecon.core.operator.SamplingMask` go in, the magnitude image ``(B, H, W)`` comes out,
both on the grid the caller chose (:class:`mrirecon.methods.base.DataConsistentNetworkMethod`
hands over the k-space of the readout-cropped image, on which data consistency stays exact and
costs half). Single-coil: multi-coil data need coil sensitivities, which the E2E-VarNet
estimates (:class:`mrirecon.models.VarNet`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from mrirecon.core.operator import MRIOperator, SamplingMask, full_precision
from mrirecon.models.checks import check_positive, check_probability
from mrirecon.models.norms import NormKind
from mrirecon.models.varnet import NormUnet

__all__ = ["DataConsistentUnet"]

DC_CHOICES = ("hard", "soft")


class DataConsistentUnet(nn.Module):
    """U-Net(s) on the complex image, each followed by data consistency in k-space.

    With the defaults (one cascade, hard data consistency, GroupNorm) this is the design card's
    U-Net with a data-consistency step on its output; train it with Adam and the L1 loss as the
    plain U-Net.

    Args:
        chans: channels of each U-Net's first layer.
        num_pool_layers: down-sampling levels of each U-Net.
        num_cascades: U-Net + data-consistency steps in sequence (1: the U-Net with data
            consistency; 5 or more: Schlemper et al.'s cascade).
        data_consistency: ``hard`` (measured samples replace the prediction's) or ``soft`` (the
            prediction moves toward the measurement by a learned weight in (0, 1) per cascade,
            which lets the network weigh noisy measurements against its own estimate).
        share_weights: one U-Net for all cascades (MoDL's weight sharing).
        drop_prob: Dropout2d probability inside the U-Nets.
        norm: normalisation inside the U-Nets (:func:`mrirecon.models.norms.make_norm`).
        norm_groups: maximum number of groups for ``norm="group"``.
        activation_checkpointing: recompute each cascade's activations in the backward pass
            instead of keeping them (less memory for more compute; training only).
        demodulate_phase: before each U-Net, remove the smooth image phase that the fully
            sampled calibration band measures (the phase of its low-resolution image), and put it
            back on the U-Net's correction, so that the U-Nets see nearly real images whatever
            the scanner's phase; data consistency is unchanged.
    """

    input_domain = "measurements"

    def __init__(
        self,
        chans: int = 16,
        num_pool_layers: int = 4,
        num_cascades: int = 1,
        data_consistency: str = "hard",
        share_weights: bool = False,
        drop_prob: float = 0.0,
        norm: NormKind = "group",
        norm_groups: int = 32,
        activation_checkpointing: bool = False,
        demodulate_phase: bool = False,
    ) -> None:
        super().__init__()
        check_positive(chans=chans, num_pool_layers=num_pool_layers, num_cascades=num_cascades, norm_groups=norm_groups)
        check_probability(drop_prob=drop_prob)
        if data_consistency not in DC_CHOICES:
            raise ValueError(f"data_consistency: expected one of {', '.join(DC_CHOICES)}, got {data_consistency!r}")
        self.chans = chans
        self.num_pool_layers = num_pool_layers
        self.num_cascades = num_cascades
        self.data_consistency = data_consistency
        self.share_weights = share_weights
        self.drop_prob = drop_prob
        self.norm = norm
        self.norm_groups = norm_groups
        self.activation_checkpointing = activation_checkpointing
        self.demodulate_phase = demodulate_phase

        def unet() -> NormUnet:
            return NormUnet(chans, num_pool_layers, drop_prob=drop_prob, norm=norm, norm_groups=norm_groups)

        shared = unet() if share_weights else None
        self.regularisers = nn.ModuleList(shared or unet() for _ in range(num_cascades))
        # sigmoid(2) = 0.88: close to hard data consistency at the start, free to move away.
        self.dc_logits = nn.Parameter(torch.full((num_cascades,), 2.0)) if data_consistency == "soft" else None

    @property
    def dc_weights(self) -> torch.Tensor | None:
        """The learned soft data-consistency weights, one per cascade (None for hard)."""
        return None if self.dc_logits is None else torch.sigmoid(self.dc_logits)

    def _cascade(self, index: int, image: torch.Tensor, measured: torch.Tensor, operator: MRIOperator,
                 phase: torch.Tensor | None) -> torch.Tensor:
        seen = image if phase is None else image * phase.conj()
        correction = self.regularisers[index](torch.view_as_real(seen).unsqueeze(1))
        correction = torch.view_as_complex(correction.squeeze(1).float().contiguous())
        image = image + (correction if phase is None else correction * phase)
        return self._data_consistency(index, image, measured, operator)

    @staticmethod
    @full_precision
    def _calibration_phase(measured: torch.Tensor, operator: MRIOperator) -> torch.Tensor:
        """``(B, H, W)`` unit phasors of the calibration band's low-resolution image (1 where
        no band is known, or the image is zero)."""
        calibration = operator.mask.calibration
        band = MRIOperator(SamplingMask(calibration, calibration), operator.sensitivities, operator.centered)
        low_resolution = band.A_adjoint(measured)
        magnitude = low_resolution.abs()
        floor = 1e-6 * magnitude.flatten(1).amax(1).clamp_min(torch.finfo(magnitude.dtype).tiny)[:, None, None]
        phase = low_resolution / magnitude.clamp_min(floor)
        return torch.where(magnitude > floor, phase, torch.ones((), dtype=phase.dtype, device=phase.device))

    @full_precision
    def _data_consistency(self, index: int, image: torch.Tensor, measured: torch.Tensor,
                          operator: MRIOperator) -> torch.Tensor:
        kspace = operator.kspace_of(image.unsqueeze(1))
        if self.dc_logits is None:
            kspace = operator.hard_data_consistency(kspace, measured)
        else:
            kspace = operator.soft_data_consistency(kspace, measured, torch.sigmoid(self.dc_logits[index]))
        return operator.coil_images(kspace).squeeze(1)

    def forward(self, kspace: torch.Tensor, mask: SamplingMask) -> torch.Tensor:
        """Complex ``(B, 1, H, W)`` k-space and its sampling mask → magnitude ``(B, H, W)``."""
        return self.reconstruct(kspace, mask).abs()

    def reconstruct(self, kspace: torch.Tensor, mask: SamplingMask) -> torch.Tensor:
        """The complex ``(B, H, W)`` image whose magnitude :meth:`forward` returns (what a
        k-space loss on held-back samples compares, through the operator). Only the samples
        of ``mask`` are read."""
        if kspace.ndim != 4 or kspace.shape[1] != 1:
            raise ValueError(f"DataConsistentUnet reconstructs single-coil k-space (B, 1, H, W), got {tuple(kspace.shape)}")
        operator = MRIOperator(mask)
        measured = operator.mask.apply(kspace.to(torch.complex64))
        image = operator.A_adjoint(measured)
        phase = self._calibration_phase(measured, operator) if self.demodulate_phase else None
        for index in range(self.num_cascades):
            if self.activation_checkpointing and torch.is_grad_enabled():
                image = checkpoint(self._cascade, index, image, measured, operator, phase, use_reentrant=False)
            else:
                image = self._cascade(index, image, measured, operator, phase)
        return image
