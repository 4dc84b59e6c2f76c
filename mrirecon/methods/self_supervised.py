"""Self-supervised training by data undersampling (SSDU, Yaman et al., 2020): the loss of a
network that never sees a fully sampled reference.

Each slice's measured samples are split (:func:`mrirecon.core.splitting.split_measurements`)
into Θ, from which the network reconstructs (Θ is its input and its data consistency), and Λ,
held back; the loss compares the network's k-space with the measurement on Λ, by Yaman et al.'s
normalised L1-L2 norm. With ``num_splits > 1`` each slice is split several ways and the losses
averaged (their multi-mask SSDU, 2022). The networks that take the measurement and its mask
(:class:`~mrirecon.models.DataConsistentUnet`, through
:class:`~mrirecon.methods.base.DataConsistentNetworkMethod`) train this way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from mrirecon.core.operator import MRIOperator, SamplingMask, full_precision
from mrirecon.core.splitting import MeasurementSplit, UnsplittableSlice, split_measurements, split_seed
from mrirecon.data.batch import KSpaceBatch
from mrirecon.errors import UserError

__all__ = ["SSDUSettings", "VALIDATION_STEP", "measurement_loss", "normalized_l1_l2", "split_for", "ssdu_loss", "supports_ssdu"]

# The "step" of validation splits: one fixed split per slice, so the held-out loss of two epochs
# compares like with like.
VALIDATION_STEP = -1


@dataclass(frozen=True)
class SSDUSettings:
    """How SSDU splits the measurement (``model.ssdu`` in a config).

    Attributes:
        loss_fraction: share of the measured samples outside the calibration region held back
            for the loss (Yaman et al.'s ρ = 0.4).
        num_splits: splits per slice and step, their losses averaged (1: SSDU; more: multi-mask
            SSDU, which uses each scan's data better at the cost of as many forward passes).
        seed: seed of the splits (with the step, the file and the slice).
    """

    loss_fraction: float = 0.4
    num_splits: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.loss_fraction < 1.0:
            raise UserError(f"model.ssdu.loss_fraction: must lie strictly between 0 and 1, got {self.loss_fraction}")
        if self.num_splits < 1:
            raise UserError(f"model.ssdu.num_splits: must be at least 1, got {self.num_splits}")


def supports_ssdu(method: object) -> bool:
    """Whether a method can train by SSDU: it reconstructs from an explicit measurement and
    mask, and gives its complex image (whose k-space the loss compares)."""
    return hasattr(method, "measurement") and hasattr(getattr(method, "net", None), "reconstruct")


@full_precision
def normalized_l1_l2(predicted: torch.Tensor, measured: torch.Tensor) -> torch.Tensor:
    """Yaman et al.'s loss, per slice and averaged: ``‖m − p‖₂ / ‖m‖₂ + ‖m − p‖₁ / ‖m‖₁`` over
    the held-back samples (complex magnitudes; both zero elsewhere)."""
    error = (measured - predicted).flatten(1).abs()
    reference = measured.flatten(1).abs()
    tiny = torch.finfo(reference.dtype).tiny
    l2 = error.square().sum(1).sqrt() / reference.square().sum(1).sqrt().clamp_min(tiny)
    l1 = error.sum(1) / reference.sum(1).clamp_min(tiny)
    return (l2 + l1).mean()


def ssdu_loss(method, batch: KSpaceBatch, settings: SSDUSettings, step: int) -> torch.Tensor:
    """The SSDU loss of a batch at optimiser ``step`` (:data:`VALIDATION_STEP` for validation).

    Raises:
        UserError: a slice whose mask holds fewer than two measured samples (nothing could be
            held back), naming its file and slice.
    """
    kspace, measured = method.measurement(batch)
    return measurement_loss(method.net, kspace, measured, settings, step, batch.fname, batch.slice_num)


def measurement_loss(net, kspace: torch.Tensor, measured: SamplingMask, settings: SSDUSettings, step: int,
                     fnames: Sequence[str], slices: Sequence[int]) -> torch.Tensor:
    """SSDU's loss of ``net`` on the measured ``kspace`` (on the network's grid) and its mask."""
    total = torch.zeros((), device=kspace.device)
    for draw in range(settings.num_splits):
        split = split_for(measured, settings.loss_fraction, settings.seed, step, draw, fnames, slices)
        # The network receives Θ alone: Λ's samples are zeroed before it sees the k-space.
        image = net.reconstruct(split.input.apply(kspace), split.input)
        predicted = MRIOperator(split.loss).A(image)
        total = total + normalized_l1_l2(predicted, split.loss.apply(kspace))
    return total / settings.num_splits


def split_for(measured: SamplingMask, fraction: float, seed: int, step: int, draw: int, fnames: Sequence[str],
              slices: Sequence[int]) -> MeasurementSplit:
    """The split of each slice at ``step``, as a one-line error where one cannot be made."""
    seeds = [split_seed(seed, step, f, s, draw) for f, s in zip(fnames, slices)]
    try:
        return split_measurements(measured, fraction, seeds)
    except UnsplittableSlice as err:
        raise UserError(f"{fnames[err.index]} slice {slices[err.index]}: cannot split its measurement for "
                        f"self-supervision ({err})") from None
