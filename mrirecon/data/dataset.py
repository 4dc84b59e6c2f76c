"""Slices of fastMRI-format volumes, each with its mask: columns ``(W,)`` or a 2-D plane ``(H, W)``.

:class:`SliceDataset` reads one slice and draws (or takes from the file) its mask; the batch
type and the chain that turns masked k-space into images live in :mod:`mrirecon.data.batch`,
and the order and grouping of slices into batches in :mod:`mrirecon.data.samplers`.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, Sequence

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from mrirecon.core.masks import ColumnMaskSampler
from mrirecon.core.operator import center_crop, centred_sampled_square
from mrirecon.core.plane_masks import PLANE_MASK_TYPES, PlaneMaskSampler
from mrirecon.data.volumes import Challenge, VolumeInfo, read_target
from mrirecon.errors import UserError


class SliceSample(NamedTuple):
    """One slice as read from disk, with its mask (not yet applied)."""

    kspace: torch.Tensor  # complex64 (C, H, W); C = 1 for single-coil
    mask: torch.Tensor  # bool (W,) columns, or (H, W) for a 2-D sampler's masks
    num_low_frequencies: int  # centre (auto-calibration) columns; a 2-D mask's calibration square's side
    target: torch.Tensor  # float32 (h, w) in image units; zeros when the file has none
    has_target: bool
    crop_size: tuple[int, int]
    max_value: float  # data range of the target volume's scored region (0 without a target)
    fname: str
    slice_num: int
    acceleration: float
    padding: bool  # a repeat that only evens out distributed shards: never scored nor written


class SliceRequest(NamedTuple):
    """What a batch sampler asks the dataset for: an item, its training mask seed, and whether
    it is a padding repeat (see :class:`mrirecon.data.samplers.SliceBatchSampler`)."""

    index: int
    seed: int = 0
    padding: bool = False


MaskSampler = ColumnMaskSampler | PlaneMaskSampler


def mask_sampler(mask_type: str, center_fractions: Sequence[float], accelerations: Sequence[float],
                 calibration_radius: float = 18.0, partial_fourier: float = 0.0) -> MaskSampler:
    """The sampler the data settings name: column masks, or 2-D masks for ``poisson2d`` and
    ``gaussian2d`` (``calibration_radius`` and ``partial_fourier`` are theirs alone).

    Raises:
        ValueError: naming the setting (``accelerations: ...``, ``partial_fourier ...``).
    """
    if mask_type in PLANE_MASK_TYPES:
        return PlaneMaskSampler(mask_type, accelerations, calibration_radius, partial_fourier)  # type: ignore[arg-type]
    if partial_fourier:  # a column mask has no partial-Fourier band: it would be ignored
        raise ValueError(f"partial_fourier {partial_fourier}: for the 2-D masks (poisson2d, gaussian2d); "
                         f"{mask_type} masks skip the columns a file's header does not acquire")
    return ColumnMaskSampler(mask_type, center_fractions, accelerations)  # type: ignore[arg-type]


def draw_mask(masks: MaskSampler, info: VolumeInfo, pair: int | None = None, fname: str | None = None,
              seed: int = 0) -> tuple[np.ndarray, int, int]:
    """A volume's drawn mask: fixed by ``fname`` at acceleration ``pair``, or a training draw
    from ``seed`` (``pair`` None).

    A 2-D sampler draws over the whole ``(H, W)`` k-space plane; columns outside the file's
    acquired ``padding`` are never sampled, as a column sampler leaves them out too.

    Returns:
        (bool mask ``(W,)`` or ``(H, W)``, calibration width (columns, or the side of the
        centred fully sampled square), the acceleration pair's index).
    """
    if isinstance(masks, ColumnMaskSampler):
        if pair is None:
            return masks.random(seed, info.num_cols, info.padding)
        return (*masks.fixed(fname or info.path.name, info.num_cols, pair, info.padding), pair)
    shape = tuple(info.kspace_shape[-2:])
    if pair is None:
        mask, pair = masks.random(seed, shape)
    else:
        mask = masks.fixed(fname or info.path.name, shape, pair)
    left, right = info.padding
    if 0 <= left < right <= shape[1] and (left, right) != (0, shape[1]):
        mask = mask.copy()
        mask[:, :left] = False
        mask[:, right:] = False
    return mask, centred_sampled_square(torch.from_numpy(np.array(mask, dtype=bool))), pair


class SliceDataset(Dataset):
    """Slices of a list of volumes with their masks (columns, or 2-D planes).

    Args:
        volumes: validated volumes (see :func:`mrirecon.data.volumes.scan_volumes`).
        challenge: ``singlecoil`` or ``multicoil``.
        masks: the mask sampler; None, or a volume with its own ``mask`` when ``file_masks``
            is true, uses the file's mask (test/challenge files of the real download).
        mode: ``train`` draws a random mask per item from the seed its request carries;
            ``fixed`` gives every volume one mask per acceleration pair, seeded by its file
            name, and lists each slice once per pair.
        crop_size: reconstruction size; None takes each volume's target size (see
            :meth:`VolumeInfo.reconstruction_size`).
        sample_rate: fraction of slices to keep (a fixed subset), None for all.
        file_masks: use the ``mask`` of files that carry one.
    """

    def __init__(
        self,
        volumes: list[VolumeInfo],
        challenge: Challenge,
        masks: MaskSampler | None,
        mode: Literal["train", "fixed"] = "fixed",
        crop_size: tuple[int, int] | None = None,
        sample_rate: float | None = None,
        file_masks: bool = True,
    ) -> None:
        self.volumes = volumes
        self.challenge = challenge
        self.masks = masks
        self.mode = mode
        self.crop_size = crop_size
        self.uses_file_mask = [(masks is None or file_masks) and info.fixed_mask is not None for info in volumes]
        for info, own in zip(volumes, self.uses_file_mask):
            if masks is None and not own:
                raise UserError(f"{info.path}: no 'mask' in the file and no mask settings given")
        num_pairs = 1 if (mode == "train" or masks is None) else len(masks)
        self.items = [
            (v, s, p)
            for p in range(num_pairs)
            for v, info in enumerate(volumes)
            if p == 0 or not self.uses_file_mask[v]
            for s in range(info.num_slices)
        ]
        if sample_rate is not None and sample_rate < 1.0:
            rng = np.random.default_rng(0)
            n = max(1, round(len(self.items) * sample_rate))
            self.items = [self.items[i] for i in sorted(rng.choice(len(self.items), n, replace=False))]

    def __len__(self) -> int:
        return len(self.items)

    def group_key(self, index: int) -> tuple:
        """Items with equal keys stack into one batch: same k-space shape, crop and kind of mask
        (a file's own 2-D mask beside a drawn column mask would not stack)."""
        vol = self.items[index][0]
        info = self.volumes[vol]
        plane = (isinstance(self.masks, PlaneMaskSampler) if not self.uses_file_mask[vol]
                 else info.fixed_mask_array.ndim == 2)
        return (info.kspace_shape[1:], info.reconstruction_size(self.crop_size), plane)

    def unit_key(self, index: int) -> tuple[int, int]:
        """Items with equal keys are one scored unit (a volume at one acceleration)."""
        vol, _, pair = self.items[index]
        return vol, pair

    def _mask(self, info: VolumeInfo, vol: int, pair: int, seed: int) -> tuple[np.ndarray, int, float]:
        if self.uses_file_mask[vol]:
            mask = info.fixed_mask_array
            acceleration = info.acceleration or mask.size / max(int(mask.sum()), 1)
            return mask, info.fixed_num_low_frequencies, float(acceleration)
        assert self.masks is not None
        mask, num_low, pair = draw_mask(self.masks, info, None if self.mode == "train" else pair, seed=seed)
        return mask, num_low, float(self.masks.pairs[pair][1])

    def __getitem__(self, request: int | SliceRequest | tuple) -> SliceSample:
        request = SliceRequest(request) if isinstance(request, int) else SliceRequest(*request)
        vol, slice_num, pair = self.items[request.index]
        info = self.volumes[vol]
        mask, num_low, acceleration = self._mask(info, vol, pair, request.seed)
        try:
            with h5py.File(info.path, "r") as hf:
                kspace = hf["kspace"][slice_num]
                target = hf[info.target_key][slice_num] if info.target_key and not info.target_files else None
        except (OSError, KeyError) as err:
            raise UserError(f"{info.path}: cannot read slice {slice_num} ({err})") from None
        if info.target_files:
            target = read_target(info, slice_num)  # the mean of its repetitions' targets
        crop = info.reconstruction_size(self.crop_size)
        if target is None:
            target_t, has_target = torch.zeros(crop), False
        else:
            target_t, has_target = center_crop(torch.from_numpy(np.asarray(target, dtype=np.float32)), crop), True
        kspace = torch.from_numpy(np.asarray(kspace, dtype=np.complex64))
        return SliceSample(
            kspace=kspace if kspace.ndim == 3 else kspace[None],
            mask=torch.from_numpy(np.array(mask, dtype=bool)),  # a copy: drawn masks are cached read-only
            num_low_frequencies=int(num_low),
            target=target_t.contiguous(),
            has_target=has_target,
            crop_size=crop,
            max_value=info.data_range(self.crop_size),
            fname=info.path.name,
            slice_num=slice_num,
            acceleration=acceleration,
            padding=request.padding,
        )
