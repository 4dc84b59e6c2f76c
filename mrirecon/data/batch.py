"""The batch every method reads: masked k-space and what scoring and networks need around it.

:class:`KSpaceBatch` carries the masked multi-coil k-space (one coil for single-coil data), its
column mask, the width of the auto-calibration band, the reconstruction size, the targets and
their data range, and, once :func:`prepare_batch` has run, the zero-filled image and its
normalisation statistics. :func:`prepare_batch` runs the chain (mask → iFFT → crop → RSS →
normalise) wherever the batch is: in the DataLoader workers, or on the GPU after transfer, which
is what ``data.transform_on_device`` chooses. Image-domain networks read
:func:`network_input`; k-space networks and compressed sensing read the k-space itself.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from mrirecon.core.operator import SamplingMask
from mrirecon.core.transforms import CLAMP, instance_statistics, normalize, zero_filled_magnitude
from mrirecon.data.dataset import SliceSample


class KSpaceBatch(NamedTuple):
    """A batch of slices of one k-space shape and one reconstruction size.

    ``kspace`` is masked once the batch is prepared; before that it may still be the raw
    k-space that the workers only read and stacked (applying the mask again is harmless).
    ``zero_filled``, ``mean`` and ``std`` are None until :func:`prepare_batch` has run;
    ``kspace`` is None when no method of the run reads it (then only images travel).
    Tensors are per slice along their first dimension; :meth:`select` keeps some slices.
    """

    kspace: torch.Tensor | None  # complex64 (B, C, H, W)
    mask: torch.Tensor  # bool (B, W) columns, or (B, H, W) 2-D masks
    num_low_frequencies: torch.Tensor  # long (B,): centre (auto-calibration) columns; a 2-D mask's calibration square's side
    crop_size: tuple[int, int]  # (h, w) reconstruction size
    target: torch.Tensor  # float32 (B, h, w) image units; zeros where has_target is False
    max_value: torch.Tensor  # float64 (B,) data range: max of the target volume's scored region
    # Per-slice facts as plain lists: reading them never waits for the GPU.
    fname: list[str]
    slice_num: list[int]
    acceleration: list[float]  # nominal acceleration of the mask
    has_target: list[bool]
    padding: list[bool]  # repeats that even out distributed shards: never scored nor written
    zero_filled: torch.Tensor | None = None  # float32 (B, h, w) image units
    mean: torch.Tensor | None = None  # (B,) of the zero-filled image
    std: torch.Tensor | None = None  # (B,) of the zero-filled image (unbiased, as fastMRI)

    @property
    def size(self) -> int:
        return self.mask.shape[0]

    @property
    def is_columns(self) -> bool:
        """Column masks (B, W), rather than 2-D ones (B, H, W)."""
        return self.mask.ndim == 2

    def sampling_mask(self) -> SamplingMask:
        """The batch's mask as the operator takes it, with its calibration region."""
        if self.is_columns:
            return SamplingMask.from_columns(self.mask, self.num_low_frequencies)
        return SamplingMask.from_plane(self.mask, self.num_low_frequencies)

    @property
    def prepared(self) -> bool:
        return self.zero_filled is not None

    def select(self, keep: list[bool]) -> "KSpaceBatch":
        """The slices where ``keep`` is true."""
        if all(keep):
            return self
        index = torch.tensor([i for i, k in enumerate(keep) if k], device=self.mask.device)
        fields = {}
        for name, value in self._asdict().items():
            if isinstance(value, torch.Tensor):
                fields[name] = value.index_select(0, index.to(value.device))
            elif isinstance(value, list):
                fields[name] = [v for v, k in zip(value, keep) if k]
        return self._replace(**fields)


def prepare_batch(batch: KSpaceBatch, keep_kspace: bool = True) -> KSpaceBatch:
    """Masks the k-space and computes the zero-filled image and its statistics, if not done yet.

    Runs on the batch's device, in float32/complex64 whatever the autocast state.

    Args:
        batch: a batch, prepared or not.
        keep_kspace: keep the masked k-space (False drops it once the image exists).
    """
    if batch.prepared:
        return batch if keep_kspace or batch.kspace is None else batch._replace(kspace=None)
    assert batch.kspace is not None, "an unprepared batch needs its k-space"
    if keep_kspace or not batch.is_columns:
        kspace = batch.sampling_mask().apply(batch.kspace)
        zero_filled = zero_filled_magnitude(kspace, batch.crop_size)
        kspace = kspace if keep_kspace else None
    else:  # the column mask goes into the inverse FFT's one product; no masked copy is made
        kspace, zero_filled = None, zero_filled_magnitude(batch.kspace, batch.crop_size, batch.mask)
    mean, std = instance_statistics(zero_filled)
    return batch._replace(kspace=kspace, zero_filled=zero_filled, mean=mean, std=std)


def network_input(batch: KSpaceBatch) -> torch.Tensor:
    """fastMRI's U-Net input: the zero-filled image standardised by its own statistics, clamped."""
    return normalize(batch.zero_filled, batch.mean, batch.std).clamp(-CLAMP, CLAMP).unsqueeze(1)


def normalized_target(batch: KSpaceBatch) -> torch.Tensor:
    """fastMRI's U-Net target: the target standardised with the *input's* statistics, clamped."""
    return normalize(batch.target, batch.mean, batch.std).clamp(-CLAMP, CLAMP).unsqueeze(1)


def collate_slices(samples: list[SliceSample]) -> KSpaceBatch:
    """Stacks slices of one k-space shape and reconstruction size (the batch sampler's groups)."""
    shapes = {tuple(s.kspace.shape) for s in samples}
    crops = {s.crop_size for s in samples}
    if len(shapes) > 1 or len(crops) > 1:
        raise ValueError(f"a batch mixes k-space shapes {sorted(shapes)} or sizes {sorted(crops)}: use SliceBatchSampler")
    return KSpaceBatch(
        kspace=torch.stack([s.kspace for s in samples]),
        mask=torch.stack([s.mask for s in samples]),
        num_low_frequencies=torch.tensor([s.num_low_frequencies for s in samples]),
        crop_size=crops.pop(),
        target=torch.stack([s.target for s in samples]),
        max_value=torch.tensor([s.max_value for s in samples], dtype=torch.float64),
        fname=[s.fname for s in samples],
        slice_num=[s.slice_num for s in samples],
        acceleration=[s.acceleration for s in samples],
        has_target=[s.has_target for s in samples],
        padding=[s.padding for s in samples],
    )


class SliceCollator:
    """The DataLoader's ``collate_fn`` (picklable, so it runs in worker processes).

    Args:
        prepare: run :func:`prepare_batch` here, in the worker; otherwise the workers only
            read and stack, and the chain runs after transfer (on the GPU).
        keep_kspace: keep k-space in prepared batches (k-space methods need it; image
            networks do not, and it is the largest part of a batch).
    """

    def __init__(self, prepare: bool = True, keep_kspace: bool = True) -> None:
        self.prepare = prepare
        self.keep_kspace = keep_kspace

    def __call__(self, samples: list[SliceSample]) -> KSpaceBatch:
        batch = collate_slices(samples)
        return prepare_batch(batch, self.keep_kspace) if self.prepare else batch
