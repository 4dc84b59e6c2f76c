"""Slices of fastMRI-format volumes, masked and turned into zero-filled network inputs.

:class:`ReconSliceDataset` reads one slice and its column mask. :func:`collate_slices` turns a
list of slices into a :class:`ReconBatch` with the batched chain of
:mod:`mrirecon.data.transforms`, either in the DataLoader worker (the default) or, with
``on_device=True``, leaves the masked k-space in a :class:`KSpaceBatch` for
:func:`kspace_to_recon_batch` to run on the GPU after transfer.
"""

from __future__ import annotations

from typing import Iterator, Literal, NamedTuple

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from mrirecon.data.masks import ColumnMaskSampler
from mrirecon.data.transforms import (
    CLAMP,
    apply_column_mask,
    crop_target,
    normalize,
    normalize_instance,
    zero_filled_magnitude,
)
from mrirecon.data.volumes import Challenge, VolumeInfo
from mrirecon.errors import UserError


class SliceSample(NamedTuple):
    """One slice as read from disk, with its mask (not yet applied)."""

    kspace: torch.Tensor  # complex64 ([C,] H, W)
    mask: torch.Tensor  # bool (W,)
    target: torch.Tensor  # float32 (h, w) in image units; zeros when the file has none
    has_target: bool
    crop_size: tuple[int, int]
    max_value: float
    fname: str
    slice_num: int
    acceleration: float


class KSpaceBatch(NamedTuple):
    """A batch of masked k-space, for the zero-filled chain to run on the device."""

    masked_kspace: torch.Tensor  # complex (B, [C,] H, W)
    mask: torch.Tensor  # bool (B, W)
    target: torch.Tensor  # (B, h, w)
    has_target: torch.Tensor  # bool (B,)
    crop_size: tuple[int, int]
    multicoil: bool
    max_value: torch.Tensor
    fname: list[str]
    slice_num: torch.Tensor
    acceleration: torch.Tensor


class ReconBatch(NamedTuple):
    """What the network and the metrics need, for a batch of slices.

    ``input`` and ``target`` follow fastMRI's U-Net convention (the zero-filled magnitude
    standardised by its own mean/std and clamped to ±6; the target standardised with the
    *input's* statistics and clamped). ``zero_filled`` and ``target_image`` are the same images
    in image units, unclamped, for metrics; ``mean``/``std`` map network outputs back.
    """

    input: torch.Tensor  # (B, 1, h, w)
    target: torch.Tensor  # (B, 1, h, w)
    zero_filled: torch.Tensor  # (B, h, w) image units
    target_image: torch.Tensor  # (B, h, w) image units, zeros where has_target is False
    mean: torch.Tensor  # (B,)
    std: torch.Tensor  # (B,)
    max_value: torch.Tensor  # (B,) target volume max (the file's `max` attribute)
    has_target: torch.Tensor  # (B,) bool
    fname: list[str]
    slice_num: torch.Tensor  # (B,)
    acceleration: torch.Tensor  # (B,) nominal acceleration of the mask
    mask: torch.Tensor  # (B, W) bool, padded with False to the widest volume in the batch


class ReconSliceDataset(Dataset):
    """Slices of a list of volumes with their column masks.

    Args:
        volumes: validated volumes (see :func:`mrirecon.data.volumes.scan_volumes`).
        challenge: ``singlecoil`` or ``multicoil``.
        masks: the mask sampler, or None to use each file's own ``mask`` (test/challenge files).
        mode: ``train`` draws a random mask per item from the seed the sampler passes with the
            index; ``fixed`` gives every volume one mask per acceleration pair, seeded by its
            file name, and lists each slice once per pair.
        crop_size: reconstruction size; None takes each volume's target size.
        sample_rate: fraction of slices to keep (a fixed subset), None for all.
    """

    def __init__(
        self,
        volumes: list[VolumeInfo],
        challenge: Challenge,
        masks: ColumnMaskSampler | None,
        mode: Literal["train", "fixed"] = "fixed",
        crop_size: tuple[int, int] | None = None,
        sample_rate: float | None = None,
    ) -> None:
        self.volumes = volumes
        self.challenge = challenge
        self.masks = masks
        self.mode = mode
        self.crop_size = crop_size
        pairs = [0] if (mode == "train" or masks is None) else range(len(masks))
        self.items = [(v, s, p) for p in pairs for v, info in enumerate(volumes) for s in range(info.num_slices)]
        if sample_rate is not None and sample_rate < 1.0:
            rng = np.random.default_rng(0)
            n = max(1, round(len(self.items) * sample_rate))
            self.items = [self.items[i] for i in sorted(rng.choice(len(self.items), n, replace=False))]
        for info in volumes:
            if masks is None and info.fixed_mask is None:
                raise UserError(f"{info.path}: no 'mask' in the file and no mask settings given")
            if crop_size is not None and (crop_size[0] > info.kspace_shape[-2] or crop_size[1] > info.num_cols):
                raise UserError(f"{info.path}: crop {crop_size} is larger than the k-space image {info.kspace_shape[-2:]}")

    def __len__(self) -> int:
        return len(self.items)

    def _crop_size(self, info: VolumeInfo) -> tuple[int, int]:
        crop = self.crop_size or info.target_shape
        rows = info.kspace_shape[-2]
        if rows < crop[1]:
            # fastMRI's guard for FLAIR 203, whose images are narrower than the recon size.
            crop = (rows, rows)
        return crop

    def __getitem__(self, item: int | tuple[int, int]) -> SliceSample:
        index, seed = item if isinstance(item, tuple) else (item, None)
        vol, slice_num, pair = self.items[index]
        info = self.volumes[vol]
        fname = info.path.name
        if self.masks is None:
            mask, acceleration = np.asarray(info.fixed_mask), info.acceleration or 0.0
        elif self.mode == "train":
            if seed is None:
                raise RuntimeError("training items need a seed: use SeededShuffleSampler")
            mask, _, pair = self.masks.random(seed, info.num_cols, info.padding)
            acceleration = self.masks.pairs[pair][1]
        else:
            mask, _ = self.masks.fixed(fname, info.num_cols, pair, info.padding)
            acceleration = self.masks.pairs[pair][1]
        try:
            with h5py.File(info.path, "r") as hf:
                kspace = hf["kspace"][slice_num]
                target = hf[info.target_key][slice_num] if info.target_key else None
        except (OSError, KeyError) as err:
            raise UserError(f"{info.path}: cannot read slice {slice_num} ({err})") from None
        crop = self._crop_size(info)
        if target is None:
            target_t, has_target = torch.zeros(crop), False
        else:
            target_t, has_target = crop_target(torch.from_numpy(target)[None], crop)[0], True
        return SliceSample(
            kspace=torch.from_numpy(kspace.astype(np.complex64)),
            mask=torch.from_numpy(mask),
            target=target_t.float(),
            has_target=has_target,
            crop_size=tuple(crop),
            max_value=info.max_value,
            fname=fname,
            slice_num=slice_num,
            acceleration=float(acceleration),
        )


class SeededShuffleSampler(Sampler):
    """Shuffles training items and hands each one a mask seed, both from ``(seed, epoch)``.

    The seeds are drawn here, in the main process, and travel with the indices to the workers,
    so the masks of a run depend only on the seed and the epoch: the same for any
    ``num_workers``. Lightning calls :meth:`set_epoch` at each epoch (also after a resume).
    """

    def __init__(self, num_items: int, seed: int) -> None:
        self.num_items = num_items
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_items

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(hash((self.seed, self.epoch)) % 2**63)
        order = torch.randperm(self.num_items, generator=generator).tolist()
        seeds = torch.randint(0, 2**62, (self.num_items,), generator=generator).tolist()
        return iter(zip(order, seeds))


def _stack_masks(masks: list[torch.Tensor]) -> torch.Tensor:
    width = max(m.shape[-1] for m in masks)
    out = torch.zeros(len(masks), width, dtype=torch.bool)
    for i, m in enumerate(masks):
        out[i, : m.shape[-1]] = m
    return out


def _common_crop(samples: list[SliceSample]) -> tuple[int, int]:
    crops = {s.crop_size for s in samples}
    if len(crops) > 1:
        raise UserError(
            f"volumes {sorted({s.fname for s in samples})} have different target sizes {sorted(crops)}: "
            "set data.crop_size or use batch_size 1"
        )
    return crops.pop()


def recon_batch_from_images(
    zero_filled: torch.Tensor,
    target: torch.Tensor,
    has_target: torch.Tensor,
    **meta,
) -> ReconBatch:
    """Normalise (B, h, w) zero-filled images and targets as fastMRI's U-Net transform does."""
    net_input, mean, std = normalize_instance(zero_filled)
    net_target = normalize(target, mean, std).clamp(-CLAMP, CLAMP)
    return ReconBatch(
        input=net_input.clamp(-CLAMP, CLAMP).unsqueeze(1),
        target=net_target.unsqueeze(1),
        zero_filled=zero_filled,
        target_image=target,
        mean=mean,
        std=std,
        has_target=has_target,
        **meta,
    )


def kspace_to_recon_batch(batch: KSpaceBatch) -> ReconBatch:
    """Run the zero-filled chain on a whole batch, wherever its tensors are."""
    zero_filled = zero_filled_magnitude(batch.masked_kspace, batch.crop_size, batch.multicoil)
    return recon_batch_from_images(
        zero_filled,
        batch.target,
        batch.has_target,
        max_value=batch.max_value,
        fname=batch.fname,
        slice_num=batch.slice_num,
        acceleration=batch.acceleration,
        mask=batch.mask,
    )


class SliceCollator:
    """Batches :class:`SliceSample` items (picklable, so it runs in DataLoader workers).

    Args:
        multicoil: combine coils by root-sum-of-squares.
        on_device: return a :class:`KSpaceBatch` so the chain runs after transfer (needs equal
            k-space shapes within a batch); otherwise run the chain here, per slice, which
            allows volumes of different widths in one batch.
    """

    def __init__(self, multicoil: bool, on_device: bool = False) -> None:
        self.multicoil = multicoil
        self.on_device = on_device

    def __call__(self, samples: list[SliceSample]) -> ReconBatch | KSpaceBatch:
        crop = _common_crop(samples)
        meta = dict(
            max_value=torch.tensor([s.max_value for s in samples], dtype=torch.float64),
            fname=[s.fname for s in samples],
            slice_num=torch.tensor([s.slice_num for s in samples]),
            acceleration=torch.tensor([s.acceleration for s in samples], dtype=torch.float32),
        )
        target = torch.stack([s.target for s in samples])
        has_target = torch.tensor([s.has_target for s in samples])
        if self.on_device:
            shapes = {tuple(s.kspace.shape) for s in samples}
            if len(shapes) > 1:
                raise UserError(
                    f"volumes {sorted({s.fname for s in samples})} have k-space shapes {sorted(shapes)}: "
                    "data.transform_on_device needs one shape per batch (use batch_size 1)"
                )
            mask = torch.stack([s.mask for s in samples])
            kspace = apply_column_mask(torch.stack([s.kspace for s in samples]), mask)
            return KSpaceBatch(
                masked_kspace=kspace,
                mask=mask,
                target=target,
                has_target=has_target,
                crop_size=crop,
                multicoil=self.multicoil,
                **meta,
            )
        zero_filled = torch.cat(
            [
                zero_filled_magnitude(apply_column_mask(s.kspace[None], s.mask[None]), crop, self.multicoil)
                for s in samples
            ]
        )
        return recon_batch_from_images(
            zero_filled, target, has_target, mask=_stack_masks([s.mask for s in samples]), **meta
        )
