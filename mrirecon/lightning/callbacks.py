"""Callbacks that write what evaluation produces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from mrirecon.core.atomic import check_outputs, final_path
from mrirecon.core.plane_masks import PLANE_MASK_TYPES
from mrirecon.evaluation.submission import VolumeAssembler, volume_output_path


class ReconstructionWriter(pl.Callback):
    """Writes the reconstructions of ``predict`` (or of ``test``) in the submission format.

    Every process writes the volumes it reconstructed (the batch sampler keeps a volume on one
    process), each volume once and completely, atomically. The volumes' slice counts and the
    folder layout (one sub-folder per acceleration, or flat for files with their own masks;
    see :mod:`mrirecon.evaluation.submission`) come from the DataModule once it is set up.

    Args:
        output_dir: the folder to write into.
    """

    def __init__(self, output_dir: str | Path) -> None:
        self.output_dir = Path(output_dir)
        self.assembler: VolumeAssembler | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        dm = trainer.datamodule
        volumes = dm.evaluation_volumes()
        per_acceleration = not dm.writes_flat_folders()
        # Before the first slice: writing into the split's own folder (flat outputs carry the
        # inputs' names) must not replace the k-space files being read.
        accelerations = [acc for _, acc in dm.masks.pairs] if per_acceleration else [0.0]
        final = final_path(self.output_dir)  # where a staged output will be swapped in
        check_outputs([(volume_output_path(final, v.path.name, acc, per_acceleration), v.path)
                       for v in volumes for acc in accelerations], [v.path for v in volumes],
                      "choose an output folder outside the data")
        self.assembler = VolumeAssembler(self.output_dir, per_acceleration, {v.path.name: v.num_slices for v in volumes})

    def _add(self, outputs: Any) -> None:
        if outputs is not None:
            self.assembler.add(outputs["reconstruction"], outputs["fname"], outputs["slice_num"],
                               outputs["acceleration"], outputs["padding"])

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._add(outputs)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._add(outputs)

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        self.assembler.finish()

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self.assembler.finish()


def _volumes_line(name: str, volumes: list, used: list, slice_rate: float | None = None) -> str:
    """``train 3 volumes (24 slices)``, and what of the split that is when settings subsample it."""
    slices = sum(v.num_slices for v in used)
    if slice_rate is not None and slice_rate < 1.0:
        slices = max(1, round(slices * slice_rate))  # as SliceDataset draws them
    line = f"{name} {len(used)} volumes ({slices} slices)"
    total = sum(v.num_slices for v in volumes)
    if (len(used), slices) != (len(volumes), total):
        line += f" of {len(volumes)} ({total})"
    return line


class PhaseLines(pl.Callback):
    """One line per phase on the terminal, from the first process (Lightning's own chatter is
    silenced by the CLI): what runs on what, and how it ended, including a stop before the
    planned end (``max_time``, Ctrl-C), which the last line then says."""

    def __init__(self) -> None:
        self.early_stop: str | None = None

    @staticmethod
    def _print(trainer: pl.Trainer, text: str) -> None:
        if trainer.is_global_zero:
            print(text, flush=True)

    def _describe(self, trainer: pl.Trainer, pl_module: pl.LightningModule, splits: list[str]) -> None:
        dm = trainer.datamodule
        parameters = sum(p.numel() for p in pl_module.parameters())
        net = type(getattr(pl_module, "net", pl_module)).__name__
        self._print(trainer, f"model: {net}, {parameters / 1e6:.2f} M parameters, "
                             f"{trainer.world_size} process(es) on {trainer.strategy.root_device.type}, "
                             f"precision {trainer.precision}")
        masks = dm.masks
        centre = "calibration radius" if masks.mask_type in PLANE_MASK_TYPES else "centre"
        pairs = ", ".join(f"{acc:g}x ({centre} {cf:g})" for cf, acc in masks.pairs)
        parts = [_volumes_line(split, dm.volumes(split) if split != dm.test_split else dm.evaluation_volumes(),
                               dm.used_volumes(split, train=split == "train"),
                               dm.sample_rate if split == "train" else None)
                 for split in splits]
        self._print(trainer, f"data: {dm.data_path} {dm.challenge}, {'; '.join(parts)}; {masks.mask_type} masks {pairs}; "
                             f"batch {dm.batch_size}")

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        where = trainer.log_dir if trainer.loggers else trainer.default_root_dir
        resumed = f", resuming {trainer.ckpt_path}" if trainer.ckpt_path else ""
        self._print(trainer, f"fit: {where}{resumed}")
        self._describe(trainer, pl_module, ["train", "val"])

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        planned = trainer.max_steps if trainer.max_steps > 0 else None
        if planned is None and trainer.max_epochs is not None and trainer.max_epochs > 0:
            planned = trainer.max_epochs * trainer.num_training_batches
        last = next((c.path for c in trainer.callbacks if hasattr(c, "every_n_train_steps") and c.path), None)
        best = next((c for c in trainer.checkpoint_callbacks if getattr(c, "best_model_path", "")), None)
        text = f"fit: done at step {trainer.global_step} (epoch {trainer.current_epoch})"
        if last is not None:
            text += f"; last: {last}"
        if best is not None and best.best_model_score is not None:
            text += f"; best {best.monitor} {float(best.best_model_score):.4f}: {best.best_model_path}"
        self._print(trainer, text)
        if planned is not None and trainer.global_step < planned:
            interrupted = any(getattr(c, "interrupted", False) for c in trainer.callbacks)
            timed_out = any(type(c).__name__ == "Timer" and c.time_remaining() <= 0 for c in trainer.callbacks)
            reason = "interrupted" if interrupted else "trainer.max_time reached" if timed_out else "stopped"
            self.early_stop = f"training stopped early at step {trainer.global_step} of {planned}: {reason}"

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._print(trainer, f"test: {trainer.ckpt_path or type(getattr(pl_module, 'net', pl_module)).__name__}")
        self._describe(trainer, pl_module, [trainer.datamodule.test_split])

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._print(trainer, f"predict: {trainer.ckpt_path or type(getattr(pl_module, 'net', pl_module)).__name__}")
        self._describe(trainer, pl_module, [trainer.datamodule.test_split])

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        writer = next((c for c in trainer.callbacks if isinstance(c, ReconstructionWriter)), None)
        if writer is not None and writer.assembler is not None:
            self._print(trainer, f"predict: wrote {len(writer.assembler.written)} volumes to {final_path(writer.output_dir)}")
