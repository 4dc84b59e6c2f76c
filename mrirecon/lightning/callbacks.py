"""Callbacks that write what evaluation produces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from mrirecon.evaluation.submission import VolumeAssembler


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
        num_slices = {v.path.name: v.num_slices for v in dm.evaluation_volumes()}
        self.assembler = VolumeAssembler(self.output_dir, not dm.writes_flat_folders(), num_slices)

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
