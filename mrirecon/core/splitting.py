"""Splitting the measured samples in two, for learning without fully sampled references (SSDU).

Self-supervision via data undersampling (Yaman et al., 2020) trains a network on undersampled
scans alone: the measured set Ω of each slice is split into two disjoint sets, Θ, which the
network sees (as its input and in its data consistency), and Λ, held back, on which the loss
compares the network's k-space with the measurement. The fully sampled calibration region stays
in Θ (as SSDU keeps its ACS lines in the network's input): every network that estimates a phase
or coil sensitivities from it still can.

A split is a pair of :class:`~mrirecon.core.operator.SamplingMask`: a column mask splits into
columns (so the readout stays fully sampled in both sets, and data consistency on the
readout-cropped grid stays exact), a 2-D mask into points. Each slice's split is drawn from its
own seed (:func:`split_seed`: the run's seed, the step, the file and the slice), so it does not
depend on how slices are batched or dealt to processes, and a run repeats it exactly.

Written here rather than taken from ``deepinv.loss.mri`` (deepinv 0.5.0): its splitting masks
are drawn for its physics objects on its real ``(B, 2, H, W)`` layout, from one generator for the
whole batch; we need one seed per slice and column splits of our masks.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Sequence

import torch

from mrirecon.core.operator import SamplingMask

__all__ = ["MeasurementSplit", "UnsplittableSlice", "split_measurements", "split_seed"]


class UnsplittableSlice(ValueError):
    """A slice with fewer than two measured samples: nothing can be held back. ``index`` is the
    slice's place in the batch, for the caller to name its file."""

    def __init__(self, index: int, measured: int) -> None:
        super().__init__(f"{measured} measured sample(s): nothing to hold back")
        self.index = index


@dataclass(frozen=True)
class MeasurementSplit:
    """The two disjoint parts of the measured samples.

    Attributes:
        input: Θ, what the network sees (the calibration region included).
        loss: Λ, held back for the loss.
    """

    input: SamplingMask
    loss: SamplingMask


def split_seed(seed: int, step: int, fname: str, slice_num: int, draw: int = 0) -> int:
    """The seed of one slice's split: the run's ``seed``, the optimiser ``step`` (a new split
    per step; a fixed one, e.g. -1, for validation), the file and slice, and the ``draw`` of
    multi-mask SSDU. A 63-bit integer, the same on every machine and process."""
    key = f"{seed}:{step}:{draw}:{fname}:{slice_num}".encode()
    return (zlib.crc32(key) << 31 | zlib.crc32(key[::-1])) & (2**63 - 1)


def split_measurements(mask: SamplingMask, loss_fraction: float, seeds: Sequence[int]) -> MeasurementSplit:
    """Splits each slice's measured samples outside the calibration region: a uniformly drawn
    ``loss_fraction`` of them (rounded, at least one) is held back as Λ, the rest and the
    calibration region are Θ. A slice with fewer than two samples outside its calibration
    region has all its measured samples split so.

    Args:
        mask: the measured samples Ω, with their calibration region.
        loss_fraction: share of the measured samples outside the calibration region held back,
            in (0, 1) (Yaman et al. use 0.4).
        seeds: one per slice (:func:`split_seed`).

    Raises:
        ValueError: a fraction outside (0, 1) or a seed count that differs from the batch.
        UnsplittableSlice: a slice with fewer than two measured samples.
    """
    if not 0.0 < loss_fraction < 1.0:
        raise ValueError(f"loss_fraction must lie strictly between 0 and 1, got {loss_fraction}")
    if len(seeds) != mask.batch_size:
        raise ValueError(f"{len(seeds)} seeds for {mask.batch_size} slices")
    measured = mask.values.flatten(1).cpu()
    candidates = (mask.values & ~mask.calibration).flatten(1).cpu()
    loss = torch.zeros_like(candidates)
    for b, seed in enumerate(seeds):
        index = candidates[b].nonzero().squeeze(1)
        if index.numel() < 2:
            # A random mask may sample nothing beyond its centre (a few columns at 8x): then
            # the calibration region is split too, rather than the slice dropped from the loss.
            index = measured[b].nonzero().squeeze(1)
        if index.numel() < 2:
            raise UnsplittableSlice(b, index.numel())
        count = min(max(round(loss_fraction * index.numel()), 1), index.numel() - 1)
        generator = torch.Generator().manual_seed(int(seed))
        chosen = index[torch.randperm(index.numel(), generator=generator)[:count]]
        loss[b, chosen] = True
    loss = loss.view(mask.values.shape).to(mask.values.device)
    return MeasurementSplit(input=SamplingMask(mask.values & ~loss, mask.calibration & ~loss),
                            loss=SamplingMask(loss, torch.zeros_like(loss)))
