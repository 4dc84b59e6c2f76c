"""The Lightning DataModule: fastMRI-format folders in, undersampled k-space batches out."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from mrirecon.core.masks import MaskType
from mrirecon.core.plane_masks import PlaneMaskSampler, PlaneMaskType
from mrirecon.data.batch import KSpaceBatch, SliceCollator, prepare_batch
from mrirecon.data.dataset import SliceDataset, mask_sampler
from mrirecon.data.repetitions import RepetitionTargets, shared_subjects, with_repetition_targets
from mrirecon.data.samplers import SliceBatchSampler
from mrirecon.data.volumes import (TRAINING_SPLITS, Challenge, FileIdentity, VolumeInfo, check_disjoint,
                                   file_identities, missing_target, scan_volumes, subsample_volumes)
from mrirecon import internals
from mrirecon.errors import UserError


class ResumableDataLoader(DataLoader):
    """A DataLoader that Lightning saves and restores with the checkpoint (its ``_Stateful``).

    The state is the epoch and the number of batches the training loop had finished in it;
    restoring tells the :class:`SliceBatchSampler` to skip those batches, so a run resumed from
    a mid-epoch checkpoint continues with the very next batch. (Counting the batches handed
    out would overshoot: workers and Lightning fetch ahead.)
    """

    def __init__(self, *args: Any, progress: Callable[[], int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._progress = progress

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(self.batch_sampler.epoch), "batches_done": int(self._progress())}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch_sampler.resume(int(state["epoch"]), int(state["batches_done"]))


class ReconDataModule(pl.LightningDataModule):
    """Undersampled k-space from a fastMRI-layout folder (``<data_path>/<challenge>_<split>``).

    Works on our simulated folders and on the real fastMRI download (knee or brain, single- or
    multi-coil, volumes of different widths). Every file of the splits a command uses is
    validated before the first step (shapes, dtype, finite k-space and targets, sizes), with one
    error line naming the bad file.

    Args:
        data_path: folder holding ``singlecoil_train``, ``singlecoil_val``, ... (or ``multicoil_*``).
        challenge: ``singlecoil`` (ESC targets) or ``multicoil`` (RSS targets).
        mask_type: fastMRI mask type: ``random``, ``equispaced_fraction``, ``equispaced``,
            ``magic``, ``magic_fraction`` (column masks); or ``poisson2d``, ``gaussian2d``: 2-D
            masks over the whole k-space plane (a 3-D scan's ky-kz plane), with a fully sampled
            calibration disc (see :mod:`mrirecon.core.plane_masks`).
        center_fractions: fraction of centre columns kept, one per acceleration (column masks).
        calibration_radius: 2-D masks: radius of the calibration disc, in k-space points.
        partial_fourier: 2-D masks: fraction of the last axis, at its end, never sampled.
        accelerations: undersampling factors (integers of at least 2); several give mixed
            accelerations in one run.
        crop_size: reconstruction size (rows, cols); None uses each volume's target size.
        batch_size: slices per batch; a batch holds slices of one k-space shape.
        num_workers: DataLoader worker processes.
        sample_rate: fraction of training slices to use (a fixed subset).
        volume_sample_rate: fraction of training volumes to use (a fixed subset).
        val_volume_sample_rate: fraction of validation volumes to use.
        test_split: split evaluated by ``test`` and ``predict`` (``test``, ``val``,
            ``challenge``, or any ``<challenge>_<name>`` folder name's ``<name>``, such as
            ``test_v2`` or ``test_full`` of the real download).
        use_file_masks: for files that carry their own ``mask`` (already undersampled test and
            challenge files): None (default) uses those masks, True requires every evaluated file
            to carry one, False is refused for such files (they would be masked twice).
        transform_on_device: run the mask → iFFT → crop → RSS → normalise chain on the training
            device after transfer; the workers then only read and stack.
        repetitions: targets of repeated acquisitions (M4Raw's ``<subject>_<contrast><NN>.h5``
            files): ``separate`` (each file its own, as M4Raw's demos; the default),
            ``average`` (the mean of the subject's repetitions of that contrast, in every split)
            or ``pairs`` (training on one repetition against another; val and test keep their
            own); see :mod:`mrirecon.data.repetitions`.
        check_finite: scan all k-space and targets for NaN/Inf before training (cached per file).
        use_cache: cache volume metadata in ``~/.cache/mrirecon``.
        seed: seed of the training masks and order; None takes it from ``seed_everything``.
    """

    def __init__(
        self,
        data_path: str,
        challenge: Challenge = "singlecoil",
        mask_type: MaskType | PlaneMaskType = "random",
        center_fractions: list[float] = [0.08],  # noqa: B006 - LightningCLI needs plain defaults
        accelerations: list[int] = [4],  # noqa: B006
        calibration_radius: float = 18.0,
        partial_fourier: float = 0.0,
        crop_size: Optional[tuple[int, int]] = None,
        batch_size: int = 1,
        num_workers: int = 4,
        sample_rate: Optional[float] = None,
        volume_sample_rate: Optional[float] = None,
        val_volume_sample_rate: Optional[float] = None,
        test_split: str = "test",
        use_file_masks: Optional[bool] = None,
        transform_on_device: bool = False,
        repetitions: RepetitionTargets = "separate",
        check_finite: bool = True,
        use_cache: bool = True,
        seed: Optional[int] = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        _check_data_arguments(batch_size, num_workers, crop_size, sample_rate, volume_sample_rate, val_volume_sample_rate, seed)
        try:
            self.masks = mask_sampler(mask_type, center_fractions, accelerations, calibration_radius, partial_fourier)
        except ValueError as err:
            raise UserError(f"data.{err}") from None
        self.data_path = Path(data_path)
        self.challenge = challenge
        self.crop_size = tuple(crop_size) if crop_size is not None else None
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.sample_rate = sample_rate
        self.volume_sample_rate = volume_sample_rate
        self.val_volume_sample_rate = val_volume_sample_rate
        self.test_split = test_split
        self.use_file_masks = use_file_masks
        self.transform_on_device = transform_on_device
        self.repetitions = repetitions
        self.check_finite = check_finite
        self.use_cache = use_cache
        self.seed = seed
        # Whether batches keep their k-space after the chain, and whether training and
        # validation files need targets (not for self-supervised training); set from the model
        # in setup().
        self.keep_kspace = True
        self.targets_required = True
        self._volumes: dict[str, list[VolumeInfo]] = {}

    # --- volumes -----------------------------------------------------------------------------
    def split_folder(self, split: str) -> Path:
        return self.data_path / f"{self.challenge}_{split}"

    def volumes(self, split: str) -> list[VolumeInfo]:
        """Validated volumes of a split (scanned once per DataModule)."""
        if split not in self._volumes:
            if not self.data_path.is_dir():
                raise UserError(f"{self.data_path}: no such data folder")
            infos = scan_volumes(self.split_folder(split), self.challenge, self.check_finite, self.use_cache, self.crop_size)
            if split in TRAINING_SPLITS:
                missing = [i for i in infos if i.target_key is None]
                if missing and self.targets_required:
                    raise UserError(f"{missing[0].path}: {missing_target(self.challenge)}")
                if split == "val" and missing and len(missing) < len(infos):
                    # Scored whole or not at all: metrics over some of its volumes would not
                    # compare with another run's.
                    raise UserError(f"{missing[0].path}: has no target while other files of {self.split_folder(split)} "
                                    "have one; a validation split is scored whole or by its held-out loss alone")
            self._check_mask_widths(infos)
            mode = self.repetitions if self.repetitions == "average" or split == "train" else "separate"
            self._volumes[split] = with_repetition_targets(infos, mode, self.crop_size)
            self._check_splits_disjoint()
        return self._volumes[split]

    def _check_mask_widths(self, infos: list[VolumeInfo]) -> None:
        """Every width that gets drawn masks can get an honest one (see ColumnMaskSampler.check_width)."""
        checked = set()
        for info in infos:
            if info.fixed_mask is not None and self.use_file_masks is not False:
                continue  # scored with the file's own mask
            plane = isinstance(self.masks, PlaneMaskSampler)
            key = tuple(info.kspace_shape[-2:]) if plane else (info.num_cols, info.padding)
            if key not in checked:
                try:
                    self.masks.check_plane(key) if plane else self.masks.check_width(*key)
                except ValueError as err:
                    raise UserError(f"{info.path}: data.{err}") from None
                checked.add(key)

    def _check_splits_disjoint(self) -> None:
        """No file in two of the train, val and test splits (one folder named twice, as
        ``test_split: val``, is one split)."""
        # Scanned splits are compared by their volumes, the others by their files' fingerprints:
        # both by content, so a copy of a training volume in the test split is found either way.
        splits: dict[str, list[VolumeInfo | FileIdentity]] = {}
        folders: set[Path] = set()
        for split in ("train", "val", self.test_split):
            folder = self.split_folder(split)
            if folder.resolve() in folders or not folder.is_dir():
                continue
            folders.add(folder.resolve())
            if split in self._volumes:
                splits[split] = list(self._volumes[split])
            else:
                try:
                    splits[split] = file_identities(folder, self.challenge, self.use_cache)
                except UserError:
                    continue  # a split this command does not use is checked when one does
        check_disjoint(splits)
        for path, problem in shared_subjects(splits)[:1]:
            raise UserError(f"{path}: {problem}")

    def validation_has_targets(self) -> bool:
        """Whether the val split is scored (its files have targets) or has its held-out loss
        alone (self-supervised training on files without targets)."""
        return all(info.target_key is not None for info in self.volumes("val"))

    def evaluation_volumes(self) -> list[VolumeInfo]:
        """The test split's volumes, checked against ``use_file_masks``."""
        infos = self.volumes(self.test_split)
        for info in infos:
            if info.fixed_mask is not None and self.use_file_masks is False:
                raise UserError(
                    f"{info.path}: already undersampled (it carries its own 'mask'); drawing another mask "
                    "would mask it twice: leave data.use_file_masks unset or set it to true"
                )
            if info.fixed_mask is None and self.use_file_masks:
                raise UserError(f"{info.path}: data.use_file_masks is true but the file has no 'mask'")
        return infos

    def writes_flat_folders(self) -> bool:
        """Reconstructions go into one flat folder when every test volume has its own mask."""
        return all(info.fixed_mask is not None for info in self.evaluation_volumes())

    def _scan(self, stage: Optional[str]) -> None:
        if stage in ("test", "predict"):
            self.evaluation_volumes()
            return
        for split in {"fit": ["train", "val"], "validate": ["val"]}.get(stage or "fit", ["train", "val"]):
            self.volumes(split)

    def setup(self, stage: Optional[str] = None) -> None:
        # Validate every file of the splits this stage uses before the first step.
        if self.seed is None:
            self.seed = int(torch.initial_seed()) % 2**62
        module = self.trainer.lightning_module if self.trainer is not None else None
        self.keep_kspace = bool(getattr(module, "needs_kspace", True))
        self.targets_required = bool(getattr(module, "needs_targets", True))
        replicas, rank = self._distributed()
        if replicas > 1:
            # One process reads every file (the NaN/Inf scan of a large download takes long)
            # and fills the metadata cache; a bad file stops every process with its line.
            error = None
            if rank == 0:
                try:
                    self._scan(stage)
                except UserError as err:
                    error = str(err)
            error = self.trainer.strategy.broadcast(error, src=0)
            if error is not None:
                raise UserError(error)
            if rank != 0:
                # Checked by process 0 already: read the rest from the cache, or the metadata only.
                check_finite, self.check_finite = self.check_finite, False
                try:
                    self._scan(stage)
                finally:
                    self.check_finite = check_finite
            return
        self._scan(stage)

    # --- loaders -----------------------------------------------------------------------------
    def used_volumes(self, split: str, train: bool = False) -> list[VolumeInfo]:
        """The volumes a loader of ``split`` reads: after ``volume_sample_rate`` (training) or
        ``val_volume_sample_rate`` (validation)."""
        infos = self.evaluation_volumes() if split == self.test_split and not train else self.volumes(split)
        if train:
            return subsample_volumes(infos, self.volume_sample_rate)
        if split == "val":
            return subsample_volumes(infos, self.val_volume_sample_rate)
        return infos

    def dataset(self, split: str, train: bool = False) -> SliceDataset:
        infos = self.used_volumes(split, train)
        return SliceDataset(
            infos,
            self.challenge,
            self.masks,
            mode="train" if train else "fixed",
            crop_size=self.crop_size,
            sample_rate=self.sample_rate if train else None,
            file_masks=self.use_file_masks is not False,
        )

    def _distributed(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def _loader(self, dataset: SliceDataset, train: bool) -> DataLoader:
        replicas, rank = self._distributed()
        sampler = SliceBatchSampler(
            [dataset.group_key(i) for i in range(len(dataset))],
            [dataset.unit_key(i) for i in range(len(dataset))],
            self.batch_size,
            shuffle=train,
            seed=self.seed or 0,
            num_replicas=replicas,
            rank=rank,
        )
        kwargs = dict(
            batch_sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=SliceCollator(prepare=not self.transform_on_device, keep_kspace=self.keep_kspace),
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            # A generator of its own: loader start-ups must not draw from the global generator,
            # whose state a resumed run restores for the network's own randomness.
            generator=torch.Generator().manual_seed(self.seed or 0),
        )
        if train:
            return ResumableDataLoader(dataset, progress=self._batches_done, **kwargs)
        return DataLoader(dataset, **kwargs)

    def _batches_done(self) -> int:
        return internals.batches_done_in_epoch(self.trainer)

    def train_dataloader(self) -> DataLoader:
        loader = self._loader(self.dataset("train", train=True), train=True)
        self._check_val_check_interval(len(loader))
        return loader

    def _check_val_check_interval(self, batches: int) -> None:
        """An integer ``val_check_interval`` must fit in the epoch (Lightning raises a
        traceback otherwise, after the data scan)."""
        trainer = self.trainer
        interval = getattr(trainer, "val_check_interval", None)
        if trainer is None or not isinstance(interval, int) or isinstance(interval, bool) or trainer.check_val_every_n_epoch is None:
            return
        limit = trainer.limit_train_batches
        if isinstance(limit, int):
            batches = min(batches, limit)
        elif isinstance(limit, float):
            batches = int(batches * limit)
        if interval > batches:
            raise UserError(
                f"trainer.val_check_interval: {interval} batches is longer than an epoch of {batches} training batches; use "
                f"at most {batches}, a fraction of the epoch (0.5), or trainer.check_val_every_n_epoch null to count across epochs")

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val"), train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset(self.test_split), train=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # With transform_on_device the chain runs here, on the GPU; otherwise this is a no-op.
        if isinstance(batch, KSpaceBatch):
            return prepare_batch(batch, self.keep_kspace)
        return batch


def _check_data_arguments(
    batch_size: int,
    num_workers: int,
    crop_size: Optional[tuple[int, int]],
    sample_rate: Optional[float],
    volume_sample_rate: Optional[float],
    val_volume_sample_rate: Optional[float],
    seed: Optional[int] = None,
) -> None:
    if seed is not None and not 0 <= seed < 2**63:
        # torch.Generator.manual_seed and NumPy's generators take non-negative 64-bit seeds.
        raise UserError(f"data.seed: must be an integer from 0 to {2**63 - 1}, got {seed}")
    if batch_size < 1:
        raise UserError(f"data.batch_size: must be at least 1, got {batch_size}")
    if num_workers < 0:
        raise UserError(f"data.num_workers: must be 0 or more, got {num_workers}")
    if crop_size is not None and (len(crop_size) != 2 or min(crop_size) < 8):
        raise UserError(f"data.crop_size: must be two sizes of at least 8 pixels, got {crop_size}")
    for name, rate in (("sample_rate", sample_rate), ("volume_sample_rate", volume_sample_rate),
                       ("val_volume_sample_rate", val_volume_sample_rate)):
        if rate is not None and not 0.0 < rate <= 1.0:
            raise UserError(f"data.{name}: must lie in (0, 1], got {rate}")
