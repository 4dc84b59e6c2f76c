"""The Lightning DataModule: fastMRI-format folders in, undersampled zero-filled batches out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from mrirecon.data.dataset import (
    KSpaceBatch,
    ReconSliceDataset,
    SeededShuffleSampler,
    SliceCollator,
    kspace_to_recon_batch,
)
from mrirecon.data.masks import ColumnMaskSampler, MaskType
from mrirecon.data.volumes import Challenge, VolumeInfo, scan_volumes, subsample_volumes
from mrirecon.errors import UserError


class ReconDataModule(pl.LightningDataModule):
    """Undersampled k-space from a fastMRI-layout folder (``<data_path>/<challenge>_<split>``).

    Works on our simulated folders and on the real fastMRI download (knee or brain, single- or
    multi-coil). Every file is validated before the first step (shapes, dtype, finite k-space,
    target size), with one error line naming the bad file.

    Args:
        data_path: folder holding ``singlecoil_train``, ``singlecoil_val``, ... (or ``multicoil_*``).
        challenge: ``singlecoil`` (ESC targets) or ``multicoil`` (RSS targets).
        mask_type: fastMRI mask type: ``random``, ``equispaced_fraction``, ``equispaced``,
            ``magic``, ``magic_fraction``.
        center_fractions: fraction of centre columns kept, one per acceleration.
        accelerations: undersampling factors; several give mixed accelerations in one run.
        crop_size: reconstruction size (rows, cols); None uses each volume's target size.
        batch_size: slices per batch.
        num_workers: DataLoader worker processes.
        sample_rate: fraction of training slices to use (a fixed subset).
        volume_sample_rate: fraction of training volumes to use (a fixed subset).
        val_volume_sample_rate: fraction of validation volumes to use.
        test_split: split evaluated by ``test`` and ``predict`` (``test``, ``val`` or ``challenge``).
        use_file_masks: use the ``mask`` stored in test/challenge files instead of drawing one.
        transform_on_device: run the mask → iFFT → crop → RSS chain on the training device after
            transfer instead of in the workers (needs equal k-space shapes per batch).
        check_finite: scan all k-space for NaN/Inf before training (cached per file).
        use_cache: cache volume metadata in ``~/.cache/mrirecon``.
        seed: seed of the training masks and order; None takes it from ``seed_everything``.
    """

    def __init__(
        self,
        data_path: str,
        challenge: Challenge = "singlecoil",
        mask_type: MaskType = "random",
        center_fractions: list[float] = [0.08],  # noqa: B006 - LightningCLI needs plain defaults
        accelerations: list[int] = [4],  # noqa: B006
        crop_size: tuple[int, int] | None = None,
        batch_size: int = 1,
        num_workers: int = 4,
        sample_rate: float | None = None,
        volume_sample_rate: float | None = None,
        val_volume_sample_rate: float | None = None,
        test_split: str = "test",
        use_file_masks: bool = False,
        transform_on_device: bool = False,
        check_finite: bool = True,
        use_cache: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.data_path = Path(data_path)
        self.challenge = challenge
        try:
            self.masks = ColumnMaskSampler(mask_type, center_fractions, accelerations)
        except ValueError as err:
            raise UserError(f"data: {err}") from None
        self.crop_size = tuple(crop_size) if crop_size is not None else None
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.sample_rate = sample_rate
        self.volume_sample_rate = volume_sample_rate
        self.val_volume_sample_rate = val_volume_sample_rate
        self.test_split = test_split
        self.use_file_masks = use_file_masks
        self.transform_on_device = transform_on_device
        self.check_finite = check_finite
        self.use_cache = use_cache
        self.seed = seed
        self._volumes: dict[str, list[VolumeInfo]] = {}

    def split_folder(self, split: str) -> Path:
        return self.data_path / f"{self.challenge}_{split}"

    def volumes(self, split: str) -> list[VolumeInfo]:
        """Validated volumes of a split (scanned once per DataModule)."""
        if split not in self._volumes:
            if not self.data_path.is_dir():
                raise UserError(f"{self.data_path}: no such data folder")
            infos = scan_volumes(self.split_folder(split), self.challenge, self.check_finite, self.use_cache)
            if split in ("train", "val"):
                missing = [i.path for i in infos if i.target_key is None]
                if missing:
                    raise UserError(f"{missing[0]}: no {self.challenge} target, needed to train or validate")
            self._volumes[split] = infos
        return self._volumes[split]

    def setup(self, stage: str | None = None) -> None:
        # Validate every file of the splits this stage uses before the first step.
        if self.seed is None:
            self.seed = int(torch.initial_seed()) % 2**62
        splits = {"fit": ["train", "val"], "validate": ["val"], "test": [self.test_split], "predict": [self.test_split]}
        for split in splits.get(stage, ["train", "val"]):
            self.volumes(split)

    def _dataset(self, split: str, train: bool) -> ReconSliceDataset:
        infos = self.volumes(split)
        if train:
            infos = subsample_volumes(infos, self.volume_sample_rate)
        elif split == "val":
            infos = subsample_volumes(infos, self.val_volume_sample_rate)
        masks = None if (self.use_file_masks and not train) else self.masks
        return ReconSliceDataset(
            infos,
            self.challenge,
            masks,
            mode="train" if train else "fixed",
            crop_size=self.crop_size,
            sample_rate=self.sample_rate if train else None,
        )

    def _loader(self, dataset: ReconSliceDataset, sampler=None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=SliceCollator(self.challenge == "multicoil", self.transform_on_device),
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self._dataset("train", train=True)
        return self._loader(dataset, SeededShuffleSampler(len(dataset), self.seed or 0))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("val", train=False))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._dataset(self.test_split, train=False))

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, KSpaceBatch):
            return kspace_to_recon_batch(batch)
        return batch
